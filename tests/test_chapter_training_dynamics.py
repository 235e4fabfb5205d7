"""The training-dynamics chapter's logic (bottleneck_utils.chapters.training_dynamics): its parameters, the reading
of a training log, its figures and its verdict rows, on the shipped logs (the in-regime rung, mnist-dit) and on
fabricated logs: a log that ends outside the regime is "not testable here", never "not reproduced"."""

import csv
import shutil

import jupytext
import matplotlib
import pandas as pd
import pytest

from bottleneck_utils.chapters import regime, report, training_dynamics
from bottleneck_utils.models import embedded_dir
from tools import book

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

SOURCE = book.SOURCES / "training_dynamics.md"
IN_REGIME = "regime/d256-p6-b64-s0"


def test_parameters_cell_assigns_exactly_the_spec():
    assert book.declared_parameters(jupytext.read(SOURCE)) == set(training_dynamics.PARAMETERS)


def log(cos_c: list[float], npr_c: list[float], cos_y: list[float]) -> pd.DataFrame:
    """A training log every 100 steps; nPR(y) is half nPR(c) and the EMA columns are 0.9 of the raw ones."""
    frame = pd.DataFrame({"step": [100 * i for i in range(len(cos_c))], "cos_c": cos_c, "npr_c": npr_c,
                          "cos_y": cos_y})
    frame["npr_y"] = frame["npr_c"] / 2
    for key in ("cos_c", "npr_c", "cos_y", "npr_y"):
        frame[f"{key}_ema"] = frame[key] * 0.9
    return frame


def judged(frame: pd.DataFrame) -> list[dict]:
    rows = training_dynamics.claims({"has_log": True, **training_dynamics.summarise(frame)})
    assert report.rule_violations(rows) == []
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    return [row["verdict"] for row in rows]


# the paper's shape, ending in the regime: dense start, sparse end (EMA nPR 3.6%), y aligned (EMA cos(y) 0.63)
LEARNS = log(cos_c=[0.1, 0.5, 0.8, 0.9], npr_c=[0.6, 0.7, 0.3, 0.04], cos_y=[0.0, 0.3, 0.6, 0.7])


def test_every_glued_value_is_quoted_by_the_prose():
    prose = SOURCE.read_text()
    glued = training_dynamics.summarise(LEARNS)["glued"] | training_dynamics.paper_values()
    assert all(f"{{glue:text}}`{name}" in prose for name in glued)


def test_summarise_finds_the_first_step_after_initialisation_the_peaks_and_the_final_ema_row():
    results = training_dynamics.summarise(LEARNS)
    glued = results["glued"]
    assert (glued["early_step"], glued["early_cos"]) == (100, 0.5)
    assert (glued["peak_npr"], glued["peak_npr_step"], glued["peak_cos_step"]) == (0.7, 100, 300)
    assert (glued["start_npr"], glued["end_npr"], glued["end_step"]) == (0.6, 0.04, 300)
    assert glued["npr_c_ema_start"] == pytest.approx(0.54) and glued["cos_y_ema_end"] == pytest.approx(0.63)
    assert results["final"] == {"npr_c": glued["npr_c_ema_end"], "cos_y": glued["cos_y_ema_end"]}
    assert list(results["summary"].columns) == ["step 0", "step 300"]
    assert list(results["summary"].index) == training_dynamics.SUMMARY_KEYS
    with pytest.raises(ValueError, match="a step after initialisation"):
        training_dynamics.summarise(LEARNS.iloc[:1])


def test_the_preconditions_are_the_regimes_read_on_the_last_ema_row():
    rows = judged(LEARNS)
    shared = regime.precondition_rows(training_dynamics.summarise(LEARNS)["final"], regime.paper_bands())
    assert rows[1:3] == shared  # the book's one vocabulary: the same rows as every chapter's
    assert [row["kind"] for row in rows] == ["precondition"] * 3 + ["claim"] * 2
    assert all(row["requires"] == [r["claim"] for r in rows[:3]] for row in rows[3:])
    assert not any("ends in the sparse regime" in row["claim"] for row in rows)  # the sparse end is no claim


def test_claims_reproduced_on_an_in_regime_log_of_the_papers_shape():
    assert verdicts(judged(LEARNS)) == ["met"] * 3 + ["reproduced"] * 2


def test_an_in_regime_c_that_densifies_is_judged_and_not_reproduced():
    densifies = log(cos_c=[0.9, 0.8, 0.5, 0.3], npr_c=[0.02, 0.03, 0.05, 0.08], cos_y=[0.6, 0.6, 0.7, 0.7])
    assert verdicts(judged(densifies)) == ["met"] * 3 + ["not reproduced"] * 2


