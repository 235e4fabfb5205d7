"""One plain classifier-free-guidance sampling loop over a diffusers scheduler or the flow ODE/SDE, with optional
pruning of c.

Unlike ``DiTPipeline`` it takes the null label from the model (``num_classes``, not a hard-coded 1000),
draws every sample's noise from its own generator, seeded from ``(seed, sample index)``: the initial noise, and
then the noise a stochastic scheduler (DDPM) or the flow SDE adds at each step. Runs with different batch sizes,
masks or shards therefore use the same noise. It works for pixel-space models without a VAE.

``family=`` (``--family``) samples as a family's own script does (:data:`FAMILY_SAMPLERS`: solver, guidance
interval, timestep shift, guided channels, what a CFG scale below 1 means); see :func:`sample`.

Sharded sampling, as in DiT's ``sample_ddp.py``: under ``torchrun`` every rank samples a contiguous slice of
the labels and writes its PNGs, or its shard of the ``.npz``, which rank 0 merges into one file::

    torchrun --nproc_per_node=8 -m bottleneck_utils.sampling facebook/DiT-XL-2-256 --num-samples 5000 \\
        --device cuda --npz samples/baseline.npz [--mask tail --tau 0.01 --schedule every]

On cuda the transformer runs under bfloat16 autocast unless ``--autocast`` says otherwise (``none``: float32, its
matmuls in TF32); on the CPU in float32. Every ``.npz`` holds the run's :func:`sampler_card` (key ``sampler_card``,
a JSON string: ``json.loads(str(np.load(path)["sampler_card"]))``), and is written to a temporary file and renamed,
so an interrupted run never leaves a half-written one.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import inspect
import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from bottleneck_utils import flow, masks
from bottleneck_utils.embeddings import check_labels
from bottleneck_utils.features import FID_MODES
from bottleneck_utils.flow import FlowODE
from bottleneck_utils.images import atomic_savez, check_int, check_output_dir, check_output_file, save_npz, write_pngs
from bottleneck_utils.models import Bundle, load, resolve_dtype
from bottleneck_utils.provenance import SAMPLER_CARD_KEYS

# ---------------------------------------------------------------------------------------------------
#                            Each family's own sampler (the upstream scripts)
# ---------------------------------------------------------------------------------------------------

SOLVERS = (*flow.METHODS, "dopri5")  # flow models' integrators
LEARNED_SIGMA = "ddpm-learned-sigma"  # DiT's own: DDPM whose variance the model's σ channels interpolate
DDPM_SOLVERS = ("scheduler", LEARNED_SIGMA)  # DDPM-time models: the bundle's scheduler as loaded, or DiT's


@dataclass(frozen=True)
class Conventions:
    """How one family's own script samples: what :func:`sample` takes from ``family=`` (see its table).

    Attributes:
        time_kind: the models it samples: ``"ddpm"`` (a diffusers scheduler) or ``"flow"`` (a :class:`FlowODE`);
            None: either.
        solver: the flow integrator (:data:`SOLVERS`) or a DDPM-time model's sampler (:data:`DDPM_SOLVERS`); None:
            the bundle's scheduler as loaded.
        guidance_interval: CFG applies only at steps whose start time t has low ≤ t ≤ high, on the model's own time
            axis (noise at 0 for SiT and LightningDiT, at 1 for REPA).
        shift: the flow grid's timestep shift (:mod:`bottleneck_utils.flow`); None: the bundle's scheduler's.
        cfg_channels: CFG on the first k output channels, the conditional output on the rest; None: every channel.
        low_cfg: what a cfg_scale below 1 does: ``"extrapolate"`` (u + s·(c − u); only 1.0 switches CFG off),
            ``"skip"`` (any scale ≤ 1 samples the conditional model alone) or ``"reject"`` (< 1 raises, 1 skips).
        num_steps, cfg_scale: the upstream script's defaults, counted as :func:`sample` counts steps (the CLI's
            defaults under ``--family``).
        source: the script these come from.
    """

    time_kind: str | None = None
    solver: str | None = None
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    shift: float | None = None
    cfg_channels: int | None = None
    low_cfg: str = "extrapolate"
    num_steps: int = 50
    cfg_scale: float = 4.0
    source: str = "this package"

    def scale(self, cfg_scale: float) -> float | None:
        """The scale CFG runs at, or None where this family samples the conditional model alone."""
        off = cfg_scale == 1 if self.low_cfg == "extrapolate" else cfg_scale <= 1
        return None if off else float(cfg_scale)

    def guides_at(self, t: float) -> bool:
        """Whether CFG applies at a step starting at time t (the guidance interval, ends included)."""
        low, high = self.guidance_interval
        return low <= t <= high


PACKAGE = Conventions()  # the book's organisms and every model sampled without family=
FAMILY_SAMPLERS = {
    "dit": Conventions("ddpm", LEARNED_SIGMA, cfg_channels=3, low_cfg="reject", num_steps=250, cfg_scale=1.5,
                       source="DiT sample_ddp.py (DDPM, learned sigma)"),
    "diffusers": Conventions("ddpm", low_cfg="skip", num_steps=50, cfg_scale=4.0, source="diffusers DiTPipeline"),
    "sit": Conventions("flow", "dopri5", cfg_channels=3, low_cfg="reject", num_steps=249, cfg_scale=1.0,
                       source="SiT sample_ddp.py ODE (250 points; its SDE mode: solver='sde', num_steps=250)"),
    "repa": Conventions("flow", "euler", low_cfg="reject", num_steps=50, cfg_scale=1.5,
                        source="REPA generate.py (mode ode, no --heun; its README's best FID: --guidance-high 0.7)"),
    "lightningdit": Conventions("flow", "euler", (0.125, 1.0), shift=0.3, cfg_channels=3, low_cfg="skip",
                                num_steps=249, cfg_scale=6.7, source="LightningDiT inference.py, reproductions config"),
}


def check_guidance_interval(interval) -> tuple[float, float]:
    """``interval`` as a (low, high) pair with 0 ≤ low ≤ high ≤ 1, else a ValueError."""
    try:
        low, high = (float(value) for value in interval)
    except (TypeError, ValueError):
        low = high = math.nan
    if isinstance(interval, str) or not 0 <= low <= high <= 1:
        raise ValueError(f"guidance_interval must be (low, high) with 0 <= low <= high <= 1 on the model's time axis "
                         f"(CFG applies where low <= t <= high), got {interval!r}")
    return low, high


def sampler_conventions(bundle: Bundle, family: str | None = None, *, solver: str | None = None,
                        guidance_interval=None, shift: float | None = None,
                        cfg_channels: int | None = None) -> Conventions:
    """The conventions :func:`sample` follows: ``family``'s (None: the package's), each option given overriding
    the family's, checked against the bundle.

    Raises:
        ValueError: an unknown family or solver, a bad interval, shift or channel count, or a flow option (solver,
            shift, guidance interval, a flow family) on a DDPM-time model, and the other way round.
        ModuleNotFoundError: the dopri5 solver without torchdiffeq.
    """
    if family is not None and family not in FAMILY_SAMPLERS:
        raise ValueError(f"family must be one of {sorted(FAMILY_SAMPLERS)} (each upstream script's sampler) or None "
                         f"(the package's), got {family!r}")
    base = PACKAGE if family is None else FAMILY_SAMPLERS[family]
    given = {"solver": solver, "guidance_interval": guidance_interval, "shift": shift, "cfg_channels": cfg_channels}
    given = _checked_options(bundle, {name: value for name, value in given.items() if value is not None})
    conventions = dataclasses.replace(base, **given)
    _check_time_kind(bundle, family, conventions, given)
    if conventions.solver == "dopri5" and not flow.has_torchdiffeq():
        raise ModuleNotFoundError(f"solver 'dopri5' (SiT's default ODE solver) needs torchdiffeq: "
                                  f"{flow.TORCHDIFFEQ_HINT}, or pass solver='euler' or 'heun'")
    return conventions


def _checked_options(bundle: Bundle, given: dict) -> dict:
    """The options given, each checked (the interval as a (low, high) tuple of floats)."""
    if "solver" in given and given["solver"] not in SOLVERS + DDPM_SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS} (flow models) or {DDPM_SOLVERS} (DDPM-time models), lower "
                         f"case, got {given['solver']!r}")
    if "guidance_interval" in given:
        given = given | {"guidance_interval": check_guidance_interval(given["guidance_interval"])}
    if "shift" in given:
        flow.check_shift(given["shift"])
    count = given.get("cfg_channels")
    if count is not None and not (isinstance(count, int) and not isinstance(count, bool)
                                  and 1 <= count <= bundle.transformer.config.in_channels):
        raise ValueError(f"cfg_channels must be an int in 1..{bundle.transformer.config.in_channels} (the model's "
                         f"output channels), got {count!r}")
    return given


def _check_time_kind(bundle: Bundle, family: str | None, conventions: Conventions, given: dict) -> None:
    is_flow = isinstance(bundle.scheduler, FlowODE)
    if conventions.time_kind is not None and conventions.time_kind != ("flow" if is_flow else "ddpm"):
        kind, fits = ("flow", "'dit' or 'diffusers'") if conventions.time_kind == "flow" else \
            ("DDPM-time", "'sit', 'repa' or 'lightningdit'")
        raise ValueError(f"family {family!r} samples {kind} models; {bundle.name} is not one: use family {fits}")
    flow_only = sorted({"guidance_interval", "shift"} & given.keys() | ({"solver"} if given.get("solver") in SOLVERS
                                                                           else set()))
    if flow_only and not is_flow:
        raise ValueError(f"{', '.join(flow_only)} apply to flow models (SiT, REPA, LightningDiT); {bundle.name} is a "
                         f"DDPM-time model: leave them unset (its solvers: {DDPM_SOLVERS})")
    if is_flow and conventions.solver in DDPM_SOLVERS:
        raise ValueError(f"solver {conventions.solver!r} samples DDPM-time models; {bundle.name} is a flow model: use "
                         f"one of {SOLVERS}")
    channels = bundle.transformer.config.in_channels
    if conventions.solver == LEARNED_SIGMA and (bundle.transformer.config.out_channels or channels) != 2 * channels:
        raise ValueError(f"solver {LEARNED_SIGMA!r} (family 'dit') reads the model's learned σ channels, and "
                         f"{bundle.name} predicts none ({channels} input, as many output channels): pass "
                         "solver='scheduler' to sample it with its own scheduler")


def _check_use(conventions: Conventions, family: str | None, cfg_scale: float, mask, schedule) -> None:
    """The checks that need the call's other arguments: the family's CFG floor, masks under dopri5."""
    if conventions.low_cfg == "reject" and cfg_scale < 1:
        raise ValueError(f"cfg_scale must be >= 1 with family {family!r} (its script asserts it; 1.0 switches guidance "
                         f"off), got {cfg_scale:g}")
    if conventions.solver == "dopri5" and mask is not None and schedule.kind != "every":
        raise ValueError(f"the {schedule.kind!r} mask schedule needs fixed evaluation times, and dopri5 picks its own: "
                         "use schedule='every' or a fixed-step solver ('euler', 'heun')")


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


def _guided_output(bundle: Bundle, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, cfg: float | None,
                   channels: int | None = None, keep_sigma: bool = False) -> torch.Tensor:
    """The model's ε (DDPM) or velocity (flow), (B, C, H, W); learned-σ channels, if any, are dropped unless
    ``keep_sigma`` (then (B, 2C, H, W), the σ channels the conditional model's, as DiT's ``forward_with_cfg``).

    ``cfg`` None runs the conditional model alone (one forward). Otherwise CFG, u + cfg·(c − u), on the first
    ``channels`` channels (None: all, as diffusers' DiTPipeline and REPA) and the conditional output on the rest (the
    original DiT's and SiT's ``forward_with_cfg`` guide 3 of 4).
    """
    count = 2 * x.shape[1] if keep_sigma else x.shape[1]
    if cfg is None:
        return bundle.transformer(x, timestep=t.expand(len(x)), class_labels=labels).sample[:, :count]
    null = torch.full_like(labels, bundle.null_label)
    both = bundle.transformer(
        torch.cat([x, x]), timestep=t.expand(2 * len(x)), class_labels=torch.cat([labels, null])
    ).sample[:, :count]  # (2B, C, H, W)
    conditional, unconditional = both.chunk(2)
    guided = count if channels is None else channels
    mixed = unconditional[:, :guided] + cfg * (conditional[:, :guided] - unconditional[:, :guided])
    return torch.cat([mixed, conditional[:, guided:]], dim=1)


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
             generators: list[torch.Generator], conventions: Conventions | None = None, scheduler=None) -> torch.Tensor:
    """Runs ``scheduler``'s timesteps (default: the bundle's) on one batch of noise x (B, C, H, W); returns the final
    latents.

    ``generators`` (one per sample) draw the noise of a stochastic scheduler; DDIM (eta = 0) draws none. Under
    :data:`LEARNED_SIGMA` the scheduler also reads the model's σ channels.
    """
    conventions, scheduler = conventions or PACKAGE, scheduler or bundle.scheduler
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    step_kwargs = {"generator": generators} if takes_generator else {}
    scale, keep_sigma = conventions.scale(cfg_scale), conventions.solver == LEARNED_SIGMA
    for t in scheduler.timesteps:
        with _autocast(bundle, autocast):
            out = _guided_output(bundle, x, t.to(bundle.device), labels, scale, conventions.cfg_channels, keep_sigma)
        x = scheduler.step(out.to(x.dtype), t, x, **step_kwargs).prev_sample
    return x


def dit_timesteps(num_train_timesteps: int, num_steps: int) -> list[int]:
    """DiT's respaced timesteps, high to low (its ``space_timesteps(T, str(n))``: round(i·(T − 1)/(n − 1))).

    Raises:
        ValueError: a step count outside 1..T.
    """
    check_int("num_train_timesteps", num_train_timesteps, 1)
    check_int("num_steps", num_steps, 1)
    if num_steps > num_train_timesteps:
        raise ValueError(f"num_steps must be <= {num_train_timesteps}, the timesteps the model was trained with; got "
                         f"{num_steps}")
    stride = 1 if num_steps == 1 else (num_train_timesteps - 1) / (num_steps - 1)
    return sorted({round(i * stride) for i in range(num_steps)}, reverse=True)


def learned_sigma_scheduler(bundle: Bundle, num_steps: int) -> DDPMScheduler:
    """DiT's own sampler as a diffusers scheduler: DDPM on the bundle's β schedule at :func:`dit_timesteps`, each
    step from a timestep to the next kept one (DiT's respaced process), with the log-variance interpolated between
    the posterior's and β's by the model's σ channels (``learned_range``) and no clipping of x₀ (DiT's
    ``clip_denoised=False``).

    Raises:
        ValueError: a flow model (it has no DDPM schedule), or a step count :func:`dit_timesteps` refuses.
    """
    if isinstance(bundle.scheduler, FlowODE):
        raise ValueError(f"{bundle.name} is a flow model: DiT's learned-σ DDPM sampler needs a DDPM-time model")
    scheduler = DDPMScheduler.from_config(bundle.scheduler.config, variance_type="learned_range", clip_sample=False,
                                          thresholding=False)
    scheduler.set_timesteps(timesteps=dit_timesteps(scheduler.config.num_train_timesteps, num_steps))
    return scheduler


def _ddpm_scheduler(bundle: Bundle, conventions: Conventions, num_steps: int):
    """A DDPM-time call's scheduler: :func:`learned_sigma_scheduler` under :data:`LEARNED_SIGMA`, else the bundle's
    own (its timesteps already set); None for a flow model."""
    if isinstance(bundle.scheduler, FlowODE):
        return None
    return learned_sigma_scheduler(bundle, num_steps) if conventions.solver == LEARNED_SIGMA else bundle.scheduler


def _step_noise(generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """One standard normal draw shaped like ``like`` (B, C, H, W), row i from sample i's own generator."""
    return torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators]).to(like.device, like.dtype)


