"""A GPU dress rehearsal: every chapter, the sampler's speed and the masked sampler's overhead, on random weights of
the real sizes, so that the day a GPU is lent the book's GPU path has already been run once end to end.

    python tools/gpu_rehearsal.py --device cuda --out results/gpu_rehearsal [--budget-s 480] [--chapters ...]
    python tools/gpu_rehearsal.py --device cpu --size tiny --out /tmp/rehearsal --chapters similarity --models dit

Nothing is downloaded. The script builds its own checkpoints from configs, in ``OUT/work`` (removed at the end
unless ``--keep-work``):

* ``dit-xl-2-256/``: a diffusers DiT pipeline folder like ``facebook/DiT-XL-2-256``'s (``DiTTransformer2DModel``
  16 heads × 72, 28 layers, 32×32×4 latents, patch 2, 1000 classes; ``AutoencoderKL`` with Stable Diffusion's VAE
  config; a DDIM scheduler; ``model_index.json`` with ``id2label``);
* ``SiT-XL-2-256x256.pt``: SiT-XL/2's EMA state dict with the upstream key names, saved bare, as SiT released it;
* ``repa-sit-xl-2-256.pt``: REPA's SiT-XL/2 (no learned σ, one projector MLP to DINOv2-B's 768 dims) saved the way
  REPA's ``train.py`` saves, ``{"model", "ema", "opt", "args", "steps"}``.

``--size tiny`` builds the same layouts (1000 classes, latent channels 4 → 8, patch 2, the same key names) at a
toy width, for a CPU. Then, each step timed and recorded, a failure recorded and the next step run:

1. ``load``: every checkpoint through ``models.load`` (the ``.pt`` files with ``full=True``).
2. ``throughput``: ``sampling.sample`` on the DiT folder, images/s at 50 steps with CFG 1.5, under bfloat16
   autocast and in float32 with TF32 matmuls on (``torch.backends.cuda.matmul.allow_tf32``).
3. ``mask_overhead``: the same sampler with a per-sample tail mask at every step (38.94% of c, Table 2's share)
   and without, timed alternately; the ratio of the medians must stay ≤ 1.03 at ``--size xl`` (at tiny sizes the
   hook's fixed cost outweighs a toy forward, so the ratio is recorded only).
4. ``fid5k``: one FID-5K point (5000 images, 50 steps, CFG: 2 forwards per image and step) extrapolated from the
   measured images/s, against the FLOP limit ``5000 × 50 × 2 × F / P``, where F is one forward's FLOPs
   (2 × the multiply-adds of :func:`dit_forward_macs`: 118.6 G for DiT-XL/2, about 237 GFLOP) and P the measured
   matmul FLOP/s of the same precision (an 8192² GEMM on cuda). The VAE decode is in the measured time, not in F;
   Inception features are in neither.
5. ``chapters``: every chapter through papermill in a fresh kernel (one at a time), with ``device``: similarity and
   head_tail on each checkpoint (``family=`` for the ``.pt`` files), pruning on the DiT folder at ``--samples``
   samples per setting against a random-image reference ``.npz``, the chapters that run on the shipped organisms
   as they are. Each records its wall time and, from a cell appended to the kernel, ``torch.cuda``'s peak
   allocated memory (and the kernel's peak RSS).

On a short lease, split it: the pruning chapter's statistics (a clean-fid ``sqrtm`` of a 2048² matrix per setting,
about 20 settings, and the bootstrap's eigendecompositions) run on the host's CPU whatever the device, and took over
35 minutes on one shared CPU thread at tiny sizes, so give it a call of its own (``--chapters pruning --skip load
throughput mask_overhead fid5k``) after one with ``--chapters similarity head_tail`` and the speed steps.

It writes ``OUT/report.json``, ``OUT/report.md`` (the tables of the reproducibility appendix) and the executed
notebooks under ``OUT/notebooks/``; the exit status is nonzero when any step failed or was skipped for
``--budget-s``. This is build tooling for a source checkout, not part of the importable package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package of this checkout, installed or not

from bottleneck_utils.chapters import report, reproducibility  # after the path is set

MODELS = ("dit", "sit", "repa")
# the chapters that take a model of their own (their parameters cells declare ``model``, and ``family`` for .pt
# files), and which of the rehearsal's checkpoints each can run: pruning samples, and a .pt loads its embedders only
MODEL_CHAPTERS = {"similarity": MODELS, "head_tail": MODELS, "pruning": ("dit",)}
FID_IMAGES, FID_STEPS, FID_CFG = 5000, 50, 1.5  # one FID-5K point as the paper's DiT-XL/2 rows sample it
DIT_XL_MACS = 118.6e9  # the DiT paper's "Gflops" of DiT-XL/2 at 256 px (multiply-adds of one forward)
TAIL_SHARE = 0.3894  # Table 2: τ 0.01 removed 448 of 1152 coordinates of REPA-XL's c
OVERHEAD_LIMIT = 1.03
SD_VAE = {  # Stable Diffusion's VAE (stabilityai/sd-vae-ft-ema, the VAE of facebook/DiT-XL-2-256)
    "in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2,
    "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 32, "sample_size": 256, "scaling_factor": 0.18215,
}
TINY_VAE = {"in_channels": 3, "out_channels": 3, "down_block_types": ["DownEncoderBlock2D"] * 2,
            "up_block_types": ["UpDecoderBlock2D"] * 2, "block_out_channels": [8, 8], "layers_per_block": 1,
            "latent_channels": 4, "norm_num_groups": 4, "sample_size": 8, "scaling_factor": 0.18215}
SIZES = {
    # hidden, depth, heads, latent side, patch, classes, VAE, REPA's projector (width, z dim); then each size's batch,
    # timed repeats and pruning samples of the speed steps, GEMM side of the matmul peak, and head_tail's counts
    "xl": {"hidden": 1152, "depth": 28, "heads": 16, "latent": 32, "patch": 2, "classes": 1000, "vae": SD_VAE,
           "projector": (2048, 768), "batch": 32, "repeats": 3, "samples": 32, "gemm": 8192, "probe_timesteps": 8,
           "tsne_points": 500},
    # tiny: 128 wide, so that the head_tail chapter's 2% head has the 2 coordinates its t-SNE (PCA init) needs
    "tiny": {"hidden": 128, "depth": 2, "heads": 2, "latent": 4, "patch": 2, "classes": 1000, "vae": TINY_VAE,
             "projector": (64, 32), "batch": 4, "repeats": 2, "samples": 4, "gemm": 256, "probe_timesteps": 2,
             "tsne_points": 100},
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
RECORD_TAG = "gpu-rehearsal"
LEFT_OUT = "left out (--skip)"


# ---------------------------------------------------------------------------------------------------
#                                        Pure helpers (tested fast)
# ---------------------------------------------------------------------------------------------------


def dit_forward_macs(hidden: int, depth: int, tokens: int, patch: int = 2, in_channels: int = 4,
                     out_channels: int = 8, freq_dim: int = 256) -> int:
    """Multiply-adds of one DiT forward of one image: the patch embedding, the timestep MLP, per block the qkv,
    output and 4×-wide MLP projections of every token (12 D²), attention (2 N² D) and the adaLN projection of c
    (6 D², once per image), and the final layer (its adaLN 2 D² and the linear map to the patches).

    DiT-XL/2 at 256 px (D 1152, 28 blocks, 256 tokens) gives 118.6 G, the DiT paper's figure."""
    if min(hidden, depth, tokens, patch, in_channels, out_channels, freq_dim) < 1:
        raise ValueError("every size must be >= 1")
    embed = tokens * in_channels * patch**2 * hidden + freq_dim * hidden + hidden**2
    blocks = depth * (tokens * 12 * hidden**2 + 2 * tokens**2 * hidden + 6 * hidden**2)
    final = 2 * hidden**2 + tokens * hidden * patch**2 * out_channels
    return embed + blocks + final


