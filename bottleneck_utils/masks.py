"""Pruning the conditional vector c = y + t at inference: masks, schedules, and a hook that applies them.

A :class:`Mask` says which coordinates of c to zero. It is built from c at t₀ (the first sampling step):

* **what**: the tail (|cᵢ| < τ), the head (|cᵢ| > τ), the k largest (or smallest) |cᵢ|, or a random control
  that removes as many coordinates as a given mask, chosen uniformly at random;
* **granularity**: ``"global"`` (one mask from |mean c at t₀| over the real classes) or ``"per-sample"``
  (each sample's mask from its own c at t₀). c at t₀ depends on the label only, so a per-sample mask is a table
  with one row per label, the CFG null label included; the sampler looks rows up by label. A continuous-condition
  model (``bundle.condition`` set, e.g. ``ising-dit``) has no label rows: it takes global masks, built from the
  mean c over its condition grid, and its null condition is NaN.

A mask records how it was built (``Mask.built``). It is fixed at t₀ by default. :func:`recomputed` turns a tail
(by τ or by share) or a top-k head into one recomputed at every call of the conditioning module: in each row it
zeroes as many of the smallest (a head: largest) |cᵢ| of the c just produced as the t₀ mask removes in that row, so
it follows the tail (head) wherever the changing t moves it. Other masks (a head by τ, a random control, given
coordinates) have no rule to recompute them and are refused.

A :class:`Schedule` says at which sampling steps the mask is applied: ``"every"`` step (the paper's tᵢ), the
``"first"`` step only (t₀), or the ``"last"`` k steps (the paper never gives k).

:func:`prune` applies a mask by hooking every conditioning module the model runs (in diffusers' DiT, each
block's ``norm1.emb``; the final layer calls block 0's again, so it is hooked too; in a U-Net organism, its one
:class:`unet.UNetEmbedder`). Zeroing coordinate j of c this way is exactly the same as zeroing column j of the
label table and row j of ``timestep_embedder.linear_2`` (weight and bias); the weights themselves are never touched.

The paper leaves two choices open (digest: "Unknowns"); both are parameters here, with these defaults:

* ``granularity="per-sample"``: Table 2's percentages are not count/1152 (448 → 38.94%, 762 → 66.21%), which
  fits averages of per-sample masks, and the direct implementation, ``c[c.abs() < τ] = 0`` inside the
  forward pass, is per sample.
* ``null_policy="mask"``: the paper's code bases run CFG as one doubled batch [labels, null] through one forward,
  so a mask inserted where c is formed prunes the null branch too. ``"leave"`` keeps the null branch intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
from dataclasses import dataclass

import torch

from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from bottleneck_utils.models import Bundle, block_embedders
from bottleneck_utils.unet import ConditionedUNet

GRANULARITIES = ("global", "per-sample")
SCHEDULES = ("every", "first", "last")
NULL_POLICIES = ("mask", "leave")
DEFAULT_GRANULARITY = "per-sample"
DEFAULT_NULL_POLICY = "mask"
BUILT = ("given", "tail", "head", "top-k", "bottom-k", "random")
"""How a mask was built: given coordinates, tail or head by τ, the k largest or smallest |cᵢ|, a random control."""
RECOMPUTED_LARGEST = {"tail": False, "bottom-k": False, "top-k": True}
"""The masks :func:`recomputed` accepts, by ``Mask.built``: True where it zeroes the largest |cᵢ|, else the smallest."""

# ---------------------------------------------------------------------------------------------------
#                                               Masks
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mask:
    """Coordinates of c to zero.

    Attributes:
        removed: bool tensor, ``(1, D)`` for a global mask or ``(num_classes + 1, D)`` for a per-sample mask
            (row ``num_classes`` is the CFG null label). True = the coordinate is zeroed.
        name: a short description, e.g. ``"tail τ=0.5"``.
        recompute: False zeroes ``removed`` itself at every call. True (:func:`recomputed`) zeroes, in each row,
            as many of the smallest (a top-k head: largest) |cᵢ| of the c that the call just produced as ``removed``
            has in that row.
        built: how the mask was built, one of :data:`BUILT` (``"given"`` for coordinates from elsewhere).
    """

    removed: torch.Tensor
    name: str = "mask"
    recompute: bool = False
    built: str = "given"

    def __post_init__(self):
        if not isinstance(self.removed, torch.Tensor) or self.removed.dtype != torch.bool or self.removed.ndim != 2:
            got = f"{self.removed.dtype} {tuple(self.removed.shape)}" if isinstance(self.removed, torch.Tensor) \
                else type(self.removed).__name__
            raise ValueError(f"Mask.removed must be a 2-D bool tensor (rows, D), got {got}")
        if not isinstance(self.recompute, bool):
            raise TypeError(f"Mask.recompute must be True or False, got {self.recompute!r}; "
                            "build a recomputed mask with masks.recomputed(mask)")
        if self.built not in BUILT:
            raise ValueError(f"Mask.built must be one of {BUILT}, got {self.built!r}")
        if self.recompute and self.built not in RECOMPUTED_LARGEST:
            raise ValueError(_not_recomputable(self))

    @property
    def hidden_size(self) -> int:
        return self.removed.shape[1]

    @property
    def granularity(self) -> str:
        return "global" if self.removed.shape[0] == 1 else "per-sample"

    @property
    def removed_count(self) -> float:
        """Coordinates removed: the count of a global mask, the mean over the real classes of a per-sample one."""
        rows = self.removed if self.granularity == "global" else self.removed[:-1]  # the null row is not a class
        return rows.sum(-1).double().mean().item()

    @property
    def removed_fraction(self) -> float:
        return self.removed_count / self.hidden_size

    def table(self, num_classes: int) -> torch.Tensor:
        """The mask as one row per label, ``(num_classes + 1, D)`` bool (a global mask is repeated)."""
        if self.granularity == "global":
            return self.removed.expand(num_classes + 1, -1).clone()
        if self.removed.shape[0] != num_classes + 1:
            raise ValueError(f"a per-sample mask needs num_classes + 1 = {num_classes + 1} rows (the last is the "
                             f"null label), got {self.removed.shape[0]}")
        return self.removed.clone()


def coordinate_mask(coordinates, hidden_size: int, name: str = "coordinates") -> Mask:
    """A global mask that removes the given coordinate indices (or a (D,) bool vector) of c."""
    if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
        raise ValueError(f"hidden_size must be a positive int (bundle.hidden_size), got {hidden_size!r}")
    coordinates = torch.as_tensor(coordinates)
    if coordinates.dtype == torch.bool:
        if coordinates.shape != (hidden_size,):
            raise ValueError(f"a bool mask must have the model's hidden size {hidden_size}, got "
                             f"{tuple(coordinates.shape)}")
        return Mask(coordinates[None].clone(), name)
    coordinates = coordinates.flatten()
    if coordinates.is_floating_point() and (~torch.isfinite(coordinates) | (coordinates != coordinates.round())).any():
        raise ValueError(f"coordinates must be whole numbers, got {coordinates.tolist()[:8]}")
    coordinates = coordinates.long()
    if len(coordinates) and (coordinates.min() < 0 or coordinates.max() >= hidden_size):
        raise ValueError(f"coordinates must lie in 0..{hidden_size - 1}, got {coordinates.tolist()[:8]}")
    removed = torch.zeros(1, hidden_size, dtype=torch.bool)
    removed[0, coordinates] = True
    return Mask(removed, name)


def check_mask(bundle: Bundle, mask: Mask) -> None:
    """Raises ValueError if the mask does not fit the model (hidden size, rows per label)."""
    if not isinstance(mask, Mask):
        raise TypeError(f"expected a masks.Mask, got {type(mask).__name__}; build one with tail_mask, head_mask, "
                        "topk_mask, random_mask or coordinate_mask")
    if mask.hidden_size != bundle.hidden_size:
        raise ValueError(f"the mask has length {mask.hidden_size}, but {bundle.name}'s c has {bundle.hidden_size} "
                         "coordinates")
    if (bundle.condition is not None or bundle.prompt_conditioned) and mask.granularity != "global":
        raise ValueError(f"{bundle.name} has a continuous or text condition, not label rows: it takes a global mask")
    mask.table(bundle.num_classes)  # raises on a wrong number of per-sample rows


def reference_magnitudes(bundle: Bundle, num_steps: int, granularity: str = DEFAULT_GRANULARITY,
                         timestep: float | None = None) -> torch.Tensor:
    """|c| from which masks are built: ``(1, D)`` (global) or ``(num_classes + 1, D)`` (per sample).

    Global: |mean over the real classes of c|. Per sample: |c| of every label, the null label last. The timestep
    is t₀ (the first of ``num_steps`` sampling steps) unless ``timestep`` names another.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if granularity == "per-sample" and bundle.condition is not None:
        raise ValueError(f"{bundle.name} has a continuous condition, not label rows: use granularity='global'")
    t = first_sampling_timestep(bundle, num_steps) if timestep is None else timestep
    if granularity == "global":
        c = conditional_vectors(bundle, timesteps=t)  # (num_classes, D)
        return c.mean(0, keepdim=True).abs().cpu()  # (1, D)
    labels = torch.arange(bundle.num_classes + 1)
    return conditional_vectors(bundle, labels, timesteps=t, include_null=True).abs().cpu()  # (num_classes + 1, D)