def _integrate_flow(bundle: Bundle, x: torch.Tensor, labels: torch.Tensor, cfg_scale: float, autocast,
                    conventions: Conventions | None = None, ode: FlowODE | None = None,
                    generators: list[torch.Generator] | None = None) -> torch.Tensor:
    """Integrates a flow model from noise x (B, C, H, W) with ``ode`` (default: the bundle's), CFG on the velocity.

    CFG applies at a step when the conventions' scale rule and guidance interval allow it, decided at the step's
    start (dopri5: at each evaluation). The SDE draws its step noise from ``generators``, one per sample.
    """
    conventions, ode = conventions or PACKAGE, ode or bundle.scheduler
    scale = conventions.scale(cfg_scale)

    def velocity(x_t: torch.Tensor, t: torch.Tensor, guide: bool = True) -> torch.Tensor:
        with _autocast(bundle, autocast):
            return _guided_output(bundle, x_t, t.to(bundle.device), labels, scale if guide else None,
                                  conventions.cfg_channels).to(x_t.dtype)

    if conventions.solver == "dopri5":
        return flow.dopri5(lambda x_t, t: velocity(x_t, t, conventions.guides_at(float(t))), x, ode.grid)
    noise = None if generators is None else lambda: _step_noise(generators, x)
    return ode.integrate(velocity, x, guided=conventions.guides_at, noise=noise)


