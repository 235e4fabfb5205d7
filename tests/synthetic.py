"""Synthetic checkpoints and hand-written references for the model-loader tests.

Everything here is tiny and random, built offline on the CPU:

* :func:`original_dit_state_dict`: a state dict with the exact key names and shapes of the official DiT
  (facebookresearch/DiT ``models.py``), including its fixed sin-cos ``pos_embed``.
* :func:`reference_timestep_frequencies`, :func:`reference_c` and :func:`reference_dit_forward`: the
  original DiT's formulas, written out from ``models.py`` without diffusers, to check the loaders against.
* :func:`tiny_pipeline_folder`: a diffusers DiT pipeline folder (``transformer/``, ``vae/``, ``scheduler/``,
  ``model_index.json``) like the hub's ``facebook/DiT-XL-2-256``, but with a 2-layer, 32-wide transformer.

Kept out of ``conftest.py`` on purpose: import what you need from ``tests.synthetic``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# A DiT-S-wide toy (hidden 384, 6 heads) with only 2 blocks, so not a DiT size: full loads pass num_heads=HEADS.
HIDDEN = 384
HEADS = 6
DEPTH = 2
NUM_CLASSES = 10
IN_CHANNELS = 4
PATCH = 2
INPUT_SIZE = 8  # latent side → (8 / 2)² = 16 tokens
FREQ_DIM = 256  # the original TimestepEmbedder's frequency_embedding_size


# ---------------------------------------------------------------------------------------------------
#                                 Original DiT formulas, written out by hand
# ---------------------------------------------------------------------------------------------------


def reference_timestep_frequencies(timesteps, dim: int = FREQ_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's ``TimestepEmbedder.timestep_embedding``: cat[cos(t·f), sin(t·f)], f_i = exp(−ln(P)·i/half)."""
    t = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64)
    freqs = torch.exp(-math.log(max_period) * i / half)
    args = t[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (T, dim)


def reference_t_embedding(state_dict: dict, timesteps) -> torch.Tensor:
    """t_emb = mlp.2(silu(mlp.0(t_freq))) in float64, (T, D)."""
    sd = {k: v.double() for k, v in state_dict.items() if k.startswith("t_embedder.")}
    h = F.linear(reference_timestep_frequencies(timesteps), sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])
    return F.linear(F.silu(h), sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])


def reference_c(state_dict: dict, labels, timesteps) -> torch.Tensor:
    """The original DiT's c = t_embedder(t) + y_embedder(y) for every label × timestep, (T, n, D) float64."""
    table = state_dict["y_embedder.embedding_table.weight"].double()
    y = table[torch.as_tensor(labels, dtype=torch.long)]  # (n, D)
    return reference_t_embedding(state_dict, timesteps)[:, None, :] + y[None]


