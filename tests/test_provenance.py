"""Every shipped ladder rung records where and how it was trained: device and precision of every step range, the
seed, the commit that shipped it and (where measured) its wall time."""

import json

import pytest

from bottleneck_utils.integrity import CHECKPOINT_DIR

RUNG_FOLDERS = sorted(p for p in (CHECKPOINT_DIR / "ladder").iterdir() if (p / "meta.json").is_file())
PRECISIONS = {"float32", "tf32", "bfloat16"}


def provenance_problems(meta: dict) -> list[str]:
    """What a rung's ``meta.json`` lacks for its provenance: empty when the record is whole."""
    record = meta.get("provenance")
    if not isinstance(record, dict):
        return ["no provenance record"]
    problems = [f"no {key}" for key in ("seed", "segments", "commit", "wall_time_s") if key not in record]
    segments = record.get("segments") or []
    ends = [0] + [segment["steps"][1] for segment in segments]
    if [segment["steps"][0] for segment in segments] != ends[:-1] or ends[-1] != meta.get("steps"):
        problems.append(f"step ranges {[s['steps'] for s in segments]} do not cover 0..{meta.get('steps')} in order")
    problems += [f"unknown precision {s.get('precision')!r}" for s in segments if s.get("precision") not in PRECISIONS]
    problems += ["a segment without its device" for s in segments if not s.get("device")]
    return problems


@pytest.mark.parametrize("folder", RUNG_FOLDERS, ids=lambda p: p.name)
def test_every_shipped_rung_records_its_provenance(folder):
    assert provenance_problems(json.loads((folder / "meta.json").read_text())) == []


def test_the_check_fails_on_a_rung_without_it():
    meta = json.loads((CHECKPOINT_DIR / "ladder" / "d256-long" / "meta.json").read_text())
    assert provenance_problems({k: v for k, v in meta.items() if k != "provenance"}) == ["no provenance record"]
    gap = json.loads(json.dumps(meta))
    gap["provenance"]["segments"][1]["steps"][0] = 31000  # steps 30,000-31,000 unaccounted for
    assert "do not cover" in provenance_problems(gap)[0]
