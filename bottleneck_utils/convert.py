"""Original DiT/SiT state dicts → diffusers ``DiTTransformer2DModel`` (the key mapping of diffusers'
``scripts/convert_dit_to_diffusers.py``), with the architecture read off the tensor shapes."""

from __future__ import annotations

import math

import torch
from diffusers import DiTTransformer2DModel

from bottleneck_utils import integrity

# DiT's (and SiT's) sizes in its models.py: (hidden size, depth, heads), all with an MLP 4× as wide. The head count
# is not visible in the weights, so it is taken from here only when width, depth and MLP width all match a size.
DIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}

GLOBAL_KEYS = {
    "x_embedder.proj.weight": "pos_embed.proj.weight",
    "x_embedder.proj.bias": "pos_embed.proj.bias",
    "final_layer.adaLN_modulation.1.weight": "proj_out_1.weight",
    "final_layer.adaLN_modulation.1.bias": "proj_out_1.bias",
    "final_layer.linear.weight": "proj_out_2.weight",
    "final_layer.linear.bias": "proj_out_2.bias",
}
EMBEDDER_KEYS = {
    "t_embedder.mlp.0": "norm1.emb.timestep_embedder.linear_1",
    "t_embedder.mlp.2": "norm1.emb.timestep_embedder.linear_2",
}
# the number of dimensions of the tensors whose shapes give the architecture
ORIGINAL_NDIMS = {"x_embedder.proj.weight": 4, "pos_embed": 3, "y_embedder.embedding_table.weight": 2,
                  "t_embedder.mlp.0.weight": 2, "t_embedder.mlp.2.weight": 2, "final_layer.linear.weight": 2,
                  "blocks.0.mlp.fc1.weight": 2}
ORIGINAL_FIX = "download it again, or re-save it as a state dict of tensors: torch.save(model.state_dict(), path)"
BLOCK_KEYS = {
    "attn.proj": "attn1.to_out.0",
    "mlp.fc1": "ff.net.0.proj",
    "mlp.fc2": "ff.net.2",
    "adaLN_modulation.1": "norm1.linear",
}


def attention_heads(hidden: int, depth: int, mlp_width: int, num_heads: int | None = None) -> int:
    """The head count of a DiT backbone: ``num_heads`` if given (it must divide ``hidden``), else its DiT size's.

    Raises:
        ValueError: ``num_heads`` does not divide the width, or (without it) the shape is not one of DiT's sizes.
    """
    if num_heads is not None:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or hidden % num_heads:
            raise ValueError(f"num_heads must be a positive int dividing the hidden size {hidden}, got {num_heads!r}")
        return num_heads
    for size_hidden, size_depth, heads in DIT_SIZES.values():
        if (hidden, depth, mlp_width) == (size_hidden, size_depth, 4 * size_hidden):
            return heads
    sizes = ", ".join(f"{name}: {h}×{d}" for name, (h, d, _) in DIT_SIZES.items())
    raise ValueError(f"width {hidden} × {depth} blocks (MLP {mlp_width}) is not one of DiT's sizes ({sizes}), so its "
                     "head count is unknown; pass num_heads")


def check_original_ndims(state_dict: dict[str, torch.Tensor], path="checkpoint") -> None:
    """Raises a one-line ValueError if a tensor that gives the architecture has the wrong number of dimensions."""
    for key, ndim in ORIGINAL_NDIMS.items():
        if key in state_dict and state_dict[key].ndim != ndim:
            raise ValueError(f"{path}: {key} has shape {tuple(state_dict[key].shape)}, but an original DiT checkpoint "
                             f"has it {ndim}-D: the file is from another model or damaged; {ORIGINAL_FIX}")


def original_architecture(state_dict: dict[str, torch.Tensor], num_heads: int | None = None) -> dict:
    """The ``DiTTransformer2DModel`` config of an original DiT/SiT state dict, read off its shapes."""
    patch = state_dict["x_embedder.proj.weight"]  # (D, C_in, p, p)
    hidden, in_channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[-1]
    depth = 1 + max(int(key.split(".")[1]) for key in state_dict if key.startswith("blocks."))
    num_tokens = state_dict["pos_embed"].shape[1]  # pos_embed: (1, N, D)
    heads = attention_heads(hidden, depth, state_dict["blocks.0.mlp.fc1.weight"].shape[0], num_heads)
    return {
        "num_attention_heads": heads,
        "attention_head_dim": hidden // heads,
        "in_channels": in_channels,
        "out_channels": state_dict["final_layer.linear.weight"].shape[0] // patch_size**2,
        "num_layers": depth,
        "sample_size": math.isqrt(num_tokens) * patch_size,
        "patch_size": patch_size,
        "num_embeds_ada_norm": state_dict["y_embedder.embedding_table.weight"].shape[0] - 1,
        "norm_eps": 1e-6,
    }


