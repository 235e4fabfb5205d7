"""One plain classifier-free-guidance sampling loop over a diffusers scheduler, with optional pruning of c.

Unlike ``DiTPipeline`` it takes the null label from the model (``num_classes``, not a hard-coded 1000),
draws every sample's noise from its own generator, seeded from ``(seed, sample index)``: the initial noise, and
then the noise a stochastic scheduler (DDPM) adds at each step. Runs with different batch sizes, masks or shards
therefore use the same noise. It works for pixel-space models without a VAE.

Sharded sampling, as in DiT's ``sample_ddp.py``: under ``torchrun`` every rank samples a contiguous slice of
the labels and writes its PNGs, or its shard of the ``.npz``, which rank 0 merges into one file::

    torchrun --nproc_per_node=8 -m bottleneck_utils.sampling facebook/DiT-XL-2-256 --num-samples 5000 \\
        --device cuda --autocast bfloat16 --npz samples/baseline.npz [--mask tail --tau 0.01 --schedule every]

Every ``.npz`` is written to a temporary file and renamed, so an interrupted run never leaves a half-written one.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bottleneck_utils import masks
from bottleneck_utils.embeddings import check_labels
from bottleneck_utils.flow import FlowODE
from bottleneck_utils.images import atomic_savez, check_int, check_output_dir, check_output_file, save_npz, write_pngs
from bottleneck_utils.models import Bundle, load, resolve_dtype

# ---------------------------------------------------------------------------------------------------
#                                          The sampling loop
# ---------------------------------------------------------------------------------------------------


def sample_generators(indices: torch.Tensor, seed: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from ``(seed, index)``; it draws all of that sample's noise."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + index) for index in indices.tolist()]


def initial_noise(bundle: Bundle, indices: torch.Tensor, seed: int,
                  generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """The starting noise of the samples with these global indices, (n, C, H, W), on the CPU.

    Sample i's noise depends only on ``(seed, i)``: it is the first draw of ``sample_generators``'s generator i
    (pass ``generators`` to continue those streams afterwards).
    """
    config = bundle.transformer.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    generators = sample_generators(indices, seed) if generators is None else generators
    return torch.stack([torch.randn(shape, generator=generator) for generator in generators])  # (n, C, H, W)


def balanced_labels(num_classes: int, num_samples: int) -> torch.Tensor:
    """Labels 0, 1, …, num_classes − 1, 0, 1, …: the same number of samples per class (5000 → 5 per ImageNet class)."""
    check_int("num_samples", num_samples, 1)
    check_int("num_classes", num_classes, 1)
    return torch.arange(num_samples) % num_classes


AUTOCAST_CHOICES = ("auto", "none", "bfloat16", "float16")


def resolve_autocast(autocast: str, device: str) -> str | None:
    """A chapter's ``autocast`` parameter as :func:`sample` takes it: ``"auto"`` is bfloat16 on cuda and None (float32)
    elsewhere, ``"none"`` is None, ``"bfloat16"`` and ``"float16"`` stay.

    Raises:
        ValueError: any other value, naming the choices.
    """
    if autocast not in AUTOCAST_CHOICES:
        raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {autocast!r}")
    if autocast == "auto":
        return "bfloat16" if str(device).startswith("cuda") else None
    return None if autocast == "none" else autocast


def _autocast(bundle: Bundle, dtype: str | None):
    """``torch.autocast`` to ``dtype`` on the bundle's device; a no-op for None or ``"float32"``."""
    if dtype is None or resolve_dtype(dtype) == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(bundle.device.type, dtype=resolve_dtype(dtype))


def _guided_output(bundle: Bundle, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, cfg: float):
    """The model's ε (DDPM) or velocity (flow) with CFG on every channel (the original DiT and SiT guide 3 of 4)."""
    channels = x.shape[1]
    if cfg == 1.0:
        return bundle.transformer(x, timestep=t.expand(len(x)), class_labels=labels).sample[:, :channels]
    null = torch.full_like(labels, bundle.null_label)
    both = bundle.transformer(
        torch.cat([x, x]), timestep=t.expand(2 * len(x)), class_labels=torch.cat([labels, null])
    ).sample[:, :channels]  # (2B, C, H, W); learned-σ channels, if any, are dropped
    conditional, unconditional = both.chunk(2)
    return unconditional + cfg * (conditional - unconditional)


