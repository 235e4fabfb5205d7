"""The shared figure style: white backgrounds (readable in the book's dark mode) and the paper's marks."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns


def style() -> None:
    """Seaborn's ticks style on a white figure, so figures stay readable on a dark page."""
    sns.set_theme(style="ticks", context="notebook")
    plt.rcParams.update({"figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
                         "figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False})


def mark_time(ax, t0: float, label: str = "t₀") -> None:
    """A dashed vertical line at the first sampling time."""
    ax.axvline(t0, color="0.4", linestyle="--", linewidth=1)
    ax.annotate(label, (t0, 1), xycoords=("data", "axes fraction"), ha="right", va="top", fontsize=9, color="0.3")
