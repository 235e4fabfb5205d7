"""Every shipped ladder rung records where and how it was trained: device and precision of every step range, the
seed, the commit that shipped it and (where measured) its wall time."""

import json

import pytest

from bottleneck_utils.integrity import CHECKPOINT_DIR
from bottleneck_utils.organisms import train
from tests.test_train import TINY, tiny_training

RUNG_FOLDERS = sorted(p for folder in ("ladder", "regime") for p in (CHECKPOINT_DIR / folder).glob("*")
                      if (p / "meta.json").is_file())
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


def test_a_new_run_records_every_step_range_it_was_trained_in(tmp_path):
    """A run interrupted after 2 steps and resumed to 4 records two step ranges, each with its device and precision."""
    tiny_training(tmp_path, steps=2)
    ema = tiny_training(tmp_path, steps=4)
    train.save_run(tmp_path, ema, TINY, 4, 0)
    meta = json.loads((tmp_path / "meta.json").read_text())
    record = meta["provenance"]
    assert [segment["steps"] for segment in record["segments"]] == [[0, 2], [2, 4]]
    assert all(s["device"].startswith("cpu (") and s["precision"] == "float32" for s in record["segments"])
    assert record["seed"] == 0 and record["commit"] and record["wall_time_s"] >= 0
    assert provenance_problems(meta) == []


def test_the_appendix_tabulates_every_shipped_rung_and_declares_its_parameters():
    import jupytext

    from bottleneck_utils.chapters import reproducibility
    from tools import book

    table = reproducibility.rung_provenance()
    assert {f"{p.parent.name}/{p.name}" for p in RUNG_FOLDERS} <= set(table.index)
    assert table.loc["ladder/d256-long", "trained on"].count(";") == 1  # GPU, then CPU
    notebook = jupytext.read(book.SOURCES / "reproducibility.md")
    assert book.declared_parameters(notebook) == set(reproducibility.PARAMETERS)