def _sincos_1d(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def reference_pos_embed(embed_dim: int, grid_size: int) -> torch.Tensor:
    """DiT's ``get_2d_sincos_pos_embed`` (from MAE), (1, grid², D) float32."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)  # w goes first
    emb = np.concatenate([_sincos_1d(embed_dim // 2, grid[0]), _sincos_1d(embed_dim // 2, grid[1])], axis=1)
    return torch.from_numpy(emb).float()[None]


def _modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def reference_dit_forward(state_dict: dict, x, t, y, num_heads: int = HEADS) -> torch.Tensor:
    """The original ``DiT.forward(x, t, y)`` in eval mode (timm Attention/Mlp, adaLN-Zero), written out."""
    sd = state_dict
    w = sd["x_embedder.proj.weight"]
    hidden, patch = w.shape[0], w.shape[-1]
    n = x.shape[0]
    tokens = F.conv2d(x, w, sd["x_embedder.proj.bias"], stride=patch).flatten(2).transpose(1, 2)
    h = tokens + sd["pos_embed"]  # (N, T, D)
    c = (reference_t_embedding(sd, t) + sd["y_embedder.embedding_table.weight"].double()[y]).float()  # (N, D)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    head_dim = hidden // num_heads
    for i in range(depth):
        b = f"blocks.{i}."
        mod = F.linear(F.silu(c), sd[b + "adaLN_modulation.1.weight"], sd[b + "adaLN_modulation.1.bias"])
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        a = _modulate(F.layer_norm(h, (hidden,), eps=1e-6), shift_msa, scale_msa)
        qkv = F.linear(a, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        qkv = qkv.reshape(n, -1, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)  # timm's Attention layout
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        a = (attn @ v).transpose(1, 2).reshape(n, -1, hidden)
        h = h + gate_msa.unsqueeze(1) * F.linear(a, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        m = _modulate(F.layer_norm(h, (hidden,), eps=1e-6), shift_mlp, scale_mlp)
        m = F.gelu(F.linear(m, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]), approximate="tanh")
        h = h + gate_mlp.unsqueeze(1) * F.linear(m, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    mod = F.linear(F.silu(c), sd["final_layer.adaLN_modulation.1.weight"], sd["final_layer.adaLN_modulation.1.bias"])
    shift, scale = mod.chunk(2, dim=1)
    h = F.linear(_modulate(F.layer_norm(h, (hidden,), eps=1e-6), shift, scale),
                 sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])
    out_channels = h.shape[-1] // patch**2
    side = math.isqrt(h.shape[1])
    h = h.reshape(n, side, side, patch, patch, out_channels)
    return torch.einsum("nhwpqc->nchpwq", h).reshape(n, out_channels, side * patch, side * patch)


# ---------------------------------------------------------------------------------------------------
#                                       Synthetic original checkpoints
# ---------------------------------------------------------------------------------------------------


def original_dit_state_dict(
    seed: int = 0,
    hidden: int = HIDDEN,
    depth: int = DEPTH,
    num_classes: int = NUM_CLASSES,
    in_channels: int = IN_CHANNELS,
    patch: int = PATCH,
    input_size: int = INPUT_SIZE,
    learn_sigma: bool = True,
) -> dict[str, torch.Tensor]:
    """A random state dict with the official DiT key names and shapes (``pos_embed`` is DiT's fixed sin-cos).

    Weights are scaled like 1/√fan_in and every adaLN layer is non-zero (unlike DiT's init), so that each
    part of the network changes the output and a wrong mapping cannot hide.
    """
    gen = torch.Generator().manual_seed(seed)

    def lin(out_f, in_f):
        return (torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f),
                torch.randn(out_f, generator=gen) * 0.1)

    out_channels = 2 * in_channels if learn_sigma else in_channels
    grid = input_size // patch
    sd: dict[str, torch.Tensor] = {}
    sd["x_embedder.proj.weight"] = torch.randn(hidden, in_channels, patch, patch, generator=gen) / math.sqrt(
        in_channels * patch * patch)
    sd["x_embedder.proj.bias"] = torch.randn(hidden, generator=gen) * 0.1
    sd["pos_embed"] = reference_pos_embed(hidden, grid)  # (1, N, D)
    sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"] = lin(hidden, FREQ_DIM)
    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"] = lin(hidden, hidden)
    sd["y_embedder.embedding_table.weight"] = torch.randn(num_classes + 1, hidden, generator=gen)
    for i in range(depth):
        b = f"blocks.{i}."
        sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = lin(3 * hidden, hidden)
        sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = lin(hidden, hidden)
        sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = lin(4 * hidden, hidden)
        sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = lin(hidden, 4 * hidden)
        w, bias = lin(6 * hidden, hidden)
        sd[b + "adaLN_modulation.1.weight"], sd[b + "adaLN_modulation.1.bias"] = w * 0.3, bias
    sd["final_layer.linear.weight"], sd["final_layer.linear.bias"] = lin(patch * patch * out_channels, hidden)
    w, bias = lin(2 * hidden, hidden)
    sd["final_layer.adaLN_modulation.1.weight"], sd["final_layer.adaLN_modulation.1.bias"] = w * 0.3, bias
    return sd


def save_checkpoint(path: Path, obj) -> Path:
    path = Path(path)
    torch.save(obj, path)
    return path


def optimizer_state(state_dict: dict) -> dict:
    """A small AdamW-like ``opt.state_dict()`` as DiT's train.py stores it next to ``model`` and ``ema``."""
    return {
        "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
        "param_groups": [{"lr": 1e-4, "weight_decay": 0.0, "params": list(range(len(state_dict)))}],
    }


# ---------------------------------------------------------------------------------------------------
#                                  A tiny diffusers DiT pipeline folder
# ---------------------------------------------------------------------------------------------------

TINY_ID2LABEL = {str(i): f"class-{i}" for i in range(NUM_CLASSES)}


def tiny_dit_transformer(seed: int = 0, identical_embedders: bool = True):
    """A random 2-layer ``DiTTransformer2DModel`` (2 heads × 16, 10 classes, 4×8×8 latents, patch 2).

    diffusers initialises every block's ``norm1.emb`` independently; a converted checkpoint has identical
    copies, so by default block 0's embedder is copied into the others.
    """
    from diffusers import DiTTransformer2DModel

    from bottleneck_utils.models import tie_embedder_copies

    torch.manual_seed(seed)
    model = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=IN_CHANNELS, out_channels=2 * IN_CHANNELS,
        num_layers=2, sample_size=INPUT_SIZE, patch_size=PATCH, num_embeds_ada_norm=NUM_CLASSES,
    )
    return tie_embedder_copies(model) if identical_embedders else model


def tiny_pipeline_folder(folder: Path, identical_embedders: bool = True, id2label: dict | None = TINY_ID2LABEL):
    """Writes ``transformer/``, ``vae/``, ``scheduler/`` and ``model_index.json`` (with ``id2label``)."""
    from diffusers import AutoencoderKL, DDIMScheduler

    folder = Path(folder)
    transformer = tiny_dit_transformer(identical_embedders=identical_embedders)
    transformer.save_pretrained(folder / "transformer")
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
        block_out_channels=(8,), layers_per_block=1, latent_channels=IN_CHANNELS, norm_num_groups=4, sample_size=16,
    )
    vae.save_pretrained(folder / "vae")
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False).save_pretrained(
        folder / "scheduler")
    index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "DDIMScheduler"],
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if id2label is not None:
        index["id2label"] = id2label
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return transformer
