"""The pruning protocol, once: settings (masks × schedules × random controls) → runs (every setting sampled from the
same noise and labels, then scored) → claims (verdict rows under the book's rule). The pruning chapter runs it at
full size; the regime chapter runs it on ladder rungs (composite-digit agreement) and the beyond chapter on a DiT and
a U-Net (MNIST-FID).

Two kinds of paired interval appear, both paired because every setting shares its noise with its baseline:

- a set-level metric (FID, KID, accuracy, ...) gets :func:`metrics.bootstrap_table`'s normal interval (value ± z·SE
  over resampled index sets, the same indices for every setting);
- a per-sample score (a sample's composite-digit agreement) gets :func:`paired_interval`'s percentile interval of
  the mean per-sample difference.

Every "Δ [low, high]" on the pages is written by :func:`interval_text`.
"""

from __future__ import annotations

import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bottleneck_utils import adaln_cost, masks, metrics
from bottleneck_utils.chapters import paper, regime, report
from bottleneck_utils.embeddings import sampling_timesteps
from bottleneck_utils.models import Bundle, load
from bottleneck_utils.organisms import quality
from bottleneck_utils.sampling import balanced_labels, resolve_autocast, sample, sampler_card

_OPTIONAL_INT, _OPTIONAL_FLOAT = (int, type(None)), (float, int, type(None))
PARAMETERS = {
    "model": str, "device": str, "dtype": str, "autocast": str, "seed": int, "n_samples": int,
    "num_steps": _OPTIONAL_INT, "cfg_scale": _OPTIONAL_FLOAT, "batch_size": int, "tail_fractions": list,
    "head_fractions": list, "tail_energy_shares": list, "taus": list, "schedules": list, "k": int,
    "head_schedules": list, "control_schedules": list, "granularity": str, "null_policy": str, "noise_seeds": list,
    "n_boot": _OPTIONAL_INT, "reference_stats": str, "cpu_threads": _OPTIONAL_INT, "grid_columns": int,
    "flow_comparison": list, "samples_dir": str}
"""The pruning chapter's parameters: name → accepted type(s) (:func:`report.notebook_parameters`)."""

HARM_TOLERANCE = 0.02  # a setting is harmless when its paired 95% interval excludes a loss of > 2 agreement points
DESTROYED_BELOW = 0.5  # generation is destroyed when per-digit agreement falls below half the unpruned one
KID_SCALE = 1e3  # KID is reported ×10³ for every feature net
METRIC_FORMATS = (("FID", 1, 2), ("KID", KID_SCALE, 2), ("accuracy", 100, 1), ("IS-style", 1, 2),
                  ("precision", 1, 3), ("recall", 1, 3))  # metric, scale, digits of the summary table


# ---------------------------------------------------------------------------------------------------
#                                      Intervals and their text
# ---------------------------------------------------------------------------------------------------


def interval_text(delta: float, low: float, high: float, digits: int = 2, signed: bool = True) -> str:
    """'+1.23 [+0.45, +2.01]': a change and its interval (``signed=False``: '1.23 [0.45, 2.01]', for a value)."""
    sign = "+" if signed else ""
    return f"{delta:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def change_text(table: pd.DataFrame, name: str | None, metric: str = "FID", scale: float = 1.0,
                digits: int = 2) -> str:
    """The paired change of ``metric`` for setting ``name`` in a :func:`metrics.bootstrap_table`, as
    :func:`interval_text`; '—' where that setting or metric is absent (or is the table's baseline, whose change is
    zero by construction: pass ``None``)."""
    if name is None or (name, metric) not in table.index:
        return "—"
    row = table.loc[(name, metric)] * scale
    return interval_text(row["delta"], row["delta_low"], row["delta_high"], digits)


