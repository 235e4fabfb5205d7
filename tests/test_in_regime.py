"""The in-regime study: the energy-matched control, the claims' rules (each fails on a harmful input), and the
results file (resumable, refused when stale, edited, truncated or measured otherwise)."""

import json

import pandas as pd
import pytest
import torch
from conftest import tiny_bundle

from bottleneck_utils import masks
from bottleneck_utils.chapters import in_regime, regime, report

# ---------------------------------------------------------------------------------------------------
#                                   The energy-matched random control
# ---------------------------------------------------------------------------------------------------


def test_energy_matched_control_fills_the_share_without_going_over():
    bundle = tiny_bundle()
    squares = masks.reference_magnitudes(bundle, 10).double() ** 2
    shares = squares / squares.sum(-1, keepdim=True)
    for like in (masks.topk_mask(bundle, 3, num_steps=10), masks.topk_mask(bundle, 9, num_steps=10, largest=False)):
        control = masks.energy_matched_random_mask(bundle, like, num_steps=10, seed=3)
        target, got = (shares * like.removed).sum(-1), (shares * control.removed).sum(-1)
        assert (got <= target * (1 + 1e-6)).all()
        # nothing left out would still have fitted: every spared coordinate is bigger than the room left
        room = target - got
        spared = torch.where(control.removed, torch.inf, shares)
        assert (spared.min(-1).values > room - 1e-12).all()
        assert control.built == "random"


def test_energy_matched_control_of_a_small_tail_spares_the_head():
    bundle = tiny_bundle()
    tail = masks.topk_mask(bundle, 6, num_steps=10, largest=False)
    head = masks.topk_mask(bundle, 1, num_steps=10)
    control = masks.energy_matched_random_mask(bundle, tail, num_steps=10, seed=0)
    assert not (control.removed & head.removed).any()
    assert torch.equal(control.removed, masks.energy_matched_random_mask(bundle, tail, num_steps=10, seed=0).removed)


# ---------------------------------------------------------------------------------------------------
#                                 The claims, on fabricated results
# ---------------------------------------------------------------------------------------------------


def fabricated_table(tail_delta=0.0, energy_delta=30.0, head_ratio=20.0, floor=10.0, cfgs=(4.0, 1.0)):
    """A results table of one seed: the tail moves the CFD by ``tail_delta`` (±1), its energy control by
    ``energy_delta`` (±1), the head multiplies it by ``head_ratio``; the noise floor interval is ±``floor``."""
    rows = []
    for cfg in cfgs:
        def row(key, delta, half=1.0, ratio=1.0, k=None, group="tail", cfg=cfg):
            return {"cfg": cfg, "key": key, "setting": key, "group": group, "k": k, "removed": 0.1, "energy": 0.1,
                    "CFD": 100 + delta, "ΔCFD": delta, "low": delta - half, "high": delta + half, "ratio": ratio,
                    "per_digit": 0.99, "cells kept": 1.0, "mean |Δ pixel|": 0.0}

        rows += [row("unpruned", 0.0, 0.0), row("unpruned-noise", 0.0, floor), row("tail-every", tail_delta),
                 row("tail-first", tail_delta), row("tail-last", tail_delta), row("tail-random-count", 500.0),
                 row("tail-random-energy", energy_delta),
                 row("head-2-recomputed", 100 * head_ratio, ratio=head_ratio, k=2),
                 row("head-2-random-energy", 50.0, k=2)]
    return pd.DataFrame(rows).set_index(["cfg", "key"])


def in_regime_requires():
    row = pd.Series({"npr_c": 0.05, "cos_y": 0.6})
    return regime.precondition_rows(row, regime.paper_bands())


def verdicts(tables):
    rows = in_regime.claims(tables, hidden_size=256, requires=in_regime_requires())
    assert report.rule_violations(rows) == []
    return {row["claim"]: row["verdict"] for row in rows}


def test_a_harmless_tail_passes_and_a_harmful_one_fails():
    good = verdicts({"x-s0": fabricated_table(tail_delta=0.5)})
    assert good["tail-every: harmless (CFG 4)"] == "reproduced"
    assert good["pruning the tail harms less than pruning tail-random-energy (CFG 4)"] == "reproduced"
    harmful = verdicts({"x-s0": fabricated_table(), "x-s1": fabricated_table(tail_delta=25.0)})
    assert harmful["tail-every: harmless (CFG 4)"] == "not reproduced"  # one seed breaks it for the recipe


def test_a_test_that_cannot_see_harm_makes_harmless_not_testable():
    rows = verdicts({"x-s0": fabricated_table(energy_delta=0.0)})
    assert rows["precondition: the test sees harm: tail-random-energy is not within the floor (CFG 4)"] == "unmet"
    assert rows["tail-every: harmless (CFG 4)"] == "not testable here"
    assert rows["pruning the tail harms less than pruning tail-random-energy (CFG 4)"] == "not reproduced"


def test_the_head_destroys_only_above_the_papers_bar():
    bar = in_regime.DESTROYED_RATIO
    assert 1.09 < bar < 73  # between Table 2's two head rows
    key = "head-2-recomputed (the paper's 8 of 1152 by share): destroys generation (CFG 4)"
    assert verdicts({"x-s0": fabricated_table(head_ratio=bar + 1)})[key] == "reproduced"
    assert verdicts({"x-s0": fabricated_table(head_ratio=bar - 1)})[key] == "not reproduced"


