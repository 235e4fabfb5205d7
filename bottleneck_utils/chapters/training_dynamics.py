"""The training-dynamics chapter's measurements: the training log that :mod:`bottleneck_utils.organisms.train`
writes beside an organism (the class-wise cosine and nPR of c = y + t₀ and of y, raw and EMA, every ``log_every``
steps), its Fig. 12 analogue and its verdict rows.

The claims are judged on one model's log (the book's default: the in-regime recipe's first seed) under the regime
preconditions every chapter shares (:func:`regime.precondition_rows`), read on the log's last EMA row, which is the
shipped weights' c at t₀ (the numbers of the similarity chapter). Fig. 12's sparse end is the regime itself, so it
is that precondition, never a claim: a model whose c ends outside the regime (``mnist-dit``) reads "not testable
here" on the dynamics claims, never "not reproduced". The models shown beside the judged one are judged by the same
rows. A model without a log (a hub checkpoint, an original ``.pt``) is not testable here unless a log is passed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from bottleneck_utils import integrity
from bottleneck_utils.chapters import paper, regime, report
from bottleneck_utils.models import EMBEDDED, embedded_dir
from bottleneck_utils.organisms import train

# the notebook's papermill parameters: name → accepted type(s) (report.notebook_parameters reads them)
PARAMETERS = {"model": str, "beside": list, "train_log": (str, type(None)), "device": str, "seed": int}
SUMMARY_KEYS = ["cos_c", "cos_c_ema", "npr_c", "npr_c_ema", "cos_y", "cos_y_ema", "npr_y", "npr_y_ema"]
MIN_LOGGED = 3  # logged steps a verdict needs: initialisation, a first step after it, and at least one more
OWN_LOG_FIX = "pass a train_log.csv that bottleneck_utils.organisms.train wrote"
RISES = "the cosine of c rises through training (after the first logged step)"  # the claims, as their rows name them
FALLS = f"the nPR of c falls from a dense start (≈{paper.TRAINING_NPR['start']:.0%})"


def paper_values() -> dict:
    """The paper's and the trainer's numbers the chapter's prose quotes, by glue name (with the regime bands that
    the preconditions use)."""
    bands = regime.paper_bands()
    return {"paper_npr_start": paper.TRAINING_NPR["start"], "paper_npr_end": paper.TRAINING_NPR["end_below"],
            "gaussian_npr": paper.GAUSSIAN_NPR, "paper_steps": f"{paper.TRAINING_STEPS // 1000}k",
            "init_std": train.EMBEDDING_INIT_STD, "paper_npr_high": bands["npr_c"][1],
            "paper_cos_y_low": bands["cos_y"][0]}


def log_path(model: str) -> Path | None:
    """Where a model's ``train_log.csv`` lies (whether or not it is there): beside an embedded organism, or in a
    training run's folder (one with a ``meta.json``); None for any other model."""
    if model in EMBEDDED:
        return embedded_dir(model) / "train_log.csv"
    folder = Path(model)
    return folder / "train_log.csv" if folder.is_dir() and (folder / "meta.json").is_file() else None


