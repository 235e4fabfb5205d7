"""The paper's conditional vector c = y + t (and y, t alone), computed straight from the embedder modules.

No sampling is needed: c depends only on the label and the timestep.

"Labels" are class ids for a class-conditional model and condition values (e.g. temperatures) for a
continuous-condition model (``bundle.condition`` set; see :mod:`bottleneck_utils.continuous`). For the latter,
"every condition" (``labels=None``) means a grid of ``conditions.DEFAULT_GRID`` evenly spaced values over the
trained range, and values outside that range raise.
"""

from __future__ import annotations

import copy

import torch

from bottleneck_utils import stats
from bottleneck_utils.continuous import DEFAULT_GRID
from bottleneck_utils.models import Bundle

PARTS = ("y+t", "y", "t")


def check_labels(bundle: Bundle, labels, include_null: bool = False) -> torch.Tensor:
    """Returns ``labels`` as a tensor on the bundle's device, or raises if one is out of range.

    Class ids come back as a long tensor; label ``bundle.num_classes`` is the CFG null class, accepted only with
    ``include_null=True``. For a continuous-condition model see :func:`check_conditions`.
    """
    if bundle.prompt_conditioned:
        raise ValueError(f"{bundle.name} is text-conditioned: its y comes from a prompt or size embedding "
                         "(text_conditions.pooled_vectors, size_vectors), not from labels")
    if bundle.condition is not None:
        return check_conditions(bundle, labels, include_null)
    labels = _as_numbers(labels, "class ids").flatten()
    if labels.is_floating_point():
        fractional = labels[~torch.isfinite(labels) | (labels != labels.round())]
        if len(fractional):
            raise ValueError(f"class ids must be whole numbers, got {fractional.tolist()[:5]}; for a continuous "
                             "condition load a continuous-condition model (e.g. ising-dit)")
    labels = labels.long()
    top = bundle.num_classes + (1 if include_null else 0)
    bad = labels[(labels < 0) | (labels >= top)]
    if len(bad):
        null_hint = "" if include_null else f" (the null class {bundle.num_classes} needs include_null=True)"
        raise ValueError(f"class ids {bad.unique().tolist()} are outside 0..{top - 1}{null_hint}")
    return labels.to(bundle.device)


def _as_numbers(values, what: str) -> torch.Tensor:
    """``values`` as a real tensor, or a one-line ValueError naming ``what`` (strings, None, ragged lists)."""
    try:
        values = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{what} must be numbers (a list, array or tensor), got {type(values).__name__}: "
                         f"{str(error).splitlines()[0]}") from None
    if values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"{what} must be real numbers, got {values.dtype}")
    return values


def check_conditions(bundle: Bundle, values, include_null: bool = False) -> torch.Tensor:
    """Returns continuous conditions as a float32 tensor on the bundle's device, or raises.

    A value outside the trained range ``[bundle.condition.low, high]`` raises ``ValueError``: the embedder never
    saw it, so its vector is an extrapolation, not the model's conditional vector. NaN is the CFG null condition,
    accepted only with ``include_null=True``; ±inf always raises.
    """
    values = _as_numbers(values, f"{bundle.condition.name} values").double().flatten()
    condition, null = bundle.condition, torch.isnan(values)
    if null.any() and not include_null:
        raise ValueError(f"NaN is the null {condition.name} (the CFG null condition); it needs include_null=True")
    real = values[~null]
    bad = real[~torch.isfinite(real) | (real < condition.low) | (real > condition.high)]
    if len(bad):
        raise ValueError(
            f"{condition.name} values {bad.unique().tolist()[:5]} are outside the trained range "
            f"[{condition.low:g}, {condition.high:g}] of {bundle.name}"
        )
    return values.float().to(bundle.device)