def _decode(bundle: Bundle, x: torch.Tensor, cfg_scale: float, autocast) -> torch.Tensor:
    """Final latents → images (B, C, H, W) in [0, 1] on the CPU; NaN or inf (an overflow) raises, naming the settings.

    Clamping would turn NaN into black-or-white images that still score; the sampler refuses them instead.
    """
    if bundle.vae is not None:
        x = bundle.vae.decode(x / bundle.vae.config.scaling_factor).sample
    pixels = x.float() / 2 + 0.5
    if not torch.isfinite(pixels).all():
        settings = f"cfg_scale={cfg_scale:g}" + (f", autocast={autocast}" if autocast else "")
        precision = ", or sample in float32 (autocast=None)" if autocast else ""
        raise ValueError(f"sampling {bundle.name} gave NaN or inf pixels with {settings} (an overflow): lower "
                         f"cfg_scale (1.0 switches guidance off; 1.5 to 10 is usual){precision}")
    return pixels.clamp(0, 1).cpu()


def _denoise(bundle: Bundle, x: torch.Tensor, labels: torch.Tensor, cfg_scale: float, autocast,
             generators: list[torch.Generator]) -> torch.Tensor:
    """Runs the scheduler's timesteps on one batch of noise x (B, C, H, W); returns the final latents.

    ``generators`` (one per sample) draw the noise of a stochastic scheduler; DDIM (eta = 0) draws none.
    """
    takes_generator = "generator" in inspect.signature(bundle.scheduler.step).parameters
    step_kwargs = {"generator": generators} if takes_generator else {}
    for t in bundle.scheduler.timesteps:
        with _autocast(bundle, autocast):
            eps = _guided_output(bundle, x, t.to(bundle.device), labels, cfg_scale)
        x = bundle.scheduler.step(eps.to(x.dtype), t, x, **step_kwargs).prev_sample
    return x


def _integrate_flow(bundle: Bundle, x: torch.Tensor, labels: torch.Tensor, cfg_scale: float, autocast) -> torch.Tensor:
    """Integrates a flow model's ODE (:class:`flow.FlowODE`) from noise x (B, C, H, W), CFG on the velocity."""

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with _autocast(bundle, autocast):
            return _guided_output(bundle, x_t, t.to(bundle.device), labels, cfg_scale).to(x_t.dtype)

    return bundle.scheduler.integrate(velocity, x)


def _pruning(bundle: Bundle, mask, schedule, null_policy: str):
    """The :func:`masks.prune` context for the scheduler's current timesteps, or a no-op without a mask."""
    if mask is None:
        return contextlib.nullcontext()
    return masks.prune(bundle, mask, schedule, timesteps=bundle.scheduler.timesteps, null_policy=null_policy)


def _check_sampling_inputs(bundle: Bundle, num_steps, batch_size, cfg_scale, seed, first_index, mask, schedule,
                           autocast) -> masks.Schedule:
    if bundle.transformer is None or bundle.scheduler is None:
        raise ValueError(f"{bundle.name} is an embedder-only bundle; sampling needs a transformer and a scheduler")
    for name, value, low in (("num_steps", num_steps, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                             ("first_index", first_index, 0)):
        check_int(name, value, low)
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, numbers.Real) or not math.isfinite(cfg_scale):
        raise ValueError(f"cfg_scale must be a finite number (1.0 switches guidance off), got {cfg_scale!r}")
    if not isinstance(bundle.scheduler, FlowODE) and num_steps > bundle.scheduler.config.num_train_timesteps:
        limit = bundle.scheduler.config.num_train_timesteps
        raise ValueError(f"num_steps must be <= {limit}, the timesteps {bundle.name}'s scheduler was trained with; got "
                         f"{num_steps}")
    schedule = masks.as_schedule(schedule)
    schedule.active_steps(num_steps)  # raises when k > num_steps
    if mask is not None:
        masks.check_mask(bundle, mask)
    if autocast is not None:
        resolve_dtype(autocast)
    return schedule


