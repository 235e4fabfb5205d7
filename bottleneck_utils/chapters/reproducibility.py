"""The reproducibility appendix: where each chapter was executed (:func:`report.chapter_provenance`) and where each
shipped rung was trained (the provenance record of its ``meta.json``); and, where one was committed, the tables of the
GPU dress rehearsal (``tools/gpu_rehearsal.py``'s ``results/gpu_rehearsal/report.json``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bottleneck_utils import integrity
from bottleneck_utils.chapters.report import ROOT
from bottleneck_utils.integrity import CHECKPOINT_DIR
from bottleneck_utils.provenance import SAMPLER_CARD_KEYS

PARAMETERS = {"model": str, "device": str}
TRAINED = ("ladder", "regime")  # the checkpoint folders whose organisms carry a training provenance record


def sampler_cards(records: dict[str, dict]) -> pd.DataFrame:
    """One row per (chapter, card label) of the chapters' provenance ``records`` (:func:`report.chapter_provenance`):
    the card's fields (:data:`provenance.SAMPLER_CARD_KEYS`) and the names the chapter glued from it
    (:func:`report.glue_sampled`). A chapter that samples nothing has no row; a record executed before the cards
    existed has none either."""
    rows = {}
    for chapter, record in records.items():
        glued = record.get("sampled_glues", {})
        for label, card in record.get("sampler_cards", {}).items():
            names = sorted(name for name, used in glued.items() if label in used)
            rows[(chapter, label)] = {**{key: "—" if value is None else str(value) for key, value in card.items()},
                                      "glued values": ", ".join(names) or "—"}
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[*SAMPLER_CARD_KEYS, "glued values"])
    if rows:
        table.index = pd.MultiIndex.from_tuples(table.index, names=["chapter", "card"])
    return table


def rung_provenance() -> pd.DataFrame:
    """One row per shipped ladder rung and regime replicate: its steps, seed, the device and precision of each step
    range, the commit that shipped it, its wall time (where measured) and how the record was made: by the trainer, or
    reconstructed from the commit that shipped a rung trained before the trainer kept one."""
    rows = {}
    for path in sorted(p for folder in TRAINED for p in (CHECKPOINT_DIR / folder).glob("*/meta.json")):
        name = f"{path.parent.parent.name}/{path.parent.name}"
        meta = integrity.read_json(path, f"{name}'s meta", integrity.shipped_fix(name))
        record = meta.get("provenance", {})
        wall = record.get("wall_time_s")
        rows[name] = {"steps": f"{meta['steps']:,}", "seed": record.get("seed"),
                      "trained on": "; ".join(f"{a:,}–{b:,}: {s['device']}, {s['precision']}"
                                             for s in record.get("segments", []) for a, b in [s["steps"]]),
                      "commit": str(record.get("commit", "—"))[:10],
                      "wall time": "not measured" if wall is None else f"{wall / 3600:.2f} h",
                      "record": "reconstructed" if "recorded" in record else "by the trainer"}
    return pd.DataFrame(rows).T


# ---------------------------------------------------------------------------------------------------
#                       The GPU dress rehearsal (tools/gpu_rehearsal.py's report)
# ---------------------------------------------------------------------------------------------------

REHEARSAL_REPORT = ROOT / "results" / "gpu_rehearsal" / "report.json"
REHEARSAL_COMMAND = "python tools/gpu_rehearsal.py --device cuda --out results/gpu_rehearsal"


def _number(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.3g} s"


def rehearsal_tables(result: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rehearsal's two tables: one row per chapter run (status, wall time, peak memory), and its speed figures
    (images/s at bfloat16 and float32/TF32, the masked sampler's overhead, one FID-5K point against its FLOP
    limit); a step that did not run shows its status."""
    chapters = pd.DataFrame({run["run"]: {"status": run["status"], "wall s": _number(run.get("wall_s"), ".1f"),
                                          "peak GPU MiB": _number(run.get("cuda_max_allocated_mib"), ".0f"),
                                          "peak RSS MiB": _number(run.get("peak_rss_mib"), ".0f")}
                             for run in result.get("chapters", [])}).T
    steps = result.get("steps", {})
    rows = {}
    throughput = steps.get("throughput", {})
    for precision in ("bfloat16", "float32_tf32", "dit_own_sampler_bfloat16"):
        if precision in throughput:
            label = precision.replace("dit_own_sampler_", "DiT's own sampler, ").replace("_", "/")
            rows[f"images/s, {label} (batch {throughput['batch']}, {throughput['steps']} "
                 f"steps, CFG {throughput['cfg_scale']:g})"] = f"{throughput[precision]['images_per_s']:.2f}"
    overhead = steps.get("mask_overhead", {})
    if "ratio" in overhead:
        bound = f"≤ {overhead['limit']:g}: {'yes' if overhead['within_limit'] else 'no'}"
        rows["masked / unmasked sampling time"] = (f"{overhead['ratio']:.3f} ({bound}"
                                                   f"{'' if overhead['checked'] else ', not checked at this size'})")
    fid = steps.get("fid5k", {})
    for precision in ("bfloat16", "float32_tf32"):
        if precision in fid:
            point = fid[precision]
            rows[f"FID-5K point, {precision.replace('_', '/')}: estimate / FLOP limit"] = (
                f"{_duration(point['estimate_s'])} / {_duration(point['limit_s'])} "
                f"({100 * point['efficiency']:.3g}% of the {point['matmul_flop_s'] / 1e12:.3g} TFLOP/s matmul peak)")
    if "flop_per_forward" in fid:
        rows["FLOP per forward (2 × multiply-adds; DiT-XL/2: 237 G)"] = f"{fid['flop_per_forward'] / 1e9:.4g} G"
    for name in ("build", "load", "throughput", "mask_overhead", "fid5k"):
        if name in steps and steps[name]["status"] != "ok":
            error = steps[name].get("error")
            rows[f"step {name}"] = steps[name]["status"] + (f": {error}" if error else "")
    return chapters, pd.DataFrame({"value": rows})