def _integrator(bundle: Bundle, conventions: Conventions, num_steps: int) -> FlowODE | None:
    """This call's flow integrator: the bundle's FlowODE (its grid already set), or a fresh one with the conventions'
    solver and shift, its grid set (dopri5: an Euler grid, its output times); the bundle's scheduler stays as loaded.
    None for a DDPM-time model."""
    own = bundle.scheduler
    if not isinstance(own, FlowODE):
        return None
    method = {None: own.method, "dopri5": "euler"}.get(conventions.solver, conventions.solver)
    shift = own.shift if conventions.shift is None else conventions.shift
    if (method, shift) == (own.method, own.shift):
        return own
    ode = FlowODE(own.noise_time, method, shift)
    ode.set_timesteps(num_steps)
    return ode


def _evaluation_times(scheduler, ode: FlowODE | None, conventions: Conventions) -> torch.Tensor | None:
    """The times the model is evaluated at, for the mask schedules; None under dopri5, which picks its own."""
    if ode is None:
        return scheduler.timesteps
    return None if conventions.solver == "dopri5" else ode.timesteps


def _pruning(bundle: Bundle, mask, schedule, null_policy: str, timesteps):
    """The :func:`masks.prune` context for the sampler's timesteps, or a no-op without a mask."""
    if mask is None:
        return contextlib.nullcontext()
    return masks.prune(bundle, mask, schedule, timesteps=timesteps, null_policy=null_policy)


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
    if autocast is not None:  # the mask is checked once, by masks.prune, before any forward pass
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
    family: str | None = None,
    solver: str | None = None,
    guidance_interval: tuple[float, float] | None = None,
    shift: float | None = None,
    cfg_channels: int | None = None,
) -> torch.Tensor:
    """Samples one image per label with CFG, optionally with coordinates of c zeroed.

    ``family`` samples as that family's own script does; each of ``solver``, ``guidance_interval``, ``shift`` and
    ``cfg_channels`` overrides it alone. Without a family (the default, the book's organisms) the bundle's scheduler
    runs as loaded, CFG guides every channel at every step, and only cfg_scale 1.0 switches it off. The defaults:

    ============ ================== ============ =========== ===== ======== =========== ========= =====
    family       script             solver       CFG for t   shift CFG on   cfg <= 1    num_steps cfg
    ============ ================== ============ =========== ===== ======== =========== ========= =====
    dit          DiT sample_ddp     DDPM σ*      every step  --    3 of 4   < 1 raises  250       1.5
    diffusers    DiTPipeline        scheduler    every step  --    all      skips CFG   50        4.0
    sit          SiT sample_ddp ODE dopri5       [0, 1]      --    3 of 4   < 1 raises  249       1.0
    repa         REPA generate.py   euler        [0, 1]      --    all      < 1 raises  50        1.5
    lightningdit LightningDiT       euler        [0.125, 1]  0.3   3 of 32  skips CFG   249       6.7
    None         this package       scheduler    every step  --    all      extrapol.   50        4.0
    ============ ================== ============ =========== ===== ======== =========== ========= =====

    *DiT's own sampler (``solver="ddpm-learned-sigma"``, :func:`learned_sigma_scheduler`): DDPM at DiT's respaced
    timesteps, its variance read from the model's σ channels (a model without them is refused: ``solver="scheduler"``
    samples it with its own scheduler). SiT's and LightningDiT's 250 grid points are 249 intervals; SiT's SDE mode
    is ``solver="sde"``, ``num_steps=250`` (REPA's ``--mode sde``: the same with its 50). REPA's Heun (``--heun``)
    is ``"repa-heun"``.
    "< 1 raises": the script asserts cfg >= 1 and skips CFG at 1; "skips CFG": any scale <= 1 samples the
    conditional model; "extrapol.": a scale below 1 extrapolates towards the unconditional model.

    Args:
        bundle: a model with a transformer and a scheduler: a diffusers scheduler (DDPM-time models) or a
            :class:`flow.FlowODE` (flow models).
        labels: class ids, one per image.
        num_steps: scheduler steps (flow: intervals of the ODE grid; SDE: steps, the last one noise-free).
        cfg_scale: guidance scale; 1.0 switches CFG off (one forward per step); below 1: see ``family``.
        seed: all noise of sample i (initial, and a stochastic scheduler's or the SDE's) is drawn from
            ``(seed, first_index + i)``, with or without a mask.
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
        family: ``"dit"``, ``"diffusers"``, ``"sit"``, ``"repa"`` or ``"lightningdit"`` (:data:`FAMILY_SAMPLERS`).
        solver: flow models: ``"euler"``, ``"heun"``, ``"repa-heun"``, ``"sde"`` or ``"dopri5"`` (torchdiffeq);
            DDPM-time models: ``"scheduler"`` (the bundle's, as loaded) or ``"ddpm-learned-sigma"`` (DiT's).
        guidance_interval: flow models: (low, high) in [0, 1]; CFG only at steps starting at low <= t <= high on
            the model's time axis, the decision at a step's start also governing its Heun correction (REPA's).
        shift: flow models: the timestep shift of the grid (> 0; 1.0: none).
        cfg_channels: CFG on the first k output channels, the conditional output on the rest.

    Returns:
        float tensor (N, C, H, W) in [0, 1], on the CPU; N = 0 (an empty shard) gives (0, *bundle.image_shape).

    Raises:
        ValueError: bad labels, steps, mask, schedule, null policy, sampler option or ``output_dir`` (a file), before
            any sampling; NaN or inf images (a guidance scale or autocast that overflows), before anything is written.
        ModuleNotFoundError: ``solver="dopri5"`` (family ``"sit"``) without torchdiffeq, before any sampling.
        PermissionError: a read-only ``output_dir``, before any sampling.
    """
    schedule = _check_sampling_inputs(bundle, num_steps, batch_size, cfg_scale, seed, first_index, mask, schedule,
                                      autocast)
    conventions = sampler_conventions(bundle, family, solver=solver, guidance_interval=guidance_interval, shift=shift,
                                      cfg_channels=cfg_channels)
    _check_use(conventions, family, cfg_scale, mask, schedule)
    labels = check_labels(bundle, labels)
    if output_dir is not None:
        check_output_dir(output_dir)
    bundle.scheduler.set_timesteps(num_steps)
    ode, scheduler = _integrator(bundle, conventions, num_steps), _ddpm_scheduler(bundle, conventions, num_steps)
    images = []
    with _pruning(bundle, mask, schedule, null_policy, _evaluation_times(scheduler, ode, conventions)):
        for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
            batch = labels[start : start + batch_size]
            indices = torch.arange(first_index + start, first_index + start + len(batch))
            generators = sample_generators(indices, seed)
            x = initial_noise(bundle, indices, seed, generators).to(bundle.device, bundle.dtype)  # (B, C, H, W)
            if ode is not None:
                x = _integrate_flow(bundle, x, batch, cfg_scale, autocast, conventions, ode, generators)
            else:
                x = _denoise(bundle, x, batch, cfg_scale, autocast, generators, conventions, scheduler)
            images.append(_decode(bundle, x, cfg_scale, autocast))
    images = torch.cat(images) if images else torch.empty(0, *bundle.image_shape)
    if output_dir is not None:
        write_pngs(images, labels.cpu(), output_dir, first_index)
    return images