def fid_point_estimate(images_per_s: float, flop_per_forward: float, peak_flop_s: float, *,
                       images: int = FID_IMAGES, steps: int = FID_STEPS, cfg: bool = True) -> dict:
    """One FID point's sampling time extrapolated from a measured images/s, beside its FLOP limit.

    ``forwards = images × steps × (2 with CFG)``; ``limit_s = forwards × flop_per_forward / peak_flop_s``;
    ``estimate_s = images / images_per_s``; ``efficiency = limit_s / estimate_s`` (the share of the measured matmul
    peak the sampler reaches in the transformer; the VAE decode counts in the time only)."""
    if not (images_per_s > 0 and flop_per_forward > 0 and peak_flop_s > 0) or min(images, steps) < 1:
        raise ValueError(f"images/s, FLOP per forward and peak FLOP/s must be > 0, got {images_per_s}, "
                         f"{flop_per_forward}, {peak_flop_s}")
    forwards = images * steps * (2 if cfg else 1)
    limit = forwards * flop_per_forward / peak_flop_s
    estimate = images / images_per_s
    return {"images": images, "steps": steps, "cfg": cfg, "forwards": forwards, "flop": forwards * flop_per_forward,
            "estimate_s": estimate, "limit_s": limit, "efficiency": limit / estimate,
            "formula": "limit_s = images x steps x (2 with CFG) x FLOP per forward / measured matmul FLOP/s; "
                       "estimate_s = images / measured images/s"}


