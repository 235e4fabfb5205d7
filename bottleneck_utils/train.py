"""Trains the embedded model organisms and their MNIST classifier; writes them into the package data.

    python -m bottleneck_utils.train mnist-classifier        # the 14×14 MNIST classifier (~1 CPU minute)
    python -m bottleneck_utils.train mnist-dit               # the class-conditional DiT (~20 CPU minutes)
    python -m bottleneck_utils.train ising-dit               # the temperature-conditional DiT (~70 CPU minutes)

The DiT is a diffusers ``DiTTransformer2DModel`` initialised as in the original DiT (``initialize_weights``)
with ONE embedder shared by all blocks, as in the original code; it is saved as identical per-block copies,
the layout of the hub checkpoint. Every ``log_every`` steps the mean cosine and nPR of c = y + t at t₀ and of
y alone, for the raw and the EMA weights, go into ``train_log.csv`` beside the checkpoint.

A recipe with a ``"condition"`` entry trains a continuous-condition model (``ising-dit``): the label table is
replaced by :class:`bottleneck_utils.conditions.ContinuousConditionEmbedding`, dropped conditions become NaN (the
learned null vector), and the logged statistics are taken over a grid of the trained range.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from bottleneck_utils import classifier, data, stats
from bottleneck_utils.conditions import NULL, ConditionRange, ContinuousConditionEmbedding, install_condition_embedders
from bottleneck_utils.embeddings import conditional_vectors
from bottleneck_utils.models import CHECKPOINT_DIR, DDPM, Bundle, sha256_of

# ---------------------------------------------------------------------------------------------------
#                                        Organism recipes
# ---------------------------------------------------------------------------------------------------

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
MNIST_DIT = {
    "transformer": {
        "num_attention_heads": 4,
        "attention_head_dim": 32,
        "in_channels": 1,
        "num_layers": 4,
        "sample_size": 14,
        "patch_size": 2,
        "num_embeds_ada_norm": 10,
        "norm_eps": 1e-6,
    },
    "steps": 4000,
    "batch_size": 128,
    "lr": 1e-3,
    "ema_decay": 0.999,
    "label_dropout": 0.1,
    "log_every": 100,
    "class_names": [str(digit) for digit in range(10)],
}
# 16×16 spins, patch 2 → 64 tokens. diffusers needs num_embeds_ada_norm to build the model: 1 is a placeholder
# whose label table is replaced by the temperature embedder; "condition" (the trained T range) comes from the data.
ISING_DIT = {
    "transformer": MNIST_DIT["transformer"] | {"sample_size": 16, "num_embeds_ada_norm": 1},
    "steps": 8000,  # at 2500 the samples had speckle defects: Spearman(T, E) 0.72, binned |ΔE| 0.38 (bar: 0.9, 0.15)
    "batch_size": 128,
    "lr": 1e-3,
    "ema_decay": 0.999,
    "label_dropout": 0.1,
    "log_every": 100,
    "ising_symmetries": True,  # augment with the lattice's exact symmetries (see ising_symmetries)
    "class_names": None,
}


# ---------------------------------------------------------------------------------------------------
#                                  Original DiT initialisation, shared embedder
# ---------------------------------------------------------------------------------------------------


def initialize_weights(model: DiTTransformer2DModel) -> None:
    """The original DiT ``initialize_weights``, on the diffusers module names."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)
    hidden = model.inner_dim
    bound = math.sqrt(6 / (hidden + 3 * hidden))  # xavier of the original fused qkv Linear(D, 3D)
    for block in model.transformer_blocks:
        for projection in (block.attn1.to_q, block.attn1.to_k, block.attn1.to_v):
            nn.init.uniform_(projection.weight, -bound, bound)
        nn.init.zeros_(block.norm1.linear.weight)  # adaLN-Zero
        nn.init.zeros_(block.norm1.linear.bias)
    patch = model.pos_embed.proj.weight
    nn.init.xavier_uniform_(patch.view(patch.shape[0], -1))
    nn.init.zeros_(model.pos_embed.proj.bias)
    embedder = model.transformer_blocks[0].norm1.emb
    if isinstance(embedder.class_embedder, ContinuousConditionEmbedding):  # initialised like the timestep MLP
        nn.init.normal_(embedder.class_embedder.mlp.linear_1.weight, std=0.02)
        nn.init.normal_(embedder.class_embedder.mlp.linear_2.weight, std=0.02)
        nn.init.normal_(embedder.class_embedder.null_embedding, std=0.02)
    else:
        nn.init.normal_(embedder.class_embedder.embedding_table.weight, std=0.02)
    nn.init.normal_(embedder.timestep_embedder.linear_1.weight, std=0.02)
    nn.init.normal_(embedder.timestep_embedder.linear_2.weight, std=0.02)
    for layer in (model.proj_out_1, model.proj_out_2):
        nn.init.zeros_(layer.weight)
        nn.init.zeros_(layer.bias)