# ---------------------------------------------------------------------------------------------------
#                        The sampler card: what a sample-based number was sampled with
# ---------------------------------------------------------------------------------------------------

def sampler_card(bundle: Bundle, *, num_samples: int, num_steps: int, cfg_scale: float, family: str | None = None,
                 solver: str | None = None, guidance_interval=None, cfg_channels: int | None = None,
                 shift: float | None = None, autocast: str | None = None, feature_network: str | None = None,
                 fid_mode: str | None = None) -> dict:
    """The sampler card of a sample-based number: what :func:`sample` runs with these arguments, resolved as it
    resolves them (:func:`sampler_conventions`), and how the samples were scored.

    Every sample-based number of the book carries one (``report.provenance(..., sampler_cards=...)``,
    ``report.glue_sampled``), and the sampling CLI stores one in its ``.npz`` (key ``sampler_card``, JSON).

    Args:
        bundle: the model sampled.
        num_samples: samples behind the number (per setting).
        num_steps, cfg_scale, family, solver, guidance_interval, cfg_channels, shift: as passed to :func:`sample`.
        autocast: as passed to :func:`sample` (None, ``"float32"``, ``"bfloat16"``, ``"float16"``), or a chapter's
            ``"auto"``/``"none"`` (:func:`resolve_autocast` on the bundle's device).
        feature_network: the network the samples were scored with (``metrics.Evaluator.feature_network``); None
            where no feature network scores them (e.g. the Ising energies).
        fid_mode: clean-fid's mode of an Inception FID (``features.FID_MODES``); None for other metrics.

    Returns:
        A JSON-ready dict with the keys :data:`SAMPLER_CARD_KEYS`: ``family`` (None: the package's sampler) and
        ``sampler`` (the script its conventions come from); ``time`` ("ddpm" or "flow"); ``solver`` (a DDPM-time
        model's scheduler, e.g. "ddim", whatever the family; a flow model's integrator); ``nfe``, the network
        evaluations per sample, a CFG step counting 2 and a Heun step 2 (None under the adaptive dopri5);
        ``guided`` (False where the scale switches CFG off: ``guidance_interval``, ``cfg_channels`` are then None);
        ``guidance_interval`` (flow models; None on a DDPM-time model, guided at every step); ``cfg_channels`` of
        ``channels`` guided; ``shift`` (flow models); ``weights``, ``transformer_precision`` (the autocast dtype,
        else the weights'), ``tf32_matmul`` (on cuda at float32: whether matmuls run in TF32; None elsewhere),
        ``vae_precision`` (None for a pixel-space model).

    Raises:
        ValueError: anything :func:`sample` would refuse (steps, scale, autocast, family and its options), a
            ``num_samples`` below 1, an empty ``feature_network`` or an unknown ``fid_mode``, or a ``fid_mode``
            without a feature network; each in one line naming the fix.
        ModuleNotFoundError: ``solver="dopri5"`` without torchdiffeq.
    """
    check_int("num_samples", num_samples, 1)
    if not isinstance(autocast, torch.dtype) and autocast not in (None, "float32", "bfloat16", "float16",
                                                                  *AUTOCAST_CHOICES):
        raise ValueError(f"autocast must be what sample() takes (None, 'float32', 'bfloat16', 'float16') or a "
                         f"chapter's {', '.join(AUTOCAST_CHOICES)}, got {autocast!r}")
    if autocast in AUTOCAST_CHOICES:
        autocast = resolve_autocast(autocast, bundle.device.type)
    _check_sampling_inputs(bundle, num_steps, 1, cfg_scale, 0, 0, None, "every", autocast)
    conventions = sampler_conventions(bundle, family, solver=solver, guidance_interval=guidance_interval, shift=shift,
                                      cfg_channels=cfg_channels)
    _check_use(conventions, family, cfg_scale, None, masks.as_schedule("every"))
    _check_scoring(feature_network, fid_mode)
    is_flow, guided = isinstance(bundle.scheduler, FlowODE), conventions.scale(cfg_scale) is not None
    channels = bundle.transformer.config.in_channels
    computes = bundle.dtype if autocast is None else resolve_dtype(autocast)
    on_cuda_float32 = bundle.device.type == "cuda" and computes == torch.float32
    card = {
        "model": bundle.name, "device": str(bundle.device), "family": family, "sampler": conventions.source,
        "time": "flow" if is_flow else "ddpm", "solver": _solver_name(bundle, conventions), "num_steps": num_steps,
        "nfe": _function_evaluations(bundle, conventions, num_steps, guided), "cfg_scale": float(cfg_scale),
        "guided": guided,
        "guidance_interval": list(conventions.guidance_interval) if guided and is_flow else None,
        "cfg_channels": (conventions.cfg_channels or channels) if guided else None, "channels": channels,
        "shift": (conventions.shift if conventions.shift is not None else bundle.scheduler.shift) if is_flow else None,
        "weights": _dtype_name(bundle.dtype), "transformer_precision": _dtype_name(computes),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32) if on_cuda_float32 else None,
        "vae_precision": None if bundle.vae is None else _dtype_name(next(bundle.vae.parameters()).dtype),
        "num_samples": num_samples, "feature_network": feature_network, "fid_mode": fid_mode,
    }
    return {key: card[key] for key in SAMPLER_CARD_KEYS}


