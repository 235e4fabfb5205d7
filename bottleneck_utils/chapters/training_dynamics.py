"""The training-dynamics chapter's measurements: the training log that :mod:`bottleneck_utils.organisms.train`
ships beside an embedded organism (the class-wise cosine and nPR of c = y + t₀ and of y, raw and EMA, every
``log_every`` steps), its Fig. 12 analogue and its verdict rows. A model without a shipped log is not testable here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bottleneck_utils import integrity
from bottleneck_utils.chapters import paper, report
from bottleneck_utils.models import EMBEDDED, embedded_dir
from bottleneck_utils.organisms import train

# the notebook's papermill parameters: name → accepted type(s) (report.notebook_parameters reads them)
PARAMETERS = {"model": str, "device": str, "seed": int}
SUMMARY_KEYS = ["cos_c", "cos_c_ema", "npr_c", "npr_c_ema", "cos_y", "cos_y_ema", "npr_y", "npr_y_ema"]
MIN_LOGGED = 3  # logged steps a verdict needs: initialisation, a first step after it, and at least one more


def paper_values() -> dict:
    """The paper's and the trainer's numbers the chapter's prose quotes, by glue name."""
    return {"paper_npr_start": paper.TRAINING_NPR["start"], "paper_npr_end": paper.TRAINING_NPR["end_below"],
            "gaussian_npr": paper.GAUSSIAN_NPR, "paper_steps": f"{paper.TRAINING_STEPS // 1000}k",
            "init_std": train.EMBEDDING_INIT_STD}


def log_path(model: str) -> Path | None:
    """Where an embedded organism's ``train_log.csv`` lies (whether or not it is there); None for any other model."""
    return embedded_dir(model) / "train_log.csv" if model in EMBEDDED else None


def summarise(log: pd.DataFrame) -> dict:
    """The landmarks of a training log that the chapter reads.

    Args:
        log: one row per logged step, with ``step`` and the columns of :data:`SUMMARY_KEYS`.

    Returns:
        ``log``; ``first``, ``early`` (the first logged step after initialisation) and ``last`` rows; ``peak_cos``
        and ``peak_npr`` (the rows where the raw cosine and the raw nPR of c peak); ``summary`` (the first and last
        values of :data:`SUMMARY_KEYS`) and ``glued`` (the numbers the prose quotes, by glue name).

    Raises:
        ValueError: a log with fewer than two rows (no step after initialisation).
    """
    if len(log) < 2:
        raise ValueError(f"a training log needs a step after initialisation, got {len(log)} rows")
    first, early, last = log.iloc[0], log.iloc[1], log.iloc[-1]
    peak_cos, peak_npr = log.loc[log["cos_c"].idxmax()], log.loc[log["npr_c"].idxmax()]
    summary = pd.DataFrame({"step 0": first, f"step {int(last['step'])}": last}).loc[SUMMARY_KEYS]
    glued = {f"{name}_{end}": float(row[name]) for name in ("cos_c_ema", "npr_c_ema", "cos_y_ema")
             for end, row in (("start", first), ("end", last))}
    glued |= {"early_step": int(early["step"]), "early_cos": float(early["cos_c"]),
              "peak_cos": float(peak_cos["cos_c"]), "peak_cos_step": int(peak_cos["step"]),
              "end_cos": float(last["cos_c"]), "peak_npr": float(peak_npr["npr_c"]),
              "peak_npr_step": int(peak_npr["step"]), "end_npr": float(last["npr_c"]),
              "start_npr": float(first["npr_c"]), "end_step": int(last["step"])}
    return {"log": log, "first": first, "early": early, "last": last, "peak_cos": peak_cos, "peak_npr": peak_npr,
            "summary": summary, "glued": glued}


