"""NaN is never a measurement, and nothing read is taken on trust: a number or bar that is not finite makes a claim
"not testable here" (a precondition "unmet"), the reason shown in the row, while a harmful but finite input still
fails; masks.recomputed takes only the masks it can recompute; a chapter refuses a parameter papermill injected and
it lacks; every file the organisms and chapters read fails in one line naming the file and the fix, writing nothing."""

import warnings

import pandas as pd
import pytest
import torch
from test_chapter_pruning import HARMFUL, results, scores
from test_masks import STEPS, _hooked_c, a_tail_mask
from test_shipping import TINY, snapshot

from bottleneck_utils import integrity, masks
from bottleneck_utils.chapters import beyond, continuous, in_regime, pruning, regime, report, training_dynamics
from bottleneck_utils.organisms import classifier, cli, train

NAN, INF = float("nan"), float("inf")


def one_line(raised) -> str:
    message = str(raised.value)
    assert "\n" not in message.strip(), message
    return message


# ---------------------------------------------------------------------------------------------------
#                                  The verdict rule on non-finite numbers
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, op, bar, reason", [
    (NAN, ">", 0.0, "the measurement is NaN"),  # before: "not reproduced"
    (INF, ">", 0.0, "the measurement is infinite"),  # before: "reproduced"
    (-INF, "<", 0.0, "the measurement is infinite"),  # before: "reproduced"
    (0.3, "in", (NAN, 0.4), "the band's low end is NaN"),  # before: "not reproduced"
    (0.3, "in", (0.2, INF), "the band's high end is infinite"),  # before: "reproduced"
    (0.3, ">", NAN, "the bar is NaN"),  # before: "not reproduced"
])
def test_a_non_finite_claim_is_not_testable_and_says_why(value, op, bar, reason):
    row = report.claim_row("claim", paper="p", ours="o", value=value, op=op, bar=bar)
    assert row["verdict"] == "not testable here" and f"cannot be tested ({reason})" in row["test"]
    assert report.rule_violations([row]) == [] and not report.holds(value, op, bar)


def test_a_non_finite_negligible_test_makes_the_claim_not_testable():
    row = report.claim_row("faster", paper="p", ours="o", value=0.6, op="<", bar=1.0, negligible=(NAN, "<", 0.01))
    assert row["verdict"] == "not testable here" and "negligible if nan < 0.01: cannot be tested" in row["test"]


def test_a_non_finite_precondition_is_unmet_and_its_claims_not_testable():
    regime_row = report.precondition_row("aligned", paper="p", ours="o", value=INF, op=">=", bar=0.9)
    assert regime_row["verdict"] == "unmet" and "(the measurement is infinite)" in regime_row["test"]
    claim = report.claim_row("holds", paper="p", ours="o", value=0.5, op=">", bar=0.0, requires=regime_row)
    assert claim["verdict"] == "not testable here" and report.rule_violations([regime_row, claim]) == []


def test_verdict_takes_outcomes_not_numbers():
    with pytest.raises(TypeError, match="passed=nan") as raised:  # bool(nan) is True: it read "reproduced"
        report.verdict(NAN)
    one_line(raised)
    assert "NaN" in report.VERDICT_RULE and "not testable here" in report.VERDICT_RULE


def test_the_rule_check_catches_a_nan_row_left_with_its_verdict():
    row = report.claim_row("holds", paper="p", ours="o", value=0.5, op=">", bar=0.0)
    tampered = dict(row, value=NAN)
    assert report.rule_violations([tampered]) == [
        "'holds': verdict 'reproduced', the rule gives 'not testable here'"]


def test_a_verdict_table_fails_a_harmful_input_and_sets_nan_and_inf_aside():
    met = report.precondition_row("sparse", paper="p", ours="o", value=0.01, op="<=", bar=0.1)
    rows = [met, *(report.claim_row(name, paper="p", ours="o", value=value, op="<=", bar=0.0, requires=met)
                   for name, value in (("harmful", 5.0), ("harmless", -0.1), ("nan", NAN), ("inf", -INF)))]
    shown = report.verdict_table(rows, "caption").data
    assert list(shown["verdict"]) == ["met", "not reproduced", "reproduced", "not testable here", "not testable here"]
    assert shown["test"].iloc[3] == "nan ≤ 0: cannot be tested (the measurement is NaN)"