def _check_scoring(feature_network, fid_mode) -> None:
    if feature_network is not None and not (isinstance(feature_network, str) and feature_network.strip()):
        raise ValueError(f"feature_network must name the network that scored the samples (e.g. evaluator."
                         f"feature_network) or be None (no feature network), got {feature_network!r}")
    if fid_mode is not None and fid_mode not in FID_MODES:
        raise ValueError(f"fid_mode must be one of {FID_MODES} (an Inception FID's clean-fid mode) or None, got "
                         f"{fid_mode!r}")
    if fid_mode is not None and feature_network is None:
        raise ValueError(f"fid_mode {fid_mode!r} describes an Inception FID: pass feature_network= too (e.g. "
                         "evaluator.feature_network)")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _solver_name(bundle: Bundle, conventions: Conventions) -> str:
    """The flow integrator that runs, DiT's :data:`LEARNED_SIGMA`, or a DDPM-time scheduler's name ("ddim" for a
    DDIMScheduler)."""
    if isinstance(bundle.scheduler, FlowODE):
        return conventions.solver or bundle.scheduler.method
    if conventions.solver == LEARNED_SIGMA:
        return LEARNED_SIGMA
    return type(bundle.scheduler).__name__.removesuffix("Scheduler").lower()


def _function_evaluations(bundle: Bundle, conventions: Conventions, num_steps: int, guided: bool) -> int | None:
    """Network evaluations per sample, as :func:`sample` runs them: one per scheduler timestep (DDPM time) or per
    velocity call (flow: Heun corrects with a second one), doubled where CFG applies; None under dopri5."""
    if conventions.solver == LEARNED_SIGMA:
        return num_steps * (2 if guided else 1)  # one forward at each of dit_timesteps' num_steps timesteps
    if not isinstance(bundle.scheduler, FlowODE):
        scheduler = copy.deepcopy(bundle.scheduler)  # the bundle's own keeps its timesteps
        scheduler.set_timesteps(num_steps)
        return len(scheduler.timesteps) * (2 if guided else 1)
    if conventions.solver == "dopri5":
        return None
    own = bundle.scheduler
    ode = FlowODE(own.noise_time, conventions.solver or own.method,
                  own.shift if conventions.shift is None else conventions.shift)
    ode.set_timesteps(num_steps)
    last, total = len(ode.grid) - 2, 0
    for i in range(last + 1):
        calls = 2 if ode.method == "heun" or ode.method == "repa-heun" and i < last else 1
        total += calls * (2 if guided and conventions.guides_at(float(ode.grid64[i])) else 1)
    return total


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


