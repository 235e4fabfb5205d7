"""The "Why does tail pruning improve FID?" chapter: CFG sweeps with and without the book's tail, and the guidance
magnitude ‖ε_cond − ε_uncond‖ (velocity for a flow model) along the schedule.

The hypothesis (the book's, not the paper's): zeroing the tail of c at every step weakens the class signal the CFG
difference carries, so a pruned model at CFG w guides like the unpruned model at some w′ < w; where the book's CFG
over-guides, weaker guidance lowers FID. Its testable parts, on each organism:

- the tail shrinks the guidance difference (paired per-sample interval of its mean along the schedule);
- the unpruned FID rises with CFG above some w, so the book's CFG over-guides;
- the pruned FID at the book's CFG is reached by the unpruned curve at a lower w′ (interpolated), not beaten;
- the guidance magnitude alone predicts that w′: the unpruned w·‖Δ‖ curve meets the pruned one near w′;
- without guidance (CFG 1) the tail does not improve FID.

An *arm* is one model with or without a mask, sampled at every CFG of the grid from the same noise and labels as
every other arm (:func:`sampling.sample` draws sample i's noise from ``(seed, i)``), so every difference between
arms and between scales is paired: one set of bootstrap index draws (:func:`metrics.paired_resamples`) serves them
all, and each interval is :func:`metrics.normal_interval` of the drawn values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

import time

from bottleneck_utils import masks, metrics
from bottleneck_utils.chapters import pruning, report
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.organisms import quality
from bottleneck_utils.sampling import balanced_labels, sample

PARAMETERS = {"device": str, "seed": int, "n_samples": int, "num_steps": int, "cfg_scale": float, "cfg_grid": list,
              "tail_grid": list, "tail_share": float, "organisms": list, "l1_variant": str, "l1_control": str,
              "probe_samples": int, "n_boot": int}
"""The guidance chapter's parameters: name → accepted type(s) (:func:`report.notebook_parameters`)."""

UNPRUNED, TAIL = "unpruned", "tail"
METRICS = ("FID", "accuracy")


# ---------------------------------------------------------------------------------------------------
#                                 The guidance difference along the schedule
# ---------------------------------------------------------------------------------------------------


class GuidanceRecorder:
    """Records, on every CFG forward pass of ``bundle``'s denoiser, each sample's RMS of cond − uncond output over
    the channels the sampler guides (the ε or velocity channels; learned-σ channels are dropped).

    A forward hook on the denoiser sees the doubled batch :func:`sampling.sample` builds (conditional labels, then
    the null label); a mask's hooks act inside it, so a pruned run records the pruned outputs. ``sample`` itself is
    unchanged. A conditional-only forward (CFG 1) records nothing. Use as a context manager around one ``sample``
    call; :meth:`per_sample` returns (n samples, evaluations) in sampling order.
    """

    def __init__(self, bundle: Bundle):
        self.bundle, self.batches, self._handle = bundle, [], None

    def __enter__(self) -> GuidanceRecorder:
        self._handle = self.bundle.transformer.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module, args, kwargs, output) -> None:
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        labels, timestep = kwargs["class_labels"], kwargs["timestep"]
        half = len(labels) // 2
        if len(labels) % 2 or not bool((labels[half:] == self.bundle.null_label).all()):
            return  # a conditional-only forward: no guidance to measure
        out = output.sample[:, : x.shape[1]].float()
        conditional, unconditional = out[:half], out[half:]
        rms = (conditional - unconditional).flatten(1).pow(2).mean(1).sqrt().cpu()  # (B,)
        t = float(torch.as_tensor(timestep).flatten()[0])
        if not self.batches or t == self.batches[0][0][0] and len(self.batches[-1]) > 0:
            self.batches.append([])  # the first time of the schedule: a new batch starts
        self.batches[-1].append((t, rms))

    def times(self) -> list[float]:
        """The model time of each evaluation of one batch, in sampling order."""
        return [t for t, _ in self.batches[0]] if self.batches else []

    def per_sample(self) -> torch.Tensor:
        """(n, evaluations): each sample's RMS guidance difference at each evaluation; (0, 0) without CFG."""
        if not self.batches:
            return torch.empty(0, 0)
        return torch.cat([torch.stack([rms for _, rms in batch], dim=1) for batch in self.batches])


