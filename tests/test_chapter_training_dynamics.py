"""The training-dynamics chapter's logic (bottleneck_utils.chapters.training_dynamics): its parameters, the reading
of a training log, its figure and its verdict rows, on the shipped mnist-dit log and on fabricated logs."""

import csv

import jupytext
import matplotlib
import pandas as pd
import pytest

from bottleneck_utils.chapters import report, training_dynamics
from bottleneck_utils.models import embedded_dir
from tools import book

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

SOURCE = book.SOURCES / "training_dynamics.md"


def test_parameters_cell_assigns_exactly_the_spec():
    assert book.declared_parameters(jupytext.read(SOURCE)) == set(training_dynamics.PARAMETERS)


def log(cos_c: list[float], npr_c: list[float]) -> pd.DataFrame:
    """A training log every 100 steps; y's and the EMA columns follow c's."""
    frame = pd.DataFrame({"step": [100 * i for i in range(len(cos_c))], "cos_c": cos_c, "npr_c": npr_c})
    for key in ("cos", "npr"):
        frame[f"{key}_y"] = frame[f"{key}_c"] / 2
    for key in ("cos_c", "npr_c", "cos_y", "npr_y"):
        frame[f"{key}_ema"] = frame[key] * 0.9
    return frame


LEARNS = log(cos_c=[0.1, 0.5, 0.8, 0.9], npr_c=[0.6, 0.7, 0.3, 0.04])  # the paper's shape: dense start, sparse end


def test_every_glued_value_is_quoted_by_the_prose():
    prose = SOURCE.read_text()
    glued = training_dynamics.summarise(LEARNS)["glued"] | training_dynamics.paper_values()
    assert all(f"{{glue:text}}`{name}" in prose for name in glued)


def test_summarise_finds_the_first_step_after_initialisation_and_the_peaks():
    results = training_dynamics.summarise(LEARNS)
    glued = results["glued"]
    assert (glued["early_step"], glued["early_cos"]) == (100, 0.5)
    assert (glued["peak_npr"], glued["peak_npr_step"], glued["peak_cos_step"]) == (0.7, 100, 300)
    assert (glued["start_npr"], glued["end_npr"], glued["end_step"]) == (0.6, 0.04, 300)
    assert glued["npr_c_ema_start"] == pytest.approx(0.54) and glued["cos_y_ema_end"] == pytest.approx(0.405)
    assert list(results["summary"].columns) == ["step 0", "step 300"]
    assert list(results["summary"].index) == training_dynamics.SUMMARY_KEYS
    with pytest.raises(ValueError, match="a step after initialisation"):
        training_dynamics.summarise(LEARNS.iloc[:1])


def test_measure_reads_the_shipped_log_and_says_when_there_is_none():
    results = training_dynamics.measure("mnist-dit")
    rows = list(csv.DictReader((embedded_dir("mnist-dit") / "train_log.csv").open()))
    assert results["has_log"] and len(results["log"]) == len(rows)
    assert results["glued"]["cos_c_ema_start"] == float(rows[0]["cos_c_ema"])
    assert results["glued"]["npr_c_ema_end"] == float(rows[-1]["npr_c_ema"])
    assert results["meta"]["steps"] > 0
    assert training_dynamics.measure("facebook/DiT-XL-2-256") == {"has_log": False, "log_path": None}


def test_claims_reproduced_on_a_log_of_the_papers_shape():
    rows = training_dynamics.claims({"has_log": True, **training_dynamics.summarise(LEARNS)})
    assert report.rule_violations(rows) == []
    assert [row["verdict"] for row in rows] == ["met", "reproduced", "reproduced", "reproduced"]
    assert rows[-1]["value"] == 0.04  # the same float the chapter glues as end_npr


def test_a_c_that_densifies_is_not_reproduced():
    densifies = log(cos_c=[0.9, 0.8, 0.5, 0.3], npr_c=[0.1, 0.2, 0.4, 0.6])
    rows = training_dynamics.claims({"has_log": True, **training_dynamics.summarise(densifies)})
    assert report.rule_violations(rows) == []
    assert [row["verdict"] for row in rows] == ["met", "not reproduced", "not reproduced", "not reproduced"]


def test_without_a_long_enough_log_nothing_is_judged():
    assert [row["verdict"] for row in training_dynamics.claims({"has_log": False, "log_path": None})] == ["unmet"]
    short = training_dynamics.claims({"has_log": True, **training_dynamics.summarise(LEARNS.iloc[:2])})
    assert [row["verdict"] for row in short] == ["unmet"] + ["not testable here"] * 3


def test_training_figure_draws_raw_and_ema_curves_and_the_papers_marks():
    results = {"has_log": True, "meta": {"steps": 300, "recipe": {"batch_size": 8}}, **training_dynamics.summarise(LEARNS)}
    figure = training_dynamics.training_figure(results, "toy")
    assert len(figure.axes[0].get_lines()) == 4 and len(figure.axes[1].get_lines()) == 6  # + the two marks
    assert figure._suptitle.get_text() == "Fig. 12 analogue: toy, 300 steps, batch 8"
    plt.close(figure)