# ---------------------------------------------------------------------------------------------------
#                                 Pruning: intervals and the claims on rungs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [torch.tensor([0.0, NAN, 1.0]), torch.tensor([0.0, INF]), torch.tensor([])])
def test_paired_interval_refuses_differences_that_are_not_finite(values):
    with pytest.raises(ValueError, match="needs finite per-sample differences") as raised:  # before: (nan, nan, nan)
        pruning.paired_interval(values)
    one_line(raised)


def test_rung_claims_on_a_rung_that_reads_no_digit_are_not_testable():
    dead = results(unpruned={"per_digit": 0.0}, head={"per_digit": 0.0})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0
        rows = {row["claim"]: row for row in pruning.rung_claims(dead, requires=[])}
    destroys = rows["head: destroys generation"]
    assert destroys["verdict"] == "not testable here" and "nothing to destroy" in destroys["ours"]  # before: "not r."
    harmful = {row["claim"]: row["verdict"] for row in pruning.rung_claims(results(**HARMFUL), requires=[])}
    assert harmful["tail-every: harmless"] == "not reproduced"


def test_pruning_claims_judge_a_harmful_tail_and_set_a_nan_one_aside():
    savings = {"headline_ratio": 0.9, "headline_share": 0.3894, "saving_headline": 1e-4}

    def judged(**changes):
        rows = pruning.claims(scores(**changes), hidden_size=100, k=3, statistics={"npr_c": 0.01, "cos_y": 0.6}, savings=savings, embedded=True,
                              n_samples=100)
        assert report.rule_violations(rows) == []
        return {row["claim"]: row for row in rows}

    claim = "zeroing the tail (tail 39%) at every step leaves quality intact"
    assert judged(**{"tail 39%, tᵢ": (15.0, 5.0, 3.0, 7.0)})[claim]["verdict"] == "not reproduced"
    broken = judged(**{"tail 39%, tᵢ": (NAN, NAN, NAN, NAN)})[claim]
    assert broken["verdict"] == "not testable here" and "the measurement is NaN" in broken["test"]


# ---------------------------------------------------------------------------------------------------
#                                 masks.recomputed: only what it can recompute
# ---------------------------------------------------------------------------------------------------


def test_a_recomputed_top_k_head_zeroes_the_largest_of_each_calls_own_c(bundle):
    head = masks.topk_mask(bundle, 3, num_steps=STEPS, granularity="per-sample")
    labels = torch.tensor([3, 0, 4, 1, bundle.null_label])
    c, _ = _hooked_c(bundle, None, labels, timestep=0)
    pruned, _ = _hooked_c(bundle, masks.recomputed(head), labels, timestep=0)
    largest = c.abs().argsort(dim=-1, descending=True, stable=True)[:, :3]  # (B, 3)
    expected = c.scatter(1, largest, 0.0)
    assert torch.equal(pruned, expected)  # before: the 3 smallest |cᵢ| were zeroed


@pytest.mark.parametrize("build", [
    lambda bundle: masks.random_mask(a_tail_mask(bundle), seed=1),
    lambda bundle: masks.head_mask(bundle, 0.5, num_steps=STEPS),
    lambda bundle: masks.coordinate_mask([0, 1], bundle.hidden_size),
    lambda bundle: masks.Mask(torch.zeros(1, bundle.hidden_size, dtype=torch.bool)),
], ids=["random-control", "head-by-tau", "coordinates", "bare"])
def test_recomputed_refuses_a_mask_it_cannot_recompute(bundle, build):
    mask = build(bundle)
    with pytest.raises(ValueError, match="cannot be recomputed at every step") as raised:
        masks.recomputed(mask)
    one_line(raised)
    with pytest.raises(ValueError, match="cannot be recomputed"):
        masks.Mask(mask.removed, recompute=True, built=mask.built)


def test_recomputed_keeps_the_tail_by_share_and_the_bottom_k(bundle):
    tau = masks.threshold_for_fraction(bundle, 0.3, num_steps=STEPS)
    for mask in (masks.tail_mask(bundle, tau, num_steps=STEPS), masks.topk_mask(bundle, 4, num_steps=STEPS,
                                                                               largest=False)):
        assert masks.recomputed(mask).recompute


# ---------------------------------------------------------------------------------------------------
#                                     Chapters refuse unknown parameters
# ---------------------------------------------------------------------------------------------------

