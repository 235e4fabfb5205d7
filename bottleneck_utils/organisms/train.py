"""The training loop of every organism (DDPM and flow objectives), resumable, and the install of a finished run.

The command lines are in :mod:`bottleneck_utils.organisms.cli`; the recipes in :mod:`bottleneck_utils.organisms.recipes`.
A run writes into its own folder (default ``runs/NAME``) and saves a resumable ``state.pt`` every 500 steps: run the
same command again to continue. Only an install, after training succeeds, replaces the shipped checkpoint in the
package data and its sha256 in the manifest: it first checks that the run is the registry's (recipe, seed, steps),
then stages the folder and the manifest and swaps both in, or leaves both as they were.

The DiT is a diffusers ``DiTTransformer2DModel`` initialised as in the original DiT (``initialize_weights``)
with ONE embedder shared by all blocks, as in the original code; it is saved as identical per-block copies,
the layout of the hub checkpoint. Every ``log_every`` steps :func:`stats.summary` of c = y + t at t₀, for the
raw and the EMA weights, goes into ``train_log.csv``.

A recipe with a ``condition`` trains a continuous-condition model (``ising-dit``): the label table is
replaced by :class:`bottleneck_utils.continuous.ContinuousConditionEmbedding`, dropped conditions become NaN (the
learned null vector), and the logged statistics are taken over a grid of the trained range.

A recipe with ``family="unet"`` (``mnist-unet``) trains a diffusers ``UNet2DModel`` from its ``unet`` config, with
diffusers' default initialisation except the class table when the recipe sets ``class_table_std`` (``mnist-unet``:
DiT's 0.02), run as a :class:`bottleneck_utils.unet.ConditionedUNet`; the rest of the loop is the same.
"""

from __future__ import annotations

import copy
import csv
import fcntl
import io
import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from time import perf_counter

import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from bottleneck_utils import adaln_code, integrity
from bottleneck_utils.continuous import NULL, ConditionRange, ContinuousConditionEmbedding, install_condition_embedders
from bottleneck_utils.embeddings import conditional_vectors, first_time_summary
from bottleneck_utils.images import write_atomically
from bottleneck_utils.integrity import CHECKPOINT_DIR, sha256_of
from bottleneck_utils.models import Bundle, TimeConvention, embedded_dir, objective_time, resolve_device
from bottleneck_utils.organisms import classifier, composite, data, recipes
from bottleneck_utils.organisms.recipes import Recipe
from bottleneck_utils.provenance import git_commit
from bottleneck_utils.unet import ConditionedUNet, build_unet

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}
class RunError(ValueError):
    """A run that cannot be resumed, checked or shipped; the message is one line that names the fix."""


# ---------------------------------------------------------------------------------------------------
#                                  Original DiT initialisation, shared embedder
# ---------------------------------------------------------------------------------------------------

EMBEDDING_INIT_STD = 0.02  # the original DiT's N(0, std²) of the label table and the timestep MLP's weights


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
        nn.init.normal_(embedder.class_embedder.mlp.linear_1.weight, std=EMBEDDING_INIT_STD)
        nn.init.normal_(embedder.class_embedder.mlp.linear_2.weight, std=EMBEDDING_INIT_STD)
        nn.init.normal_(embedder.class_embedder.null_embedding, std=EMBEDDING_INIT_STD)
    else:
        nn.init.normal_(embedder.class_embedder.embedding_table.weight, std=EMBEDDING_INIT_STD)
    nn.init.normal_(embedder.timestep_embedder.linear_1.weight, std=EMBEDDING_INIT_STD)
    nn.init.normal_(embedder.timestep_embedder.linear_2.weight, std=EMBEDDING_INIT_STD)
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