@pytest.mark.parametrize("npr_end, cos_y_end, unmet", [(0.47, -0.08, [1, 2]), (0.47, 0.7, [1]), (0.04, 0.1, [2])])
def test_a_log_that_ends_outside_the_regime_is_not_testable_never_not_reproduced(npr_end, cos_y_end, unmet):
    # the cosine falls and the nPR falls: outside the regime neither is judged, whichever way it goes
    outside = log(cos_c=[0.9, 0.99, 0.95, 0.93], npr_c=[0.6, 0.9, 0.7, npr_end], cos_y=[0.0, 0.0, 0.0, cos_y_end])
    rows = judged(outside)
    assert [i for i, row in enumerate(rows) if row["verdict"] == "unmet"] == unmet
    assert verdicts(rows)[3:] == ["not testable here"] * 2


def test_the_shipped_logs_judge_the_in_regime_rung_and_not_mnist_dit():
    found = training_dynamics.measure_models(IN_REGIME, ["mnist-dit"])
    inside, outside = (training_dynamics.claims(found[name]) for name in (IN_REGIME, "mnist-dit"))
    assert verdicts(inside)[:3] == ["met"] * 3
    assert set(verdicts(inside)[3:]) <= {"reproduced", "not reproduced"}
    assert verdicts(outside) == ["met", "unmet", "unmet", "not testable here", "not testable here"]
    assert "not reproduced" not in verdicts(outside)


def test_measure_reads_the_shipped_log_and_says_when_there_is_none():
    results = training_dynamics.measure("mnist-dit")
    rows = list(csv.DictReader((embedded_dir("mnist-dit") / "train_log.csv").open()))
    assert results["has_log"] and len(results["log"]) == len(rows)
    assert results["glued"]["cos_c_ema_start"] == float(rows[0]["cos_c_ema"])
    assert results["glued"]["npr_c_ema_end"] == float(rows[-1]["npr_c_ema"])
    assert results["meta"]["steps"] > 0
    assert training_dynamics.measure("facebook/DiT-XL-2-256") == {"name": "facebook/DiT-XL-2-256", "has_log": False,
                                                                  "log_path": None, "meta": None}


def test_a_users_own_log_is_read_and_a_missing_one_is_named(tmp_path):
    own = tmp_path / "train_log.csv"
    shutil.copy(embedded_dir("mnist-dit") / "train_log.csv", own)
    results = training_dynamics.measure("facebook/DiT-XL-2-256", str(own))
    assert results["has_log"] and results["meta"] is None and results["log_path"] == own
    assert results["glued"] == training_dynamics.measure("mnist-dit")["glued"]
    with pytest.raises(FileNotFoundError, match="missing; pass a train_log.csv"):
        training_dynamics.measure("mnist-dit", str(tmp_path / "absent.csv"))


def test_without_a_long_enough_log_nothing_is_judged_and_the_rows_are_the_same():
    none = training_dynamics.claims({"has_log": False, "log_path": None, "meta": None})
    assert report.rule_violations(none) == []
    assert verdicts(none) == ["unmet"] * 3 + ["not testable here"] * 2
    assert [row["claim"] for row in none] == [row["claim"] for row in judged(LEARNS)]
    assert verdicts(judged(LEARNS.iloc[:2])) == ["unmet"] * 3 + ["not testable here"] * 2  # still dense at step 100


def test_the_models_beside_are_judged_by_the_same_rows():
    found = training_dynamics.measure_models(IN_REGIME, [IN_REGIME, "mnist-dit", "facebook/DiT-XL-2-256"])
    assert list(found) == [IN_REGIME, "mnist-dit", "facebook/DiT-XL-2-256"]
    table = training_dynamics.claims_beside(found)
    assert list(table.columns) == ["paper", *found]
    assert table.loc[training_dynamics.FALLS, "mnist-dit"].endswith("→ not testable here")
    assert table.loc[training_dynamics.FALLS, "facebook/DiT-XL-2-256"] == "no training log → not testable here"
    landmarks = training_dynamics.landmarks_table(found)
    assert list(landmarks.index) == [IN_REGIME, "mnist-dit"]
    assert list(landmarks["in the regime"]) == [True, False]
    sentence = training_dynamics.beside_sentence(found)
    assert "`mnist-dit` ends at step 4,000" in sentence and "outside the regime" in sentence
    assert "`facebook/DiT-XL-2-256` has no training log" in sentence
    assert "is empty" in training_dynamics.beside_sentence({IN_REGIME: found[IN_REGIME]})


def test_training_figure_draws_raw_and_ema_curves_and_the_papers_marks():
    results = {"has_log": True, "meta": {"steps": 300, "recipe": {"batch_size": 8}}, **training_dynamics.summarise(LEARNS)}
    figure = training_dynamics.training_figure(results, "toy")
    # + the cos(y) band edge; + the nPR(c) band edge, REPA-B/2's end and the Gaussian nPR
    assert len(figure.axes[0].get_lines()) == 5 and len(figure.axes[1].get_lines()) == 7
    assert figure._suptitle.get_text() == "Fig. 12 analogue: toy, 300 steps, batch 8"
    plt.close(figure)
    figure = training_dynamics.training_figure(results | {"meta": None}, "own log")
    assert figure._suptitle.get_text() == "Fig. 12 analogue: own log, 300 steps"
    plt.close(figure)