SPEC = {"device": str, "seed": int}


def test_a_parameter_papermill_injected_and_the_chapter_lacks_is_refused():
    cells = ["", 'device = "cpu"\nseed = 0\n', "# Parameters\nzoom = 3\nseed = 1\n"]
    namespace = {"In": cells, "device": "cpu", "seed": 1, "zoom": 3}
    with pytest.raises(ValueError, match=r"unknown parameters \['zoom'\].*\['device', 'seed'\]") as raised:
        report.notebook_parameters(namespace, SPEC)  # before: ran with zoom ignored
    one_line(raised)
    known = {"In": cells[:2] + ["# Parameters\nseed = 1\n"], "device": "cpu", "seed": 1}
    assert report.notebook_parameters(known, SPEC) == {"device": "cpu", "seed": 1}
    assert report.notebook_parameters({"device": "cpu", "seed": 0}, SPEC) == {"device": "cpu", "seed": 0}  # no IPython


@pytest.mark.slow
def test_papermill_with_an_unknown_parameter_fails_the_chapter(tmp_path):
    import nbformat
    import papermill

    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('device = "cpu"\nseed = 0', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("from bottleneck_utils.chapters import report\n"
                                  "parameters = report.notebook_parameters(globals(), {'device': str, 'seed': int})")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "tiny.ipynb")
    run = {"input_path": str(tmp_path / "tiny.ipynb"), "output_path": str(tmp_path / "out.ipynb"),
           "kernel_name": "python3", "progress_bar": False}
    papermill.execute_notebook(**run, parameters={"seed": 1})
    with pytest.raises(papermill.PapermillExecutionError, match=r"unknown parameters \['zoom'\]"):
        papermill.execute_notebook(**run, parameters={"zoom": 3})


# ---------------------------------------------------------------------------------------------------
#                  Every file the organisms and chapters read: one line, the file and the fix
# ---------------------------------------------------------------------------------------------------

TRUNCATED_JSON = '{"per_digit": 0.9, "best_cfg"'
TRUNCATED_LOG = "step,cos_c,npr_c\n0,0.5,0.6\n100,0.9"  # cut inside the last row


@pytest.fixture
def checkpoints(tmp_path, monkeypatch):
    """A private package data for the organisms and chapters that read it."""
    root = tmp_path / "checkpoints"
    for module in (train, regime, in_regime, beyond):
        monkeypatch.setattr(module, "CHECKPOINT_DIR", root)
    (root / "ladder" / "c10").mkdir(parents=True)
    return root


def test_a_damaged_quality_record_fails_the_cli_in_one_line_and_writes_nothing(checkpoints, tmp_path, capsys):
    record = checkpoints / "ladder" / "c10" / "quality.json"
    record.write_text(TRUNCATED_JSON)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError) as raised:  # before: a JSONDecodeError that named no file
        cli.shipped_quality("ladder/c10")
    assert str(record) in one_line(raised) and "cli ladder train ladder/c10" in str(raised.value)
    with pytest.raises(SystemExit) as exit_:
        cli.cli(["ladder", "status", "ladder/c10"])
    assert str(record) in str(exit_.value.code) and "\n" not in str(exit_.value.code)
    assert snapshot(tmp_path) == before


def test_the_regime_chapter_reads_logs_and_records_in_one_line(checkpoints):
    folder = checkpoints / "ladder" / "c10"
    (folder / "train_log.csv").write_text(TRUNCATED_LOG)
    with pytest.raises(ValueError, match="ends inside a line") as raised:  # before: read as NaN, silently
        regime.rung_table(["ladder/c10"])
    assert str(folder / "train_log.csv") in one_line(raised) and "git checkout" in str(raised.value)
    with pytest.raises(FileNotFoundError, match="quality record .* is missing") as raised:
        in_regime.judging_scales("ladder/c10")
    assert "cli ladder train ladder/c10" in one_line(raised)  # before: Errno 2 with no fix


def test_the_beyond_chapter_reads_quality_records_in_one_line(checkpoints):
    (checkpoints / "mnist-dit").mkdir()
    (checkpoints / "mnist-dit" / "quality.json").write_text(TRUNCATED_JSON)
    with pytest.raises(ValueError, match="is not valid JSON") as raised:
        beyond.organism_statistics({"mnist-dit": None})
    assert "organisms.cli organism mnist-dit --install" in one_line(raised)
    (checkpoints / "mnist-dit" / "meta.json").write_text('{"steps": 4000}')  # no recipe, no seed
    with pytest.raises(ValueError, match="mnist-dit's meta.json is not a run's meta") as raised:
        beyond.initial_table("mnist-dit")
    assert "organisms.cli organism mnist-dit --install" in one_line(raised)