def _real_rows(magnitudes: torch.Tensor, granularity: str) -> torch.Tensor:
    return magnitudes if granularity == "global" else magnitudes[:-1]  # the null row is not a class


def removed_energy_share(bundle: Bundle, mask: Mask, *, num_steps: int) -> float:
    """The share of ‖c‖² at t₀ (summed over the real rows) that ``mask`` removes: a second measure of its size."""
    check_mask(bundle, mask)
    squares = _real_rows(reference_magnitudes(bundle, num_steps, mask.granularity), mask.granularity).double() ** 2
    removed = _real_rows(mask.removed, mask.granularity).expand_as(squares)
    return (squares * removed).sum().item() / squares.sum().item()


def threshold_for_energy_share(bundle: Bundle, share: float, *, num_steps: int,
                               granularity: str = DEFAULT_GRANULARITY) -> float:
    """The τ at which :func:`tail_mask` removes ``share`` of ‖c‖² at t₀ (pooled over the real rows).

    The paper matches nothing by energy; this is the alternative to :func:`threshold_for_fraction` for a model
    whose tail holds more of c than REPA's: it removes as little of the vector, not as many of its coordinates.
    """
    if not 0 < share < 1:
        raise ValueError(f"share must lie strictly between 0 and 1, got {share!r}")
    real = _real_rows(reference_magnitudes(bundle, num_steps, granularity), granularity)
    ordered = real.flatten().sort().values.double()  # (rows · D,)
    cumulative = (ordered**2).cumsum(0) / (ordered**2).sum()  # share held by the coordinates up to each one
    below = min(max(int((cumulative <= share).sum()), 1), len(ordered) - 1)
    return ((ordered[below - 1] + ordered[below]) / 2).item()