class DirectProbe:
    """On every CFG forward of an unpruned run, runs the same doubled batch again with ``mask`` (at every step) and
    records, per sample, how the tail changes the guidance difference on the *same* input x_t: Δ = c − u unpruned,
    Δ_p pruned; the projection k = ⟨Δ_p, Δ⟩ / ‖Δ‖² (the share of the unpruned guidance the pruned one keeps along
    its direction), the cosine of Δ_p and Δ, and RMS(Δ_p) / RMS(Δ). Use around one unpruned ``sample`` call."""

    def __init__(self, bundle: Bundle, mask: masks.Mask):
        self.bundle, self.mask, self.records, self._handle, self._inside = bundle, mask, [], None, False

    def __enter__(self) -> DirectProbe:
        self._handle = self.bundle.transformer.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def _hook(self, module, args, kwargs, output) -> None:
        if self._inside:
            return
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        labels = kwargs["class_labels"]
        half = len(labels) // 2
        if len(labels) % 2 or not bool((labels[half:] == self.bundle.null_label).all()):
            return
        self._inside = True
        try:
            with masks.prune(self.bundle, self.mask, "every"):
                pruned = module(*args, **kwargs).sample[:, : x.shape[1]].float()
        finally:
            self._inside = False
        delta = output.sample[:, : x.shape[1]].float()
        delta = (delta[:half] - delta[half:]).flatten(1)  # (B, P)
        delta_p = (pruned[:half] - pruned[half:]).flatten(1)
        inner, norm2 = (delta_p * delta).sum(1), delta.pow(2).sum(1)
        self.records.append({"time": float(torch.as_tensor(kwargs["timestep"]).flatten()[0]),
                             "k": (inner / norm2).cpu(),
                             "cos": (inner / (norm2.sqrt() * delta_p.norm(dim=1))).cpu(),
                             "rms ratio": (delta_p.norm(dim=1) / norm2.sqrt()).cpu()})

    def per_sample(self, key: str) -> torch.Tensor:
        """(n, evaluations) of ``key`` (``"k"``, ``"cos"`` or ``"rms ratio"``) for a single-batch run."""
        return torch.stack([record[key] for record in self.records], dim=1)

    def profile(self) -> pd.DataFrame:
        """Per evaluation: its time and the mean over samples of k, the cosine and the RMS ratio."""
        return pd.DataFrame([{"time": r["time"], **{key: float(r[key].mean()) for key in ("k", "cos", "rms ratio")}}
                             for r in self.records])


def direct_effect(bundle: Bundle, mask: masks.Mask, labels, num_steps: int, cfg_scale: float, seed: int,
                  n_boot: int) -> dict:
    """:class:`DirectProbe` along the unpruned run of ``labels`` at ``cfg_scale`` (one batch): the per-evaluation
    ``profile``, and ``k`` and ``cos`` each as (mean, low, high) over samples (a sample's value is its mean over the
    schedule; :func:`pruning.paired_interval`'s bootstrap)."""
    with DirectProbe(bundle, mask) as probe:
        sample(bundle, labels, num_steps=num_steps, cfg_scale=float(cfg_scale), seed=seed, batch_size=len(labels),
               progress=False)
    return {"profile": probe.profile(),
            **{key: pruning.paired_interval(probe.per_sample(key).mean(1), n_boot=n_boot, seed=seed)
               for key in ("k", "cos")}}


# ---------------------------------------------------------------------------------------------------
#                                   Arms: a model, a mask, every CFG of the grid
# ---------------------------------------------------------------------------------------------------