def build_model(recipe: Recipe, seed: int,
                condition: ConditionRange | None = None) -> DiTTransformer2DModel | ConditionedUNet:
    """The recipe's model, freshly initialised: a DiT (:func:`build_transformer`) or, for ``"family": "unet"``, a
    :class:`unet.ConditionedUNet` (diffusers' default initialisation; the class table N(0, std²) with the recipe's
    ``class_table_std``)."""
    if recipe.family != "unet":
        if recipe.class_table_std is not None:
            raise ValueError(f"class_table_std is a U-Net recipe's option; a DiT's table starts N(0, "
                             f"{EMBEDDING_INIT_STD}²) (initialize_weights): leave it None")
        return build_transformer(recipe.transformer, seed, condition)
    if condition is not None:
        raise ValueError("a U-Net recipe takes class labels only; drop its 'condition' or use a DiT recipe")
    return build_unet(recipe.unet, seed, recipe.class_table_std)


def conditioning_embedder(model: DiTTransformer2DModel | ConditionedUNet) -> nn.Module:
    """The module whose output is c: a DiT's shared ``transformer_blocks[0].norm1.emb``, a U-Net's ``embedder``."""
    return model.embedder if isinstance(model, ConditionedUNet) else model.transformer_blocks[0].norm1.emb


def class_count(model: DiTTransformer2DModel | ConditionedUNet) -> int:
    """The number of real classes; label ``class_count(model)`` is the CFG null class."""
    return model.num_classes if isinstance(model, ConditionedUNet) else model.config.num_embeds_ada_norm


# ---------------------------------------------------------------------------------------------------
#                     A bottleneck built into training: warm start, narrowing, L1 on c
# ---------------------------------------------------------------------------------------------------

PATH_POINTS = 100  # timesteps of the schedule at which silu(c) is collected for the initial P


def principal_basis(model: DiTTransformer2DModel, k: int, time: TimeConvention) -> torch.Tensor:
    """The top-k right singular vectors (k, D) of silu(c) over every label (null included) × :data:`PATH_POINTS`
    timesteps spread over the schedule; uncentred, so the shared direction of c is kept."""
    num_classes = model.config.num_embeds_ada_norm
    bundle = Bundle("narrowing", model.transformer_blocks[0].norm1.emb, num_classes, time,
                    device=next(model.parameters()).device)
    timesteps = torch.linspace(0, time.t_max, PATH_POINTS)
    if time.kind == "ddpm":
        timesteps = timesteps.round().unique()
    c = conditional_vectors(bundle, list(range(num_classes + 1)), timesteps.tolist(), include_null=True)
    vectors = torch.nn.functional.silu(c.reshape(-1, c.shape[-1])).double().cpu()  # (T·(n+1), D)
    return torch.linalg.svd(vectors, full_matrices=False).Vh[:k].float()  # (k, D)


def warm_start(model: DiTTransformer2DModel, name: str) -> None:
    """Loads the shipped organism ``name``'s weights (sha256-checked) into a model of the same configuration."""
    path = embedded_dir(name) / "model.safetensors"
    integrity.verified(name, path)
    fix = integrity.shipped_fix(name)
    integrity.load_weights(model, integrity.read_safetensors(path, fix), path, fix)


def prepare(model: DiTTransformer2DModel, recipe: Recipe, time: TimeConvention) -> DiTTransformer2DModel:
    """Applies a recipe's ``init_from`` (warm start) and ``code_width`` (narrowing at the principal basis)."""
    if recipe.init_from:
        warm_start(model, recipe.init_from)
    if recipe.code_width:
        adaln_code.narrow(model, principal_basis(model, recipe.code_width, time))
    return model


def l1_penalty(embedder: nn.Module, strength: float, timestep: torch.Tensor, labels: torch.Tensor):
    """``strength`` · mean |c| over the batch and the D coordinates of c = ``embedder(timestep, labels)`` (a recipe's
    ``l1_c``); 0 for a strength of 0."""
    if isinstance(strength, bool) or not isinstance(strength, int | float) or not strength >= 0:
        raise ValueError(f"the L1 strength λ (a recipe's l1_c) must be a number >= 0, got {strength!r}")
    if not strength:
        return 0.0
    return strength * embedder(timestep, labels, hidden_dtype=next(embedder.parameters()).dtype).abs().mean()