def merge_npz_shards(path: str | Path, world_size: int, card: dict | None = None, run: dict | None = None) -> Path:
    """Concatenates the ranks' shards into ``path`` in rank order (atomically) and deletes them; ``card`` (a
    :func:`sampler_card`) is stored beside them as the JSON string ``sampler_card``, and ``run`` (what else
    identifies the run, e.g. ``pruning_samples.run_identity``) as ``run``."""
    path = Path(path)
    shards = [_shard_path(path, rank, world_size) for rank in range(world_size)]
    missing = [str(shard) for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(f"shards {missing} are missing; a rank did not finish")
    parts = [dict(np.load(shard)) for shard in shards]
    arrays = {key: np.concatenate([part[key] for part in parts]) for key in ("arr_0", "labels", "indices")}
    metadata = {key: np.array(json.dumps(value)) for key, value in (("sampler_card", card), ("run", run))
                if value is not None}
    atomic_savez(path, **arrays, **metadata)
    for shard in shards:
        shard.unlink()
    return path


def sample_sharded(bundle: Bundle, labels, *, npz_path: str | Path | None = None,
                   png_dir: str | Path | None = None, card: dict | None = None, run: dict | None = None,
                   **sample_kwargs) -> torch.Tensor:
    """Samples this rank's slice of ``labels``; writes PNGs and/or one merged ``.npz`` for all ranks, with ``card``
    (the run's :func:`sampler_card`) and ``run`` (:func:`merge_npz_shards`) in it.

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
            merge_npz_shards(npz_path, world_size, card, run)
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
    parser.add_argument("--steps", type=_number(int, 1), default=None, help="default: the --family's, else 50")
    parser.add_argument("--cfg", type=_number(float, None), default=None, help="default: the --family's, else 4.0")
    parser.add_argument("--seed", type=_number(int, 0), default=0)
    parser.add_argument("--batch-size", type=_number(int, 1), default=64)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (each rank uses cuda:LOCAL_RANK)")
    parser.add_argument("--autocast", default="auto", choices=AUTOCAST_CHOICES,
                        help="transformer precision: auto is bfloat16 on cuda (none: float32 with TF32 matmuls) and "
                             "float32 on the CPU")
    parser.add_argument("--npz", default=None, help="write all samples into this .npz")
    parser.add_argument("--png-dir", default=None, help="write every sample as a PNG into this folder")
    parser.add_argument("--mask", default="none", choices=["none", "tail", "head", "topk"])
    parser.add_argument("--tau", type=_number(float, 0), default=None)
    parser.add_argument("--topk", type=_number(int, 0), default=None)
    parser.add_argument("--random-control", action="store_true", help="zero as many random coordinates instead")
    parser.add_argument("--recompute", action="store_true",
                        help="tail or topk: at every step zero as many of the smallest (topk: largest) |c_i| of that "
                             "step's c (masks.recomputed) instead of the t0 set")
    parser.add_argument("--granularity", default=masks.DEFAULT_GRANULARITY, choices=masks.GRANULARITIES)
    parser.add_argument("--schedule", default="every", choices=masks.SCHEDULES)
    parser.add_argument("--k", type=_number(int, 1), default=None, help="steps of the 'last' schedule")
    parser.add_argument("--null-policy", default=masks.DEFAULT_NULL_POLICY, choices=masks.NULL_POLICIES)
    _add_sampler_args(parser)
    args = parser.parse_args(argv)
    if args.npz is None and args.png_dir is None:
        parser.error("give --npz and/or --png-dir")
    if args.mask in ("tail", "head") and args.tau is None or args.mask == "topk" and args.topk is None:
        parser.error(f"--mask {args.mask} needs --tau (tail, head) or --topk (topk)")
    if args.tau is not None and args.mask not in ("tail", "head") or args.topk is not None and args.mask != "topk":
        parser.error(f"--tau goes with --mask tail/head and --topk with --mask topk, not with --mask {args.mask}")
    if args.recompute and (args.mask not in ("tail", "topk") or args.random_control):
        parser.error("--recompute goes with --mask tail or topk only (not head by τ, or --random-control)")
    if (args.k is None) != (args.schedule != "last"):
        parser.error("--k goes with --schedule last, which needs it")
    _check_sampler_args(parser, args)
    outputs = [(check, path) for check, path in ((check_output_file, args.npz), (check_output_dir, args.png_dir))
               if path is not None]
    for check, path in outputs:  # before the model loads: a bad output path must not cost a whole sampling run
        try:
            check(path)
        except (ValueError, PermissionError) as error:
            parser.error(str(error))
    return args


def _add_sampler_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("each family's own sampler (see sample(); every option overrides --family's)")
    group.add_argument("--family", default=None, choices=sorted(FAMILY_SAMPLERS),
                       help="sample as this family's own script does (default: the package's sampler)")
    group.add_argument("--solver", default=None, choices=SOLVERS + DDPM_SOLVERS,
                       help=f"flow models: the integrator ({', '.join(SOLVERS)}); DDPM-time models: "
                            f"{' or '.join(DDPM_SOLVERS)}")
    group.add_argument("--guidance-interval", type=_number(float, 0), nargs=2, default=None, metavar=("LOW", "HIGH"),
                       help="flow models: CFG only at steps starting at LOW <= t <= HIGH")
    group.add_argument("--shift", type=_number(float, None), default=None, help="flow models: the timestep shift")
    group.add_argument("--cfg-channels", type=_number(int, 1), default=None, help="CFG on the first K channels")


def _check_sampler_args(parser: argparse.ArgumentParser, args) -> None:
    """The interval and shift checks of :func:`sampler_conventions`, before the model loads; fills --steps, --cfg."""
    try:
        if args.guidance_interval is not None:
            check_guidance_interval(args.guidance_interval)
        if args.shift is not None:
            flow.check_shift(args.shift)
    except ValueError as error:
        parser.error(str(error))
    defaults = FAMILY_SAMPLERS.get(args.family, PACKAGE)
    args.steps = defaults.num_steps if args.steps is None else args.steps
    args.cfg = defaults.cfg_scale if args.cfg is None else args.cfg


def cli_precision(autocast: str, device: str) -> tuple[str | None, bool]:
    """The CLI's ``--autocast`` on ``device`` as (the autocast :func:`sample` takes, whether to switch on TF32):
    bfloat16 on cuda by default; float32 on cuda (``none``) with TF32 matmuls, as the families' own scripts run;
    float32 on the CPU (no TF32 there). See :func:`resolve_autocast`."""
    resolved = resolve_autocast(autocast, device)
    return resolved, str(device).startswith("cuda") and resolved is None


@contextlib.contextmanager
def torchrun_rank(device: str):
    """Yields the device this process samples on. Under ``torchrun`` (``RANK`` set) that is ``cuda:LOCAL_RANK`` for
    a cuda ``device``, made current, with a process group (NCCL on cuda, gloo on the CPU) destroyed on exit;
    otherwise ``device`` itself, one rank of one."""
    if "RANK" in os.environ:
        if device.startswith("cuda"):
            device = f"cuda:{os.environ['LOCAL_RANK']}"
            torch.cuda.set_device(device)  # NCCL's barrier uses the current device
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield device
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    with torchrun_rank(args.device) as device:
        autocast, tf32 = cli_precision(args.autocast, device)
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        bundle = load(args.model, device=device)
        schedule = masks.Schedule(args.schedule, args.k if args.schedule == "last" else None)
        mask = _cli_mask(bundle, args)
        labels = balanced_labels(bundle.num_classes, args.num_samples)
        options = {"family": args.family, "solver": args.solver, "guidance_interval": args.guidance_interval,
                   "shift": args.shift, "cfg_channels": args.cfg_channels}
        card = sampler_card(bundle, num_samples=args.num_samples, num_steps=args.steps, cfg_scale=args.cfg,
                            autocast=autocast, **options)
        sample_sharded(bundle, labels, npz_path=args.npz, png_dir=args.png_dir, card=card, num_steps=args.steps,
                       cfg_scale=args.cfg, seed=args.seed, batch_size=args.batch_size, mask=mask,
                       schedule=schedule, null_policy=args.null_policy, autocast=autocast,
                       progress=_rank_and_world()[0] == 0, **options)


if __name__ == "__main__":
    main()