@torch.no_grad()
def sample(
    bundle: Bundle,
    labels,
    *,
    num_steps: int = 50,
    cfg_scale: float = 4.0,
    seed: int = 0,
    batch_size: int = 256,
    first_index: int = 0,
    output_dir: str | Path | None = None,
    progress: bool = True,
    mask: masks.Mask | None = None,
    schedule: masks.Schedule | str = "every",
    null_policy: str = masks.DEFAULT_NULL_POLICY,
    autocast: str | None = None,
) -> torch.Tensor:
    """Samples one image per label with CFG, optionally with coordinates of c zeroed.

    Args:
        bundle: a model with a transformer and a scheduler: a diffusers scheduler (DDPM-time models) or a
            :class:`flow.FlowODE` (flow models: Euler or Heun on the velocity).
        labels: class ids, one per image.
        num_steps: scheduler steps (flow: intervals of the ODE grid).
        cfg_scale: guidance scale; 1.0 switches CFG off (one forward per step).
        seed: all noise of sample i (initial, and a stochastic scheduler's) is drawn from ``(seed, first_index + i)``,
            with or without a mask.
        batch_size: images per forward pass (CFG doubles it).
        first_index: global index of the first label (for shards of a larger run).
        output_dir: if given, each image is also written as ``{index:06d}_{label}.png``.
        progress: show a tqdm bar over batches.
        mask: coordinates of c to zero (:mod:`bottleneck_utils.masks`), fixed at t₀ or recomputed at every call
            (``masks.recomputed``); None samples the unpruned model.
        schedule: when the mask applies: ``"every"``, ``"first"`` or ``masks.Schedule("last", k)``.
        null_policy: ``"mask"`` or ``"leave"`` the CFG null branch's c.
        autocast: ``"bfloat16"`` or ``"float16"`` runs the transformer under ``torch.autocast`` (the scheduler
            and the VAE decode stay in the bundle's dtype); None or ``"float32"`` does not.

    Returns:
        float tensor (N, C, H, W) in [0, 1], on the CPU; N = 0 (an empty shard) gives (0, *bundle.image_shape).

    Raises:
        ValueError: bad labels, steps, mask, schedule, null policy or ``output_dir`` (a file), before any sampling;
            NaN or inf images (a guidance scale or autocast that overflows), before anything is written.
        PermissionError: a read-only ``output_dir``, before any sampling.
    """
    schedule = _check_sampling_inputs(bundle, num_steps, batch_size, cfg_scale, seed, first_index, mask, schedule,
                                      autocast)
    labels = check_labels(bundle, labels)
    if output_dir is not None:
        check_output_dir(output_dir)
    bundle.scheduler.set_timesteps(num_steps)
    images = []
    with _pruning(bundle, mask, schedule, null_policy):
        for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
            batch = labels[start : start + batch_size]
            indices = torch.arange(first_index + start, first_index + start + len(batch))
            generators = sample_generators(indices, seed)
            x = initial_noise(bundle, indices, seed, generators).to(bundle.device, bundle.dtype)  # (B, C, H, W)
            if isinstance(bundle.scheduler, FlowODE):
                x = _integrate_flow(bundle, x, batch, cfg_scale, autocast)
            else:
                x = _denoise(bundle, x, batch, cfg_scale, autocast, generators)
            images.append(_decode(bundle, x, cfg_scale, autocast))
    images = torch.cat(images) if images else torch.empty(0, *bundle.image_shape)
    if output_dir is not None:
        write_pngs(images, labels.cpu(), output_dir, first_index)
    return images


# ---------------------------------------------------------------------------------------------------
#                                   Writing images: PNG folders and .npz
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
#                                 Sharding across processes (torchrun)
# ---------------------------------------------------------------------------------------------------