def check_timesteps(bundle: Bundle, timesteps) -> torch.Tensor:
    """Returns ``timesteps`` as a 1-D tensor, or raises if there are none or one is NaN or outside the time range."""
    timesteps = _as_numbers(timesteps, "timesteps").double().flatten()
    if len(timesteps) == 0:
        raise ValueError("timesteps is empty: give at least one timestep (None means t₀)")
    bad = timesteps[~((timesteps >= 0) & (timesteps <= bundle.time.t_max))]  # NaN fails both comparisons
    if len(bad):
        raise ValueError(
            f"timesteps {bad.tolist()[:5]} are outside [0, {bundle.time.t_max:g}] ({bundle.time.kind} convention)"
        )
    return timesteps.to(bundle.device)


def first_sampling_timestep(bundle: Bundle, num_steps: int | None = None, scheduler=None) -> float:
    """t₀: the highest-noise time at which sampling starts.

    With a scheduler (the bundle's own, or one given) it is ``scheduler.timesteps[0]`` after
    ``set_timesteps(num_steps)`` on a fresh copy (the given scheduler is not changed): 980 for DDIM with 50
    "leading" steps, not 999. Without one it is the family's convention (999 for DDPM models; 0 for
    SiT/LightningDiT; 1 for REPA).
    """
    scheduler = scheduler or bundle.scheduler
    if scheduler is None:
        return bundle.time.first_time
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int when the model has a scheduler, got {num_steps!r}")
    fresh = copy.deepcopy(scheduler)  # a diffusers scheduler or a flow.FlowODE; the given one stays as it is
    fresh.set_timesteps(num_steps)
    return float(fresh.timesteps[0])


def sampling_timesteps(bundle: Bundle, num_steps: int) -> torch.Tensor:
    """The ``num_steps`` times at which the sampler evaluates the model, t₀ first: the scheduler's timesteps after
    ``set_timesteps(num_steps)`` (on a fresh copy), or :func:`sampling_path_times` for a model without one."""
    if bundle.scheduler is None:
        return sampling_path_times(bundle, num_steps)
    fresh = copy.deepcopy(bundle.scheduler)  # a diffusers scheduler or a flow.FlowODE; the bundle's stays as it is
    fresh.set_timesteps(num_steps)
    return fresh.timesteps.double()


def all_conditions(bundle: Bundle) -> torch.Tensor:
    """What ``labels=None`` means: every real class, or a grid over a continuous condition's trained range."""
    if bundle.condition is not None:
        return bundle.condition.grid(DEFAULT_GRID)
    return torch.arange(bundle.num_classes)


@torch.no_grad()
def class_embeddings(bundle: Bundle, labels=None, include_null: bool = False) -> torch.Tensor:
    """y: rows of the label table, or e(T) of a continuous condition, (n, d). ``labels=None``: all conditions.

    The label table is indexed directly rather than through ``LabelEmbedding.forward``, whose label dropout would
    act on a module left in training mode.
    """
    labels = check_labels(bundle, all_conditions(bundle) if labels is None else labels, include_null)
    if bundle.condition is not None:
        return bundle.embedder.class_embedder(labels)  # (n, d); NaN rows are the null vector
    return bundle.embedder.class_embedder.embedding_table(labels)  # (n, d)


@torch.no_grad()
def timestep_embeddings(bundle: Bundle, timesteps) -> torch.Tensor:
    """t: the sinusoid → MLP embedding of each timestep, (T, d)."""
    timesteps = check_timesteps(bundle, timesteps)
    features = bundle.embedder.time_proj(timesteps)  # (T, 256)
    return bundle.embedder.timestep_embedder(features.to(bundle.dtype))  # (T, d)