@dataclass
class Arm:
    """One model with or without a mask, sampled at each CFG of a grid.

    Attributes:
        model: the organism's name; setting: ``"unpruned"`` or ``"tail"``.
        sets: CFG → :class:`metrics.SampleSet`.
        guidance: CFG → (n, evaluations) RMS guidance difference (empty at CFG 1).
        times: the model time of each evaluation.
    """

    model: str
    setting: str
    sets: dict
    guidance: dict
    times: list


def book_tail(bundle: Bundle, num_steps: int, tail_share: float) -> masks.Mask:
    """The tail the book prunes on an organism: :func:`pruning.rung_settings`' ``"tail-every"`` mask (τ set to
    remove ``tail_share`` of c at t₀, per sample)."""
    settings = {key: mask for key, _, mask, _ in pruning.rung_settings(bundle, num_steps, tail_share, 1, 1)}
    return settings["tail-every"]


def run_arm(bundle: Bundle, evaluator, labels, cfg_grid: list, num_steps: int, seed: int, setting: str,
            mask: masks.Mask | None = None) -> Arm:
    """Samples ``labels`` at each CFG of ``cfg_grid`` (with ``mask`` at every step, if given) from noise ``seed``,
    scores each set with ``evaluator`` and records the guidance difference along the schedule."""
    sets, guidance, times = {}, {}, []
    for w in cfg_grid:
        with GuidanceRecorder(bundle) as recorder:
            images = sample(bundle, labels, num_steps=num_steps, cfg_scale=float(w), seed=seed, mask=mask,
                            schedule="every", progress=False)
        sets[float(w)] = evaluator.sample_set(images, labels)
        guidance[float(w)] = recorder.per_sample()
        times = recorder.times() or times
    return Arm(bundle.name, setting, sets, guidance, times)


def check_grids(cfg_grid: list, tail_grid: list, cfg_scale: float) -> None:
    """Raises ValueError unless the grids can answer the chapter's question: at least two CFG scales below the
    book's (a curve to match on), the book's CFG in both, the tail grid within the CFG grid, every scale ≥ 1."""
    grid, tail = [float(w) for w in cfg_grid], [float(w) for w in tail_grid]
    problems = []
    if any(w < 1 or not math.isfinite(w) for w in grid) or len(set(grid)) != len(grid):
        problems.append(f"cfg_grid must hold distinct scales >= 1, got {cfg_grid}")
    if float(cfg_scale) not in grid or float(cfg_scale) not in tail:
        problems.append(f"the book's cfg_scale {cfg_scale:g} must be in cfg_grid and tail_grid")
    if not set(tail) <= set(grid):
        problems.append(f"tail_grid {tail_grid} must be a subset of cfg_grid {cfg_grid}")
    if sum(w < float(cfg_scale) for w in grid) < 2:
        problems.append(f"cfg_grid needs at least two scales below cfg_scale {cfg_scale:g} to find a w′")
    if problems:
        raise ValueError("; ".join(problems))