def _rename(state_dict: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    converted = {new: state_dict[old] for old, new in GLOBAL_KEYS.items()}
    table = state_dict["y_embedder.embedding_table.weight"]
    for i in range(depth):  # one shared embedder in the original → one identical copy per block
        prefix, source = f"transformer_blocks.{i}.", f"blocks.{i}."
        converted[prefix + "norm1.emb.class_embedder.embedding_table.weight"] = table
        for old, new in EMBEDDER_KEYS.items():
            for kind in ("weight", "bias"):
                converted[f"{prefix}{new}.{kind}"] = state_dict[f"{old}.{kind}"]
        for old, new in BLOCK_KEYS.items():
            for kind in ("weight", "bias"):
                converted[f"{prefix}{new}.{kind}"] = state_dict[f"{source}{old}.{kind}"]
        for kind in ("weight", "bias"):
            q, k, v = state_dict[f"{source}attn.qkv.{kind}"].chunk(3, dim=0)  # (3D, ...) → 3 × (D, ...)
            for name, part in zip(("to_q", "to_k", "to_v"), (q, k, v)):
                converted[f"{prefix}attn1.{name}.{kind}"] = part
    return converted


def _expected_original_keys(depth: int) -> set[str]:
    keys = set(GLOBAL_KEYS) | {"pos_embed", "y_embedder.embedding_table.weight"}
    keys |= {f"{old}.{kind}" for old in EMBEDDER_KEYS for kind in ("weight", "bias")}
    for i in range(depth):
        for old in (*BLOCK_KEYS, "attn.qkv"):
            keys |= {f"blocks.{i}.{old}.weight", f"blocks.{i}.{old}.bias"}
    return keys


TRAINING_HEADS = ("projectors.",)  # REPA's representation-alignment MLPs: used in training, not in sampling


def drop_training_heads(state_dict: dict[str, torch.Tensor], path="checkpoint") -> dict[str, torch.Tensor]:
    """The state dict without training-only heads (REPA's ``projectors.*``), with a one-line note if any went."""
    dropped = [key for key in state_dict if key.startswith(TRAINING_HEADS)]
    if dropped:
        print(f"{path}: dropped {len(dropped)} training-only tensors (REPA's projectors.*); sampling does not use them")
    return {key: value for key, value in state_dict.items() if not key.startswith(TRAINING_HEADS)}


def original_to_diffusers(
    state_dict: dict[str, torch.Tensor], num_heads: int | None = None, path="checkpoint"
) -> DiTTransformer2DModel:
    """Converts an original DiT/SiT state dict into a diffusers ``DiTTransformer2DModel``.

    Raises:
        KeyError: listing every missing and unexpected key, if the state dict is not a DiT backbone.
        ValueError: tensors of the wrong shape, in one line naming the first.
    """
    if not {"x_embedder.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight"} <= set(state_dict):
        raise KeyError(f"{path} has no 'x_embedder.proj.weight'/'pos_embed'/'blocks.0.*': not a DiT/SiT backbone")
    check_original_ndims(state_dict, path)
    config = original_architecture(state_dict, num_heads)
    expected = _expected_original_keys(config["num_layers"])
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise KeyError(f"{path}: missing keys {missing}; unexpected keys {unexpected}")
    model = DiTTransformer2DModel(**config)
    integrity.load_weights(model, _rename(state_dict, config["num_layers"]), path, ORIGINAL_FIX)
    fixed = model.pos_embed.pos_embed  # diffusers recomputes DiT's fixed sin-cos table: (1, N, D)
    if not torch.allclose(fixed, state_dict["pos_embed"].to(fixed), atol=1e-4):
        raise ValueError(f"{path}: its pos_embed is not DiT's fixed sin-cos table, which diffusers assumes")
    return model