def markdown_table(frame: pd.DataFrame, index: str) -> str:
    """A pipe table of ``frame`` with its index as the first column (no tabulate needed)."""
    header = [index, *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "/") for v in (name, *row)) + " |"
              for name, row in zip(frame.index, frame.itertuples(index=False))]
    return "\n".join(lines)


def rehearsal_markdown(result: dict) -> str:
    """The rehearsal's report as Markdown: where it ran, then its two tables."""
    about = result.get("rehearsal", {})
    chapters, speed = rehearsal_tables(result)
    title = (f"GPU rehearsal on {about.get('device_name', '?')} ({about.get('device')}, {about.get('size')} "
             f"checkpoints), commit {str(about.get('git_commit', '?'))[:10]}, {about.get('started_utc', '?')}, "
             f"{_number(about.get('wall_s'), '.0f')} s in all")
    return "\n\n".join([title, markdown_table(chapters, "chapter run") if len(chapters) else "(no chapter ran)",
                         markdown_table(speed, "measure") if len(speed) else "(no speed step ran)"]) + "\n"


def gpu_rehearsal(path=REHEARSAL_REPORT) -> dict | None:
    """The committed rehearsal report, only if it is a GPU run at the real sizes (``gpu`` true, size ``xl``); None
    when there is none. A CPU run on tiny checkpoints is never shown as a GPU result."""
    path = Path(path)
    if not path.is_file():
        return None
    result = integrity.read_json(path, "the GPU rehearsal report", f"run it again: {REHEARSAL_COMMAND}")
    about = result.get("rehearsal", {})
    return result if about.get("gpu") is True and about.get("size") == "xl" else None


def rehearsal_section(path=REHEARSAL_REPORT) -> str:
    """The appendix's rehearsal section as Markdown: the committed GPU report's tables, or, without one, that no GPU
    has run it yet and the command that does."""
    result = gpu_rehearsal(path)
    if result is not None:
        return rehearsal_markdown(result)
    return ("No GPU has been lent to this project yet, so the rehearsal has not run on one, and nothing here is a GPU "
            f"measurement. On a CUDA machine, `{REHEARSAL_COMMAND}` writes `results/gpu_rehearsal/report.json` (and "
            "`report.md`); committed, its tables appear here. A CPU run on tiny checkpoints "
            "(`--device cpu --size tiny`, the test suite's end-to-end check) is never shown here.")
