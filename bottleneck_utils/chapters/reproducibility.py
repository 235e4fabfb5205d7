"""The reproducibility appendix: where each chapter was executed (:func:`report.chapter_provenance`) and where each
shipped rung was trained (the provenance record of its ``meta.json``)."""

from __future__ import annotations

import pandas as pd

from bottleneck_utils import integrity
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
            names = sorted(name for name, used in glued.items() if used == label)
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