def one_line(error: BaseException) -> str:
    """``Type: first line`` of an exception (papermill's: the failing cell's exception name and value)."""
    name = getattr(error, "ename", None) or type(error).__name__
    text = str(getattr(error, "evalue", None) or error)
    line = next((part.strip() for part in text.splitlines() if part.strip() and set(part.strip()) != {"-"}), "")
    return f"{name}: {line}"[:300]


def failures(result: dict) -> list[str]:
    """One line per step (and chapter run) of a report that did not end ``ok`` (a step left out by ``--skip``
    is no failure)."""
    lines = [f"{name}: {step['status']} ({step.get('error', '')})" for name, step in result["steps"].items()
             if step["status"] not in ("ok", LEFT_OUT)]
    lines += [f"chapter {run['run']}: {run['status']} ({run.get('error', '')})" for run in result["chapters"]
              if run["status"] != "ok"]
    return lines


def write_report(result: dict, out: Path) -> tuple[Path, Path]:
    """Writes ``out/report.json`` and ``out/report.md`` (the appendix's tables); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "report.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = out / "report.md"
    table.write_text(reproducibility.rehearsal_markdown(result))
    return path, table


def chapter_plan(chapters: list[str], models: list[str], size: str, device: str, paths: dict[str, str],
                 samples: int, reference: str) -> list[dict]:
    """The papermill runs: ``{"run", "chapter", "parameters"}`` for each chapter (× checkpoint, for a model chapter).

    Raises:
        ValueError: an unknown chapter, or a model chapter none of whose checkpoints was selected.
    """
    known = report.chapters()
    unknown = [name for name in chapters if name not in known]
    if unknown:
        raise ValueError(f"unknown chapters {unknown}; choose from {known}")
    spec = SIZES[size]
    runs = []
    for name in chapters:
        if name not in MODEL_CHAPTERS:
            runs.append({"run": name, "chapter": name, "parameters": {"device": device}})
            continue
        chosen = [model for model in MODEL_CHAPTERS[name] if model in models]
        if not chosen:
            raise ValueError(f"chapter {name} runs on {list(MODEL_CHAPTERS[name])}; --models selected {models}")
        for model in chosen:
            parameters = {"model": paths[model], "device": device}
            if name in ("similarity", "head_tail") and model != "dit":
                parameters["family"] = model  # a .pt's time convention (its file name need not tell)
            if name == "head_tail":
                parameters |= {"probe_timesteps": spec["probe_timesteps"], "tsne_points": spec["tsne_points"]}
            if name == "pruning":  # reduced counts: an FID point's machinery, not its statistics
                parameters |= {"n_samples": samples, "n_boot": 2, "noise_seeds": [1], "reference_stats": reference}
            runs.append({"run": f"{name}[{model}]", "chapter": name, "parameters": parameters})
    return runs


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="checkpoint sizes: xl (the real ones; default on cuda) or tiny (default on cpu)")
    parser.add_argument("--out", type=Path, required=True, help="folder of report.json, report.md, notebooks/")
    parser.add_argument("--chapters", nargs="+", default=None, help="default: every chapter of _toc.yml")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS),
                        help="the checkpoints the model chapters run on")
    parser.add_argument("--budget-s", type=positive_float, default=None,
                        help="wall-time budget: steps that would start after it are skipped (and fail the run)")
    parser.add_argument("--samples", type=positive_int, default=None, help="pruning samples per setting")
    parser.add_argument("--batch", type=positive_int, default=None, help="images per batch of the speed steps")
    parser.add_argument("--repeats", type=positive_int, default=None, help="timed repeats of the speed steps")
    parser.add_argument("--skip", nargs="+", default=[], choices=("load", "throughput", "mask_overhead", "fid5k",
                                                                  "chapters"), help="steps to leave out")
    parser.add_argument("--keep-work", action="store_true", help="keep OUT/work (the built checkpoints)")
    args = parser.parse_args(argv)
    args.size = args.size or ("xl" if args.device == "cuda" else "tiny")
    args.chapters = args.chapters or report.chapters()
    try:  # an unknown chapter, or a model chapter without a checkpoint it runs on, before anything is built
        chapter_plan(args.chapters, args.models, args.size, args.device, dict.fromkeys(MODELS, ""), 1, "")
    except ValueError as error:
        parser.error(str(error))
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file")
    return args


# ---------------------------------------------------------------------------------------------------
#                                      Building the checkpoints
# ---------------------------------------------------------------------------------------------------


def _sincos_1d(embed_dim: int, positions):
    import numpy as np

    omega = 1.0 / 10000 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed(embed_dim: int, grid_size: int):
    """DiT's fixed ``pos_embed`` (MAE's ``get_2d_sincos_pos_embed``), (1, grid², D) float32."""
    import numpy as np
    import torch

    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)))
    grid = grid.reshape(2, 1, grid_size, grid_size)  # w goes first, as upstream
    table = np.concatenate([_sincos_1d(embed_dim // 2, grid[0]), _sincos_1d(embed_dim // 2, grid[1])], axis=1)
    return torch.from_numpy(table).float()[None]


def original_state_dict(spec: dict, learn_sigma: bool, projector: tuple[int, int] | None, device: str, seed: int):
    """A random state dict with the upstream SiT/REPA key names (``models.py`` / REPA's ``models/sit.py``), on CPU.

    Weights are drawn like 1/√fan_in on ``device`` (fast on a GPU) and the adaLN layers are non-zero, so that c
    changes the output; ``projector`` = (projector dim, z dim) adds REPA's ``projectors.0.{0,2,4}``."""
    import torch

    gen = torch.Generator(device=device).manual_seed(seed)
    hidden, patch, channels = spec["hidden"], spec["patch"], 4

    def rand(*shape, scale):
        return (torch.randn(*shape, generator=gen, device=device) * scale).cpu()

    def linear(prefix, out_f, in_f, gain=1.0):
        state[prefix + ".weight"] = rand(out_f, in_f, scale=gain / math.sqrt(in_f))
        state[prefix + ".bias"] = rand(out_f, scale=0.02)

    state = {"x_embedder.proj.weight": rand(hidden, channels, patch, patch, scale=1 / math.sqrt(channels * patch**2)),
             "x_embedder.proj.bias": rand(hidden, scale=0.02),
             "pos_embed": sincos_pos_embed(hidden, spec["latent"] // patch)}
    linear("t_embedder.mlp.0", hidden, 256)
    linear("t_embedder.mlp.2", hidden, hidden)
    state["y_embedder.embedding_table.weight"] = rand(spec["classes"] + 1, hidden, scale=1.0)
    for i in range(spec["depth"]):
        block = f"blocks.{i}."
        linear(block + "attn.qkv", 3 * hidden, hidden)
        linear(block + "attn.proj", hidden, hidden)
        linear(block + "mlp.fc1", 4 * hidden, hidden)
        linear(block + "mlp.fc2", hidden, 4 * hidden)
        linear(block + "adaLN_modulation.1", 6 * hidden, hidden, gain=0.3)
    if projector is not None:
        width, z_dim = projector
        linear("projectors.0.0", width, hidden)
        linear("projectors.0.2", width, width)
        linear("projectors.0.4", z_dim, width)
    linear("final_layer.adaLN_modulation.1", 2 * hidden, hidden, gain=0.3)
    linear("final_layer.linear", patch**2 * channels * (2 if learn_sigma else 1), hidden)
    return state


def build_dit_folder(folder: Path, spec: dict, device: str, seed: int = 0) -> Path:
    """A diffusers DiT pipeline folder like ``facebook/DiT-XL-2-256``'s (random weights, built on ``device``)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

    from bottleneck_utils.models import tie_embedder_copies

    torch.manual_seed(seed)
    with torch.device(device):  # a GPU initialises 675M weights in a moment; the CPU takes a while
        transformer = DiTTransformer2DModel(
            num_attention_heads=spec["heads"], attention_head_dim=spec["hidden"] // spec["heads"], in_channels=4,
            out_channels=8, num_layers=spec["depth"], sample_size=spec["latent"], patch_size=spec["patch"],
            num_embeds_ada_norm=spec["classes"])
        vae = AutoencoderKL(**spec["vae"])
    tie_embedder_copies(transformer).to("cpu").save_pretrained(folder / "transformer")
    vae.to("cpu").save_pretrained(folder / "vae")
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False).save_pretrained(
        folder / "scheduler")
    index = {"_class_name": "DiTPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
             "transformer": ["diffusers", "DiTTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
             "id2label": {str(i): f"class {i}" for i in range(spec["classes"])}}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def build_checkpoints(work: Path, spec: dict, device: str) -> dict[str, str]:
    """The DiT pipeline folder, SiT's released-style ``.pt`` and REPA's training checkpoint; returns their paths."""
    import torch

    paths = {"dit": work / "dit-xl-2-256", "sit": work / "SiT-XL-2-256x256.pt", "repa": work / "repa-sit-xl-2-256.pt"}
    build_dit_folder(paths["dit"], spec, device)
    torch.save(original_state_dict(spec, learn_sigma=True, projector=None, device=device, seed=1), paths["sit"])
    repa = original_state_dict(spec, learn_sigma=False, projector=spec["projector"], device=device, seed=2)
    args = argparse.Namespace(model="SiT-XL/2", enc_type="dinov2-vit-b", encoder_depth=8, proj_coeff=0.5,
                              resolution=256, num_classes=spec["classes"], cfg_prob=0.1)
    torch.save({"model": repa, "ema": repa, "opt": {"state": {}, "param_groups": []}, "args": args,
                "steps": 4_000_000}, paths["repa"])  # "model" and "ema" share storage: saved once
    return {name: str(path) for name, path in paths.items()}


def reference_npz(path: Path, side: int, count: int = 16) -> str:
    """A random-image reference batch in the ADM layout (``arr_0``: uint8 (N, H, W, 3)) for the pruning chapter."""
    import numpy as np

    images = np.random.default_rng(0).integers(0, 256, (count, side, side, 3), dtype=np.uint8)
    np.savez(path, arr_0=images)
    return str(path)


# ---------------------------------------------------------------------------------------------------
#                                             Measurements
# ---------------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def matmul_flops(device: str, dtype, size: int, repeats: int = 10) -> float:
    """FLOP/s of a ``size``² GEMM (2 size³ FLOP), the median of ``repeats`` after a warm-up."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timed(lambda: a @ b, device)
    return 2 * size**3 / statistics.median(timed(lambda: a @ b, device) for _ in range(repeats))


class tf32:
    """Sets torch's TF32 switches for CUDA matmuls and cuDNN, and restores them."""

    def __init__(self, on: bool):
        self.on = on

    def __enter__(self):
        import torch

        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.on

    def __exit__(self, *exc):
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def peak_mib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def measure_throughput(bundle, device: str, batch: int, repeats: int) -> dict:
    """images/s of ``sampling.sample`` at 50 steps, CFG 1.5, one batch: bfloat16 autocast, and float32 with TF32,
    with the bundle's scheduler; and bfloat16 with DiT's own sampler (``family="dit"``: learned σ)."""
    from bottleneck_utils.sampling import balanced_labels, sample

    labels = balanced_labels(bundle.num_classes, batch)
    result = {"batch": batch, "steps": FID_STEPS, "cfg_scale": FID_CFG, "repeats": repeats}
    for name, autocast, family in (("bfloat16", "bfloat16", None), ("float32_tf32", None, None),
                                   ("dit_own_sampler_bfloat16", "bfloat16", "dit")):
        with tf32(True):
            def run(autocast=autocast, family=family):
                sample(bundle, labels, num_steps=FID_STEPS, cfg_scale=FID_CFG, batch_size=batch, autocast=autocast,
                       family=family, progress=False)
            reset_peak(device)
            timed(run, device)  # warm-up: kernels, cuDNN autotuning, allocator
            seconds = statistics.median(timed(run, device) for _ in range(repeats))
        result[name] = {"seconds": seconds, "images_per_s": batch / seconds, "peak_mib": peak_mib(device)}
    return result


def measure_mask_overhead(bundle, device: str, batch: int, repeats: int, checked: bool) -> dict:
    """Masked / unmasked sampling time (a per-sample tail mask of 38.94% of c at every step), timed alternately."""
    from bottleneck_utils import masks
    from bottleneck_utils.sampling import balanced_labels, resolve_autocast, sample

    autocast = resolve_autocast("auto", device)
    tau = masks.threshold_for_fraction(bundle, TAIL_SHARE, num_steps=FID_STEPS)
    mask = masks.tail_mask(bundle, tau, num_steps=FID_STEPS)
    labels = balanced_labels(bundle.num_classes, batch)

    def run(with_mask):
        return lambda: sample(bundle, labels, num_steps=FID_STEPS, cfg_scale=FID_CFG, batch_size=batch,
                              autocast=autocast, mask=mask if with_mask else None, progress=False)

    sides = {"unmasked": run(False), "masked": run(True)}
    with tf32(True):
        for fn in sides.values():
            timed(fn, device)  # warm-up
        seconds = {name: [] for name in sides}
        for round_ in range(repeats):
            for name in (list(sides) if round_ % 2 == 0 else list(reversed(sides))):
                seconds[name].append(timed(sides[name], device))
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = medians["masked"] / medians["unmasked"]
    result = {"autocast": autocast or "float32", "tau": tau, "removed_share": mask.removed_count / bundle.hidden_size,
              "unmasked_s": medians["unmasked"], "masked_s": medians["masked"], "ratio": ratio,
              "limit": OVERHEAD_LIMIT, "checked": checked, "within_limit": ratio <= OVERHEAD_LIMIT}
    if checked and ratio > OVERHEAD_LIMIT:
        raise RuntimeError(f"masked / unmasked sampling time {ratio:.3f} > {OVERHEAD_LIMIT}")
    return result


def model_flop_per_forward(bundle) -> float:
    config = bundle.transformer.config
    hidden = config.num_attention_heads * config.attention_head_dim
    tokens = (config.sample_size // config.patch_size) ** 2
    return 2.0 * dit_forward_macs(hidden, config.num_layers, tokens, config.patch_size, config.in_channels,
                                  config.out_channels)


def measure_fid5k(bundle, throughput: dict, device: str, gemm: int) -> dict:
    """One FID-5K point's time from the measured images/s, against the FLOP limit at the measured matmul FLOP/s."""
    import torch

    flop = model_flop_per_forward(bundle)
    result = {"flop_per_forward": flop, "dit_xl_flop_per_forward": 2 * DIT_XL_MACS, "gemm_size": gemm}
    for name, dtype in (("bfloat16", torch.bfloat16), ("float32_tf32", torch.float32)):
        with tf32(True):
            peak = matmul_flops(device, dtype, gemm)
        result[name] = {"matmul_flop_s": peak} | fid_point_estimate(throughput[name]["images_per_s"], flop, peak)
    return result


# ---------------------------------------------------------------------------------------------------
#                                      Chapters through papermill
# ---------------------------------------------------------------------------------------------------


def record_cell(path: Path) -> str:
    """The source of the cell appended to each chapter: the kernel's peak memory, written to ``path``."""
    return "\n".join([
        "# appended by tools/gpu_rehearsal.py: this kernel's peak memory",
        "import json as _json, resource as _resource, sys as _sys",
        "_record = {'peak_rss_mib': _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024}",
        "if 'torch' in _sys.modules and _sys.modules['torch'].cuda.is_initialized():",
        "    _cuda = _sys.modules['torch'].cuda",
        "    _record['cuda_max_allocated_mib'] = _cuda.max_memory_allocated() / 2**20",
        "    _record['cuda_max_reserved_mib'] = _cuda.max_memory_reserved() / 2**20",
        f"open({str(path)!r}, 'w').write(_json.dumps(_record))",
    ])


def execute_chapter(run: dict, out: Path, work: Path, timeout: float | None) -> dict:
    """Executes one planned run in a fresh kernel; returns its record (status, wall time, peak memory)."""
    import jupytext
    import nbformat
    import papermill

    from tools import book  # the parameters cell's names (ROOT is on the path)

    source = jupytext.read(ROOT / "notebooks" / f"{run['chapter']}.md")
    unknown = sorted(set(run["parameters"]) - book.declared_parameters(source))
    if unknown:
        raise ValueError(f"notebooks/{run['chapter']}.md declares no parameters {unknown}")
    record = work / f"memory-{run['run'].replace('[', '-').replace(']', '')}.json"
    record.unlink(missing_ok=True)
    source.cells.append(nbformat.v4.new_code_cell(record_cell(record), metadata={"tags": [RECORD_TAG]}))
    target = out / "notebooks" / f"{run['run'].replace('[', '-').replace(']', '')}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    result = {"run": run["run"], "chapter": run["chapter"],
              "parameters": {k: v for k, v in run["parameters"].items()}, "notebook": str(target.relative_to(out))}
    started = time.perf_counter()
    try:
        papermill.execute_notebook(source, str(target), parameters=run["parameters"], kernel_name="python3",
                                   cwd=str(ROOT), progress_bar=False, execution_timeout=timeout)
        result["status"] = "ok"
    except Exception as error:  # noqa: BLE001 -- recorded; the rehearsal goes on
        result |= {"status": "failed", "error": one_line(error)}
    result["wall_s"] = time.perf_counter() - started
    if record.is_file():
        result |= json.loads(record.read_text())
    return result


# ---------------------------------------------------------------------------------------------------
#                                                 Main
# ---------------------------------------------------------------------------------------------------


def environment(args) -> dict:
    import diffusers
    import torch

    from bottleneck_utils import provenance

    cuda = args.device == "cuda" and torch.cuda.is_available()
    machine = provenance.hardware()
    return {"device": args.device, "device_name": torch.cuda.get_device_name() if cuda else machine["cpu"],
            "cpu": machine["cpu"], "size": args.size, "gpu": cuda, "torch": torch.__version__,
            "diffusers": diffusers.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
            "git_commit": provenance.git_commit(), "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "budget_s": args.budget_s, "chapters": args.chapters, "models": args.models}


@contextlib.contextmanager
def inside(work: Path, device: str):
    """Temporary files, IPython's and Jupyter's files (kernel connection files) under ``work``, hub access off, and
    one BLAS thread per kernel on a CPU; the environment and ``tempfile``'s folder are restored on exit."""
    import tempfile

    for sub in ("tmp", "ipython", "jupyter-runtime"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    updates = {"TMPDIR": str(work / "tmp"), "IPYTHONDIR": str(work / "ipython"),
               "JUPYTER_RUNTIME_DIR": str(work / "jupyter-runtime"), "HF_HUB_OFFLINE": "1"}
    updates |= ONE_THREAD if device == "cpu" else {}
    saved, saved_tempdir = {key: os.environ.get(key) for key in updates}, tempfile.tempdir
    os.environ.update(updates)
    tempfile.tempdir = updates["TMPDIR"]
    try:
        yield
    finally:
        tempfile.tempdir = saved_tempdir
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_rehearsal(args) -> dict:
    import torch
    from diffusers.utils import logging as diffusers_logging
    from tqdm.auto import tqdm

    from bottleneck_utils import models

    diffusers_logging.set_verbosity_error()  # one line per step, not diffusers' advice to install accelerate

    out = args.out.resolve()
    work = out / "work"
    spec = SIZES[args.size]
    batch, repeats = args.batch or spec["batch"], args.repeats or spec["repeats"]
    started = time.perf_counter()
    result = {"rehearsal": environment(args), "steps": {}, "chapters": []}
    state = {}

    def over_budget() -> bool:
        return args.budget_s is not None and time.perf_counter() - started > args.budget_s

    def step(name, fn, bar):
        bar.set_description(name)
        if name in args.skip:
            result["steps"][name] = {"status": LEFT_OUT}
            return None
        if over_budget():
            result["steps"][name] = {"status": "skipped", "error": f"over --budget-s {args.budget_s:g}"}
            bar.write(f"[skipped] {name}: over the budget")
            return None
        begun = time.perf_counter()
        try:
            value = fn()
            result["steps"][name] = {"status": "ok", "wall_s": time.perf_counter() - begun} | (
                value if isinstance(value, dict) else {})
            bar.write(f"[ok] {name} in {time.perf_counter() - begun:.1f} s")
            return value
        except Exception as error:  # noqa: BLE001 -- one line in the report; the rehearsal goes on
            result["steps"][name] = {"status": "failed", "error": one_line(error),
                                     "wall_s": time.perf_counter() - begun}
            bar.write(f"[failed] {name}: {one_line(error)}")
            return None

    def build():
        state["paths"] = build_checkpoints(work, spec, args.device)
        side = spec["latent"] * 2 ** (len(spec["vae"]["block_out_channels"]) - 1)
        state["reference"] = reference_npz(work / "reference_batch.npz", side)
        return {"checkpoints": {name: Path(path).name for name, path in state["paths"].items()},
                "bytes": {name: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) if Path(p).is_dir()
                          else Path(p).stat().st_size for name, p in state["paths"].items()}}

    def load_all():
        loaded = {}
        for name in args.models:
            begun = time.perf_counter()
            reset_peak(args.device)
            extra = {} if name == "dit" else {"family": name, "full": True,
                                              "num_heads": None if args.size == "xl" else spec["heads"]}
            bundle = models.load(state["paths"][name], device=args.device, **extra)
            loaded[name] = {"seconds": time.perf_counter() - begun, "parameters": report.parameter_count(bundle),
                            "image_shape": list(bundle.image_shape), "peak_mib": peak_mib(args.device)}
            if name == "dit":
                state["dit"] = bundle
            del bundle
        return {"models": loaded}

    def dit_bundle():
        if "dit" not in state:
            state["dit"] = models.load(state["paths"]["dit"], device=args.device)
        return state["dit"]

    def throughput():
        state["throughput"] = measure_throughput(dit_bundle(), args.device, batch, repeats)
        return state["throughput"]

    def fid5k():
        if "throughput" not in state:
            raise RuntimeError("needs the throughput step's images/s, which did not run")
        return measure_fid5k(dit_bundle(), state["throughput"], args.device, spec["gemm"])

    steps = ["build", "load", "throughput", "mask_overhead", "fid5k"]
    with tqdm(total=len(steps) + 1, unit="step", dynamic_ncols=True) as bar:
        step("build", build, bar)
        bar.update()
        if "paths" not in state:  # nothing else can run
            result["steps"].update({name: {"status": "skipped", "error": "the build failed"} for name in steps[1:]})
            result["rehearsal"]["wall_s"] = time.perf_counter() - started
            return result
        step("load", load_all, bar)
        bar.update()
        step("throughput", throughput, bar)
        bar.update()
        step("mask_overhead", lambda: measure_mask_overhead(dit_bundle(), args.device, batch, repeats,
                                                             checked=args.size == "xl"), bar)
        bar.update()
        step("fid5k", fid5k, bar)
        bar.update()
        state.pop("dit", None)
        if args.device == "cuda":
            torch.cuda.empty_cache()  # the chapters' kernels get the GPU's memory
        bar.set_description("chapters")
        if "chapters" not in args.skip:
            plan = chapter_plan(args.chapters, args.models, args.size, args.device, state["paths"],
                                args.samples or spec["samples"], state["reference"])
            for run in tqdm(plan, unit="chapter", leave=False, dynamic_ncols=True):
                if over_budget():
                    result["chapters"].append({"run": run["run"], "chapter": run["chapter"], "status": "skipped",
                                               "error": f"over --budget-s {args.budget_s:g}"})
                    bar.write(f"[skipped] {run['run']}: over the budget")
                    continue
                left = None if args.budget_s is None else max(1.0, args.budget_s - (time.perf_counter() - started))
                record = execute_chapter(run, out, work, left)
                result["chapters"].append(record)
                memory = record.get("cuda_max_allocated_mib")
                bar.write(f"[{record['status']}] {run['run']} in {record['wall_s']:.1f} s"
                          + (f", peak {memory:.0f} MiB" if memory is not None else "")
                          + (f": {record['error']}" if "error" in record else ""))
        bar.update()
    result["rehearsal"]["wall_s"] = time.perf_counter() - started
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_rehearsal: --device cuda but CUDA is not available here (use --device cpu --size tiny)",
                  file=sys.stderr)
            return 2
    work = args.out.resolve() / "work"
    shutil.rmtree(work, ignore_errors=True)
    try:
        with inside(work, args.device):
            result = run_rehearsal(args)
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    result["failures"] = failures(result)
    path, table = write_report(result, args.out.resolve())
    print(f"wrote {path} and {table} ({result['rehearsal']['wall_s']:.0f} s)")
    for line in result["failures"]:
        print(f"not ok: {line}", file=sys.stderr)
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