def shard_range(num_samples: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous slice [start, stop) of rank ``rank``; sizes differ by at most one."""
    start = num_samples * rank // world_size
    return start, num_samples * (rank + 1) // world_size


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _shard_path(path: Path, rank: int, world_size: int) -> Path:
    return path.with_name(f".{path.stem}.shard{rank:04d}-of-{world_size:04d}.npz")


def merge_npz_shards(path: str | Path, world_size: int) -> Path:
    """Concatenates the ranks' shards into ``path`` in rank order (atomically) and deletes them."""
    path = Path(path)
    shards = [_shard_path(path, rank, world_size) for rank in range(world_size)]
    missing = [str(shard) for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(f"shards {missing} are missing; a rank did not finish")
    parts = [dict(np.load(shard)) for shard in shards]
    atomic_savez(path, **{key: np.concatenate([part[key] for part in parts]) for key in ("arr_0", "labels", "indices")})
    for shard in shards:
        shard.unlink()
    return path


def sample_sharded(bundle: Bundle, labels, *, npz_path: str | Path | None = None,
                   png_dir: str | Path | None = None, **sample_kwargs) -> torch.Tensor:
    """Samples this rank's slice of ``labels``; writes PNGs and/or one merged ``.npz`` for all ranks.

    Without ``torch.distributed`` initialised it is one rank of one. Each rank's samples keep their global
    indices, so the union over ranks equals a single-process run. Returns this rank's images. Both outputs are
    checked (:func:`images.check_output_file`, :func:`images.check_output_dir`) before any sampling.
    """
    if npz_path is not None:
        check_output_file(npz_path)
    rank, world_size = _rank_and_world()
    labels = torch.as_tensor(labels)
    start, stop = shard_range(len(labels), rank, world_size)
    images = sample(bundle, labels[start:stop], first_index=start, output_dir=png_dir, **sample_kwargs)
    if npz_path is not None:
        save_npz(images, labels[start:stop], _shard_path(Path(npz_path), rank, world_size), first_index=start)
        _barrier()
        if rank == 0:
            merge_npz_shards(npz_path, world_size)
    _barrier()
    return images


# ---------------------------------------------------------------------------------------------------
#                                          Command line (torchrun)
# ---------------------------------------------------------------------------------------------------


def _cli_mask(bundle: Bundle, args) -> masks.Mask | None:
    builders = {"tail": masks.tail_mask, "head": masks.head_mask}
    if args.mask == "none":
        return None
    if args.mask == "topk":
        mask = masks.topk_mask(bundle, args.topk, num_steps=args.steps, granularity=args.granularity)
    else:
        mask = builders[args.mask](bundle, args.tau, num_steps=args.steps, granularity=args.granularity)
    if args.recompute:
        return masks.recomputed(mask)
    return masks.random_mask(mask, seed=args.seed) if args.random_control else mask


def _number(kind, low):
    """An argparse type: ``kind`` (int or float), finite and >= ``low`` (None: any finite value)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an {kind.__name__}") from None
        if not math.isfinite(value) or (low is not None and value < low):
            bound = "" if low is None else f" >= {low}"
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number{bound}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="embedded name, hub id, diffusers folder or .pt (see models.load)")
    parser.add_argument("--num-samples", type=_number(int, 1), required=True)
    parser.add_argument("--steps", type=_number(int, 1), default=50)
    parser.add_argument("--cfg", type=_number(float, None), default=4.0)
    parser.add_argument("--seed", type=_number(int, 0), default=0)
    parser.add_argument("--batch-size", type=_number(int, 1), default=64)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--autocast", default=None, choices=["bfloat16", "float16"])
    parser.add_argument("--npz", default=None, help="write all samples into this .npz")
    parser.add_argument("--png-dir", default=None, help="write every sample as a PNG into this folder")
    parser.add_argument("--mask", default="none", choices=["none", "tail", "head", "topk"])
    parser.add_argument("--tau", type=_number(float, 0), default=None)
    parser.add_argument("--topk", type=_number(int, 0), default=None)
    parser.add_argument("--random-control", action="store_true", help="zero as many random coordinates instead")
    parser.add_argument("--recompute", action="store_true",
                        help="tail only: at every step zero as many of the smallest |c_i| of that step's c "
                             "(masks.recomputed) instead of the t0 set")
    parser.add_argument("--granularity", default=masks.DEFAULT_GRANULARITY, choices=masks.GRANULARITIES)
    parser.add_argument("--schedule", default="every", choices=masks.SCHEDULES)
    parser.add_argument("--k", type=_number(int, 1), default=None, help="steps of the 'last' schedule")
    parser.add_argument("--null-policy", default=masks.DEFAULT_NULL_POLICY, choices=masks.NULL_POLICIES)
    args = parser.parse_args(argv)
    if args.npz is None and args.png_dir is None:
        parser.error("give --npz and/or --png-dir")
    if args.mask in ("tail", "head") and args.tau is None or args.mask == "topk" and args.topk is None:
        parser.error(f"--mask {args.mask} needs --tau (tail, head) or --topk (topk)")
    if args.tau is not None and args.mask not in ("tail", "head") or args.topk is not None and args.mask != "topk":
        parser.error(f"--tau goes with --mask tail/head and --topk with --mask topk, not with --mask {args.mask}")
    if args.recompute and (args.mask != "tail" or args.random_control):
        parser.error("--recompute goes with --mask tail only (not head, topk or --random-control)")
    if (args.k is None) != (args.schedule != "last"):
        parser.error("--k goes with --schedule last, which needs it")
    outputs = [(check, path) for check, path in ((check_output_file, args.npz), (check_output_dir, args.png_dir))
               if path is not None]
    for check, path in outputs:  # before the model loads: a bad output path must not cost a whole sampling run
        try:
            check(path)
        except (ValueError, PermissionError) as error:
            parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    device = args.device
    if "RANK" in os.environ:  # launched by torchrun
        if device.startswith("cuda"):
            device = f"cuda:{os.environ['LOCAL_RANK']}"
            torch.cuda.set_device(device)  # NCCL's barrier uses the current device
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        bundle = load(args.model, device=device)
        schedule = masks.Schedule(args.schedule, args.k if args.schedule == "last" else None)
        mask = _cli_mask(bundle, args)
        labels = balanced_labels(bundle.num_classes, args.num_samples)
        sample_sharded(bundle, labels, npz_path=args.npz, png_dir=args.png_dir, num_steps=args.steps,
                       cfg_scale=args.cfg, seed=args.seed, batch_size=args.batch_size, mask=mask,
                       schedule=schedule, null_policy=args.null_policy, autocast=args.autocast,
                       progress=_rank_and_world()[0] == 0)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