def measure(organisms: list[str], l1_variant: str, l1_control: str, *, n_samples: int, num_steps: int,
            cfg_grid: list, tail_grid: list, cfg_scale: float, tail_share: float, seed: int, n_boot: int,
            probe_samples: int = 0, device: str = "cpu") -> dict:
    """Every arm of the chapter, sampled from the same labels and noise and scored by MNIST-FID and accuracy: each
    organism unpruned over ``cfg_grid`` and with :func:`book_tail` over ``tail_grid``; ``l1_variant`` (if given)
    against ``l1_control``, both unpruned over ``cfg_grid``. Then one paired bootstrap (:func:`bootstrap`) and the
    :func:`compare` of each organism's tail against its unpruned arm (keyed by organism) and of the L1 variant
    against its control (keyed ``"l1"``). With ``probe_samples`` > 0, each organism's result also holds the
    :func:`direct_effect` of its tail on the first ``probe_samples`` labels at ``cfg_scale`` (key ``"direct"``).

    Returns a dict: ``bundles``, ``masks`` (organism → its tail), ``arms``, ``point``, ``draws``, ``results``,
    ``evaluator``, ``seconds`` and ``cpu_seconds`` (the wall and CPU time of the sampling and scoring).
    """
    check_grids(cfg_grid, tail_grid, cfg_scale)
    started, cpu_started = time.perf_counter(), time.process_time()
    names = list(dict.fromkeys([*organisms, *([l1_variant, l1_control] if l1_variant else [])]))
    bundles = {name: load(name, device=device) for name in names}
    evaluator = quality.evaluator_for(bundles[names[0]], n_kid=n_samples, seed=seed, device=device)
    labels = balanced_labels(bundles[names[0]].num_classes, n_samples)
    arms, tails = {}, {}
    for name in names:
        arms[f"{name}, {UNPRUNED}"] = run_arm(bundles[name], evaluator, labels, cfg_grid, num_steps, seed, UNPRUNED)
    for name in organisms:
        tails[name] = book_tail(bundles[name], num_steps, tail_share)
        arms[f"{name}, {TAIL}"] = run_arm(bundles[name], evaluator, labels, tail_grid, num_steps, seed, TAIL,
                                          tails[name])
    point, draws = bootstrap(arms, evaluator.reference, n_boot, seed)
    results = {name: compare(arms[f"{name}, {UNPRUNED}"], arms[f"{name}, {TAIL}"], point, draws, cfg_scale,
                             f"{name}, {UNPRUNED}", f"{name}, {TAIL}", seed) for name in organisms}
    for name in organisms if probe_samples > 0 else []:
        results[name]["direct"] = direct_effect(bundles[name], tails[name], labels[:probe_samples], num_steps,
                                                cfg_scale, seed, n_boot)
    if l1_variant:
        results["l1"] = compare(arms[f"{l1_control}, {UNPRUNED}"], arms[f"{l1_variant}, {UNPRUNED}"], point, draws,
                                cfg_scale, f"{l1_control}, {UNPRUNED}", f"{l1_variant}, {UNPRUNED}", seed)
    return {"bundles": bundles, "masks": tails, "arms": arms, "point": point, "draws": draws, "results": results,
            "evaluator": evaluator, "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started}


# ---------------------------------------------------------------------------------------------------
#                                     One paired bootstrap over every arm
# ---------------------------------------------------------------------------------------------------


def _fid_accuracy(samples: metrics.SampleSet, reference, indices=None, point: bool = False) -> tuple[float, float]:
    indices = np.arange(len(samples.features)) if indices is None else indices
    fid = (metrics.fid_to_reference if point else metrics.fid_to_reference_eig)(samples.features[indices], reference)
    return fid, metrics.class_accuracy(samples.probs[indices], samples.labels[indices])


def bootstrap(arms: dict[str, Arm], reference, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Point values (clean-fid FID, accuracy) and ``n_boot`` paired bootstrap draws of both, of every (arm, CFG).

    Returns ``point`` indexed by (arm, cfg) with columns FID, accuracy, and ``draws`` with one row per draw and
    columns (metric, arm, cfg): every set evaluated on the same index draw.
    """
    keys = [(name, w) for name, arm in arms.items() for w in arm.sets]
    n = {len(arms[name].sets[w].features) for name, w in keys}
    if len(n) != 1:
        raise ValueError(f"paired arms need the same samples in every set, got sizes {sorted(n)}")
    point = pd.DataFrame([dict(zip(METRICS, _fid_accuracy(arms[name].sets[w], reference, point=True)))
                          for name, w in keys], index=pd.MultiIndex.from_tuples(keys, names=["arm", "cfg"]))
    rows = []
    for indices in metrics.paired_resamples(n.pop(), n_boot, seed):
        row = {}
        for name, w in keys:
            fid, accuracy = _fid_accuracy(arms[name].sets[w], reference, indices)
            row[("FID", name, w)], row[("accuracy", name, w)] = fid, accuracy
        rows.append(row)
    draws = pd.DataFrame(rows)
    draws.columns = pd.MultiIndex.from_tuples(draws.columns, names=["metric", "arm", "cfg"])
    return point, draws


def interval(value: float, draws) -> tuple[float, float, float]:
    """(value, low, high): :func:`metrics.normal_interval` of the finite bootstrap ``draws`` (NaN where fewer than
    two are finite)."""
    draws = np.asarray(draws, dtype=float)
    draws = draws[np.isfinite(draws)]
    if len(draws) < 2 or not math.isfinite(value):
        return value, math.nan, math.nan
    low, high = metrics.normal_interval(value, draws)
    return value, float(low), float(high)


# ---------------------------------------------------------------------------------------------------
#                                     The effective CFG of a pruned run
# ---------------------------------------------------------------------------------------------------


def matching_cfg(grid, curve, target: float, below: float) -> float:
    """The CFG w′ ≤ ``below`` at which the piecewise-linear ``curve`` over ``grid`` equals ``target``, searching
    from ``below`` downwards (the crossing nearest the book's CFG); NaN where the curve never reaches it there."""
    points = sorted((float(w), float(v)) for w, v in zip(grid, curve) if float(w) <= below)
    for (w0, v0), (w1, v1) in zip(reversed(points[:-1]), reversed(points[1:])):
        if min(v0, v1) <= target <= max(v0, v1):
            return w1 if v1 == v0 else w0 + (target - v0) * (w1 - w0) / (v1 - v0)
    if points and points[-1][1] == target:
        return points[-1][0]
    return math.nan


def mean_guidance(arm: Arm, w: float) -> float:
    """The RMS guidance difference of an arm at CFG w, averaged over its samples and evaluations."""
    values = arm.guidance[w]
    return float(values.mean()) if values.numel() else math.nan


def compare(reference: Arm, treated: Arm, point: pd.DataFrame, draws: pd.DataFrame, cfg_scale: float,
            reference_name: str, treated_name: str, seed: int = 0) -> dict:
    """Everything the claims read about one comparison: ``treated`` (the tail, or another model) against
    ``reference`` (unpruned) over the shared CFG grid.

    Returns a dict with ``table`` (per CFG: both FIDs and accuracies, paired Δ [95%]), ``profile`` (per
    evaluation at ``cfg_scale``: time, mean guidance difference of both), and the numbers the claims test:
    ``delta_at_w`` and ``delta_at_1`` (ΔFID, low, high at the book's CFG and at CFG 1), ``over_guides`` (FID at the
    book's CFG minus the best unpruned FID below it, [95%]), ``best_gap`` (the treated FID at the book's CFG minus
    that best, [95%]), ``w_match`` (w′, low, high and the share of draws with a match), ``guidance`` (per-sample
    paired Δ of the mean guidance difference, low, high, and the ratio r treated/reference) and ``w_magnitude``
    (w·r: the CFG at which the unpruned difference, scaled as the treated one is, guides as strongly).
    """
    w = float(cfg_scale)
    ref_grid = sorted(reference.sets)
    if w not in reference.sets or w not in treated.sets:
        raise ValueError(f"the book's CFG {w:g} is not in both arms' grids {ref_grid}, {sorted(treated.sets)}")
    fid, acc = draws["FID"], draws["accuracy"]

    def value(name, metric, scale):
        return float(point.loc[(name, scale), metric])

    rows = []
    for scale in ref_grid:  # every CFG of the reference curve; the treated arm's where it was sampled
        row = {"CFG": scale}
        for metric, frame in (("FID", fid), ("accuracy", acc)):
            a = value(reference_name, metric, scale)
            b = value(treated_name, metric, scale) if scale in treated.sets else math.nan
            row[f"{metric} {UNPRUNED if treated.model == reference.model else reference.model}"] = a
            row[f"{metric} {treated.setting if treated.model == reference.model else treated.model}"] = b
            delta = (interval(b - a, frame[(treated_name, scale)] - frame[(reference_name, scale)])
                     if scale in treated.sets else (math.nan,) * 3)
            row[f"Δ{metric}"], row[f"Δ{metric} low"], row[f"Δ{metric} high"] = delta
        rows.append(row)
    table = pd.DataFrame(rows).set_index("CFG")

    below = [scale for scale in ref_grid if scale < w]
    best = min(below, key=lambda scale: value(reference_name, "FID", scale)) if below else None

    def best_draws():
        return fid[[(reference_name, scale) for scale in below]].min(axis=1)

    if best is None:
        over = gap = (math.nan, math.nan, math.nan)
    else:
        best_value = value(reference_name, "FID", best)
        over = interval(value(reference_name, "FID", w) - best_value, fid[(reference_name, w)] - best_draws())
        gap = interval(value(treated_name, "FID", w) - best_value, fid[(treated_name, w)] - best_draws())
    curve = [value(reference_name, "FID", scale) for scale in ref_grid]
    w_prime = matching_cfg(ref_grid, curve, value(treated_name, "FID", w), w)
    drawn = np.array([matching_cfg(ref_grid, [fid.loc[i, (reference_name, s)] for s in ref_grid],
                                   fid.loc[i, (treated_name, w)], w) for i in draws.index])
    w_match = (*interval(w_prime, drawn), float(np.isfinite(drawn).mean()) if len(drawn) else math.nan)

    per_sample = treated.guidance[w].mean(1) - reference.guidance[w].mean(1)  # (n,): paired by sample index
    ratio = mean_guidance(treated, w) / mean_guidance(reference, w)
    guidance = (*pruning.paired_interval(per_sample, n_boot=len(draws), seed=seed), ratio)
    profile = pd.DataFrame({"time": reference.times, "step": range(len(reference.times)),
                            UNPRUNED: reference.guidance[w].mean(0).numpy(),
                            "treated": treated.guidance[w].mean(0).numpy()})
    delta = table[["ΔFID", "ΔFID low", "ΔFID high"]]
    return {"table": table, "profile": profile, "delta_at_w": tuple(delta.loc[w]),
            "delta_at_1": tuple(delta.loc[1.0]) if 1.0 in delta.index else (math.nan,) * 3,
            "best_cfg": best, "over_guides": over, "best_gap": gap, "w_match": w_match, "guidance": guidance,
            "w_magnitude": w * ratio, "cfg": w}


# ---------------------------------------------------------------------------------------------------
#                                              The verdict
# ---------------------------------------------------------------------------------------------------

HYPOTHESIS = "the book's hypothesis (not the paper's)"
W_TOLERANCE = 0.25  # CFG: w′'s interval is widened by this much (a quarter of the grid step the chord interpolates
# across: on a convex FID curve the chord reaches a target at a lower CFG than the curve does, so w′ is biased low)


def predicted_band(result: dict) -> tuple[float, float]:
    """The CFG band a magnitude must fall in to predict w′: w′'s paired 95% interval widened by
    :data:`W_TOLERANCE` on each side, capped at the book's CFG (a prediction of w ≥ the book's CFG predicts no
    weakening) and floored at 1 (no guidance); NaN where no w′ exists."""
    _, low, high, _ = result["w_match"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return math.nan, math.nan  # no w′: nothing to predict
    return max(1.0, low - W_TOLERANCE), min(result["cfg"], high + W_TOLERANCE)


def claims(name: str, result: dict, what: str = "the tail") -> list[dict]:
    """The verdict rows of one comparison (:func:`compare`), prefixed by ``name``.

    Precondition: ``what`` improves FID at the book's CFG w (the top of the paired ΔFID interval is below 0): there
    is something to explain. Then the hypothesis "``what`` acts as weaker guidance", in four tests and a converse:

    - it shrinks the guidance difference: the top of the per-sample paired interval of Δ mean RMS(c − u) < 0;
    - w over-guides: the unpruned FID at w minus the best unpruned FID at a smaller CFG, lower end > 0;
    - a lower CFG matches it: the treated FID at w minus that best unpruned FID, top ≥ 0 (it does not beat every
      lower CFG, so the interpolated unpruned curve reaches it at some w′ < w);
    - the magnitude predicts w′: w·r (r the ratio of mean RMS differences) lies in :func:`predicted_band` (not
      testable where no w′ exists);
    - without guidance (CFG 1) it does not improve FID: ΔFID at CFG 1, top ≥ 0.
    """
    w = result["cfg"]
    d, lo, hi = result["delta_at_w"]
    improves = report.precondition_row(
        f"{name}: {what} improves FID at CFG {w:g} (there is something to explain)", paper=HYPOTHESIS,
        ours=f"ΔFID {pruning.interval_text(d, lo, hi)}", value=hi, op="<", bar=0.0)
    g, g_lo, g_hi, ratio = result["guidance"]
    over, over_lo, over_hi = result["over_guides"]
    wp, wp_lo, wp_hi, share = result["w_match"]
    gap, gap_lo, gap_hi = result["best_gap"]
    w_mag = result["w_magnitude"]
    d1, d1_lo, d1_hi = result["delta_at_1"]
    band = predicted_band(result)
    best = "none" if result["best_cfg"] is None else f"{result['best_cfg']:g}"
    matched = (f"w′ {pruning.interval_text(wp, wp_lo, wp_hi, signed=False)}, {share:.0%} of draws match"
               if math.isfinite(wp) else "no lower CFG reaches its FID")
    rows = [
        report.claim_row(f"{name}: {what} weakens guidance (smaller RMS of cond − uncond along the schedule)",
                         paper=HYPOTHESIS, ours=f"Δ RMS {pruning.interval_text(g, g_lo, g_hi, 3)}; ratio r {ratio:.2f}",
                         value=g_hi, op="<", bar=0.0, requires=improves),
        report.claim_row(f"{name}: CFG {w:g} over-guides (the unpruned FID is lower at a smaller CFG)",
                         paper=HYPOTHESIS, ours=f"FID(CFG {w:g}) − FID(CFG {best}) "
                                                f"{pruning.interval_text(over, over_lo, over_hi)}",
                         value=over_lo, op=">", bar=0.0, requires=improves),
        report.claim_row(f"{name}: {what} at CFG {w:g} matches the unpruned model at a lower CFG w′",
                         paper=HYPOTHESIS, ours=f"FID − FID(CFG {best}) {pruning.interval_text(gap, gap_lo, gap_hi)}; "
                                                f"{matched}",
                         value=gap_hi, op=">=", bar=0.0, requires=improves),
        report.claim_row(f"{name}: the guidance magnitude predicts w′ (w·r within w′'s interval)", paper=HYPOTHESIS,
                         ours=f"w·r = {w_mag:.2f}; w′ {wp:.2f}", value=w_mag, op="in", bar=band, requires=improves),
        report.claim_row(f"{name}: without guidance (CFG 1) {what} does not improve FID", paper=HYPOTHESIS,
                         ours=f"ΔFID at CFG 1 {pruning.interval_text(d1, d1_lo, d1_hi)}",
                         value=d1_hi, op=">=", bar=0.0, requires=improves),
    ]
    if "direct" in result:
        k, k_lo, k_hi = result["direct"]["k"]
        cos = result["direct"]["cos"][0]
        rows.append(report.claim_row(
            f"{name}: the guidance {what} keeps along the unpruned direction predicts w′ (w·k within w′'s interval)",
            paper=HYPOTHESIS, ours=f"k {pruning.interval_text(k, k_lo, k_hi, 3, signed=False)} (cosine {cos:.3f}): "
                                   f"w·k = {w * k:.2f}; w′ {wp:.2f}",
            value=w * k, op="in", bar=band, requires=improves))
    return [improves, *rows]