def summarise(log: pd.DataFrame) -> dict:
    """The landmarks of a training log that the chapter reads.

    Args:
        log: one row per logged step, with ``step`` and the columns of :data:`SUMMARY_KEYS`.

    Returns:
        ``log``; ``first``, ``early`` (the first logged step after initialisation) and ``last`` rows; ``peak_cos``
        and ``peak_npr`` (the rows where the raw cosine and the raw nPR of c peak); ``final`` (the last EMA row's
        nPR(c) and cos(y), the shipped weights' statistics that the regime preconditions read); ``summary`` (the
        first and last values of :data:`SUMMARY_KEYS`) and ``glued`` (the numbers the prose quotes, by glue name).

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
    final = {"npr_c": float(last["npr_c_ema"]), "cos_y": float(last["cos_y_ema"])}
    return {"log": log, "first": first, "early": early, "last": last, "peak_cos": peak_cos, "peak_npr": peak_npr,
            "final": final, "summary": summary, "glued": glued}


def measure(model: str, train_log: str | Path | None = None) -> dict:
    """A model's training log, read and summarised.

    Args:
        model: the model's name (an embedded organism or a run folder has its own log).
        train_log: a ``train_log.csv`` to read instead of the model's own (its ``meta.json``, if beside it, is read
            too); None: the model's own (:func:`log_path`).

    Returns:
        ``{"name", "has_log": False, "log_path", "meta": None}`` without a log; otherwise ``meta`` (the
        ``meta.json`` beside the log, or None) and the entries of :func:`summarise`.
    """
    path = Path(train_log) if train_log is not None else log_path(model)
    if path is None or not path.is_file():
        if train_log is not None:
            raise FileNotFoundError(f"the training log {path} is missing; {OWN_LOG_FIX}")
        return {"name": model, "has_log": False, "log_path": path, "meta": None}
    fix = integrity.shipped_fix(model) if train_log is None and model in EMBEDDED else OWN_LOG_FIX
    meta_path = path.parent / "meta.json"
    meta = integrity.read_json(meta_path, "the run's meta", fix) if meta_path.is_file() else None
    return {"name": model, "has_log": True, "log_path": path, "meta": meta, **summarise(train.read_log(path, fix))}


def measure_models(model: str, beside: list[str], train_log: str | Path | None = None) -> dict[str, dict]:
    """:func:`measure` of the judged model (with ``train_log``) and of each model beside it (their own logs), by
    name, the judged one first (a model beside it with the judged one's name is skipped)."""
    return {model: measure(model, train_log)} | {name: measure(name) for name in beside if name != model}


def landmarks_table(results_by_model: dict[str, dict]) -> pd.DataFrame:
    """One row per model with a log: its logged steps, the raw nPR of c at initialisation, at its peak and at the
    end, the raw cosine of c after the first step and at the end, the final EMA nPR(c) and cos(y) and whether they
    are in the regime (:func:`regime.in_regime`)."""
    bands = regime.paper_bands()
    rows = [{"model": name, "steps": found["glued"]["end_step"], "nPR(c) start": found["glued"]["start_npr"],
             "nPR(c) peak": found["glued"]["peak_npr"], "nPR(c) end": found["glued"]["end_npr"],
             "cos(c) first step": found["glued"]["early_cos"], "cos(c) end": found["glued"]["end_cos"],
             "nPR(c) end (EMA)": found["final"]["npr_c"], "cos(y) end (EMA)": found["final"]["cos_y"],
             "in the regime": regime.in_regime(found["final"], bands)}
            for name, found in results_by_model.items() if found["has_log"]]
    return pd.DataFrame(rows).set_index("model") if rows else pd.DataFrame()


def training_figure(results: dict, model: str):
    """Fig. 12's analogue: the cosine and nPR of c and of y through training, raw and EMA, with the paper's marks
    (REPA-B/2's end, the regime bands of the preconditions, the Gaussian nPR)."""
    log, meta, bands = results["log"], results["meta"], regime.paper_bands()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    for key, color in (("c", "C0"), ("y", "C1")):
        label = "c = y + t₀" if key == "c" else "y alone"
        axes[0].plot(log["step"], log[f"cos_{key}"], color=color, alpha=0.5, label=f"{label} (raw)")
        axes[0].plot(log["step"], log[f"cos_{key}_ema"], color=color, label=f"{label} (EMA)")
        axes[1].plot(log["step"], 100 * log[f"npr_{key}"], color=color, alpha=0.5, label=f"{label} (raw)")
        axes[1].plot(log["step"], 100 * log[f"npr_{key}_ema"], color=color, label=f"{label} (EMA)")
    axes[0].axhline(bands["cos_y"][0], color="C1", linestyle=":", linewidth=1,
                    label=f"regime: cos(y) ≥ {bands['cos_y'][0]:.4f}")
    axes[0].set(xlabel="training step", ylabel="mean off-diagonal cosine")
    axes[1].axhline(100 * bands["npr_c"][1], color="C0", linestyle=":", linewidth=1,
                    label=f"regime: nPR(c) ≤ {bands['npr_c'][1]:.2%}")
    axes[1].axhline(100 * paper.TRAINING_NPR["end_below"], color="0.5", linestyle=":",
                    label=f"paper (REPA-B/2): final nPR < {paper.TRAINING_NPR['end_below']:.0%}")
    axes[1].axhline(100 * paper.GAUSSIAN_NPR, color="0.3", linestyle="--",
                    label=f"Gaussian vector: 2/π = {paper.GAUSSIAN_NPR:.1%}")
    axes[1].set(xlabel="training step", ylabel="mean nPR (%)")
    axes[1].legend(fontsize=8)
    axes[0].legend(fontsize=8)
    run = (f", {meta['steps']} steps, batch {meta['recipe']['batch_size']}" if meta is not None
           else f", {int(log['step'].iloc[-1])} steps")
    fig.suptitle(f"Fig. 12 analogue: {model}{run}")
    fig.tight_layout()
    return fig


def claims(results: dict) -> list[dict]:
    """The chapter's verdict rows: the log precondition and the regime preconditions on the log's last EMA row
    (:func:`regime.precondition_rows`: Fig. 12's sparse end is the regime), then the rise of the cosine and the
    fall of the nPR, each requiring all three. The same rows for every model, with or without a log.

    Args:
        results: as :func:`measure` returns them; without a log every precondition is unmet and every claim is not
            testable here.
    """
    has_log, bands = results["has_log"], regime.paper_bands()
    logged = report.precondition_row(
        "a training log of this model, with steps after initialisation", paper="Fig. 12 (REPA-B/2)",
        ours=f"{len(results['log'])} logged steps" if has_log else "no training log",
        value=len(results["log"]) if has_log else 0, op=">=", bar=MIN_LOGGED)
    final = results["final"] if has_log else {"npr_c": math.nan, "cos_y": math.nan}
    in_regime = [row | ({} if has_log else {"ours": "no training log"})
                 for row in regime.precondition_rows(final, bands)]
    requires = [logged, *in_regime]
    start, end = paper.TRAINING_NPR["start"], paper.TRAINING_NPR["end_below"]
    if not has_log:
        return [*requires,
                *(report.claim_row(claim, paper=shown, ours="no training log", value=None, op=op, bar=0.0,
                                   requires=requires)
                  for claim, shown, op in ((RISES, "rises", ">="), (FALLS, f"≈{start:.0%} → below {end:.0%}", "<")))]
    early, last, peak_npr = results["early"], results["last"], results["peak_npr"]
    return [
        *requires,
        report.claim_row(RISES, paper="rises",
                         ours=f"{early['cos_c']:.4f} (step {int(early['step'])}) → {last['cos_c']:.4f}",
                         value=float(last["cos_c"]), op=">=", bar=float(early["cos_c"]), requires=requires),
        report.claim_row(FALLS, paper=f"≈{start:.0%} → below {end:.0%} (REPA-B/2)",
                         ours=f"peak {peak_npr['npr_c']:.1%} (step {int(peak_npr['step'])}) → {last['npr_c']:.1%}",
                         value=float(last["npr_c"]), op="<", bar=float(peak_npr["npr_c"]), requires=requires),
    ]


def claims_beside(results_by_model: dict[str, dict]) -> pd.DataFrame:
    """:func:`claims` judged on the judged model and on every model beside it (:func:`regime.verdicts_beside`)."""
    return regime.verdicts_beside({name: claims(found) for name, found in results_by_model.items()})


def beside_sentence(results_by_model: dict[str, dict]) -> str:
    """The Markdown sentence that reads each model beside the judged one against the regime preconditions."""
    bands, names = regime.paper_bands(), list(results_by_model)
    if len(names) == 1:
        return "No model is shown beside the judged one (`beside` is empty)."
    parts = []
    for name in names[1:]:
        found = results_by_model[name]
        if not found["has_log"]:
            parts.append(f"`{name}` has no training log: every row reads unmet or not testable here.")
            continue
        final, glued = found["final"], found["glued"]
        inside = regime.in_regime(final, bands)
        parts.append(
            f"`{name}` ends at step {glued['end_step']:,} with nPR(c) {final['npr_c']:.2%} and cos(y) "
            f"{final['cos_y']:.4f} (EMA): it is {'inside' if inside else 'outside'} the regime"
            + ("." if inside else f", so its raw nPR falling from {glued['peak_npr']:.1%} to {glued['end_npr']:.1%} "
               "is shown but not judged."))
    return " ".join(parts)
