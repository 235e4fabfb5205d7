"""The similarity chapter's measurements: the conditional vector c = y + t at the first sampling step, beside the
paper's Tables 1 and 4, over the model's whole schedule and along the sampling paths of the compared organisms;
its figures and its verdict rows. Loads nothing by name: the notebook hands in every bundle it measures.

The claims are judged on one model (the book's default: the in-regime recipe's first seed) under the regime
preconditions every chapter shares (:func:`regime.precondition_rows`: nPR(c) and cos(y) inside the paper's bands);
the models shown beside it (a seed replicate, ``mnist-dit`` as the small-model contrast) are measured and judged
by the same rows, so an out-of-regime model reads "not testable here", never "not reproduced", on a claim whose
precondition it misses.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bottleneck_utils import stats
from bottleneck_utils.chapters import paper, plots, regime, report
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep, path_sweep, timestep_sweep
from bottleneck_utils.models import Bundle

# the notebook's papermill parameters: name → accepted type(s) (report.notebook_parameters reads them)
PARAMETERS = {"model": str, "device": str, "dtype": str, "seed": int, "family": (str, type(None)),
              "freq_shift": (int, type(None)), "num_steps": int, "zoom": int, "beside": list,
              "schedule_models": list, "path_tail_share": float}
SHIFTS = ((0, "original DiT"), (1, "diffusers"))  # the timestep sinusoid's two conventions


def paper_values() -> dict[str, float]:
    """The paper's numbers the chapter's prose quotes, by glue name (the regime bands of Table 4, Table 1's least
    aligned cosine, Table 4's smallest t gap and the §4 schedule bar)."""
    bands, bars = regime.paper_bands(), paper.BARS
    return {"paper_npr_low": bands["npr_c"][0], "paper_npr_high": bands["npr_c"][1],
            "paper_cos_y_low": bands["cos_y"][0], "paper_cos_y_high": bands["cos_y"][1],
            "paper_cos_c_low": bands["cos_c"][0], "paper_cos_c_high": bands["cos_c"][1],
            "paper_t_gap": bars["t_gap"], "schedule_bar": bars["schedule_cosine"], "nearly_all": bars["nearly_all"]}


def at_first_step(bundle: Bundle, t0: float) -> dict:
    """y, t and c = y + t at ``t0`` and their :func:`stats.summary` (with detail).

    Args:
        bundle: a loaded model.
        t0: the timestep at which c is taken.

    Returns:
        ``{"y": (n, D), "t": (D,), "c": (n, D), "ours": stats.summary(y, t, detail=True)}``.
    """
    y = conditional_vectors(bundle, timesteps=t0, part="y")  # (n_classes, D)
    t = conditional_vectors(bundle, timesteps=t0, part="t")[0]  # (D,)
    return {"y": y, "t": t, "c": y + t, "ours": stats.summary(y, t, detail=True)}


def shift_table(shifted: dict[int, Bundle], t0: float) -> pd.DataFrame:
    """The summary statistics at ``t0`` of the same weights loaded with each timestep sinusoid.

    Args:
        shifted: the model loaded with ``freq_shift`` 0 and 1, by shift.
        t0: the timestep at which c is taken.

    Returns:
        One column per shift (``shift 0 (original DiT)``, ``shift 1 (diffusers)``), one row per statistic.
    """
    columns = {}
    for shift, name in SHIFTS:
        y = conditional_vectors(shifted[shift], timesteps=t0, part="y")
        t = conditional_vectors(shifted[shift], timesteps=t0, part="t")[0]
        columns[f"shift {shift} ({name})"] = stats.summary(y, t)
    return pd.DataFrame(columns)


JUDGED, BESIDE = "ours (judged)", "ours (beside)"  # the comparison table's source of our rows


def comparison_table(ours: dict[str, tuple[int, dict]]) -> pd.DataFrame:
    """The paper's Table 4 (with Table 1's widths) and one row per model of ours, marked by its ``source`` column.

    Args:
        ours: model name → (D, :func:`stats.summary` at t₀), the judged model first, then those shown beside it.

    Returns:
        One row per model; ``source`` is ``paper``, :data:`JUDGED` or :data:`BESIDE`, and ``in the regime``
        (:func:`regime.in_regime`) is filled for ours.
    """
    rows = [{"model": name, "D": paper.TABLE1.get(name, {}).get("D"), "cosine (y+t)": v["cosine_yt"],
             "nPR (y+t)": v["nPR_yt"], "cosine (y)": v["cosine_y"], "nPR (y)": v["nPR_y"], "source": "paper",
             "in the regime": None}
            for name, v in paper.TABLE4.items()]
    bands = regime.paper_bands()
    rows += [{"model": name, "D": hidden, "cosine (y+t)": summary["cos_c"], "nPR (y+t)": summary["npr_c"],
              "cosine (y)": summary["cos_y"], "nPR (y)": summary["npr_y"], "source": JUDGED if i == 0 else BESIDE,
              "in the regime": regime.in_regime(summary, bands)}
             for i, (name, (hidden, summary)) in enumerate(ours.items())]
    return pd.DataFrame(rows).set_index("model").astype({"D": "Int64"})


def schedule(bundle: Bundle) -> dict:
    """The mean cosine and nPR of c at every timestep of the model's range, and where the cosine is extreme.

    Every integer timestep for DDPM time, 201 points of [0, 1] for flow time.

    Returns:
        ``{"sweep": timestep_sweep(...), "above_99": share of timesteps with cosine > 0.99, "cos_min_t",
        "cos_max_t": the cosine's extremes, "t_at_min", "t_at_max": their timesteps}``.
    """
    grid = np.arange(0, int(bundle.time.t_max) + 1) if bundle.time.kind == "ddpm" else np.linspace(0, 1, 201)
    sweep = timestep_sweep(bundle, grid)
    return {"sweep": sweep, "above_99": (sweep["cosine"] > 0.99).double().mean().item(),
            "cos_min_t": sweep["cosine"].min().item(), "cos_max_t": sweep["cosine"].max().item(),
            "t_at_min": float(sweep["timestep"][int(sweep["cosine"].argmin())]),
            "t_at_max": float(sweep["timestep"][int(sweep["cosine"].argmax())])}


def paths(organisms: dict[str, Bundle], tail_share: float) -> tuple[dict, pd.DataFrame | None]:
    """Each organism's c along its own sampling path, and one summary row per organism.

    Args:
        organisms: bundles by name (empty: nothing compared).
        tail_share: the share of coordinates whose t₀ tail set is compared with the data end's.

    Returns:
        ``(sweeps, table)``: :func:`path_sweep` by name, and a table indexed by model (None when empty).
    """
    sweeps, rows = {}, []
    for name, organism in organisms.items():
        sweeps[name] = path_sweep(organism)
        rows.append({"model": name, "time": organism.time.kind,
                     "cos(c) at t₀": sweeps[name]["cosine"][0].item(), "cos(c) min": sweeps[name]["cosine"].min().item(),
                     "nPR(c) at t₀": sweeps[name]["npr"][0].item(), "nPR(c) max": sweeps[name]["npr"].max().item(),
                     "‖Δc̄‖/‖c̄(t₀)‖": regime.mean_c_movement(organism),
                     "tail(t₀) ∩ tail(end)": regime.tail_overlap(organism, tail_share)})
    return sweeps, (pd.DataFrame(rows).set_index("model") if rows else None)


def one_model(bundle: Bundle, num_steps: int) -> dict:
    """One model's t₀ (for ``num_steps`` sampler steps), :func:`at_first_step` and :func:`schedule` entries."""
    t0 = first_sampling_timestep(bundle, num_steps)
    return {"t0": t0, **at_first_step(bundle, t0), **schedule(bundle)}


def measure(bundle: Bundle, num_steps: int, shifted: dict[int, Bundle], organisms: dict[str, Bundle],
            path_tail_share: float, beside: dict[str, Bundle] | None = None) -> dict:
    """Everything the chapter shows: c at t₀, both sinusoids, the paper's tables, the schedule and the paths.

    Args:
        bundle: the judged model.
        num_steps: sampler steps; they define t₀.
        shifted: ``bundle``'s weights loaded with ``freq_shift`` 0 and 1, by shift.
        organisms: the organisms compared along their sampling paths, by name.
        path_tail_share: the tail share of :func:`paths`.
        beside: the models shown beside the judged one, by name (the judged model's own name is skipped).

    Returns:
        The judged model's :func:`one_model` entries, with ``shifts`` (:func:`shift_table`), ``beside`` (name →
        :func:`one_model` of each model beside it), ``models`` (every name, the judged one first),
        ``comparison`` (:func:`comparison_table`), ``paths`` and ``path_table`` (:func:`paths`).
    """
    judged = one_model(bundle, num_steps)
    others = {name: one_model(other, num_steps) for name, other in (beside or {}).items() if name != bundle.name}
    hidden = {bundle.name: int(bundle.hidden_size)} | {name: int(other.hidden_size) for name, other in
                                                        (beside or {}).items()}
    ours = {name: (hidden[name], found["ours"]) for name, found in {bundle.name: judged, **others}.items()}
    sweeps, path_table = paths(organisms, path_tail_share)
    return {**judged, "shifts": shift_table(shifted, judged["t0"]), "beside": others,
            "models": [bundle.name, *others], "comparison": comparison_table(ours), "paths": sweeps,
            "path_table": path_table}


def by_model(results: dict) -> dict[str, dict]:
    """The per-model entries of :func:`measure` (t₀, c, y, ``ours``, the schedule) by name, the judged model first."""
    return {results["models"][0]: results, **results["beside"]}


def beside_sentence(results: dict) -> str:
    """The Markdown sentence that reads each model shown beside the judged one against the paper's bands."""
    bands = regime.paper_bands()
    if not results["beside"]:
        return "No model is shown beside the judged one (`beside` is empty)."
    return " ".join(
        f"Beside it, `{name}` has nPR(c) {found['ours']['npr_c']:.2%} and cos(y) {found['ours']['cos_y']:.4f} "
        f"(the paper's bands: nPR(c) ≤ {bands['npr_c'][1]:.2%}, cos(y) ≥ {bands['cos_y'][0]:.4f}): it is "
        f"{'inside' if regime.in_regime(found['ours'], bands) else 'outside'} the regime; its cosine of c stays above "
        f"{paper.BARS['schedule_cosine']} at {found['above_99']:.1%} of its timesteps."
        for name, found in results["beside"].items())


def path_sentence(path_table: pd.DataFrame | None, tail_share: float) -> str:
    """The Markdown sentence that reads the path table, one sentence per organism."""
    if path_table is None:
        return "No organisms are compared here (`schedule_models` is empty)."
    moves = {name: row["‖Δc̄‖/‖c̄(t₀)‖"] for name, row in path_table.iterrows()}
    return " ".join(
        f"The class-mean c of {name} ({path_table.loc[name, 'time']} time) travels {moves[name]:.2f} of its own "
        f"length between the noise and the data end; its nPR goes from {path_table.loc[name, 'nPR(c) at t₀']:.1%} at "
        f"t₀ to at most {path_table.loc[name, 'nPR(c) max']:.1%}, and {path_table.loc[name, 'tail(t₀) ∩ tail(end)']:.0%} "
        f"of its t₀ tail set ({tail_share:.0%} of the coordinates) is still in the tail at the data end."
        for name in path_table.index)


# ---------------------------------------------------------------------------------------------------
#                                               Figures
# ---------------------------------------------------------------------------------------------------


def beside_paper_figure(comparison: pd.DataFrame, name: str):
    """Fig. 1's analogue: the paper's models in grey, the judged model ``name`` in red, the models beside it in
    blue."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colors = {"paper": "0.7", JUDGED: "C3", BESIDE: "C0"}
    plots.beside_paper(axes, comparison, [colors[source] for source in comparison["source"]], 0.8)
    shown = (" and the models beside it (blue)" if (comparison["source"] == BESIDE).any() else "")
    fig.suptitle(f"Fig. 1 analogue: the paper's models (grey), {name} (red){shown}")
    fig.tight_layout()
    return fig


def cosine_matrices_figure(results: dict, zoom: int, bundle: Bundle):
    """Fig. 3's analogue: the class×class cosine of c (all classes, and the first ``zoom``) and of y alone.

    The zoom is dropped when the model has no more classes than ``zoom``; every panel shares one colour scale.

    Args:
        results: one model's entries (:func:`by_model`): ``c``, ``y`` and ``ours``.
        zoom: classes of the zoomed panel.
        bundle: that model (its name and class names).
    """
    c, y, ours = results["c"], results["y"], results["ours"]
    k = min(zoom, len(c))
    panels = [(c, "c = y + t₀, all classes"), (c[:k], f"c, first {k} classes"), (y[:k], f"y alone, first {k} classes")]
    if len(c) <= zoom:  # the zoom would repeat the full matrix
        panels = [panels[0], (y, "y alone, all classes")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels), 4.2))
    low = min(ours["cos_c_min"], ours["cos_y_min"])  # one colour scale for every panel
    names = bundle.class_names or [str(i) for i in range(bundle.num_classes)]
    for ax, (vectors, title) in zip(axes, panels):
        plots.cosine_heatmap(ax, vectors, title, vmin=low, labels=names)
    fig.suptitle(f"{bundle.name}: pairwise cosine of the conditional vectors")
    fig.tight_layout()
    return fig


def schedule_figure(results: dict, bundles: dict[str, Bundle]):
    """The mean cosine and nPR of c across the schedule of every model (:func:`by_model`), one colour each, y's
    cosine at t₀ dashed in the same colour, t₀ marked; one row of panels per time convention (DDPM, flow).

    Args:
        results: :func:`measure`'s results.
        bundles: every model of ``results["models"]``, by name (their time conventions).
    """
    found = by_model(results)
    kinds = list(dict.fromkeys(bundles[name].time.kind for name in found))
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 3.6 * len(kinds)), squeeze=False)
    for row, kind in zip(axes, kinds):
        for color, (name, one) in enumerate(found.items()):
            if bundles[name].time.kind != kind:
                continue
            row[0].plot(one["sweep"]["timestep"], one["sweep"]["cosine"], color=f"C{color}", label=f"{name}: c = y + t")
            row[0].axhline(one["ours"]["cos_y"], color=f"C{color}", linestyle="--", linewidth=1,
                           label=f"{name}: y alone at t₀")
            row[1].plot(one["sweep"]["timestep"], 100 * one["sweep"]["npr"], color=f"C{color}", label=name)
        row[0].axhline(paper.BARS["schedule_cosine"], color="0.5", linestyle=":", linewidth=1)
        row[0].set_ylabel("mean off-diagonal cosine")
        row[1].set_ylabel("mean nPR of c (%)")
        row[0].legend(fontsize=7)
        for ax in row:
            ax.set_xlabel(f"timestep ({kind} convention)")
            plots.mark_time(ax, next(found[name]["t0"] for name in found if bundles[name].time.kind == kind))
    fig.suptitle("The conditional vector across the schedule (dotted: the paper's 0.99)")
    fig.tight_layout()
    return fig


def paths_figure(sweeps: dict[str, dict]):
    """The mean cosine and nPR of c of each organism along its sampling path (0: noise, 1: data)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name, sweep in sweeps.items():
        axes[0].plot(sweep["progress"], sweep["cosine"], label=name)
        axes[1].plot(sweep["progress"], 100 * sweep["npr"], label=name)
    axes[0].set(xlabel="fraction of the sampling path (0: noise, 1: data)", ylabel="mean off-diagonal cosine of c")
    axes[1].set(xlabel="fraction of the sampling path (0: noise, 1: data)", ylabel="mean nPR of c (%)")
    axes[1].legend()
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
#                                               Verdict
# ---------------------------------------------------------------------------------------------------


def claims(results: dict) -> list[dict]:
    """The chapter's verdict rows: the regime preconditions every chapter shares (:func:`regime.precondition_rows`:
    c is sparse, y alone is aligned), then the claims of Tables 1 and 4 and of §4, each requiring both.

    Table 1's sparsity and the lower end of Table 4's cos(y) are the regime itself: they are the precondition rows,
    never claims, so a model outside the regime (``mnist-dit``) reads "not testable here" on every claim.

    Args:
        results: at least ``ours`` (``stats.summary(y, t)`` at t₀) and ``above_99`` (the share of timesteps whose
            cosine exceeds the schedule bar), as :func:`measure` (or :func:`by_model`, per model) returns them.
    """
    ours, above_99, bars, bands = results["ours"], results["above_99"], paper.BARS, regime.paper_bands()
    requires = regime.precondition_rows(ours, bands)
    return [
        *requires,
        report.claim_row("c is aligned at t₀, as in every model of Table 1",
                         paper=f"cos(c) ≥ {bars['aligned_cosine']:.4f} (DiT-XL/2, the least aligned)",
                         ours=f"{ours['cos_c']:.4f}", value=ours["cos_c"], op=">=", bar=bars["aligned_cosine"],
                         requires=requires),
        report.claim_row("alignment comes mostly from t: c is more aligned than y alone by Table 4's margin",
                         paper=f"cos(c) − cos(y) ≥ {bars['t_gap']:.4f} (DiT's, the smallest)",
                         ours=f"{ours['cos_c'] - ours['cos_y']:.4f}", value=ours["cos_c"] - ours["cos_y"], op=">=",
                         bar=bars["t_gap"], requires=requires),
        report.claim_row("y alone is only moderately aligned: no more than Table 4's most aligned y",
                         paper=f"cos(y) ≤ {bands['cos_y'][1]:.4f} (MDT)", ours=f"{ours['cos_y']:.4f}",
                         value=ours["cos_y"], op="<=", bar=bands["cos_y"][1], requires=requires),
        report.claim_row(f"the cosine stays > {bars['schedule_cosine']} at nearly all timesteps (§4)",
                         paper=f"> {bars['schedule_cosine']} at ≥ {bars['nearly_all']:.0%} of timesteps (reading)",
                         ours=f"{above_99:.1%} of timesteps", value=above_99, op=">=", bar=bars["nearly_all"],
                         requires=requires),
    ]


def claims_beside(results: dict) -> pd.DataFrame:
    """:func:`claims` judged on the judged model and on every model beside it (:func:`regime.verdicts_beside`)."""
    return regime.verdicts_beside({name: claims(found) for name, found in by_model(results).items()})