def test_out_of_regime_seeds_make_every_claim_not_testable():
    requires = regime.precondition_rows(pd.Series({"npr_c": 0.5, "cos_y": 0.0}), regime.paper_bands())
    rows = in_regime.claims({"x-s0": fabricated_table()}, 256, requires)
    assert {row["verdict"] for row in rows if row["kind"] == "claim"} == {"not testable here"}


def test_paper_head_shares_map_to_the_nearest_count():
    assert in_regime.head_k_of_share(in_regime.PAPER_HEAD_SHARES[8], 256) == 2
    assert in_regime.head_k_of_share(in_regime.PAPER_HEAD_SHARES[2], 256) == 1
    assert in_regime.head_k_of_share(in_regime.PAPER_HEAD_SHARES[8], 1152) == 8


# ---------------------------------------------------------------------------------------------------
#                      The results file, end to end on a shipped replicate (tiny study)
# ---------------------------------------------------------------------------------------------------

TINY = {"num_samples": 100, "num_steps": 2, "head_ks": [1], "last_k": 1}
NAME = "regime/d256-p6-b64-s0"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setattr(in_regime, "REFERENCE_SIZE", 500)
    patch.setattr(in_regime, "LIVE_SAMPLES", 10)
    patch.setattr(in_regime, "N_BOOT", 20)
    path = tmp_path_factory.mktemp("in_regime") / "s0.npz"
    in_regime.measure(NAME, TINY, path=path, progress=False)
    yield path, in_regime.study_spec(in_regime.load(NAME), in_regime.DEFAULTS | TINY)
    patch.undo()


@pytest.mark.slow
def test_a_measured_file_reads_back_and_its_live_subset_matches(measured):
    path, spec = measured
    stored = in_regime.read_results(path, spec)
    table = in_regime.results_table(stored, 10)
    assert len(table) == len(spec["cfg_scales"]) * in_regime.expected_settings(spec)
    assert (table["high"] >= table["low"]).all() and in_regime.floors(table).gt(0).all()
    cfg = spec["cfg_scales"][0]
    checks = in_regime.live_check(NAME, stored, in_regime.DEFAULTS | TINY, cfg, ["unpruned", "head-1-recomputed"])
    assert (checks["pixels off by more"] == 0).all()


@pytest.mark.slow
def test_a_hand_edited_or_stale_file_is_refused(measured, tmp_path):
    path, spec = measured
    stored = in_regime.read_results(path, spec)
    stored["rows"][3]["per_digit"] += 0.1  # a summary edited by hand
    with pytest.raises(ValueError, match="edited by hand"):
        in_regime.results_table(stored, 10)
    stored = in_regime.read_results(path, spec)
    cfg = spec["cfg_scales"][0]
    stored["arrays"][f"{cfg:g}/unpruned/live"] = 255 - stored["arrays"][f"{cfg:g}/unpruned/live"]  # stale images
    with pytest.raises(ValueError, match="stale or edited"):
        in_regime.live_check(NAME, stored, in_regime.DEFAULTS | TINY, cfg, ["unpruned"])


@pytest.mark.slow
def test_another_study_or_a_broken_file_is_refused_and_nothing_is_overwritten(measured, tmp_path):
    path, spec = measured
    before = path.read_bytes()
    with pytest.raises(ValueError, match="a different parameters"):
        in_regime.measure(NAME, TINY | {"num_steps": 3}, path=path, progress=False)
    assert path.read_bytes() == before
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(before[: len(before) // 2])
    with pytest.raises(ValueError, match="cannot be read"):
        in_regime.read_results(truncated, spec)
    with pytest.raises(FileNotFoundError, match="in_regime measure"):
        in_regime.read_results(tmp_path / "missing.npz", spec)
    partial = in_regime.read_results(path, spec)
    partial["rows"] = partial["rows"][:-1]
    in_regime.write_results(tmp_path / "partial.npz", json.loads(json.dumps(spec)), partial)
    with pytest.raises(ValueError, match="incomplete"):
        in_regime.read_results(tmp_path / "partial.npz", spec)


@pytest.mark.parametrize("change, match", [({"tail_share": 1.0}, "tail_share"), ({"tail_share": 0.0}, "tail_share"),
                                           ({"head_ks": [16]}, "head_ks"), ({"head_ks": [0]}, "head_ks"),
                                           ({"head_ks": []}, "head_ks"), ({"num_samples": 20}, "num_samples")])
def test_bad_study_parameters_are_one_line_errors(change, match):
    bundle = tiny_bundle(num_classes=5)  # hidden size 16
    with pytest.raises(ValueError, match=match) as error:
        in_regime.check_study(bundle, in_regime.DEFAULTS | {"head_ks": [1, 2]} | change)
    assert "\n" not in str(error.value)


def test_the_papers_head_rows_give_the_bar_and_the_shares():
    ratios = in_regime.paper_head_ratios()
    assert sorted(ratios) == [2, 8] and ratios[2] < in_regime.DESTROYED_RATIO < ratios[8]
    assert in_regime.DESTROYED_RATIO == pytest.approx((ratios[2] * ratios[8]) ** 0.5)
    assert [(count, d) for count, _, d in in_regime.paper_head_rows()] == [(2, 1152), (8, 1152)]