def share_embedder(model: DiTTransformer2DModel) -> None:
    """Points every block at block 0's embedder (one set of weights, as in the original DiT).

    Its own label dropout is switched off: it is called once per block, so it would drop different labels in
    each. The trainer drops labels itself, once per sample.
    """
    shared = model.transformer_blocks[0].norm1.emb
    if not isinstance(shared.class_embedder, ContinuousConditionEmbedding):  # the continuous one never drops
        shared.class_embedder.dropout_prob = 0.0
    for block in model.transformer_blocks[1:]:
        block.norm1.emb = shared


def build_transformer(config: dict, seed: int, condition: ConditionRange | None = None) -> DiTTransformer2DModel:
    """A freshly initialised DiT with one shared embedder; with ``condition``, a continuous-condition one."""
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**config)
    if condition is not None:
        install_condition_embedders([model.transformer_blocks[0].norm1.emb], condition)
    share_embedder(model)
    initialize_weights(model)
    return model


# ---------------------------------------------------------------------------------------------------
#                                           Training loop
# ---------------------------------------------------------------------------------------------------


def ising_symmetries(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Applies to each (1, L, L) spin image a random exact symmetry of the periodic Ising lattice.

    A global spin flip, a periodic translation, a rotation by k·90° and a transposition: each leaves the energy,
    |m| and the Boltzmann weight at every temperature unchanged (the data has periodic boundaries and ⟨m⟩ ≈ 0).
    """
    n, _, size, _ = x.shape
    signs = torch.randint(2, (n,), generator=generator) * 2 - 1  # (n,)
    shifts = torch.randint(size, (n, 2), generator=generator)  # (n, 2)
    turns = torch.randint(4, (n,), generator=generator)  # (n,)
    transpose = torch.randint(2, (n,), generator=generator).bool()  # (n,)
    out = torch.empty_like(x)
    for i in range(n):
        spins = (x[i] * signs[i]).roll(shifts[i].tolist(), dims=(1, 2)).rot90(int(turns[i]), dims=(1, 2))
        out[i] = spins.transpose(1, 2) if transpose[i] else spins  # (1, L, L)
    return out


def embedding_stats(model: DiTTransformer2DModel, t0: float, condition: ConditionRange | None = None) -> dict:
    """Mean off-diagonal cosine and mean nPR of c = y + t at t₀ and of y, over all classes (or the condition grid)."""
    num_classes = 0 if condition is not None else model.config.num_embeds_ada_norm
    bundle = Bundle("training", model.transformer_blocks[0].norm1.emb, num_classes, DDPM, condition=condition)
    row = {}
    for part, key in (("y+t", "c"), ("y", "y")):
        vectors = conditional_vectors(bundle, timesteps=t0, part=part)  # (n, d)
        row[f"cos_{key}"] = stats.mean_offdiag_cosine(vectors).item()
        row[f"npr_{key}"] = stats.mean_npr(vectors).item()
    return row


def train_dit(recipe: dict, images: torch.Tensor, labels: torch.Tensor, steps: int, seed: int, log_path: Path):
    """Trains a conditional ε-prediction DiT on (N, C, H, W) images in [-1, 1]; returns the EMA model.

    ``labels`` are class ids, or float condition values when the recipe has a ``"condition"`` range.
    """
    condition = ConditionRange(**recipe["condition"]) if recipe.get("condition") else None
    model = build_transformer(recipe["transformer"], seed, condition).train()
    ema = copy.deepcopy(model).eval()  # deepcopy keeps the embedder shared inside the copy
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=0)
    noise_scheduler = DDPMScheduler(**SCHEDULE)
    generator = torch.Generator().manual_seed(seed)
    null_label = NULL if condition is not None else model.config.num_embeds_ada_norm
    t0 = float(SCHEDULE["num_train_timesteps"] - 1)
    loss = torch.tensor(float("nan"))  # logged at step 0, before the first update
    with log_path.open("w", newline="") as handle:
        log = None
        bar = tqdm(range(steps + 1), desc="training")
        for step in bar:
            if step % recipe["log_every"] == 0 or step == steps:
                row = {"step": step, **embedding_stats(model, t0, condition)}
                row |= {f"{key}_ema": value for key, value in embedding_stats(ema, t0, condition).items()}
                log = log or csv.DictWriter(handle, fieldnames=[*row, "loss"])
                if step == 0:
                    log.writeheader()
                log.writerow(row | {"loss": loss.item()})
                handle.flush()
            if step == steps:
                break
            batch = torch.randint(len(images), (recipe["batch_size"],), generator=generator)
            x0, y = images[batch], labels[batch].clone()  # (B, C, H, W), (B,)
            if recipe.get("ising_symmetries"):
                x0 = ising_symmetries(x0, generator)
            y[torch.rand(len(y), generator=generator) < recipe["label_dropout"]] = null_label
            t = torch.randint(SCHEDULE["num_train_timesteps"], (len(y),), generator=generator)
            noise = torch.randn(x0.shape, generator=generator)
            eps = model(noise_scheduler.add_noise(x0, noise, t), timestep=t, class_labels=y).sample
            loss = F.mse_loss(eps, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters()):
                    p_ema.lerp_(p, 1 - recipe["ema_decay"])
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema


# ---------------------------------------------------------------------------------------------------
#                                     Saving into the package data
# ---------------------------------------------------------------------------------------------------


def record_sha256(name: str, sha256: str) -> None:
    manifest_path = CHECKPOINT_DIR / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest[name] = {"sha256": sha256}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def save_dit(name: str, model: DiTTransformer2DModel, recipe: dict, steps: int, seed: int) -> str:
    """Saves config, EMA weights (identical per-block embedder copies), scheduler and meta; returns sha256."""
    folder = CHECKPOINT_DIR / name
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}  # unties
    save_file(state, folder / "model.partial.safetensors")
    (folder / "model.partial.safetensors").replace(folder / "model.safetensors")  # never a half-written file
    config = {key: value for key, value in dict(model.config).items() if not key.startswith("_")}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    DDIMScheduler(**SCHEDULE, timestep_spacing="trailing", clip_sample=False).save_pretrained(folder / "scheduler")
    meta = {"class_names": recipe["class_names"], "condition": recipe.get("condition"), "steps": steps,
            "seed": seed, "recipe": {k: v for k, v in recipe.items() if k not in ("class_names", "condition")}}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    sha = sha256_of(folder / "model.safetensors")
    record_sha256(name, sha)
    return sha


def organism_data(name: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The training images in [-1, 1] (N, 1, H, W), their labels and the recipe of an embedded DiT organism."""
    if name == "mnist-dit":
        images, labels = data.load_mnist("train")
        return classifier.downsample(images) * 2 - 1, torch.as_tensor(labels), MNIST_DIT  # (60000, 1, 14, 14)
    ising = data.load_ising(ISING_DIT["transformer"]["sample_size"])
    condition = ConditionRange.of_values("temperature", ising.temperature)
    spins = torch.as_tensor(ising.spins, dtype=torch.float32)[:, None]  # (5000, 1, 16, 16) in {-1, +1}
    temperature = torch.as_tensor(ising.temperature, dtype=torch.float32)  # (5000,)
    return spins, temperature, ISING_DIT | {"condition": condition.as_dict()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=["mnist-dit", "ising-dit", "mnist-classifier"])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.name == "mnist-classifier":
        images, labels = data.load_mnist("train")
        model = classifier.train_classifier(classifier.downsample(images), torch.as_tensor(labels), seed=args.seed)
        record_sha256("mnist-classifier", classifier.save_classifier(model))
        test_images, test_labels = data.load_mnist("test")
        probs = classifier.predict(model, classifier.downsample(test_images))
        print(f"test accuracy: {(probs.argmax(-1).numpy() == test_labels).mean():.4f}")
        return
    images, labels, recipe = organism_data(args.name)
    steps = args.steps or recipe["steps"]
    folder = CHECKPOINT_DIR / args.name
    folder.mkdir(parents=True, exist_ok=True)
    ema = train_dit(recipe, images, labels, steps, args.seed, folder / "train_log.csv")
    print(f"saved {args.name} with sha256 {save_dit(args.name, ema, recipe, steps, args.seed)}")


if __name__ == "__main__":
    main()
