"""The figures that more than one chapter draws, and the shared style: white backgrounds (readable in the book's
dark mode) and the paper's marks. Each function draws into axes it is given, so a chapter lays out its figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from bottleneck_utils import stats

PAPER_TAUS = (0.01, 0.02, 0.05)  # the absolute thresholds of the paper's Table 2


def style() -> None:
    """Seaborn's ticks style on a white figure, so figures stay readable on a dark page."""
    sns.set_theme(style="ticks", context="notebook")
    plt.rcParams.update({"figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
                         "figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False})


def mark_time(ax, t0: float, label: str = "t₀") -> None:
    """A dashed vertical line at the first sampling time."""
    ax.axvline(t0, color="0.4", linestyle="--", linewidth=1)
    ax.annotate(label, (t0, 1), xycoords=("data", "axes fraction"), ha="right", va="top", fontsize=9, color="0.3")


def beside_paper(axes, table, colors: list, cosine_floor: float) -> None:
    """Fig. 1's bars: mean cosine and nPR of c = y + t per model (``table`` columns ``cosine (y+t)``, ``nPR (y+t)``).

    Args:
        axes: two axes.
        table: one row per model, indexed by its name.
        colors: one bar colour per row (ours stand out).
        cosine_floor: the cosine axis starts at this value or just below the smallest cosine.
    """
    cosine = table["cosine (y+t)"]
    axes[0].barh(table.index, cosine, color=colors)
    axes[0].set(xlim=(min(cosine_floor, cosine.min() - 0.005), 1.0), xlabel="mean cosine of c = y + t")
    axes[1].barh(table.index, table["nPR (y+t)"], color=colors)
    axes[1].xaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:.0%}"))
    axes[1].set(xlabel="nPR of c")


def cosine_heatmap(ax, vectors: torch.Tensor, title: str, vmin: float | None = None,
                   labels: list[str] | None = None) -> np.ndarray:
    """Fig. 3: the pairwise cosine matrix of ``vectors`` (n, D) as a heatmap; returns the (n, n) matrix.

    Tick labels are drawn for at most 20 rows; ``vmin`` shares one colour scale between panels.
    """
    matrix = stats.cosine_matrix(vectors).cpu().numpy()  # (n, n)
    shown = labels[: len(matrix)] if labels is not None and len(matrix) <= 20 else False
    sns.heatmap(matrix, ax=ax, vmin=vmin, vmax=1, cmap="viridis", square=True, xticklabels=shown, yticklabels=shown)
    ax.set_title(title)
    return matrix


def schedule_sweep(axes, sweep: dict, t0: float, time_kind: str, y_cosine: float | None = None) -> None:
    """Mean off-diagonal cosine and mean nPR of c at every timestep (``embeddings.timestep_sweep``), t₀ marked.

    ``y_cosine``, the cosine of y alone at t₀, is drawn as a dashed line for comparison.
    """
    axes[0].plot(sweep["timestep"], sweep["cosine"], color="C0", label="c = y + t")
    if y_cosine is not None:
        axes[0].axhline(y_cosine, color="C1", linestyle="--", label="y alone")
        axes[0].legend(fontsize=8)
    axes[0].set_ylabel("mean off-diagonal cosine")
    axes[1].plot(sweep["timestep"], 100 * sweep["npr"], color="C0")
    axes[1].set_ylabel("mean nPR of c (%)")
    for ax in axes:
        ax.set_xlabel(f"timestep ({time_kind} convention)")
        mark_time(ax, t0)


def magnitude_histogram(ax, c: torch.Tensor, bins: int = 40) -> None:
    """Fig. 5: log-spaced histogram of |cᵢ| over every row of c (n, D) and over the mean vector."""
    magnitude = c.double().mean(0).abs().cpu()  # (D,)
    edges = np.logspace(np.log10(max(magnitude.min().item(), 1e-6)), np.log10(magnitude.max().item()), bins)
    ax.hist(c.abs().double().flatten().cpu().numpy(), bins=edges, color="0.6", label="every condition", density=True)
    ax.hist(magnitude.numpy(), bins=edges, histtype="step", color="C3", linewidth=2, label="mean vector", density=True)
    ax.set(xscale="log", xlabel="|cᵢ|", ylabel="density", title="Fig. 5: histogram of |cᵢ|")
    ax.legend(fontsize=8)


def mean_vector(ax, c: torch.Tensor) -> None:
    """Fig. 6: the raw mean vector c̄ of c (n, D), coordinate by coordinate."""
    ax.plot(c.double().mean(0).cpu().numpy(), color="C0", linewidth=0.8)
    ax.set(xlabel="coordinate i", ylabel="c̄ᵢ", title="Fig. 6: the raw mean vector")


def tau_curves(ax, sweep: dict, marks=PAPER_TAUS) -> None:
    """Fig. 11: s_tail(τ) and s_head(τ) of ``stats.tau_sweep``, on a log τ axis with dotted lines at ``marks``."""
    ax.plot(sweep["tau"], sweep["tail"], color="C0", label="s_tail(τ)")
    ax.plot(sweep["tau"], sweep["head"], color="C3", label="s_head(τ)")
    for tau in marks:
        ax.axvline(tau, color="0.5", linestyle=":", linewidth=1)
    ax.set(xscale="log", xlabel="τ", ylabel="fraction of coordinates",
           title="Fig. 11: s(τ); dotted: τ = " + ", ".join(f"{tau:g}" for tau in marks))
    ax.legend(fontsize=8)
