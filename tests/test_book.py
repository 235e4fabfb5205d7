"""The book pipeline: fresh executed notebooks, every notebook runs under papermill, bad parameters fail early."""

import jupytext
import nbformat
import papermill
import pytest

from bottleneck_utils import book

# Tiny parameters: each notebook runs end to end in seconds on its embedded model (mnist-dit unless named).
SMOKE = {
    "similarity": {"num_steps": 10, "zoom": 5},
    "head_tail": {"num_steps": 10, "probe_timesteps": 6, "tsne_points": 40},
    "training_dynamics": {},
    "pruning": {"n_samples": 20, "batch_size": 20, "num_steps": 2, "tail_fractions": [0.3894], "head_fractions": [0.03],
                "schedules": ["every"], "k": 1, "noise_seeds": [1], "n_boot": 5},
    "continuous": {"model": "ising-dit", "num_steps": 2, "n_grid": 8, "n_samples": 18, "n_bins": 3, "n_bootstrap": 5,
                   "tail_fractions": [0.4], "last_k": 1, "head_ks": [1]},
    "reproducibility": {},
}


def test_every_chapter_has_smoke_parameters():
    assert set(SMOKE) == set(book.CHAPTERS)


def test_executed_notebooks_match_their_sources():
    """Stale-output guard: book/<name>.ipynb must have the same code cells as notebooks/<name>.md."""
    assert book.stale_notebooks() == []


def test_stale_and_missing_notebooks_are_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "OUTPUTS", tmp_path)
    assert all("is missing" in problem for problem in book.stale_notebooks())
    source = jupytext.read(book.SOURCES / "similarity.md")
    source.cells[-1].source += "\nprint('edited')"
    nbformat.write(source, tmp_path / "similarity.ipynb")
    assert any("similarity.ipynb is stale" in problem for problem in book.stale_notebooks())


@pytest.mark.slow
@pytest.mark.parametrize("name", book.CHAPTERS)
def test_notebook_runs_with_tiny_parameters(name, tmp_path):
    parameters = {"model": "mnist-dit", **SMOKE[name]}
    executed = nbformat.read(book.execute(name, parameters, tmp_path), as_version=4)
    errors = [o for cell in executed.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    if name != "reproducibility":
        record = executed.metadata[book.PROVENANCE_KEY]
        assert record["model"] == parameters["model"] and len(record["model_sha256"]) == 64
        assert record["parameters"]["model"] == parameters["model"] and "torch" in record["packages"]
    assert not list(tmp_path.glob("*.partial.ipynb"))


def test_declared_parameters_are_the_parameters_cell():
    assert {"model", "device", "num_steps", "zoom"} <= book.declared_parameters(jupytext.read(book.SOURCES / "similarity.md"))


@pytest.mark.slow
@pytest.mark.parametrize("parameters, message", [
    ({"num_steps": "50"}, "bad notebook parameters: num_steps='50'"),
    ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
])
def test_bad_parameters_fail_in_the_first_cell(parameters, message, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        book.execute("similarity", parameters, tmp_path)
    assert message in str(failure.value)
    assert failure.value.exec_count <= 3  # parameters, injected parameters, setup: nothing after it ran
    assert not (tmp_path / "similarity.ipynb").exists()


@pytest.mark.slow
def test_continuous_chapter_refuses_a_class_model(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        book.execute("continuous", {"model": "mnist-dit"}, tmp_path)
    assert "mnist-dit is class-conditional" in str(failure.value)
    assert failure.value.exec_count <= 3


def test_execute_command_gives_continuous_chapters_their_own_model(monkeypatch):
    calls = []
    monkeypatch.setattr(book, "execute", lambda name, parameters: calls.append((name, parameters["model"])) or name)
    book.main(["execute", "--model", "some-class-model", "--only", "similarity", "continuous"])
    assert calls == [("similarity", "some-class-model"), ("continuous", "ising-dit")]


def test_verdict_words():
    assert [book.verdict(True), book.verdict(False), book.verdict(True, testable=False)] == \
        ["reproduced", "not reproduced", "not testable here"]