@pytest.mark.parametrize("log, meta, match", [
    (TRUNCATED_LOG, "{}", "ends inside a line"),
    ("step,cos_c\n0,0.5\n100\n", "{}", r"has \['100'\] on line 3, not 2 numbers"),
    ("step,cos_c\n0,0.5\n100,0.9\n", "{", "meta .*meta.json is not valid JSON"),
])
def test_the_training_dynamics_chapter_reads_its_log_in_one_line(tmp_path, monkeypatch, log, meta, match):
    (tmp_path / "train_log.csv").write_text(log)
    (tmp_path / "meta.json").write_text(meta)
    monkeypatch.setattr(training_dynamics, "log_path", lambda model: tmp_path / "train_log.csv")
    with pytest.raises(ValueError, match=match) as raised:
        training_dynamics.measure("mnist-dit")
    assert "organism mnist-dit --install" in one_line(raised)


def test_the_continuous_chapter_reads_meta_and_prompts_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "meta.json").write_text("<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> other\n")
    monkeypatch.setattr(continuous, "embedded_dir", lambda name: tmp_path)
    with pytest.raises(ValueError, match="merge-conflict markers") as raised:
        continuous.paper_values()
    assert str(tmp_path / "meta.json") in one_line(raised)
    with pytest.raises(FileNotFoundError, match="prompts file .* is missing; pass text_prompts_file") as raised:
        continuous.measure_text("some/model", str(tmp_path / "prompts.txt"), "cpu")
    one_line(raised)
    (tmp_path / "prompts.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="holds no prompt"):
        continuous.measure_text("some/model", str(tmp_path / "prompts.txt"), "cpu")


def test_a_truncated_state_is_refused_in_one_line_on_resume(tmp_path):
    (tmp_path / "state.pt").write_bytes(b"half")
    model = torch.nn.Linear(2, 2)
    with pytest.raises(train.RunError, match="state.pt is not a readable PyTorch checkpoint") as raised:
        train._resume(tmp_path / "state.pt", TINY, 0, 6, model, model, None, torch.Generator())
    assert "pass a new --out folder" in one_line(raised)


def test_run_meta_and_manifest_with_conflict_markers_are_named(tmp_path, monkeypatch):
    conflicted = "<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> other\n"
    (tmp_path / "meta.json").write_text(conflicted)
    with pytest.raises(train.RunError, match="merge-conflict markers") as raised:  # before: "not a run's meta"
        train.saved_run(tmp_path)
    assert f"delete {tmp_path} and train the run again" in one_line(raised)
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path)
    (tmp_path / "manifest.json").write_text(conflicted)
    with pytest.raises(train.RunError, match="merge-conflict markers") as raised:
        train._manifest_text("mnist-dit", "0" * 64)
    assert "git checkout bottleneck_utils/checkpoints/manifest.json" in one_line(raised)


def test_truncated_weights_that_pass_the_manifest_fail_in_one_line(tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # a header cut short
    monkeypatch.setattr(integrity, "manifest", lambda: {name: {"sha256": integrity.sha256_of(weights)}
                                                        for name in ("mnist-classifier", "mnist-dit")})
    monkeypatch.setattr(classifier, "WEIGHTS", weights)
    with pytest.raises(ValueError, match="is not a readable safetensors file") as raised:  # before: SafetensorError
        classifier.load_classifier()
    assert "organism mnist-classifier --install" in one_line(raised)
    monkeypatch.setattr(train, "embedded_dir", lambda name: tmp_path)
    with pytest.raises(ValueError, match="is not a readable safetensors file") as raised:
        train.warm_start(torch.nn.Linear(2, 2), "mnist-dit")
    assert "organism mnist-dit --install" in one_line(raised)


def test_a_good_log_reads_as_pandas_reads_it(tmp_path):
    path = tmp_path / "train_log.csv"
    path.write_text("step,loss\r\n0,nan\r\n100,0.25\r\n")
    pd.testing.assert_frame_equal(train.read_log(path, "fix"), pd.read_csv(path))