@torch.no_grad()
def conditional_vectors(
    bundle: Bundle, labels=None, timesteps=None, part: str = "y+t", include_null: bool = False
) -> torch.Tensor:
    """c = y + t (or y alone, or t alone) for every label × timestep.

    Args:
        bundle: a loaded model.
        labels: class ids, or condition values for a continuous model; None means all real classes (or the
            grid of :func:`all_conditions`). The null class is excluded unless ``include_null=True`` and listed.
        timesteps: a scalar or a list; None means t₀ of the bundle's convention (999 / 0 / 1).
        part: ``"y+t"``, ``"y"`` or ``"t"``.
        include_null: accept the null label ``num_classes``.

    Returns:
        float32 tensor ``(n, d)`` for a scalar timestep, ``(T, n, d)`` for a list (``"t"``: ``(T, 1, d)`` or
        ``(1, d)``, the same for every label).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    timesteps = bundle.time.first_time if timesteps is None else timesteps
    y = class_embeddings(bundle, labels, include_null)  # (n, d)
    return combine(y, timestep_embeddings(bundle, timesteps), part, scalar=torch.as_tensor(timesteps).ndim == 0)


def combine(y: torch.Tensor, t: torch.Tensor, part: str = "y+t", scalar: bool = False) -> torch.Tensor:
    """y (n, d) and t (T, d) → float32 c = y + t (T, n, d), y (T, n, d) or t (T, 1, d); without T if ``scalar``."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    y, t = y.float(), t.float()
    if part == "y":
        vectors = y.expand(len(t), *y.shape)  # (T, n, d)
    elif part == "t":
        vectors = t[:, None, :]  # (T, 1, d)
    else:
        vectors = y[None] + t[:, None, :]  # (T, n, d)
    return vectors[0] if scalar else vectors


@torch.no_grad()
def timestep_sweep(bundle: Bundle, timesteps, labels=None, chunk: int = 32) -> dict[str, torch.Tensor]:
    """Mean off-diagonal cosine and mean nPR of c = y + t at every timestep, over the given labels.

    The cosine uses the O(T·n·d) identity of :func:`stats.mean_offdiag_cosine_sweep`; the nPR is computed in
    chunks of timesteps, so 1000 classes × 1000 timesteps × 1152 dims never sit in memory at once.

    Returns:
        ``{"timestep": (T,), "cosine": (T,), "npr": (T,)}`` as float64 CPU tensors.
    """
    timesteps = check_timesteps(bundle, timesteps)
    y = class_embeddings(bundle, labels).double()  # (n, d)
    t = timestep_embeddings(bundle, timesteps).double()  # (T, d)
    npr = torch.cat([stats.mean_npr(y[None] + t[i : i + chunk, None]) for i in range(0, len(t), chunk)])  # (T,)
    return {"timestep": timesteps.cpu(), "cosine": stats.mean_offdiag_cosine_sweep(y, t).cpu(), "npr": npr.cpu()}


def sampling_path_times(bundle: Bundle, num_points: int) -> torch.Tensor:
    """``num_points`` times evenly spaced along the sampling path, from t₀ (the noise end) to the data end:
    DDPM t₀ → 0, SiT's flow 0 → 1, REPA's 1 → 0. Curves of DDPM-time and flow models share this axis as the
    fraction of the path travelled."""
    if not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2, got {num_points!r}")
    start = bundle.time.first_time
    end = 0.0 if bundle.time.kind == "ddpm" else 1.0 - start
    return torch.linspace(start, end, num_points, dtype=torch.float64)


@torch.no_grad()
def path_sweep(bundle: Bundle, num_points: int = 201, labels=None) -> dict[str, torch.Tensor]:
    """:func:`timestep_sweep` along :func:`sampling_path_times`, with ``"progress"``: 0 at the noise end, 1 at the
    data end, so a DDPM-time and a flow model can be drawn on one axis."""
    sweep = timestep_sweep(bundle, sampling_path_times(bundle, num_points), labels)
    return sweep | {"progress": torch.linspace(0, 1, num_points, dtype=torch.float64)}


def first_time_summary(bundle: Bundle) -> dict[str, float]:
    """:func:`stats.summary` of c = y + t at t₀ over every condition: what the training logs record each step."""
    y = class_embeddings(bundle).double().cpu()  # (n, d)
    t = timestep_embeddings(bundle, bundle.time.first_time)[0].double().cpu()  # (d,)
    return stats.summary(y, t)