def paired_interval(values: torch.Tensor, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple:
    """Mean of per-sample paired differences ``values`` (n,) and its bootstrap interval: the package's one paired
    bootstrap (:func:`metrics.paired_resamples`, ``n_boot`` draws of n differences with replacement) and its one
    interval, mean ± z·SE of the drawn means (:func:`metrics.normal_interval`).

    Raises:
        ValueError: no differences, or some that are NaN or infinite (a score that failed is no measurement).
    """
    values = torch.as_tensor(values).double()
    bad = int((~torch.isfinite(values)).sum())
    if len(values) == 0 or bad:
        raise ValueError(f"paired_interval needs finite per-sample differences, got {bad} NaN or infinite of "
                         f"{len(values)}: score the samples again (an interval of them is not testable)")
    differences = values.numpy()
    means = [differences[indices].mean() for indices in metrics.paired_resamples(len(differences), n_boot, seed)]
    low, high = metrics.normal_interval(differences.mean(), means, level)
    return differences.mean().item(), float(low), float(high)


# ---------------------------------------------------------------------------------------------------
#                                 The pruning chapter: parameters and masks
# ---------------------------------------------------------------------------------------------------


def resolve(parameters: dict, embedded: bool) -> dict:
    """The chapter's parameters with their ``None`` defaults filled in (``num_steps``, ``cfg_scale``, ``n_boot``,
    ``cpu_threads``) and ``autocast`` resolved, after checking that they describe a runnable sweep.

    Args:
        parameters: :data:`PARAMETERS` by name, as the notebook set them.
        embedded: the model is a shipped organism (its CPU-budget defaults: 10 steps, CFG 3.0, 100 rounds).

    Raises:
        ValueError: an unknown schedule, k above the step count, an unknown granularity or null policy, a share
            outside (0, 1), a negative τ, or no noise seed besides ``seed``.
    """
    p = dict(parameters)
    p["autocast"] = resolve_autocast(p["autocast"], p["device"])
    p["num_steps"] = p["num_steps"] or (10 if embedded else 50)
    p["cfg_scale"] = float(p["cfg_scale"] or (3.0 if embedded else 1.5))
    p["n_boot"] = p["n_boot"] or (100 if embedded else 10)
    p["cpu_threads"] = p["cpu_threads"] or (1 if p["device"] == "cpu" else None)
    schedule_of = schedules(p["k"])
    for name in p["schedules"] + p["head_schedules"] + p["control_schedules"]:
        if name not in schedule_of:
            raise ValueError(f"unknown schedule {name!r}; choose from {list(schedule_of)}")
    schedule_of["last"].active_steps(p["num_steps"])  # k > num_steps fails here, before any work
    if p["granularity"] not in masks.GRANULARITIES or p["null_policy"] not in masks.NULL_POLICIES:
        raise ValueError(f"granularity must be one of {masks.GRANULARITIES}, null_policy one of {masks.NULL_POLICIES}")
    if (any(not 0 < f < 1 for f in p["tail_fractions"] + p["head_fractions"] + p["tail_energy_shares"])
            or any(tau < 0 for tau in p["taus"])):
        raise ValueError("tail/head fractions must lie in (0, 1) and taus must be >= 0")
    if not p["noise_seeds"] or p["seed"] in p["noise_seeds"]:
        raise ValueError(f"noise_seeds needs at least one seed other than seed={p['seed']} for the noise floor")
    return p


def schedules(k: int) -> dict[str, masks.Schedule]:
    """The three schedules by name: every step (tᵢ), t₀ only, the last ``k`` steps."""
    return {"every": masks.Schedule("every"), "first": masks.Schedule("first"), "last": masks.Schedule("last", k)}


def paper_values(bundle: Bundle) -> dict:
    """The paper's numbers the chapter's prose quotes (Tables 1 and 2, Fig. magnitudes), and the model's size."""
    row_of = {(r["mask"], r["tau"], r["schedule"]): r for r in paper.TABLE2}
    tail, head = row_of[("tail", 0.01, "every")], row_of[("head", 1.0, "every")]
    return {"paper_tail_count": tail["removed"], "paper_D": paper.TABLE1["REPA"]["D"],
            "paper_tau": paper.TABLE2[1]["tau"], "paper_tail_pct": tail["removed_pct"],
            "paper_base_fid": paper.TABLE2[0]["FID"], "paper_tail_fid": tail["FID"],
            "paper_head_count": head["removed"], "paper_head_fid": head["FID"],
            "n_params": f"{report.parameter_count(bundle) or 0:,}",
            "paper_head_low": paper.MAGNITUDES["REPA/SiT head"][0],
            "paper_head_high": paper.MAGNITUDES["REPA/SiT head"][1],
            "paper_fid_samples": f"{paper.FID_SAMPLES:,}", "paper_fid_per_class": paper.FID_SAMPLES_PER_CLASS}


def chapter_masks(bundle: Bundle, p: dict) -> dict:
    """The sweep's masks from c at t₀: ``tail_masks`` (one per share of ``tail_fractions``, absolute τ of ``taus``
    and energy share of ``tail_energy_shares``, named by what they remove), their ``tail_taus``, the ``head_masks``
    (top-⌈f·D⌉ for each f of ``head_fractions``) and ``magnitudes``, |c| at t₀ of the real rows."""
    num_steps, granularity, D = p["num_steps"], p["granularity"], bundle.hidden_size
    magnitudes = masks.reference_magnitudes(bundle, num_steps, granularity)  # (rows, D)
    tail_taus = [masks.threshold_for_fraction(bundle, f, num_steps=num_steps, granularity=granularity)
                 for f in p["tail_fractions"]] + p["taus"]
    tail_masks = [masks.tail_mask(bundle, tau, num_steps=num_steps, granularity=granularity) for tau in tail_taus]
    tail_masks = [dataclasses.replace(m, name=f"tail {m.removed_fraction:.0%}") for m in tail_masks]
    for share in p["tail_energy_shares"]:
        tau = masks.threshold_for_energy_share(bundle, share, num_steps=num_steps, granularity=granularity)
        tail = masks.tail_mask(bundle, tau, num_steps=num_steps, granularity=granularity)
        tail_masks.append(dataclasses.replace(tail, name=f"tail {share:.0%} of ‖c‖²"))
        tail_taus.append(tau)
    head_counts = sorted({max(1, round(f * D)) for f in p["head_fractions"]})
    head_masks = [dataclasses.replace(masks.topk_mask(bundle, count, num_steps=num_steps, granularity=granularity),
                                      name=f"head top-{count} ({count / D:.1%})") for count in head_counts]
    return {"magnitudes": magnitudes if granularity == "global" else magnitudes[:-1], "tail_taus": tail_taus,
            "tail_masks": tail_masks, "head_masks": head_masks}


def magnitude_figure(bundle: Bundle, found: dict, t0: float, granularity: str):
    """The histogram of |cᵢ| at t₀ with the sweep's tail thresholds (blue) and the paper's τ (dotted)."""
    real_rows = found["magnitudes"]
    fig, ax = plt.subplots(figsize=(9, 3.4))
    values = real_rows.flatten().double().clamp_min(1e-6).numpy()
    ax.hist(values, bins=np.logspace(np.log10(values.min()), np.log10(values.max()), 50), color="0.6")
    ax.set_xscale("log")
    for tau in (0.01, 0.02, 0.05):
        ax.axvline(tau, color="0.3", linewidth=1, linestyle=":")
    for tau, mask in zip(found["tail_taus"], found["tail_masks"]):
        ax.axvline(tau, color="C0", linewidth=1)
        ax.annotate(f"{mask.removed_fraction:.0%}", (tau, 1), xycoords=("data", "axes fraction"), fontsize=8,
                    ha="right", va="top", color="C0")
    ax.set_xlabel(f"|cᵢ| at t₀ = {t0:g} ({granularity}: {len(real_rows)} × {bundle.hidden_size} values)")
    ax.set_ylabel("count")
    ax.set_title(f"{bundle.name}: magnitudes of c, our tail thresholds (blue), the paper's τ = 0.01, 0.02, 0.05 "
                 "(dotted)")
    fig.tight_layout()
    return fig


def transfer_table(bundle: Bundle, num_steps: int) -> pd.DataFrame:
    """How many coordinates the paper's absolute τ would remove on this model (per-sample mean and global)."""
    paper_taus = [("tail", 0.01), ("tail", 0.02), ("tail", 0.05), ("tail", 5.0), ("head", 5.0), ("head", 1.0)]
    builders = {"tail": masks.tail_mask, "head": masks.head_mask}
    return pd.DataFrame([
        {"mask": f"{side} τ={tau:g}", "paper removed (REPA-XL)": next(
            f"{r['removed']} ({r['removed_pct']}%)" for r in paper.TABLE2 if r["mask"] == side and r["tau"] == tau),
         f"{bundle.name} removed (per-sample mean)": builders[side](bundle, tau, num_steps=num_steps,
                                                                    granularity="per-sample").removed_count,
         f"{bundle.name} removed (global)": builders[side](bundle, tau, num_steps=num_steps,
                                                          granularity="global").removed_count}
        for side, tau in paper_taus]).set_index("mask")


# ---------------------------------------------------------------------------------------------------
#                                        Settings → runs → scores
# ---------------------------------------------------------------------------------------------------


def chapter_settings(found: dict, p: dict) -> tuple[dict, str, str]:
    """The sweep: name → (kind, mask, schedule) for the baseline, every tail and head mask at each of its schedules,
    a random control of each (seed + its index) at each control schedule, and the smallest tail share fixed at t₀
    and recomputed at every step. Returns the settings and the names of that fixed and recomputed pair.

    Raises:
        ValueError: two settings share a mask and a schedule.
    """
    schedule_of = schedules(p["k"])
    tail_masks, head_masks = found["tail_masks"], found["head_masks"]
    entries = [("baseline", ("none", None, None))]
    for kind, group, names in (("tail", tail_masks, p["schedules"]), ("head", head_masks, p["head_schedules"])):
        entries += [(f"{mask.name}, {schedule_of[name].label}", (kind, mask, schedule_of[name]))
                    for mask in group for name in names]
    for index, mask in enumerate(tail_masks + head_masks):
        control = masks.random_mask(mask, seed=p["seed"] + index)
        entries += [(f"{control.name}, {schedule_of[name].label}", ("random", control, schedule_of[name]))
                    for name in p["control_schedules"]]
    fixed_tail = tail_masks[p["tail_fractions"].index(min(p["tail_fractions"]))]
    every_step = schedule_of["every"]
    fixed_name = f"{fixed_tail.name}, {every_step.label}"
    recomputed_name = f"{masks.recomputed(fixed_tail).name}, {every_step.label}"
    if fixed_name not in dict(entries):  # "every" is not among the schedules: the comparison needs it
        entries.append((fixed_name, ("tail", fixed_tail, every_step)))
    entries.append((recomputed_name, ("recomputed", masks.recomputed(fixed_tail), every_step)))
    settings = dict(entries)
    if len(settings) != len(entries):
        raise ValueError("two settings have the same mask and schedule; remove the duplicate τ from taus")
    return settings, fixed_name, recomputed_name


def chapter_cards(bundle: Bundle, evaluator, p: dict) -> dict[str, dict]:
    """The pruning chapter's sampler cards (:func:`sampling.sampler_card`): ``"settings"``, every setting and noise
    seed of :func:`chapter_runs` on ``bundle`` scored by ``evaluator``, and ``"flow comparison: NAME"`` for each
    organism :func:`flow_comparison` samples (each scored by its own :func:`quality.evaluator_for`)."""
    options = {"num_samples": p["n_samples"], "num_steps": p["num_steps"], "cfg_scale": p["cfg_scale"],
               "autocast": p["autocast"]}
    cards = {"settings": sampler_card(bundle, **options, feature_network=evaluator.feature_network,
                                      fid_mode=evaluator.fid_mode)}
    for name in p["flow_comparison"]:
        organism = load(name, device=p["device"], dtype=p["dtype"])
        feature_network, fid_mode = quality.scoring(organism)
        cards[f"flow comparison: {name}"] = sampler_card(organism, **options, feature_network=feature_network,
                                                         fid_mode=fid_mode)
    return cards


def noise_run(noise_seed: int) -> str:
    """The name of the unpruned run at another noise seed (the noise floor's)."""
    return f"baseline, noise seed {noise_seed}"


def chapter_runs(bundle: Bundle, evaluator, settings: dict, labels, p: dict, read=None) -> dict:
    """Samples every setting at ``seed`` and the unpruned model at each noise seed, all on ``labels``; with
    ``read`` (``pruning_samples.reader``: ``read(name, mask, schedule, noise_seed)`` → images), reads each run
    instead.

    Returns ``sets`` (setting → SampleSet), ``grids`` (setting → its first ``grid_columns`` images),
    ``seed_sets`` (noise seed → SampleSet), ``minutes`` of sampling (of reading, from ``samples_dir``) and
    ``source``, which of the two.
    """
    def run(name, mask, schedule, noise_seed):
        if read:
            images = read(name, mask, schedule, noise_seed)
        else:
            images = sample(bundle, labels, num_steps=p["num_steps"], cfg_scale=p["cfg_scale"], seed=noise_seed,
                            batch_size=p["batch_size"], mask=mask, schedule=schedule or "every",
                            null_policy=p["null_policy"], autocast=p["autocast"], progress=False)
        return evaluator.sample_set(images, labels), images[:p["grid_columns"]]

    started = time.perf_counter()
    sets, grids = {}, {}
    for name, (_, mask, schedule) in tqdm(settings.items(), desc="settings"):
        sets[name], grids[name] = run(name, mask, schedule, p["seed"])
    seed_sets = {noise_seed: run(noise_run(noise_seed), None, None, noise_seed)[0]
                 for noise_seed in tqdm(p["noise_seeds"], desc="noise seeds")}
    return {"sets": sets, "grids": grids, "seed_sets": seed_sets, "minutes": (time.perf_counter() - started) / 60,
            "source": f"reading the runs from {p['samples_dir']}" if read else "sampling"}  # read needs a samples_dir


def chapter_scores(bundle: Bundle, evaluator, settings: dict, runs: dict, p: dict) -> dict:
    """The paired bootstrap ``table`` against the baseline (:func:`metrics.bootstrap_table`), every metric of the
    unpruned run at each noise seed (``seed_points``) and each setting's kind, schedule and size (``info``)."""
    with threadpool_limits(p["cpu_threads"]):
        table = metrics.bootstrap_table(runs["sets"], evaluator.reference, "baseline", n_boot=p["n_boot"],
                                        seed=p["seed"])
        seed_points = pd.DataFrame({s: metrics.metric_values(samples, evaluator.reference) for s, samples in
                                    {p["seed"]: runs["sets"]["baseline"], **runs["seed_sets"]}.items()}).T
    energy = {id(mask): 100 * masks.removed_energy_share(bundle, mask, num_steps=p["num_steps"])
              for _, mask, _ in settings.values() if mask is not None}  # once per mask, not per schedule
    info = pd.DataFrame([
        {"setting": name, "mask": kind, "schedule": "—" if schedule is None else schedule.label,
         "removed": 0.0 if mask is None else mask.removed_count,
         "removed %": 0.0 if mask is None else 100 * mask.removed_fraction,
         "‖c‖² removed %": 0.0 if mask is None else energy[id(mask)]}
        for name, (kind, mask, schedule) in settings.items()]).set_index("setting")
    return {"table": table, "seed_points": seed_points, "info": info}


def label_of(k: int) -> dict[str, str]:
    """Schedule name → the label its settings carry."""
    return {name: schedule.label for name, schedule in schedules(k).items()}


def ours_at(info: pd.DataFrame, share: float, schedule_label: str, hidden_size: int, kind: str = "tail",
            tolerance: float = 0.02) -> str | None:
    """Our setting of this kind and schedule whose removed share is closest to ``share`` (None beyond ±2 points).

    Head masks remove at least one coordinate, so a head share below one coordinate matches our smallest head mask.
    """
    candidates = info[(info["mask"] == kind) & (info["schedule"] == schedule_label)]
    distance = (candidates["removed %"] - 100 * share).abs()
    if kind == "head":
        distance = (candidates["removed"] - max(1, round(share * hidden_size))).abs() / hidden_size * 100
    if candidates.empty or distance.min() > 100 * tolerance:
        return None
    return distance.idxmin()


def headline(info: pd.DataFrame, hidden_size: int, k: int) -> dict[str, str | None]:
    """Schedule name → our tail setting at the paper's headline share (:data:`paper.HEADLINE_SHARE`), or None."""
    labels = label_of(k)
    return {name: ours_at(info, paper.HEADLINE_SHARE, labels[name], hidden_size) for name in ("every", "first", "last")}


def summary_table(table: pd.DataFrame, info: pd.DataFrame) -> pd.DataFrame:
    """Table 2 on this model: each setting's size, and each metric's value [95%] and paired change [95%]."""
    available = list(table.index.get_level_values("metric").unique())
    summary = info[["schedule", "removed", "removed %", "‖c‖² removed %"]].copy()
    for metric, scale, digits in METRIC_FORMATS:
        if metric in available:
            label = {"KID": "KID×10³", "accuracy": "accuracy %"}.get(metric, metric)
            rows = table.xs(metric, level="metric") * scale
            summary[label] = [interval_text(r["value"], r["low"], r["high"], digits, signed=False)
                              for _, r in rows.iterrows()]
            summary[f"Δ {label}"] = [interval_text(r["delta"], r["delta_low"], r["delta_high"], digits)
                                     for _, r in rows.iterrows()]
    return summary


def overlap_figure(bundle: Bundle, tail_masks: list, num_steps: int, t0: float):
    """Per tail mask, the share of its t₀ tail that a tail recomputed at each sampling step keeps; returns the
    figure and the smallest such share."""
    steps = sampling_timesteps(bundle, num_steps)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    overlaps = {}
    for mask in tail_masks:
        overlaps[mask.name] = masks.tail_overlap_over_steps(bundle, mask, steps)  # (num_steps,)
        ax.plot(np.arange(len(steps)), overlaps[mask.name].numpy(), marker="o", label=mask.name)
    ax.set(xlabel=f"sampling step (0 = t₀ = {t0:g})", ylabel="share of the t₀ tail kept", ylim=(0, 1.05))
    ax.legend(fontsize=8)
    ax.set_title(f"{bundle.name}: overlap of the t₀-fixed tail with a tail recomputed at each step")
    fig.tight_layout()
    return fig, min(v.min().item() for v in overlaps.values())


def recompute_comparison(evaluator, runs: dict, scores: dict, fixed_name: str, recomputed_name: str,
                         p: dict) -> tuple[pd.DataFrame, str]:
    """The smallest tail at every step, fixed at t₀ or recomputed: a table of both against the baseline and against
    the fixed tail (their own paired bootstrap), and the sentence that reads it."""
    table, info, name = scores["table"], scores["info"], evaluator.name
    fid = table.xs("FID", level="metric")
    pair = {"fixed at t₀": fixed_name, "recomputed at every step": recomputed_name}
    with threadpool_limits(p["cpu_threads"]):
        versus_fixed = metrics.bootstrap_table({setting: runs["sets"][setting] for setting in pair.values()},
                                               evaluator.reference, fixed_name, n_boot=p["n_boot"], seed=p["seed"],
                                               progress=False)

    def versus(setting, metric="FID", scale=1.0, digits=2):
        return change_text(versus_fixed, None if setting == fixed_name else setting, metric, scale, digits)

    comparison_table = pd.DataFrame([
        {"tail": label, "setting": setting, "removed %": info.loc[setting, "removed %"],
         name: fid.loc[setting, "value"], f"Δ{name} vs baseline": change_text(table, setting),
         "Δaccuracy vs baseline (points)": change_text(table, setting, "accuracy", 100, 1),
         f"Δ{name} vs fixed": versus(setting), "Δaccuracy vs fixed (points)": versus(setting, "accuracy", 100, 1)}
        for label, setting in pair.items()]).set_index("tail")
    gap = versus_fixed.loc[(recomputed_name, "FID")]
    fixed_change, recomputed_change = fid.loc[fixed_name, "delta"], fid.loc[recomputed_name, "delta"]
    if gap["delta_high"] < 0:
        comparison = "recomputing the tail harms quality less than fixing it at $t_0$"
        removed_share = min(1 - recomputed_change / fixed_change, 1) if fixed_change > 0 else None
        if removed_share is not None:
            comparison += f": it removes {removed_share:.0%} of the fixed tail's change"
        if removed_share is not None and removed_share > 0.5:
            comparison += (", which therefore comes mostly from zeroing, at later steps, coordinates that are no "
                           "longer the tail")
    elif gap["delta_low"] > 0:
        comparison = "recomputing the tail harms quality more than fixing it at $t_0$"
    else:
        comparison = "the two cannot be told apart at this sample size"
    intact = fid.loc[recomputed_name, "delta_low"] <= 0  # the verdict's "intact": the paired interval reaches zero
    share = 100 * min(p["tail_fractions"])
    sentence = (
        f"With {share:.1f}% of $c$ removed at every step, the tail fixed at $t_0$ changes "
        f"{name} by {change_text(table, fixed_name)} and class accuracy by "
        f"{change_text(table, fixed_name, 'accuracy', 100, 1)} points; recomputed at every step, by "
        f"{change_text(table, recomputed_name)} and {change_text(table, recomputed_name, 'accuracy', 100, 1)} points. "
        f"Against the fixed tail, recomputing changes {name} by {versus(recomputed_name)}, so {comparison}; the "
        "recomputed tail "
        + ("leaves quality intact (its interval against the baseline reaches zero)." if intact
           else "still harms quality (its interval against the baseline stays above zero)."))
    return comparison_table, sentence


def _paper_heads() -> list[dict]:
    return sorted((r for r in paper.TABLE2 if r["mask"] == "head"), key=lambda r: r["removed"])


def _our_heads(info: pd.DataFrame, k: int) -> list[str]:
    """Our head settings at every step, smallest first."""
    heads = info[(info["mask"] == "head") & (info["schedule"] == label_of(k)["every"])]
    return list(heads.sort_values("removed").index)


def beside_paper(table: pd.DataFrame, info: pd.DataFrame, hidden_size: int, k: int) -> pd.DataFrame:
    """Tables 2, 3 and 6 beside ours by relative change, matched by the share of c removed (the paper's head rows
    by rank to our head masks)."""
    labels = label_of(k)
    paper_label = {"every": "tᵢ", "first": "t₀", "last": "last-k"}  # the paper never gives its k
    head_match = {r["setting"]: name for r, name in zip(_paper_heads(), _our_heads(info, k))}
    base_fid = table.loc[("baseline", "FID"), "value"]

    def ours_value(name, metric):
        return table.loc[(name, metric), "value"] if name and (name, metric) in table.index else np.nan

    def row(setting, share, paper_values, paper_baseline, mine):
        return {"paper setting": setting, "paper removed %": 100 * share if share else np.nan,
                "paper FID / baseline": paper_values["FID"] / paper_baseline["FID"],
                "paper IS": paper_values.get("IS"), "paper precision": paper_values.get("precision"),
                "paper recall": paper_values.get("recall"), "ours": mine or "—",
                "ours removed %": info.loc[mine, "removed %"] if mine else np.nan,
                "ours FID / baseline": ours_value(mine, "FID") / base_fid,
                "ours IS-style": ours_value(mine, "IS-style"),
                "ours precision": ours_value(mine, "precision"), "ours recall": ours_value(mine, "recall")}

    rows = [row("REPA-XL baseline", None, paper.TABLE2[0], paper.TABLE2[0], "baseline")]
    for entry in paper.TABLE2[1:]:
        share = (entry["removed_pct"] or 100 * entry["removed"] / 1152) / 100
        mine = (head_match.get(entry["setting"]) if entry["mask"] == "head"
                else ours_at(info, share, labels[entry["schedule"]], hidden_size, entry["mask"]))
        rows.append(row(entry["setting"], share, entry, paper.TABLE2[0], mine))
    for model_name, results in paper.TABLE3.items():
        if model_name == "REPA":
            continue
        rows.append(row(f"{model_name} baseline", None, results["baseline"], results["baseline"], "baseline"))
        for schedule_name in ("every", "first", "last"):
            rows.append(row(f"{model_name}, tail τ=0.01, {paper_label[schedule_name]}", None, results[schedule_name],
                            results["baseline"], ours_at(info, paper.HEADLINE_SHARE, labels[schedule_name],
                                                         hidden_size)))
    return pd.DataFrame(rows).set_index("paper setting").dropna(axis=1, how="all")


def grid_figure(grids: dict, info: pd.DataFrame, names: list[str], title: str, columns: int):
    """One strip of samples per setting in ``names`` (the same noise and labels in every column)."""
    fig, axes = plt.subplots(len(names), 1, figsize=(1.1 * columns, 1.25 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        images = grids[name]  # (grid_columns, C, H, W)
        strip = torch.cat(list(images), dim=-1).permute(1, 2, 0).numpy()  # (H, columns·W, C)
        ax.imshow(strip[..., 0] if strip.shape[-1] == 1 else strip, cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"{name.rsplit(',', 1)[0]}\n({info.loc[name, 'removed']:.0f} dims)", rotation=0,
                      ha="right", va="center", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def every_step_names(grids: dict, group: list, k: int) -> list[str]:
    """The baseline and each mask of ``group`` at every step, where it was run."""
    every = label_of(k)["every"]
    return ["baseline"] + [f"{m.name}, {every}" for m in group if f"{m.name}, {every}" in grids]


def fid_figure(scores: dict, k: int, bundle_name: str, metric_name: str):
    """FID [95%] against the share of c removed, by kind and schedule, over the grey band of unpruned seeds."""
    info, fid = scores["info"], scores["table"].xs("FID", level="metric")
    seed_fid = scores["seed_points"]["FID"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.axhspan(seed_fid.min(), seed_fid.max(), color="0.85", label=f"unpruned, {len(seed_fid)} seeds (range)")
    markers = {"tᵢ": "o", "t₀": "s", f"last-{k}": "^"}
    kind_label = {"tail": "tail", "random": "random control", "head": "head (top-k)"}
    for kind, color in (("tail", "C0"), ("random", "C3"), ("head", "C2")):
        for schedule_label, marker in markers.items():
            chosen = info[(info["mask"] == kind) & (info["schedule"] == schedule_label)]
            if chosen.empty:
                continue
            chosen = chosen.sort_values("removed %")
            rows = fid.loc[chosen.index]
            ax.errorbar(chosen["removed %"], rows["value"],
                        yerr=[rows["value"] - rows["low"], rows["high"] - rows["value"]], color=color, marker=marker,
                        linestyle="-" if schedule_label == "tᵢ" else "none", capsize=2,
                        label=f"{kind_label[kind]}, {schedule_label}")
    ax.set_yscale("log")
    ax.set_xlabel("coordinates of c removed (%)")
    ax.set_ylabel(f"{metric_name} (95% bootstrap CI)")
    ax.set_title(f"{bundle_name}: quality against the share of c zeroed")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def _paper_pairs() -> list[tuple[float, float]]:
    """(pruned, baseline) FID-5K of the paper's tail at τ = 0.01: Table 2's three schedules, Table 3's MG and
    LightningDiT."""
    return [(r["FID"], paper.TABLE2[0]["FID"]) for r in paper.TABLE2[1:4]] + [
        (v[s]["FID"], v["baseline"]["FID"]) for v in (paper.TABLE3["MG"], paper.TABLE3["LightningDiT"])
        for s in ("every", "first", "last")]


def noise_floor(scores: dict, n_samples: int) -> tuple[dict, pd.DataFrame]:
    """The seed-to-seed spread of the unpruned run and the paired intervals' half-width, beside the paper's changes
    at τ = 0.01; returns the values the prose quotes and the table of the unpruned runs."""
    seed_points, fid = scores["seed_points"], scores["table"].xs("FID", level="metric")
    seed_std = seed_points.std(ddof=1)
    paired_halfwidth = ((fid["delta_high"] - fid["delta_low"]) / 2).drop("baseline")
    relative_seed_std = seed_std["FID"] / seed_points["FID"].mean()
    relative_at_5k = relative_seed_std * np.sqrt(n_samples / paper.FID_SAMPLES)  # spread shrinks about as 1/√n
    paper_deltas = [abs(pruned - base) for pruned, base in _paper_pairs()]
    paper_relative = [abs(pruned - base) / base for pruned, base in _paper_pairs()]
    values = {"seed_std_fid": float(seed_std["FID"]), "seed_mean_fid": float(seed_points["FID"].mean()),
              "relative_seed_std": float(100 * relative_seed_std), "relative_at_5k": float(100 * relative_at_5k),
              "paired_median": float(paired_halfwidth.median()), "paper_rel_min": float(100 * min(paper_relative)),
              "paper_rel_max": float(100 * max(paper_relative)), "n_seeds": len(seed_points),
              "paper_delta_min": min(paper_deltas), "paper_delta_max": max(paper_deltas)}
    table = pd.DataFrame({"mean over seeds": seed_points.mean(), "seed-to-seed std": seed_std,
                          "relative std": seed_std / seed_points.mean().abs()})
    return values, table


def compute_savings(bundle: Bundle, p: dict) -> tuple[pd.DataFrame, dict]:
    """The compact adaLN projection's time over the dense one, at this model's shape and DiT-XL/2's, for each tail
    share (global masks); returns the timings and the values the prose quotes (shares as fractions: the adaLN
    projections' share of a forward on this model and on DiT-XL/2, the headline tail share, its time ratio and the
    share of a DiT-XL/2 forward it saves, the largest such saving)."""
    num_steps, seed, device = p["num_steps"], p["seed"], p["device"]
    torch.manual_seed(seed)
    config = bundle.transformer.config
    tokens = (config.sample_size // config.patch_size) ** 2
    own_linear = bundle.transformer.transformer_blocks[0].norm1.linear
    xl_hidden = adaln_cost.DIT_XL["hidden"]
    xl_linear = torch.nn.Linear(xl_hidden, 6 * xl_hidden).to(device)  # random: shapes only
    rows = []
    for fraction in p["tail_fractions"]:
        tau = masks.threshold_for_fraction(bundle, fraction, num_steps=num_steps, granularity="global")
        removed = masks.tail_mask(bundle, tau, num_steps=num_steps, granularity="global").removed[0]
        xl_removed = adaln_cost.random_removed(xl_hidden, fraction, seed)
        rows.append({"share removed": fraction,
                     f"{bundle.name} sparse/dense": adaln_cost.projection_ratio(own_linear, removed,
                                                                                2 * p["batch_size"]),
                     "DiT-XL/2 shape sparse/dense": adaln_cost.projection_ratio(xl_linear, xl_removed, 256)})
    timings = pd.DataFrame(rows).set_index("share removed")
    share_xl = adaln_cost.adaln_flop_share(**adaln_cost.DIT_XL)
    headline_share = min(p["tail_fractions"], key=lambda f: abs(f - paper.HEADLINE_SHARE))
    headline_ratio = timings.loc[headline_share, "DiT-XL/2 shape sparse/dense"]
    values = {"share_own": adaln_cost.adaln_flop_share(bundle.hidden_size, tokens, config.num_layers),
              "share_xl": share_xl, "headline_share": headline_share, "headline_ratio": headline_ratio,
              "saving_headline": share_xl * (1 - headline_ratio),
              "max_saving_xl": share_xl * (1 - timings["DiT-XL/2 shape sparse/dense"].min()),
              "xl_tokens": adaln_cost.DIT_XL["tokens"], "xl_depth": adaln_cost.DIT_XL["depth"]}
    return timings, values


def flow_comparison(names: list[str], labels, p: dict) -> tuple[pd.DataFrame | None, str]:
    """Each organism of ``names`` unpruned, with the smallest tail share at every step and with as many random
    coordinates, from the same labels and noise; returns the table (None without organisms) and its sentence."""
    share, rows, ratios, metric_name = min(p["tail_fractions"]), [], {}, None
    for name in names:
        organism = load(name, device=p["device"], dtype=p["dtype"])
        evaluator = quality.evaluator_for(organism, p["reference_stats"], n_kid=p["n_samples"], seed=p["seed"],
                                          device=p["device"])
        tau = masks.threshold_for_fraction(organism, share, num_steps=p["num_steps"], granularity=p["granularity"])
        tail = masks.tail_mask(organism, tau, num_steps=p["num_steps"], granularity=p["granularity"])
        runs = {"unpruned": None, "tail, every step": tail,
                "random, every step": masks.random_mask(tail, seed=p["seed"])}
        sets = {setting: evaluator.sample_set(sample(
            organism, labels, num_steps=p["num_steps"], cfg_scale=p["cfg_scale"], seed=p["seed"],
            batch_size=p["batch_size"], mask=mask, null_policy=p["null_policy"], autocast=p["autocast"],
            progress=False), labels) for setting, mask in runs.items()}
        with threadpool_limits(p["cpu_threads"]):
            table = metrics.bootstrap_table(sets, evaluator.reference, "unpruned", n_boot=p["n_boot"], seed=p["seed"])
        for setting in runs:
            row = {"model": name, "time": organism.time.kind, "setting": setting}
            for metric in ("FID", "accuracy"):
                row[metric] = table.loc[(setting, metric), "value"]
                row[f"Δ{metric} [95% CI]"] = change_text(table, None if setting == "unpruned" else setting, metric,
                                                          digits=3)
            rows.append(row)
        ratios[name] = table.loc[("tail, every step", "FID"), "value"] / table.loc[("unpruned", "FID"), "value"]
        metric_name = evaluator.name
    if not rows:
        return None, "No organisms are compared here (`flow_comparison` is empty)."
    return (pd.DataFrame(rows).set_index(["model", "setting"]),
            " ".join(f"On {name} the tail at every step multiplies the {metric_name} by {ratio:.2f}."
                     for name, ratio in ratios.items()))


# ---------------------------------------------------------------------------------------------------
#                                   The pruning chapter's claims, judged
# ---------------------------------------------------------------------------------------------------


def claims(scores: dict, *, hidden_size: int, k: int, statistics: dict, savings: dict, embedded: bool,
           n_samples: int) -> list[dict]:
    """The pruning chapter's verdict rows: the book's regime preconditions (:func:`regime.precondition_rows`: c is
    sparse, y is aligned) and the test's (the random control of the tail's size fails the intact test), the tail at
    each schedule intact, damage growing with the share, nearly all of the tail destroying generation, each head destroying and beating its random control, the tail beating its control, the
    paper's changes against the seed-to-seed noise, and the speed of a sparse c.

    "Intact": the paired 95% interval of the FID change reaches zero. "Destroyed": FID ≥ ``paper.BARS
    ['destroyed_ratio']`` × the baseline's.

    Args:
        scores: :func:`chapter_scores`' ``table`` (setting, metric → value, delta, delta_low, delta_high),
            ``info`` (setting → mask, schedule, removed, removed %) and ``seed_points`` (noise seed → FID, ...).
        hidden_size: D of the model; k: the last-k schedule's k.
        statistics: the model's ``npr_c`` and ``cos_y`` (:func:`embeddings.first_time_summary`).
        savings: :func:`compute_savings`' values (``headline_ratio``, ``headline_share``, ``saving_headline``).
        embedded: a shipped organism: its FID is not Inception FID, so the noise-floor claim is not comparable.
        n_samples: samples per setting.
    """
    sweep = _Sweep(scores, k)
    found = headline(sweep.info, hidden_size, k)
    sparse, sees_harm = _preconditions(sweep, found["every"], statistics)
    return [*sparse, sees_harm, *_intact_rows(sweep, found, k, [*sparse, sees_harm]), *_growth_rows(sweep, sparse),
            *_head_rows(sweep, k, sparse), _tail_control_row(sweep, found["every"], sparse),
            _noise_row(scores, embedded, n_samples), _speed_row(savings)]


class _Sweep:
    """The FID of a :func:`chapter_scores` sweep as :func:`claims` reads it: by setting, as a ratio to the baseline,
    and the random control of a setting."""

    def __init__(self, scores: dict, k: int):
        self.table, self.info, self.labels = scores["table"], scores["info"], label_of(k)
        self.fid = self.table.xs("FID", level="metric")
        self.base_fid = self.fid.loc["baseline", "value"]

    def of(self, name: str | None, column: str) -> float | None:
        """``column`` of setting ``name``'s FID row; None where the setting was not run."""
        return None if name is None or name not in self.fid.index else float(self.fid.loc[name, column])

    def ratio_text(self, name: str | None) -> str:
        """'FID ×1.02, Δ +0.10 [-0.20, +0.40]' of setting ``name``; '—' where it was not run."""
        if name is None:
            return "—"
        return f"FID ×{self.fid.loc[name, 'value'] / self.base_fid:.2f}, Δ {change_text(self.table, name)}"

    def control_of(self, name: str | None) -> str | None:
        """The random control of setting ``name`` at every step, where it was run."""
        control = f"random ({name.rsplit(', ', 1)[0]}), {self.labels['every']}" if name else None
        return control if control in self.fid.index else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _preconditions(sweep: _Sweep, every: str | None, statistics: dict) -> tuple[list[dict], dict]:
    """The regime rows (c is sparse, y is aligned: the book's one vocabulary); the random control of the headline
    tail's size fails the intact test (so the test sees harm)."""
    control = sweep.control_of(every)
    sparse = regime.precondition_rows(pd.Series(statistics), regime.paper_bands())
    sees_harm = report.precondition_row(
        "the intact test can see harm: the random control of the tail's size fails it", paper="no random control",
        ours=sweep.ratio_text(control), value=sweep.of(control, "delta_low"), op=">", bar=0.0)
    return sparse, sees_harm


def _intact_rows(sweep: _Sweep, found: dict, k: int, requires: list[dict]) -> list[dict]:
    """The headline tail at every step, at t₀ only and in the last k steps leaves quality intact."""
    paper_base = paper.TABLE2[0]["FID"]
    return [report.claim_row(
        f"zeroing the tail ({name.split(',')[0] if name else 'not run'}) {schedule_text} leaves quality intact",
        paper=f"FID ×{paper_row['FID'] / paper_base:.4f} ({paper_row['setting']})",
        ours=sweep.ratio_text(name), value=sweep.of(name, "delta_low"), op="<=", bar=0.0, requires=requires)
        for name, schedule_text, paper_row in zip((found["every"], found["first"], found["last"]),
                                                  ("at every step", "only at t₀", f"only in the last {k} steps"),
                                                  paper.TABLE2[1:4])]


def _growth_rows(sweep: _Sweep, sparse: dict) -> list[dict]:
    """Damage grows with the share of the tail removed (at every step), and nearly all of it destroys generation."""
    bars, paper_base, info = paper.BARS, paper.TABLE2[0]["FID"], sweep.info
    tails_every = info[(info["mask"] == "tail") & (info["schedule"] == sweep.labels["every"])].sort_values("removed %")
    growth = (sweep.fid.loc[tails_every.index, "value"] / sweep.base_fid).tolist()
    return [
        report.claim_row("damage grows with the share of the tail removed",
                         paper="FID " + ", ".join(f"×{paper_ratio:.4g}" for paper_ratio in
                                                  (paper.TABLE2[i]["FID"] / paper_base for i in (1, 4, 5))),
                         ours=", ".join(f"×{r:.2f} at {p:.0f}%" for r, p in zip(growth, tails_every["removed %"])),
                         value=float(np.diff(growth).min()) if len(growth) >= 2 else None, op=">", bar=0.0,
                         requires=sparse),
        report.claim_row("removing nearly all of the tail destroys generation",
                         paper=f"FID ×≥ {bars['destroyed_ratio']:.2f} (Table 2, {paper.TABLE2[5]['removed_pct']}%)",
                         ours=f"×{growth[-1]:.2f} at {tails_every['removed %'].iloc[-1]:.0f}%" if growth else "—",
                         value=growth[-1] if growth else None, op=">=", bar=bars["destroyed_ratio"], requires=sparse)]


def _head_rows(sweep: _Sweep, k: int, sparse: dict) -> list[dict]:
    """Each head at every step destroys generation, and hurts more than as many random coordinates."""
    bars, paper_base, paper_heads, rows = paper.BARS, paper.TABLE2[0]["FID"], _paper_heads(), []
    for head in _our_heads(sweep.info, k):
        random_head = sweep.control_of(head)
        rows += [
            report.claim_row(f"zeroing the {head.split(',')[0]} destroys generation",
                             paper=f"FID ×≥ {bars['destroyed_ratio']:.2f}; the paper: 2 dims ×"
                                   f"{paper_heads[0]['FID'] / paper_base:.2f}, 8 dims ×"
                                   f"{paper_heads[-1]['FID'] / paper_base:.0f}",
                             ours=sweep.ratio_text(head), value=sweep.of(head, "value") / sweep.base_fid, op=">=",
                             bar=bars["destroyed_ratio"], requires=sparse),
            report.claim_row(f"the {head.split(',')[0]} hurts more than as many random coordinates",
                             paper="implied by §5; no random control", ours=f"random: {sweep.ratio_text(random_head)}",
                             value=_difference(sweep.of(head, "delta_low"), sweep.of(random_head, "delta_high")),
                             op=">", bar=0.0, requires=sparse)]
    return rows


def _tail_control_row(sweep: _Sweep, every: str | None, sparse: dict) -> dict:
    """The headline tail hurts less than its random control."""
    control = sweep.control_of(every)
    return report.claim_row(
        "the tail is the harmless part: it hurts less than as many random coordinates",
        paper="implied by §5; no random control",
        ours=f"tail {sweep.ratio_text(every)}; random {sweep.ratio_text(control)}",
        value=_difference(sweep.of(control, "delta_low"), sweep.of(every, "delta_high")), op=">", bar=0.0,
        requires=sparse)


def _noise_row(scores: dict, embedded: bool, n_samples: int) -> dict:
    """The paper's τ = 0.01 FID changes against twice the seed-to-seed std of our FID (Inception FID only)."""
    seed_std = float(scores["seed_points"]["FID"].std(ddof=1))
    paper_deltas = [abs(pruned - base) for pruned, base in _paper_pairs()]
    return report.claim_row(
        "the paper's τ = 0.01 FID changes are above the seed-to-seed noise",
        paper=f"|ΔFID| ≤ {max(paper_deltas):.4f} on FID-5K, no seed variance",
        ours=("not comparable: MNIST-FID is another feature net" if embedded
              else f"2 × seed std of FID at n = {n_samples}: {2 * seed_std:.4f}"),
        value=None if embedded else max(paper_deltas), op=">=", bar=2 * seed_std)


def _speed_row(savings: dict) -> dict:
    """A sparse c makes the adaLN projection faster; negligible where it saves little of a DiT-XL/2 forward."""
    return report.claim_row(
        "a sparse c makes the model faster (Fig. 42)", paper="shown, no numbers",
        ours=f"projection ×{savings['headline_ratio']:.2f} at {100 * savings['headline_share']:.1f}% removed; "
             f"{100 * savings['saving_headline']:.3f}% of a DiT-XL/2 forward saved",
        value=float(savings["headline_ratio"]), op="<", bar=1.0,
        negligible=(float(savings["saving_headline"]), "<", paper.BARS["negligible_forward_share"]))


# ---------------------------------------------------------------------------------------------------
#                       The same protocol on a ladder rung or an organism (regime, beyond)
# ---------------------------------------------------------------------------------------------------


def rung_settings(bundle: Bundle, num_steps: int, tail_share: float, last_k: int, head_k: int) -> list[tuple]:
    """(key, label, mask, schedule) of the short protocol: the unpruned baseline, the tail at every step / at t₀
    / in the last k steps, its random control, and the top-k head (the head claim reads the head alone, so it has
    no random control here: the pruning chapter has one)."""
    tau = masks.threshold_for_fraction(bundle, tail_share, num_steps=num_steps)
    tail = masks.tail_mask(bundle, tau, num_steps=num_steps)
    head = masks.topk_mask(bundle, head_k, num_steps=num_steps)
    share = f"{tail.removed_fraction:.0%}"
    return [("unpruned", "unpruned", None, "every"),
            ("tail-every", f"tail {share}, every step", tail, "every"),
            ("tail-first", f"tail {share}, t₀ only", tail, "first"),
            ("tail-last", f"tail {share}, last {last_k} steps", tail, masks.Schedule("last", last_k)),
            ("random-tail", f"random {share}, every step", masks.random_mask(tail, seed=1), "every"),
            ("head", f"head top-{head_k}, every step", head, "every")]


def change_columns(table: pd.DataFrame, setting: str, metric: str) -> dict:
    """A setting's value and paired change [interval] of ``metric`` in a :func:`metrics.bootstrap_table`, as the
    columns ``metric``, ``Δmetric``, ``Δmetric low``, ``Δmetric high``."""
    row = table.loc[(setting, metric)]
    return {metric: row["value"], f"Δ{metric}": row["delta"], f"Δ{metric} low": row["delta_low"],
            f"Δ{metric} high": row["delta_high"]}


ORGANISM_KEYS = ("unpruned", "tail-every", "tail-first", "random-tail", "head")
"""The settings an organism run keeps (tail at every step and at t₀, head top-k, the random control): the rungs'
last-k tail is left out to keep the beyond chapter within the book's CPU budget."""


def organism_card(bundle: Bundle, n_samples: int, num_steps: int, cfg_scale: float) -> dict:
    """The sampler card (:func:`sampling.sampler_card`) of :func:`organism_runs` with these arguments: the bundle's
    own precision, scored by :func:`quality.evaluator_for`'s network."""
    feature_network, fid_mode = quality.scoring(bundle)
    return sampler_card(bundle, num_samples=n_samples, num_steps=num_steps, cfg_scale=cfg_scale,
                        feature_network=feature_network, fid_mode=fid_mode)


def organism_runs(bundle: Bundle, n_samples: int, num_steps: int, cfg_scale: float, tail_share: float,
                  head_k: int, seed: int, n_boot: int) -> pd.DataFrame:
    """The :data:`ORGANISM_KEYS` of :func:`rung_settings`, sampled from the same noise, scored by MNIST-FID and
    accuracy (:func:`metrics.bootstrap_table`'s paired normal intervals).

    Returns one row per setting (indexed by its key) in the columns :func:`rung_claims` reads (``per_digit`` is
    the class accuracy), with the FID and its paired change besides.
    """
    evaluator = quality.evaluator_for(bundle, n_kid=n_samples, seed=seed, device=str(bundle.device))
    labels = balanced_labels(bundle.num_classes, n_samples)
    settings = [setting for setting in rung_settings(bundle, num_steps, tail_share, 1, head_k)
                if setting[0] in ORGANISM_KEYS]  # last_k = 1: that setting is not among the keys
    sets = {key: evaluator.sample_set(sample(bundle, labels, num_steps=num_steps, cfg_scale=cfg_scale, seed=seed,
                                             mask=mask, schedule=schedule, progress=False), labels)
            for key, _, mask, schedule in settings}
    table = metrics.bootstrap_table(sets, evaluator.reference, "unpruned", n_boot=n_boot, seed=seed, progress=False)
    rows = []
    for key, label, mask, _ in settings:
        accuracy = change_columns(table, key, "accuracy")
        rows.append({"key": key, "setting": label, "removed": 0.0 if mask is None else mask.removed_fraction,
                     **change_columns(table, key, "FID"), "per_digit": accuracy["accuracy"],
                     "Δ per_digit": accuracy["Δaccuracy"], "CI low": accuracy["Δaccuracy low"],
                     "CI high": accuracy["Δaccuracy high"]})
    return pd.DataFrame(rows).set_index("key")


def rung_claims(results: pd.DataFrame, requires: list[dict]) -> list[dict]:
    """The paper's pruning claims as verdict rows (:func:`report.claim_row`) on one :func:`organism_runs` table.

    Harmless (each tail schedule among the results): the 95% paired interval of the change in per-digit agreement
    lies above −``HARM_TOLERANCE``.
    Destroyed: per-digit agreement below ``DESTROYED_BELOW`` × the unpruned one. The tail beats its random
    control when its paired interval lies wholly above the control's. Where the unpruned model reads no digit
    (agreement 0), there is nothing to destroy: that claim's ratio is NaN, so it is not testable, and says why.
    """
    unpruned, head = results.loc["unpruned", "per_digit"], results.loc["head"]
    nothing = " (the unpruned model reads no digit: nothing to destroy)" if unpruned == 0 else ""
    tail, control = results.loc["tail-every"], results.loc["random-tail"]

    def harmless(key: str, schedule: str) -> dict:
        row = results.loc[key]
        return report.claim_row(
            f"{row['setting']}: harmless", paper=paper_fid("tail", 0.01, schedule), requires=requires,
            ours=f"Δ per-digit {interval_text(row['Δ per_digit'], row['CI low'], row['CI high'], 3)}",
            value=float(row["CI low"]), op=">", bar=-HARM_TOLERANCE)

    return [
        *[harmless(key, schedule) for key, schedule in (("tail-every", "every"), ("tail-first", "first"),
                                                        ("tail-last", "last")) if key in results.index],
        report.claim_row("the tail matters less than a random set of its size", paper="(implied by §5)",
                         ours=f"tail {tail['Δ per_digit']:+.3f} vs random {control['Δ per_digit']:+.3f}",
                         value=float(tail["CI low"] - control["CI high"]), op=">", bar=0.0, requires=requires),
        report.claim_row(f"{head['setting']}: destroys generation", paper=paper_fid("head", 1.0, "every"),
                         ours=f"per-digit {unpruned:.3f} → {head['per_digit']:.3f}{nothing}",
                         value=float(head["per_digit"] / unpruned) if unpruned else float("nan"), op="<",
                         bar=DESTROYED_BELOW, requires=requires),
    ]


def paper_fid(mask: str, tau: float, schedule: str) -> str:
    """"FID baseline → pruned (n dims)" of one Table 2 row."""
    rows = {(r["mask"], r["tau"], r["schedule"]): r for r in paper.TABLE2}
    row = rows[(mask, tau, schedule)]
    return (f"FID {rows[(None, None, None)]['FID']} → {row['FID']} ({row['removed']} of "
            f"{paper.TABLE1['REPA']['D']} dims)")