# ---------------------------------------------------------------------------------------------------
#                                  Objectives: DDPM ε and flow velocity
# ---------------------------------------------------------------------------------------------------


def ddpm_schedule(num_train_timesteps: int) -> dict:
    """DiT's linear β schedule for ``num_train_timesteps`` steps: β scaled by 1000/T, as in ADM/DiT's
    ``get_named_beta_schedule("linear")``, so a short schedule still ends at (almost) pure noise."""
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
        raise ValueError(f"train_timesteps must be an int >= 2, got {num_train_timesteps!r}")
    scale = 1000 / num_train_timesteps
    return {"num_train_timesteps": num_train_timesteps, "beta_schedule": "linear",
            "beta_start": scale * SCHEDULE["beta_start"], "beta_end": scale * SCHEDULE["beta_end"]}


def time_convention(recipe: Recipe) -> TimeConvention:
    """The time convention a recipe trains: DDPM over its ``train_timesteps``, or SiT's / REPA's flow time."""
    return objective_time(recipe.objective, recipe.train_timesteps)


def noisy_batch(recipe: Recipe, x0: torch.Tensor, generator: torch.Generator):
    """(x_t, t, target) for one batch of clean images x0 (B, C, H, W).

    DDPM: integer t in [0, T), x_t = √ᾱ x0 + √(1−ᾱ) ε, target ε. Flow, SiT's convention (noise at t = 0):
    x_t = t·x0 + (1 − t)·ε, target x0 − ε. REPA's (noise at t = 1): x_t = (1 − t)·x0 + t·ε, target ε − x0.
    Flow t ~ U[0, 1) is fed to the sinusoid unscaled, as SiT and REPA do.
    """
    objective = recipe.objective
    if objective == "ddpm":
        schedule = ddpm_schedule(recipe.train_timesteps)
        t = torch.randint(schedule["num_train_timesteps"], (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        return DDPMScheduler(**schedule).add_noise(x0, noise, t), t, noise
    t = torch.rand(len(x0), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    s = t.view(-1, *[1] * (x0.ndim - 1))  # (B, 1, 1, 1)
    if objective == "flow-sit":
        return s * x0 + (1 - s) * noise, t, x0 - noise
    return (1 - s) * x0 + s * noise, t, noise - x0


# ---------------------------------------------------------------------------------------------------
#                                     Data sources and logging
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


@dataclass
class TensorSource:
    """A fixed training set: (N, C, H, W) images in [-1, 1] and their labels (class ids or condition values)."""

    images: torch.Tensor
    labels: torch.Tensor
    symmetries: bool = False  # augment with the Ising lattice's exact symmetries

    def draw(self, generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = torch.randint(len(self.images), (n,), generator=generator)
        x0 = self.images[batch]
        return (ising_symmetries(x0, generator) if self.symmetries else x0), self.labels[batch].clone()


def embedding_summary(model: DiTTransformer2DModel | ConditionedUNet, time: TimeConvention,
                      condition: ConditionRange | None) -> dict:
    """:func:`stats.summary` of c = y + t at t₀ over all classes (or the condition grid) of a model in training."""
    num_classes = 0 if condition is not None else class_count(model)
    device = next(model.parameters()).device
    return first_time_summary(Bundle("training", conditioning_embedder(model), num_classes, time, condition=condition,
                                     device=device))


def write_log(path: Path, rows: list[dict]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            log = csv.DictWriter(handle, fieldnames=list(rows[0]))
            log.writeheader()
            log.writerows(rows)

    write_atomically(path, write)


def read_log(path: Path, fix: str) -> pd.DataFrame:
    """A run's ``train_log.csv`` as :func:`write_log` wrote it (one row per logged step, every field a number), or
    one line naming the file, what is wrong and ``fix``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is unreadable, ends inside a line (truncated), has no logged step, or a row whose
            fields are not as many numbers as the header names.
    """
    text = integrity.read_text(path, "the training log", fix)
    problem = _log_problem(text)
    if problem:
        raise ValueError(f"the training log {path} {problem}: it is truncated or damaged; {fix}")
    return pd.read_csv(io.StringIO(text))


def _log_problem(text: str) -> str | None:
    """What is wrong with the text of a training log, or None."""
    if not text.endswith("\n"):
        return "ends inside a line"
    header, *rows = list(csv.reader(io.StringIO(text)))
    if not rows or "step" not in header:
        return "has no step column or no logged step"
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header) or not all(_is_number(field) for field in row):
            return f"has {row!r} on line {line}, not {len(header)} numbers"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
#                                       Resumable training loop
# ---------------------------------------------------------------------------------------------------


def _save_state(path: Path, step: int, recipe: Recipe, seed: int, model, ema, optimizer, generator, rows, loss,
                segments):
    state = {"step": step, "recipe": recipe.as_dict(), "seed": seed, "model": model.state_dict(), "ema": ema.state_dict(),
             "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "rows": rows, "loss": loss, "segments": segments}
    write_atomically(path, lambda temporary: torch.save(state, temporary))


def _without_steps(recipe: Recipe) -> dict:
    """The recipe as saved in a state file, less its length: a longer run of the same recipe continues a shorter one
    (the learning rate is constant)."""
    return {k: v for k, v in recipe.as_dict().items() if k != "steps"}


STATE_KEYS = {"step", "recipe", "seed", "model", "ema", "optimizer", "generator", "rows", "loss"}


def _read_state(path: Path, fix: str, map_location="cpu") -> dict:
    """A run's ``state.pt`` (:func:`integrity.read_checkpoint`), or a RunError in one line naming it and ``fix``."""
    try:
        state = integrity.read_checkpoint(path, fix, map_location=map_location)
    except ValueError as error:
        raise RunError(str(error)) from None
    missing = sorted(STATE_KEYS - set(state)) if isinstance(state, dict) else sorted(STATE_KEYS)
    if missing:
        raise RunError(f"{path} lacks {missing}: it is not a training state this trainer wrote; {fix}")
    return state


def _resume(path: Path, recipe: Recipe, seed: int, steps: int, model, ema, optimizer, generator):
    state = _read_state(path, "delete it to start the run over (or pass a new --out folder)",
                        next(model.parameters()).device)
    same = _without_steps(Recipe.from_dict(state["recipe"], str(path))) == _without_steps(recipe)
    if not same or state["seed"] != seed:
        raise RunError(f"{path} holds a run of another recipe or seed; pass a new --out folder (or delete it)")
    if state["step"] > steps:
        raise RunError(f"{path} is already at step {state['step']} > the {steps} steps asked for")
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"].cpu())  # map_location moved it to the model's device
    return state["step"], state["rows"], state["loss"], state.get("segments", [])  # none before they were kept


def training_segment(device: torch.device, start: int) -> dict:
    """The provenance of the steps one process trains from ``start``: its device and matmul precision (the step
    range's end and the seconds are filled in at each checkpoint)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    precision = "tf32" if device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32 else "float32"
    return {"steps": [start, start], "device": f"{device.type} ({name})", "precision": precision, "seconds": 0.0}


def run_provenance(out_dir: Path, seed: int) -> dict:
    """``meta.json``'s provenance of the run in ``out_dir``: its seed, the device and precision of every step range
    (from ``state.pt``), the code's commit and the wall time; a run without a state has no step ranges."""
    path = out_dir / "state.pt"
    segments = _read_state(path, f"delete {out_dir} and train the run again")["segments"] if path.is_file() else []
    return {"seed": seed, "segments": [{k: v for k, v in s.items() if k != "seconds"} for s in segments],
            "commit": git_commit(), "wall_time_s": round(sum(s["seconds"] for s in segments))}


def update(model, ema, optimizer, loss: torch.Tensor, ema_decay: float) -> float:
    """One optimizer step on ``loss``, then the EMA update ``ema ← ema + (1 − decay)(model − ema)``; returns the loss."""
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():  # one multi-tensor lerp: a kernel launch per parameter dominated small steps on cuda
        torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - ema_decay)
    return loss.item()


def train_dit(recipe: Recipe, source, steps: int, seed: int, out_dir: Path, device: str = "cpu",
              checkpoint_every: int = 500, progress: bool = True) -> DiTTransformer2DModel | ConditionedUNet:
    """Trains a conditional DiT (or a U-Net recipe's model); resumes from ``out_dir/state.pt`` when it exists;
    returns the EMA model.

    Args:
        recipe: the organism's :class:`recipes.Recipe` (its objective, its DDPM schedule's length, a continuous
            condition's range, a U-Net's config).
        source: draws ``(x0, labels)`` batches: a :class:`TensorSource` or :class:`composite.CompositeDigits`.
        steps: optimizer steps in all (a resumed run continues up to this many).
        seed: seeds the initialisation and every random draw, so a resumed run equals an uninterrupted one.
        out_dir: where ``state.pt`` (every ``checkpoint_every`` steps) and ``train_log.csv`` go.
        device: ``"cpu"`` or ``"cuda"``; data and noise are drawn on the CPU either way.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    condition = ConditionRange(**recipe.condition) if recipe.condition else None
    time = time_convention(recipe)
    device = resolve_device(device)
    model = prepare(build_model(recipe, seed, condition), recipe, time).to(device).train()
    ema = copy.deepcopy(model).eval()  # deepcopy keeps the embedder shared inside the copy
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0)
    generator = torch.Generator().manual_seed(seed)
    null_label = NULL if condition is not None else class_count(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path, start, rows, loss, segments = out_dir / "state.pt", 0, [], float("nan"), []  # NaN: no loss yet
    if state_path.is_file():
        start, rows, loss, segments = _resume(state_path, recipe, seed, steps, model, ema, optimizer, generator)
    segment, began = training_segment(device, start), perf_counter()
    bar = tqdm(range(start, steps + 1), desc=f"training {out_dir.name}", initial=start, total=steps + 1,
               disable=not progress)
    for step in bar:
        if step % recipe.log_every == 0 or step == steps:
            row = {"step": step, **embedding_summary(model, time, condition)}
            rows.append(row | {f"{k}_ema": v for k, v in embedding_summary(ema, time, condition).items()} |
                        {"loss": loss})
            write_log(out_dir / "train_log.csv", rows)
        if step == steps:
            break
        x0, y = source.draw(generator, recipe.batch_size)  # (B, C, H, W), (B,)
        y[torch.rand(len(y), generator=generator) < recipe.label_dropout] = null_label
        x_t, t, target = noisy_batch(recipe, x0, generator)
        t, y = t.to(device), y.to(device)
        prediction = model(x_t.to(device), timestep=t, class_labels=y).sample
        objective = F.mse_loss(prediction, target.to(device)) + l1_penalty(conditioning_embedder(model), recipe.l1_c, t, y)
        loss = update(model, ema, optimizer, objective, recipe.ema_decay)
        bar.set_postfix(loss=f"{loss:.4f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            segment |= {"steps": [start, step + 1], "seconds": perf_counter() - began}
            _save_state(state_path, step + 1, recipe, seed, model, ema, optimizer, generator, rows, loss,
                        segments + [segment])
    return ema


# ---------------------------------------------------------------------------------------------------
#                            Saving a run, and installing it into the package data
# ---------------------------------------------------------------------------------------------------


def save_run(out_dir: Path, model: DiTTransformer2DModel | ConditionedUNet, recipe: Recipe, steps: int,
             seed: int) -> None:
    """Writes the EMA weights (a DiT's with identical per-block embedder copies, a U-Net's under ``UNet2DModel``'s own
    keys), the conditioning embedder alone, the DiT's or ``UNet2DModel``'s config, the scheduler (DDPM organisms)
    and meta into ``out_dir``, each file atomically; ``meta.json`` last, so it never describes weights not yet saved."""
    network = model.unet if isinstance(model, ConditionedUNet) else model
    state = {key: value.detach().cpu().clone().contiguous() for key, value in network.state_dict().items()}  # unties
    write_atomically(out_dir / "model.safetensors", lambda temporary: save_file(state, temporary))
    embedder = {k: v.detach().cpu().contiguous() for k, v in conditioning_embedder(model).state_dict().items()}
    write_atomically(out_dir / "embedder.safetensors", lambda temporary: save_file(embedder, temporary))
    config = {key: value for key, value in dict(network.config).items() if not key.startswith("_")}
    write_atomically(out_dir / "config.json", lambda temporary: temporary.write_text(json.dumps(config, indent=2)))
    if recipe.objective == "ddpm":  # what save_pretrained writes, through a temporary file
        scheduler = DDIMScheduler(**ddpm_schedule(recipe.train_timesteps), timestep_spacing="trailing", clip_sample=False)
        write_atomically(out_dir / "scheduler" / DDIMScheduler.config_name, scheduler.to_json_file)
    saved = recipe.as_dict()
    meta = {"class_names": saved.pop("class_names"), "condition": saved.pop("condition"), "steps": steps,
            "provenance": run_provenance(out_dir, seed),
            "seed": seed, "recipe": saved}
    write_atomically(out_dir / "meta.json", lambda temporary: temporary.write_text(json.dumps(meta, indent=2) + "\n"))


def saved_run(out_dir: Path) -> tuple[Recipe, dict]:
    """The recipe and the meta (steps, seed) that a saved run's ``meta.json`` holds.

    Raises:
        FileNotFoundError: the run has no ``meta.json``.
        RunError: it is not a ``meta.json`` that :func:`save_run` wrote.
    """
    path = out_dir / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} has no meta.json: finish the run before installing it")
    fix = f"delete {out_dir} and train the run again"
    try:
        meta = integrity.read_json(path, "the run's meta", fix)
    except ValueError as error:
        raise RunError(str(error)) from None
    try:
        values = meta["recipe"] | {"class_names": meta["class_names"], "condition": meta["condition"]}
        return Recipe.from_dict(values, str(path)), meta
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"{path} is not a run's meta ({type(error).__name__}: {error}): {fix}") from None


def _differences(saved: dict, expected: dict) -> str:
    """``key saved ≠ expected`` for each field in which two recipes (as dicts) differ."""
    return ", ".join(f"{key} {saved[key]!r} ≠ {expected[key]!r}" for key in expected if saved[key] != expected[key])


def _check_state(out_dir: Path, expected: Recipe, seed: int, steps: int, retrain: str) -> None:
    """Raises RunError when ``out_dir/state.pt`` (if kept) holds another recipe or seed, or fewer steps than
    ``meta.json``: the folder then mixes two runs."""
    path = out_dir / "state.pt"
    if not path.is_file():
        return
    state = _read_state(path, retrain)
    try:
        recipe = Recipe.from_dict(state["recipe"], str(path)).as_dict()
    except (KeyError, TypeError, ValueError) as error:  # not a state that train_dit saved
        raise RunError(f"{path} is unreadable ({type(error).__name__}): {retrain}") from None
    if recipe != expected.as_dict() or state["seed"] != seed or state["step"] < steps:
        raise RunError(f"{path} (recipe, seed {state['seed']}, step {state['step']}) is not the run meta.json describes "
                       f"(the folder mixes two runs): {retrain}")


def check_run(out_dir: Path, name: str, allow_short: bool = False) -> None:
    """Checks that ``out_dir`` holds a run that may ship as ``name``, before anything is shipped.

    Its ``meta.json`` (and ``state.pt``, when kept) must hold the registry's recipe of ``name``
    (:func:`shipped_recipe`), its seed (:func:`recipes.seed_of`) and all the recipe's steps; fewer steps (a smoke run) only with
    ``allow_short``.

    Raises:
        RunError: one line naming the fix (delete the run and train it again, or pass ``--install-short``).
    """
    expected = shipped_recipe(name)
    saved, meta = saved_run(out_dir)
    retrain = f"delete {out_dir} and train {name} again"
    if saved.as_dict() != expected.as_dict():
        raise RunError(f"{out_dir} holds a run of another recipe than {name}'s "
                       f"({_differences(saved.as_dict(), expected.as_dict())}): {retrain}")
    seed = recipes.seed_of(name)
    if meta.get("seed") != seed:
        raise RunError(f"{out_dir} was trained with seed {meta.get('seed')!r}, not {name}'s seed {seed}: {retrain} "
                       f"with --seed {seed}")
    steps = meta.get("steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 < steps <= expected.steps:
        raise RunError(f"{out_dir} was trained for {steps!r} steps, not {name}'s {expected.steps:,}: {retrain}")
    _check_state(out_dir, expected, seed, steps, retrain)
    if steps < expected.steps and not allow_short:
        raise RunError(f"{out_dir} was trained for {steps:,} of {name}'s {expected.steps:,} steps (a smoke run?): "
                       f"train it to the end (the same command resumes it), or ship it anyway with --install-short "
                       f"(install(..., allow_short=True))")


def _manifest_text(name: str, sha256: str) -> str:
    """The manifest with ``name``'s sha256 recorded (the others' kept), as the text of ``manifest.json``."""
    path = CHECKPOINT_DIR / "manifest.json"
    try:
        manifest = integrity.read_json(path, "the checkpoint manifest", integrity.RESTORE_MANIFEST) \
            if path.is_file() else {}
    except ValueError as error:
        raise RunError(str(error)) from None
    manifest[name] = {"sha256": sha256}
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


@contextmanager
def _checkpoints_locked():
    """Holds an exclusive lock on :data:`CHECKPOINT_DIR`: two installs never interleave their manifest updates."""
    CHECKPOINT_DIR.mkdir(parents=True, exist_ok=True)
    handle = os.open(CHECKPOINT_DIR, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _stage(out_dir: Path, files: list[str], staged: Path) -> Path:
    """Copies ``out_dir``'s ``files`` (plain files or folders) into the new folder ``staged``."""
    staged.mkdir()
    for f in files:
        if (out_dir / f).is_dir():
            shutil.copytree(out_dir / f, staged / f)
        else:
            shutil.copy2(out_dir / f, staged / f)
    return staged


def _swap(staged: Path, target: Path, backup: Path, manifest: Path) -> None:
    """Moves ``target`` aside to ``backup``, then ``staged`` onto ``target`` and the staged ``manifest`` onto the
    manifest (three renames); on any failure, or an interrupt, puts the shipped folder back."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shipped = target.exists()
    if shipped:
        target.rename(backup)
    moved = False
    try:
        staged.rename(target)
        moved = True
        manifest.replace(CHECKPOINT_DIR / "manifest.json")
    except BaseException:
        if moved:
            target.rename(staged)
        if shipped:
            backup.rename(target)
        raise


def ship(out_dir: Path, files: list[str], name: str, hashed: str) -> str:
    """Replaces ``checkpoints/<name>`` by ``out_dir``'s ``files`` and records the sha256 of ``hashed`` (one of them)
    in the manifest, as one transaction; returns the sha256.

    The new folder and the new manifest are written under temporary names inside :data:`CHECKPOINT_DIR`, the
    staged ``hashed`` is checked against the run's, and only then are both swapped in. On any failure the shipped
    folder and the manifest are left byte-identical.

    Raises:
        RunError: the copy or the swap failed (disk full, the staged copy differs); one line naming the fix.
    """
    expected = sha256_of(out_dir / hashed)
    with _checkpoints_locked():
        work = Path(tempfile.mkdtemp(prefix=".install-", dir=CHECKPOINT_DIR))
        try:
            staged = _stage(out_dir, files, work / "new")
            if sha256_of(staged / hashed) != expected:
                raise RunError(f"the staged copy of {out_dir / hashed} differs from it (a failing disk?); nothing "
                               f"shipped changed: check the disk and install {name} again")
            text = _manifest_text(name, expected)
            write_atomically(work / "manifest.json", lambda temporary: temporary.write_text(text))
            _swap(staged, CHECKPOINT_DIR / name, work / "old", work / "manifest.json")
        except OSError as error:
            raise RunError(f"installing {name} failed ({error}); nothing shipped changed: fix that (free disk space?) "
                           f"and install {name} again") from error
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return expected


def install(out_dir: Path, name: str, weights: bool = True, allow_short: bool = False) -> str:
    """Ships a finished run as ``checkpoints/<name>`` (replacing what is there) and records its sha256, after
    :func:`check_run`; the copy and the manifest update are one transaction (:func:`ship`).

    With ``weights=False`` only the embedder, the log and the meta are shipped (a ladder rung that no pruning run
    uses); the recorded sha256 is then the embedder's. A ``quality.json`` (the measured quality) goes with it.
    ``allow_short`` ships a run shorter than its recipe (a smoke run). Returns the sha256.
    """
    files = ["meta.json", "train_log.csv", "embedder.safetensors", "config.json", "quality.json"]
    files += ["model.safetensors", "scheduler"] if weights else []
    missing = [f for f in files if not (out_dir / f).exists() and f not in ("scheduler", "quality.json")]
    if missing:
        raise FileNotFoundError(f"{out_dir} lacks {missing}: finish the run before installing it")
    check_run(out_dir, name, allow_short)
    hashed = "model.safetensors" if weights else "embedder.safetensors"
    return ship(out_dir, [f for f in files if (out_dir / f).exists()], name, hashed)


# ---------------------------------------------------------------------------------------------------
#                                          The organisms
# ---------------------------------------------------------------------------------------------------


def shipped_recipe(name: str) -> Recipe:
    """The recipe a run must hold to ship as ``name``: the registry's (:func:`recipes.recipe_of`), with
    ``ising-dit``'s trained temperature range taken from its data, as :func:`organism` sets it."""
    recipe = recipes.recipe_of(name)
    if name != "ising-dit":
        return recipe
    return _with_trained_range(recipe, data.load_ising(recipe.transformer["sample_size"]))


def _with_trained_range(recipe: Recipe, ising: data.IsingData) -> Recipe:
    """``recipe`` with the temperature range of the Ising data as its condition."""
    return replace(recipe, condition=ConditionRange.of_values("temperature", ising.temperature).as_dict())


def organism(name: str) -> tuple[Recipe, object]:
    """The recipe and data source of an embedded organism, a ladder rung or a beyond variant (one-line ValueError
    for another name). A continuous-condition recipe gets its trained range from the data here."""
    recipe = recipes.recipe_of(name)
    if recipe.cell is not None:  # a composite-digit rung
        images, labels = data.load_mnist("train")
        return recipe, composite.CompositeDigits(composite.digits_at(images, recipe.cell), torch.as_tensor(labels),
                                                 recipe.classes)
    if name == "ising-dit":  # temperature-conditioned spins
        ising = data.load_ising(recipe.transformer["sample_size"])
        spins = torch.as_tensor(ising.spins, dtype=torch.float32)[:, None]  # (5000, 1, 16, 16) in {-1, +1}
        temperature = torch.as_tensor(ising.temperature, dtype=torch.float32)  # (5000,)
        return _with_trained_range(recipe, ising), TensorSource(spins, temperature, recipe.ising_symmetries)
    images, labels = data.load_mnist("train")
    return recipe, TensorSource(classifier.downsample(images) * 2 - 1, torch.as_tensor(labels))  # (60000, 1, 14, 14)


def allow_tf32_on_cuda(device: str) -> None:
    """On cuda, lets float32 matmuls run in TF32, as the original DiT's ``train.py`` does; cpu is left as it is."""
    if resolve_device(device).type == "cuda":  # a bad device fails here in one line, as in train_dit
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