def smallest_coordinates(magnitudes: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(rows, D) bool: in each row of ``magnitudes``, its ``counts`` smallest entries (ties: the lower index first).

    Args:
        magnitudes: ``(rows, D)`` values to rank, e.g. |c|.
        counts: ``(rows,)`` or ``(1,)`` (the same count for every row) numbers of coordinates to select.
    """
    ranks = magnitudes.argsort(dim=-1, stable=True).argsort(dim=-1)  # (rows, D): 0 = smallest
    return ranks < counts.reshape(-1, 1)


def tail_overlap_over_steps(bundle: Bundle, mask: Mask, timesteps) -> torch.Tensor:
    """For each timestep, the share of ``mask``'s removed set that a mask recomputed there would also remove.

    The recomputed mask removes, in each row, as many of the smallest |cᵢ| at that timestep as ``mask`` removes;
    1.0 everywhere means a mask fixed at t₀ and one recomputed at every step are the same.

    Returns:
        ``(len(timesteps),)``, averaged over the rows that remove at least one coordinate.
    """
    counts = mask.removed.sum(-1)  # (rows,)
    overlaps = []
    for t in timesteps:
        magnitudes = reference_magnitudes(bundle, 1, mask.granularity, timestep=float(t))  # (rows, D)
        shared = (smallest_coordinates(magnitudes, counts) & mask.removed).sum(-1).double()
        overlaps.append((shared[counts > 0] / counts[counts > 0]).mean())
    return torch.stack(overlaps)


def _check_tau(tau: float) -> None:
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not tau >= 0:  # also catches NaN
        raise ValueError(f"the threshold tau must be a number >= 0, got {tau!r}")


def tail_mask(bundle: Bundle, tau: float, *, num_steps: int, granularity: str = DEFAULT_GRANULARITY) -> Mask:
    """Removes the tail, |cᵢ| < τ, of c at t₀ (t₀ = the first of ``num_steps`` sampling steps)."""
    _check_tau(tau)
    return Mask(reference_magnitudes(bundle, num_steps, granularity) < tau, f"tail τ={tau:g}", built="tail")


def head_mask(bundle: Bundle, tau: float, *, num_steps: int, granularity: str = DEFAULT_GRANULARITY) -> Mask:
    """Removes the head, |cᵢ| > τ, of c at t₀."""
    _check_tau(tau)
    return Mask(reference_magnitudes(bundle, num_steps, granularity) > tau, f"head τ={tau:g}", built="head")


def topk_mask(bundle: Bundle, k: int, *, num_steps: int, granularity: str = DEFAULT_GRANULARITY,
              largest: bool = True) -> Mask:
    """Removes the k largest |cᵢ| of c at t₀ (``largest=False``: the k smallest)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= bundle.hidden_size:
        raise ValueError(f"k must lie in 0..{bundle.hidden_size} (the hidden size), got {k}")
    magnitudes = reference_magnitudes(bundle, num_steps, granularity)  # (rows, D)
    order = magnitudes.argsort(dim=-1, descending=largest, stable=True)  # (rows, D)
    removed = torch.zeros_like(magnitudes, dtype=torch.bool).scatter_(1, order[:, :k], True)
    side = "top" if largest else "bottom"
    return Mask(removed, f"{side}-{k}", built=f"{side}-k")


def threshold_for_fraction(bundle: Bundle, fraction: float, *, num_steps: int,
                           granularity: str = DEFAULT_GRANULARITY) -> float:
    """The τ at which :func:`tail_mask` removes ``fraction`` of the coordinates (on average over the classes).

    τ lies half way between the two magnitudes of c at t₀ that straddle that share, so a small change of c does
    not move a coordinate across it. This is how the paper's τ values transfer to another model: by the share of
    c they remove, not by their absolute value.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction!r}")
    real = _real_rows(reference_magnitudes(bundle, num_steps, granularity), granularity)
    ordered = real.flatten().sort().values.double()  # (rows · D,)
    below = min(max(round(fraction * len(ordered)), 1), len(ordered) - 1)
    return ((ordered[below - 1] + ordered[below]) / 2).item()


def random_mask(like: Mask, seed: int = 0) -> Mask:
    """The random control: in every row, as many coordinates as ``like`` removes, drawn uniformly."""
    if not isinstance(like, Mask):
        raise TypeError(f"random_mask draws a control for a masks.Mask, got {type(like).__name__}")
    generator = torch.Generator().manual_seed(seed)
    counts = like.removed.sum(-1)  # (rows,)
    scores = torch.rand(like.removed.shape, generator=generator)  # (rows, D)
    ranks = scores.argsort(dim=-1).argsort(dim=-1)  # (rows, D): rank of each coordinate's score
    return Mask(ranks < counts[:, None], f"random ({like.name})", built="random")


def energy_matched_random_mask(bundle: Bundle, like: Mask, *, num_steps: int, seed: int = 0) -> Mask:
    """The second random control: in every row, a random set of coordinates that holds as much of that row's ‖c‖²
    at t₀ as ``like`` removes there, without going over.

    The coordinates are visited in a random order and each is taken when it still fits under the row's target
    share, so the set fills the target with whatever coordinates chance offers, sparing any single coordinate
    bigger than the target. A count-matched control (:func:`random_mask`) of a 39% tail hits the few head
    coordinates that hold most of ‖c‖², so it answers "does the tail matter less than any set of its size?"; this
    one answers "does the tail matter less than any set of its energy?".
    """
    check_mask(bundle, like)
    squares = reference_magnitudes(bundle, num_steps, like.granularity).double() ** 2  # (rows, D)
    shares = squares / squares.sum(-1, keepdim=True)  # (rows, D) each coordinate's share of its row
    targets = (shares * like.removed).sum(-1) * (1 + 1e-9)  # (rows,) the share to fill, rounding allowed
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(shares.shape, generator=generator).argsort(dim=-1)  # (rows, D) a random order per row
    ordered = shares.gather(1, order)  # (rows, D) shares in that order
    filled, taken = torch.zeros(len(shares), dtype=shares.dtype), torch.zeros_like(ordered, dtype=torch.bool)
    for position in range(ordered.shape[1]):
        fits = filled + ordered[:, position] <= targets  # (rows,)
        taken[:, position] = fits & like.removed.any(-1)
        filled = filled + ordered[:, position] * taken[:, position]
    removed = torch.zeros_like(taken).scatter_(1, order, taken)
    return Mask(removed, f"energy-matched random ({like.name})", built="random")


def recomputed(mask: Mask) -> Mask:
    """``mask`` recomputed at every call of the conditioning module, from that call's own c.

    In each row (each label's row of a per-sample mask, or the one row of a global mask), the hook of
    :func:`prune` zeroes as many of the smallest |cᵢ| of the c just produced as ``mask`` removes in that row (of
    a top-k head: as many of the largest); the null policy applies as for a fixed mask. At t₀ this is the mask built
    there; at later steps it follows the tail (head) wherever the changing t moves it. ``removed`` keeps the t₀
    sets, which give the counts (and the removed share and energy at t₀).

    Raises:
        TypeError: not a :class:`Mask`.
        ValueError: a mask with no rule to recompute it: a head by τ, a random control, given coordinates (only a
            tail, by τ, share or count, and a top-k head are recomputed).
    """
    if not isinstance(mask, Mask):
        raise TypeError(f"recomputed takes a masks.Mask (e.g. from tail_mask), got {type(mask).__name__}")
    if mask.built not in RECOMPUTED_LARGEST:
        raise ValueError(_not_recomputable(mask))
    return mask if mask.recompute else dataclasses.replace(mask, name=f"{mask.name} recomputed", recompute=True)


def _not_recomputable(mask: Mask) -> str:
    return (f"the mask {mask.name!r} (built as {mask.built!r}) cannot be recomputed at every step: only a tail "
            "(tail_mask, by τ or share; topk_mask(largest=False)) or a top-k head (topk_mask) can; sample it fixed "
            "at t₀ instead")


# ---------------------------------------------------------------------------------------------------
#                                             Schedules
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """At which sampling steps the mask is applied.

    Attributes:
        kind: ``"every"`` (the paper's tᵢ), ``"first"`` (t₀ only) or ``"last"`` (the last k steps).
        k: the number of final steps, for ``"last"`` only.
    """

    kind: str = "every"
    k: int | None = None

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if self.kind == "last" and (not isinstance(self.k, int) or self.k < 1):
            raise ValueError(f"the 'last' schedule needs a step count k >= 1, got k={self.k!r}")
        if self.kind != "last" and self.k is not None:
            raise ValueError(f"k applies to the 'last' schedule only, not to {self.kind!r}")

    @property
    def label(self) -> str:
        return {"every": "tᵢ", "first": "t₀"}.get(self.kind, f"last-{self.k}")

    def active_steps(self, num_steps: int) -> torch.Tensor:
        """(num_steps,) bool: True at the steps where the mask is applied. Raises if k > num_steps."""
        if self.kind == "last" and self.k > num_steps:
            raise ValueError(f"the 'last' schedule asks for k={self.k} steps, but sampling has only {num_steps}")
        active = torch.zeros(num_steps, dtype=torch.bool)
        if self.kind == "every":
            active[:] = True
        elif self.kind == "first":
            active[0] = True
        else:
            active[num_steps - self.k:] = True
        return active


def as_schedule(schedule: Schedule | str) -> Schedule:
    """Accepts a :class:`Schedule` or the name ``"every"``/``"first"`` (``"last"`` needs ``Schedule("last", k)``)."""
    return schedule if isinstance(schedule, Schedule) else Schedule(schedule)


# ---------------------------------------------------------------------------------------------------
#                                    Application: forward hooks on c
# ---------------------------------------------------------------------------------------------------


def conditioning_modules(bundle: Bundle) -> list[torch.nn.Module]:
    """Every module whose output is c: each block's ``norm1.emb`` (shared copies counted once), a U-Net's
    embedder (called once per forward, its c read by every resnet), else the bundle's embedder.

    The final layer of diffusers' DiT calls ``transformer_blocks[0].norm1.emb`` again, so it is covered.
    """
    if bundle.transformer is None:
        return [bundle.embedder]
    if isinstance(bundle.transformer, ConditionedUNet):
        return [bundle.transformer.embedder]
    unique = {}
    for module in block_embedders(bundle.transformer):
        unique.setdefault(id(module), module)
    return list(unique.values())


def _call_timestep(args: tuple, kwargs: dict) -> torch.Tensor:
    """The timestep of a conditioning module's call (its first argument in diffusers), positional or by keyword."""
    return torch.as_tensor(args[0] if len(args) > 0 else kwargs["timestep"])


def _call_labels(args: tuple, kwargs: dict) -> torch.Tensor:
    """The class labels of a ``CombinedTimestepLabelEmbeddings`` call, positional or by keyword."""
    return torch.as_tensor(args[1] if len(args) > 1 else kwargs["class_labels"])


def _rows_for_call(bundle: Bundle, mask: Mask, null_policy: str):
    """(args, kwargs) of a call → the (B, D) or (1, D) bool rows of c to zero, with the null policy applied."""
    row = mask.removed.to(bundle.device)  # (1, D) for the global masks of continuous and text conditions
    if bundle.prompt_conditioned:
        if null_policy == "leave":
            raise ValueError(f"null_policy='leave' needs the null label, but {bundle.name} is text-conditioned: its "
                             "CFG null branch is an empty prompt the hook cannot recognise; use null_policy='mask'")
        return lambda args, kwargs: row  # (1, D)
    if bundle.condition is not None:  # continuous conditions: one global row (check_mask); NaN is the null
        if null_policy == "leave":
            return lambda args, kwargs: row & ~torch.isnan(_call_labels(args, kwargs).reshape(-1, 1))  # (B, D)
        return lambda args, kwargs: row  # (1, D)
    table = mask.table(bundle.num_classes).to(bundle.device)  # (num_classes + 1, D)
    if null_policy == "leave":
        table[bundle.null_label] = False
    return lambda args, kwargs: table[_call_labels(args, kwargs).long().reshape(-1)]  # (B, D)


def _masking_hook(rows_for, active_times: torch.Tensor | None, recompute: bool, largest: bool = False):
    """A forward hook that zeroes ``rows_for(args, kwargs)`` in c at the timesteps in ``active_times`` (None: all).

    With ``recompute``, it zeroes instead, in each row, as many of the smallest (``largest``: the largest) |cᵢ| of
    this call's c as ``rows_for`` gives that row (so a row the null policy leaves alone has none).
    """

    def hook(module, args, kwargs, output):
        removed = rows_for(args, kwargs)  # (B, D) or (1, D)
        if recompute:
            magnitudes = output.detach().abs().float()  # (B, D)
            removed = smallest_coordinates(-magnitudes if largest else magnitudes, removed.sum(-1))  # (B, D)
        if active_times is not None:
            timestep = _call_timestep(args, kwargs).to(active_times.device, torch.float32).reshape(-1)  # (1|B,)
            removed = removed & torch.isin(timestep, active_times)[:, None]
        return output.masked_fill(removed, 0)  # (B, D)

    return hook


def _active_times(schedule: Schedule, timesteps) -> torch.Tensor | None:
    if schedule.kind == "every":
        return None
    if timesteps is None:
        raise ValueError(f"the {schedule.kind!r} schedule needs the sampler's timesteps (pass timesteps=...)")
    timesteps = torch.as_tensor(timesteps, dtype=torch.float32).flatten()  # float32: MPS has no float64
    if len(timesteps) == 0 or not torch.isfinite(timesteps).all():
        raise ValueError(f"the sampler's timesteps must be finite and non-empty, got {timesteps.tolist()[:5]}")
    if len(timesteps.unique()) != len(timesteps):
        raise ValueError("the sampler's timesteps repeat, so a step cannot be told apart by its timestep")
    return timesteps[schedule.active_steps(len(timesteps))]


@contextlib.contextmanager
def prune(bundle: Bundle, mask: Mask, schedule: Schedule | str = "every", *, timesteps=None,
          null_policy: str = DEFAULT_NULL_POLICY):
    """Zeroes the masked coordinates of c inside the ``with`` block; the model is unchanged on exit.

    Args:
        bundle: the model; every conditioning module it runs is hooked (:func:`conditioning_modules`).
        mask: which coordinates to zero: fixed at t₀, or recomputed at every call (:func:`recomputed`).
        schedule: when; ``"first"`` and ``"last"`` need ``timesteps``.
        timesteps: the sampler's timesteps, in sampling order (``scheduler.timesteps``); a step is recognised
            by its timestep value.
        null_policy: ``"mask"`` (prune the CFG null label's c too) or ``"leave"`` (never touch it). The null
            label is ``num_classes``, or NaN for a continuous-condition model.

    Raises:
        ValueError: a mask that does not fit the model, a bad schedule or null policy; all before any hook.
    """
    check_mask(bundle, mask)
    schedule = as_schedule(schedule)
    if null_policy not in NULL_POLICIES:
        raise ValueError(f"null_policy must be one of {NULL_POLICIES}, got {null_policy!r}")
    rows_for = _rows_for_call(bundle, mask, null_policy)
    active = _active_times(schedule, timesteps)
    active = None if active is None else active.to(bundle.device)
    hook = _masking_hook(rows_for, active, mask.recompute, RECOMPUTED_LARGEST.get(mask.built, False))
    handles = [module.register_forward_hook(hook, with_kwargs=True) for module in conditioning_modules(bundle)]
    try:
        yield mask
    finally:
        for handle in handles:
            handle.remove()