def measure(model: str) -> dict:
    """The model's shipped training log, read and summarised.

    Args:
        model: the chapter's model name; only an embedded organism ships a log.

    Returns:
        ``{"has_log": False, "log_path": ...}`` without a log; otherwise also ``meta`` (the organism's
        ``meta.json``) and the entries of :func:`summarise`.
    """
    path = log_path(model)
    if path is None or not path.is_file():
        return {"has_log": False, "log_path": path}
    fix = integrity.shipped_fix(model)
    meta = integrity.read_json(path.parent / "meta.json", "the organism's meta", fix)
    return {"has_log": True, "log_path": path, "meta": meta, **summarise(train.read_log(path, fix))}


def training_figure(results: dict, model: str):
    """Fig. 12's analogue: the cosine and nPR of c and of y through training, raw and EMA, with the paper's mark."""
    log, meta = results["log"], results["meta"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for key, color in (("c", "C0"), ("y", "C1")):
        label = "c = y + t₀" if key == "c" else "y alone"
        axes[0].plot(log["step"], log[f"cos_{key}"], color=color, alpha=0.5, label=f"{label} (raw)")
        axes[0].plot(log["step"], log[f"cos_{key}_ema"], color=color, label=f"{label} (EMA)")
        axes[1].plot(log["step"], 100 * log[f"npr_{key}"], color=color, alpha=0.5, label=f"{label} (raw)")
        axes[1].plot(log["step"], 100 * log[f"npr_{key}_ema"], color=color, label=f"{label} (EMA)")
    axes[0].set(xlabel="training step", ylabel="mean off-diagonal cosine")
    axes[1].set(xlabel="training step", ylabel="mean nPR (%)")
    axes[1].axhline(100 * paper.TRAINING_NPR["end_below"], color="0.5", linestyle=":",
                    label=f"paper: final nPR < {paper.TRAINING_NPR['end_below']:.0%}")
    axes[1].axhline(100 * paper.GAUSSIAN_NPR, color="0.3", linestyle="--",
                    label=f"Gaussian vector: 2/π = {paper.GAUSSIAN_NPR:.1%}")
    axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Fig. 12 analogue: {model}, {meta['steps']} steps, batch {meta['recipe']['batch_size']}")
    fig.tight_layout()
    return fig


def claims(results: dict) -> list[dict]:
    """The chapter's verdict rows: the log precondition, then the rise of the cosine and the fall of the nPR.

    Args:
        results: as :func:`measure` returns them; without a log only the (unmet) precondition row is returned.
    """
    bars, has_log = paper.BARS, results["has_log"]
    logged = report.precondition_row(
        "a training log of this model, with steps after initialisation", paper="Fig. 12 (REPA-B/2)",
        ours=f"{len(results['log'])} logged steps" if has_log else "no training log",
        value=len(results["log"]) if has_log else 0, op=">=", bar=MIN_LOGGED)
    if not has_log:
        return [logged]
    early, last, peak_npr = results["early"], results["last"], results["peak_npr"]
    return [
        logged,
        report.claim_row("the cosine of c rises through training (after the first logged step)",
                         paper="rises", ours=f"{early['cos_c']:.4f} (step {int(early['step'])}) → {last['cos_c']:.4f}",
                         value=float(last["cos_c"]), op=">=", bar=float(early["cos_c"]), requires=logged),
        report.claim_row(f"the nPR of c falls from a dense start (≈{paper.TRAINING_NPR['start']:.0%})",
                         paper=f"≈{paper.TRAINING_NPR['start']:.0%} → below {bars['training_npr_end']:.0%}",
                         ours=f"peak {peak_npr['npr_c']:.1%} → {last['npr_c']:.1%}", value=float(last["npr_c"]),
                         op="<", bar=float(peak_npr["npr_c"]), requires=logged),
        report.claim_row("the nPR of c ends in the sparse regime", paper=f"< {bars['training_npr_end']:.0%}",
                         ours=f"{last['npr_c']:.1%}", value=float(last["npr_c"]), op="<",
                         bar=bars["training_npr_end"], requires=logged),
    ]
