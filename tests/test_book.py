"""The book pipeline (tools/book.py): fresh executed notebooks; every chapter runs under papermill and glues the
numbers the package computes itself; bad parameters, unknown parameters and bad model names fail before any work."""

import ast
import csv
import math
import os
import time
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import torch

from bottleneck_utils import adaln_cost, masks, stats
from bottleneck_utils.chapters import regime, report
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep, first_time_summary
from bottleneck_utils.models import embedded_dir, load
from bottleneck_utils.organisms import recipes
from tools import book

# Tiny parameters: each notebook runs end to end in seconds on its embedded model (mnist-dit unless named).
SMOKE = {
    "similarity": {"num_steps": 10, "zoom": 5},
    "head_tail": {"num_steps": 10, "probe_timesteps": 6, "tsne_points": 40},
    "training_dynamics": {},
    "pruning": {"n_samples": 20, "batch_size": 20, "num_steps": 2, "tail_fractions": [0.3894], "head_fractions": [0.03],
                "schedules": ["every"], "k": 1, "noise_seeds": [1], "n_boot": 5},
    "continuous": {"model": "ising-dit", "num_steps": 2, "n_grid": 8, "n_samples": 18, "n_bins": 3, "n_bootstrap": 5,
                   "tail_fractions": [0.4], "last_k": 1, "head_ks": [1]},
    "regime": {},  # its defaults: it reads the shipped in-regime results files, measured with them
    "beyond": {"n_samples": 20, "num_steps": 2, "n_boot": 5},
    "guidance": {"n_samples": 20, "num_steps": 2, "n_boot": 5, "probe_samples": 5, "organisms": ["mnist-unet"],
                 "l1_variant": ""},
    "reproducibility": {},
}


def glued(notebook) -> dict:
    """The value of every ``glue(key, value)`` of an executed notebook, by key (numbers parsed from their repr)."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                text = output["data"]["application/papermill.record/text/plain"]
                values[name] = literal(text) if text[:1].isdigit() or text[:1] in "-'\"[{" else text
    return values


def literal(text: str):
    """``ast.literal_eval``, and the reprs ``nan`` and ``inf`` a verdict row glues for a number that is no
    measurement (its claim is then 'not testable here'), which literal_eval refuses."""
    try:
        return ast.literal_eval(text)
    except ValueError:
        return eval(text, {"__builtins__": {}}, {"nan": math.nan, "inf": math.inf})  # our own glued reprs only


def summary_at_t0(model: str, num_steps: int, labels=None) -> dict:
    """What the similarity and continuous chapters glue, computed here through the package's public API."""
    bundle = load(model)
    t0 = first_sampling_timestep(bundle, num_steps)
    y = conditional_vectors(bundle, labels, t0, part="y")  # (n, D)
    t = conditional_vectors(bundle, labels, t0, part="t")[0]  # (D,)
    return {"t0": t0, "hidden": bundle.hidden_size, **stats.summary(y, t, detail=True)}


def expected_similarity() -> dict:
    values = summary_at_t0("mnist-dit", SMOKE["similarity"]["num_steps"])
    return {key: values[key] for key in ("t0", "hidden", "cos_c", "cos_y", "npr_c", "npr_y", "t_share")}


def expected_head_tail() -> dict:
    bundle = load("mnist-dit")
    c = conditional_vectors(bundle, timesteps=first_sampling_timestep(bundle, SMOKE["head_tail"]["num_steps"]))
    c_mean = c.double().mean(0)  # (D,)
    return {"max_c": c_mean.abs().max().item(), "n_head": max(1, round(0.02 * bundle.hidden_size)),
            "energy_head": 100 * stats.head_energy_share(c_mean, 0.02).item()}


def expected_training_dynamics() -> dict:
    rows = list(csv.DictReader((embedded_dir("mnist-dit") / "train_log.csv").open()))
    return {f"{key}_{end}": float(row[key]) for key in ("cos_c_ema", "npr_c_ema", "cos_y_ema")
            for end, row in (("start", rows[0]), ("end", rows[-1]))}


