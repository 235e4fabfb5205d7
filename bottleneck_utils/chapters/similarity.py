"""The similarity chapter's measurements: the conditional vector c = y + t at the first sampling step, beside the
paper's Tables 1 and 4, over the model's whole schedule and along the sampling paths of the compared organisms;
its figures and its verdict rows. Loads nothing by name: the notebook hands in every bundle it measures.
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
              "freq_shift": (int, type(None)), "num_steps": int, "zoom": int, "schedule_models": list,
              "path_tail_share": float}
SHIFTS = ((0, "original DiT"), (1, "diffusers"))  # the timestep sinusoid's two conventions


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


def comparison_table(bundle: Bundle, ours: dict) -> pd.DataFrame:
    """The paper's Table 4 (with Table 1's widths) and one row for this model, marked by its ``source`` column."""
    rows = [{"model": name, "D": paper.TABLE1.get(name, {}).get("D"), "cosine (y+t)": v["cosine_yt"],
             "nPR (y+t)": v["nPR_yt"], "cosine (y)": v["cosine_y"], "nPR (y)": v["nPR_y"], "source": "paper"}
            for name, v in paper.TABLE4.items()]
    rows.append({"model": bundle.name, "D": bundle.hidden_size, "cosine (y+t)": ours["cos_c"],
                 "nPR (y+t)": ours["npr_c"], "cosine (y)": ours["cos_y"], "nPR (y)": ours["npr_y"],
                 "source": "ours (this notebook)"})
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


def measure(bundle: Bundle, num_steps: int, shifted: dict[int, Bundle], organisms: dict[str, Bundle],
            path_tail_share: float) -> dict:
    """Everything the chapter shows: c at t₀, both sinusoids, the paper's tables, the schedule and the paths.

    Args:
        bundle: the chapter's model.
        num_steps: sampler steps; they define t₀.
        shifted: ``bundle``'s weights loaded with ``freq_shift`` 0 and 1, by shift.
        organisms: the organisms compared along their sampling paths, by name.
        path_tail_share: the tail share of :func:`paths`.

    Returns:
        ``t0`` and the entries of :func:`at_first_step` and :func:`schedule`, with ``shifts``
        (:func:`shift_table`), ``comparison`` (:func:`comparison_table`), ``paths`` and ``path_table``
        (:func:`paths`).
    """
    t0 = first_sampling_timestep(bundle, num_steps)
    first = at_first_step(bundle, t0)
    sweeps, path_table = paths(organisms, path_tail_share)
    return {"t0": t0, **first, "shifts": shift_table(shifted, t0), "comparison": comparison_table(bundle, first["ours"]),
            **schedule(bundle), "paths": sweeps, "path_table": path_table}


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
    """Fig. 1's analogue: the paper's models in grey, this model in red."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    plots.beside_paper(axes, comparison, ["0.7" if s == "paper" else "C3" for s in comparison["source"]], 0.8)
    fig.suptitle(f"Fig. 1 analogue: the paper's models (grey) and {name} (red)")
    fig.tight_layout()
    return fig


def cosine_matrices_figure(results: dict, zoom: int, bundle: Bundle):
    """Fig. 3's analogue: the class×class cosine of c (all classes, and the first ``zoom``) and of y alone.

    The zoom is dropped when the model has no more classes than ``zoom``; every panel shares one colour scale.
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


def schedule_figure(results: dict, bundle: Bundle):
    """The mean cosine and nPR of c across the schedule, t₀ marked, y's cosine at t₀ for reference."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    plots.schedule_sweep(axes, results["sweep"], results["t0"], bundle.time.kind, y_cosine=results["ours"]["cos_y"])
    fig.suptitle(f"{bundle.name}: the conditional vector across the schedule")
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
    """The chapter's verdict rows: the alignment precondition, then the claims of Tables 1 and 4 and of §4.

    Args:
        results: at least ``ours`` (``stats.summary(y, t)`` at t₀) and ``above_99`` (the share of timesteps whose
            cosine exceeds the schedule bar), as :func:`measure` returns them.
    """
    ours, above_99, bars = results["ours"], results["above_99"], paper.BARS
    aligned = report.precondition_row(
        "c is aligned at t₀, as in every model of Table 1", paper=f"cosine ≥ {bars['aligned_cosine']:.4f} (DiT-XL/2)",
        ours=f"{ours['cos_c']:.4f}", value=ours["cos_c"], op=">=", bar=bars["aligned_cosine"])
    return [
        report.claim_row("extreme sparsity: the nPR of c at t₀ is small (Table 1)",
                         paper=f"≤ {bars['sparse_npr']:.2%} (DiT-XL/2, the least sparse)", ours=f"{ours['npr_c']:.2%}",
                         value=ours["npr_c"], op="<=", bar=bars["sparse_npr"]),
        aligned,
        report.claim_row("alignment comes mostly from t: c is more aligned than y alone by Table 4's margin",
                         paper=f"cos(c) − cos(y) ≥ {bars['t_gap']:.4f} (DiT's, the smallest)",
                         ours=f"{ours['cos_c'] - ours['cos_y']:.4f}", value=ours["cos_c"] - ours["cos_y"], op=">=",
                         bar=bars["t_gap"], requires=aligned),
        report.claim_row("y alone is already moderately aligned (Table 4)",
                         paper=f"{bars['y_cosine_range'][0]:.2f}–{bars['y_cosine_range'][1]:.2f}",
                         ours=f"{ours['cos_y']:.4f}", value=ours["cos_y"], op="in", bar=bars["y_cosine_range"],
                         requires=aligned),
        report.claim_row(f"the cosine stays > {bars['schedule_cosine']} at nearly all timesteps (§4)",
                         paper=f"> {bars['schedule_cosine']} at ≥ {bars['nearly_all']:.0%} of timesteps (reading)",
                         ours=f"{above_99:.1%} of timesteps", value=above_99, op=">=", bar=bars["nearly_all"],
                         requires=aligned),
    ]