def expected_pruning() -> dict:
    config = load("mnist-dit").transformer.config
    tokens = (config.sample_size // config.patch_size) ** 2
    return {"share_xl": 100 * adaln_cost.adaln_flop_share(**adaln_cost.DIT_XL), "num_steps": 2, "n_samples": 20,
            "share_own": 100 * adaln_cost.adaln_flop_share(config.num_attention_heads * config.attention_head_dim, tokens,
                                                         config.num_layers)}


def expected_continuous() -> dict:
    grid = load("ising-dit").condition.grid(SMOKE["continuous"]["n_grid"])
    values = summary_at_t0("ising-dit", SMOKE["continuous"]["num_steps"], grid)
    return {key: values[key] for key in ("t0", "hidden", "cos_c", "cos_c_min", "cos_y", "npr_c", "npr_y", "t_share")}


def expected_regime() -> dict:
    table = regime.rung_table(regime.shipped_rungs())
    closest = table[table.index.isin(recipes.WEIGHTS_SHIPPED)].apply(
        lambda row: regime.regime_distance(row, regime.paper_bands()), axis=1).idxmin()
    return {"n_rungs": len(table), "closest_npr_c": float(table.loc[closest, "npr_c"]),
            "closest_distance": regime.regime_distance(table.loc[closest], regime.paper_bands())}


def expected_beyond() -> dict:
    return {"variant_steps": recipes.VARIANT_BASE.steps, "side": load("mnist-dit").image_shape[-1],
            **{f"{key}_npr": first_time_summary(load(name))["npr_c"]
               for key, name in (("dit", "mnist-dit"), ("unet", "mnist-unet"))}}


def expected_guidance() -> dict:
    unet = load("mnist-unet")
    tau = masks.threshold_for_fraction(unet, 0.3894, num_steps=SMOKE["guidance"]["num_steps"])
    tail = masks.tail_mask(unet, tau, num_steps=SMOKE["guidance"]["num_steps"])
    return {"first_removed": 100 * tail.removed_fraction, "n_samples": SMOKE["guidance"]["n_samples"]}


EXPECTED = {"similarity": expected_similarity, "head_tail": expected_head_tail,
            "training_dynamics": expected_training_dynamics, "pruning": expected_pruning,
            "continuous": expected_continuous, "regime": expected_regime, "beyond": expected_beyond,
            "guidance": expected_guidance, "reproducibility": dict}


def test_every_chapter_has_smoke_parameters_and_expected_numbers():
    assert set(SMOKE) == set(EXPECTED) == set(book.CHAPTERS)


def test_chapters_follow_the_table_of_contents():
    assert book.CHAPTERS == ["similarity", "head_tail", "training_dynamics", "pruning", "continuous", "regime", "beyond",
                             "guidance", "reproducibility"]


def test_executed_notebooks_match_their_sources():
    """Stale-output guard: book/<name>.ipynb must have the same code cells as notebooks/<name>.md."""
    assert book.stale_notebooks() == []


def test_stale_and_missing_notebooks_are_reported(tmp_path):
    assert all("is missing" in problem for problem in book.stale_notebooks(tmp_path))
    source = jupytext.read(book.SOURCES / "similarity.md")
    source.cells[-1].source += "\nprint('edited')"
    nbformat.write(source, tmp_path / "similarity.ipynb")
    assert any("similarity.ipynb is stale" in problem for problem in book.stale_notebooks(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", book.CHAPTERS)
def test_notebook_runs_and_glues_the_packages_numbers(name, tmp_path):
    declared = book.declared_parameters(jupytext.read(book.SOURCES / f"{name}.md"))
    parameters = ({"model": "mnist-dit"} if "model" in declared else {}) | SMOKE[name]
    executed = nbformat.read(book.execute(name, parameters, tmp_path), as_version=4)
    errors = [o for cell in executed.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    values, expected = glued(executed), EXPECTED[name]()
    # another process, perhaps another thread count: float32 embeddings may round differently (~1e-7 relative),
    # which moves float64 statistics of them by far less than 1e-6 relative; a different formula moves them by more
    assert {key: values.get(key) for key in expected} == pytest.approx(expected, rel=1e-6)
    if name != "reproducibility":
        record = executed.metadata[report.PROVENANCE_KEY]
        assert len(record["model_sha256"]) == 64 and "torch" in record["packages"]
        if "model" in parameters:
            assert record["model"] == parameters["model"] == record["parameters"]["model"]
        assert set(record["hardware"]) == {"cpu", "torch threads", "cuda device"}
        check_verdict_table(name, values)
    assert not list(tmp_path.glob("*.partial.ipynb"))


# A number each chapter glues on its own, and the verdict row that must test exactly that number.
VERDICT_SOURCES = {
    "similarity": ("precondition: c is sparse", "npr_c"),
    "head_tail": ("precondition: c is sparse", "npr_c"),
    "training_dynamics": ("precondition: c is sparse", "npr_c_ema_end"),
    "continuous": ("precondition: the organism follows T: rank correlation", "spearman"),
    "pruning": ("a sparse c makes the model faster", "headline_ratio"),
    "regime": ("precondition: c is sparse", "judged_npr_c"),
    "beyond": ("mnist-unet: precondition: c is sparse", "unet_npr"),
    "guidance": ("precondition: mnist-unet: the tail improves FID", "first_improves_high"),
}


def check_verdict_table(name: str, values: dict) -> None:
    """The chapter's glued verdict rows: known words, at least one precondition first, and each verdict the one
    the rule gives from the row's own numbers; one row per chapter tests a number the chapter glues elsewhere."""
    rows = values["verdicts"]
    assert any(row["kind"] == "precondition" for row in rows)
    assert {row["verdict"] for row in rows} <= set(report.VERDICTS) | set(report.PRECONDITION_WORDS)
    assert report.rule_violations(rows) == []
    assert len({row["claim"] for row in rows}) == len(rows)  # each claim once
    prefix, key = VERDICT_SOURCES[name]
    row = next(row for row in rows if row["claim"].startswith(prefix))
    assert row["value"] == values[key]  # the same float, glued twice


def test_declared_parameters_are_the_parameters_cell():
    declared = book.declared_parameters(jupytext.read(book.SOURCES / "similarity.md"))
    assert {"model", "device", "num_steps", "zoom"} <= declared


@pytest.mark.parametrize("source", sorted(book.SOURCES.glob("*.md")), ids=lambda path: path.stem)
def test_papermill_reads_every_declared_parameter(source):
    """`papermill --help-notebook` lists a parameter only if its line parses (a comment holding " = " does
    not), so every declared parameter must be one papermill finds."""
    from papermill.translators import PythonTranslator

    notebook = jupytext.read(source)
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    found = {parameter.name for parameter in PythonTranslator.inspect(cells[0])} if cells else set()
    assert book.declared_parameters(notebook) == found


@pytest.mark.slow
@pytest.mark.parametrize("parameters, message", [
    ({"num_steps": "50"}, "bad notebook parameters: num_steps='50'"),
    ({"num_steps": True}, "bad notebook parameters: num_steps=True"),
    ({"model": "no-such-model"}, "unknown model 'no-such-model'"),
])
def test_bad_parameters_fail_in_the_first_cell_and_leave_nothing(parameters, message, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        book.execute("similarity", parameters, tmp_path)
    assert message in str(failure.value)
    assert failure.value.exec_count <= 3  # parameters, injected parameters, setup: nothing after it ran
    assert list(tmp_path.iterdir()) == []  # neither the notebook nor its .partial.ipynb


@pytest.mark.slow
def test_continuous_chapter_refuses_a_class_model(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        book.execute("continuous", {"model": "mnist-dit"}, tmp_path)
    assert "mnist-dit is class-conditional" in str(failure.value)
    assert failure.value.exec_count <= 3


def test_execute_command_gives_each_chapter_its_model_and_declared_parameters(monkeypatch):
    calls = []
    monkeypatch.setattr(book, "execute", lambda name, parameters: calls.append((name, parameters)) or name)
    book.main(["execute", "--model", "mnist-dit", "--samples", "30", "--only", "similarity", "continuous",
               "--jobs", "1"])
    assert calls == [("similarity", {"model": "mnist-dit", "device": "cpu"}),  # similarity has no n_samples
                     ("continuous", {"model": "ising-dit", "device": "cpu", "n_samples": 30})]


def test_without_a_model_each_chapter_runs_on_its_own_default(monkeypatch):
    """make book names no model: the similarity and head-tail chapters judge their in-regime default, not mnist-dit."""
    calls = []
    monkeypatch.setattr(book, "execute", lambda name, parameters: calls.append((name, parameters)) or name)
    book.main(["execute", "--only", "similarity", "head_tail", "--jobs", "1"])
    assert calls == [("similarity", {"device": "cpu"}), ("head_tail", {"device": "cpu"})]


def record_threads(name, parameters):
    """A stand-in for ``book.execute`` in pool workers: writes the chapter's thread setting and its start time."""
    out = Path(parameters["out"])
    (out / name).write_text(f"{os.environ.get('OMP_NUM_THREADS')} {time.time()}")
    if name == "head_tail":
        raise RuntimeError("cell 3 failed\ntraceback lines")
    time.sleep(0.2)
    return out / name


def test_parallel_execution_runs_one_thread_kernels_and_the_appendix_last(monkeypatch, tmp_path):
    monkeypatch.setattr(book, "execute", record_threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the parent's setting, which the workers must not keep
    chapters = ["similarity", "training_dynamics", "pruning", "reproducibility"]
    assert book.execute_all({name: {"out": str(tmp_path)} for name in chapters}, jobs=2) == []
    written = {name: (tmp_path / name).read_text().split() for name in chapters}
    assert {threads for threads, _ in written.values()} == {"1"}  # each worker's kernels start at one thread
    assert float(written["reproducibility"][1]) >= max(float(start) for name, (_, start) in written.items()
                                                         if name != "reproducibility") + 0.2
    assert os.environ["OMP_NUM_THREADS"] == "2"  # only the workers change it


def test_a_failed_chapter_is_named_and_the_appendix_does_not_start(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(book, "execute", record_threads)
    chapters = ["similarity", "head_tail", "reproducibility"]
    failures = book.execute_all({name: {"out": str(tmp_path)} for name in chapters}, jobs=2)
    assert failures == ["notebooks/head_tail.md failed (RuntimeError: cell 3 failed); its traceback is printed above"]
    assert (tmp_path / "similarity").is_file() and not (tmp_path / "reproducibility").exists()
    assert "traceback lines" in capsys.readouterr().err


def test_verdict_words_follow_the_rule():
    assert [report.verdict(True), report.verdict(False), report.verdict(True, negligible=True),
            report.verdict(False, negligible=True), report.verdict(True, precondition=False)] == \
        ["reproduced", "not reproduced", "reproduced but negligible", "not reproduced", "not testable here"]
    assert set(report.VERDICTS) == {"reproduced", "reproduced but negligible", "not reproduced", "not testable here"}


def rule_rows():
    regime = report.precondition_row("aligned", paper="p", ours="o", value=0.95, op=">=", bar=0.9)
    outside = report.precondition_row("sparse", paper="p", ours="o", value=0.5, op="<=", bar=0.1)
    return [regime, outside,
            report.claim_row("in range", paper="p", ours="o", value=0.3, op="in", bar=(0.2, 0.4), requires=regime),
            report.claim_row("fails", paper="p", ours="o", value=0.3, op=">", bar=0.4, requires=regime),
            report.claim_row("out of regime", paper="p", ours="o", value=0.3, op=">", bar=0.2,
                             requires=[regime, outside]),
            report.claim_row("small", paper="p", ours="o", value=0.6, op="<", bar=1.0, negligible=(0.001, "<", 0.01)),
            report.claim_row("not measured", paper="p", ours="o", value=None, op=">", bar=0.0)]


def test_rows_carry_their_verdicts_and_a_broken_row_is_caught():
    rows = rule_rows()
    assert [row["verdict"] for row in rows] == ["met", "unmet", "reproduced", "not reproduced", "not testable here",
                                                "reproduced but negligible", "not testable here"]
    assert report.rule_violations(rows) == []
    tampered = [dict(row) for row in rows]
    tampered[3]["value"] = 0.5  # the number changed, the verdict did not
    assert report.rule_violations(tampered) == ["'fails': verdict 'not reproduced', the rule gives 'reproduced'"]
    orphan = rows[2:3]  # a claim without its precondition row above it
    assert "requires precondition rows above it" in report.rule_violations(orphan)[0]
    assert rows[2]["test"] == "0.3 in [0.2, 0.4]: yes"


def test_verdict_table_refuses_a_row_that_breaks_the_rule():
    rows = rule_rows()
    rows[5] = dict(rows[5], verdict="reproduced")  # negligible effect reported as plain "reproduced"
    with pytest.raises(ValueError, match="verdicts that do not follow the rule"):
        report.verdict_table(rows, "caption")


def test_every_bar_is_a_number_or_a_range():
    from bottleneck_utils.chapters import paper

    for name, bar in paper.BARS.items():
        assert isinstance(bar, float) or (isinstance(bar, tuple) and bar[0] < bar[1]), name
    assert paper.BARS["aligned_cosine"] == paper.TABLE1["DiT"]["cosine"]  # the least aligned model of Table 1


def test_summary_table_is_the_summarys_detail_keys():
    values = stats.summary(torch.randn(4, 6), torch.randn(6), detail=True)
    table = report.summary_table(values)
    assert list(table.columns) == ["c = y + t", "y"] and table.loc["cosine (min)", "y"] == values["cos_y_min"]
    assert table.loc["PR (mean over vectors)", "c = y + t"] == values["pr_c"]


def test_every_name_a_notebook_uses_is_defined(tmp_path):
    """Each chapter's code, read as one script, uses no undefined name (a missing import fails here, not after
    minutes of execution); ``display`` is IPython's."""
    import subprocess
    import sys

    for source in sorted(book.SOURCES.glob("*.md")):
        jupytext.write(jupytext.read(source), tmp_path / f"{source.stem}.py", fmt="py:percent")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F821",
                             "--config", "builtins = ['display']", "--output-format", "concise", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
