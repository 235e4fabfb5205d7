"""The regime chapter's logic: bands from paper.py, distances, axis moves, tail overlap (its pruning claims:
test_chapter_pruning.py)."""

import pandas as pd
import pytest
import torch

from bottleneck_utils.chapters import paper, regime
from bottleneck_utils.organisms import recipes


def test_bands_span_the_papers_imagenet_models():
    bands = regime.paper_bands()
    assert bands["npr_c"] == (paper.TABLE4["REPA"]["nPR_yt"], paper.TABLE4["DiT"]["nPR_yt"])  # 1.43% (sic)
    assert bands["cos_y"] == (paper.TABLE4["REPA"]["cosine_y"], paper.TABLE4["MDT"]["cosine_y"])
    assert regime.distance_to_band(0.5, (0.1, 0.2)) == pytest.approx(0.3)
    assert regime.distance_to_band(0.15, (0.1, 0.2)) == 0 and regime.distance_to_band(0.0, (0.1, 0.2)) == 0.1


def table(**rows):
    keys = ["npr_c", "cos_c", "cos_y", "npr_y"]
    return pd.DataFrame({name: dict(zip(keys, values)) for name, values in rows.items()}).T


def test_axis_moves_follow_the_stated_rule():
    bands = regime.paper_bands()
    rungs = table(**{"ladder/c10": (0.50, 0.93, -0.05, 0.60), "ladder/c100": (0.40, 0.93, 0.2, 0.6),
                     "ladder/c1000": (0.30, 0.93, -0.30, 0.90)})
    moves = regime.axis_moves(rungs, bands).set_index("statistic")["moves"]
    assert moves["npr_c"] == "toward"  # 0.50 → 0.30: the gap to 10.5% shrinks by half
    assert moves["cos_c"] == "in the band"
    assert moves["cos_y"] == "away"  # −0.05 → −0.30: further below 0.52
    assert moves["npr_y"] == "away"  # 0.60 is inside 36–70%, 0.90 is not
    assert set(regime.axis_moves(rungs, bands)["axis"]) == {"classes"}  # the other axes have no rungs here
    assert set(regime.axis_moves(rungs, bands)["ends below bar"]) == {""}  # no meets_bar column: none flagged
    rungs["meets_bar"] = [False, True, True]
    assert set(regime.axis_moves(rungs, bands)["ends below bar"]) == {"c10"}
    assert not regime.in_regime(rungs.loc["ladder/c1000"], bands)
    assert regime.in_regime(pd.Series({"npr_c": 0.05, "cos_y": 0.6}), bands)


def test_axis_moves_reads_a_partial_axis_to_its_furthest_shipped_rung():
    bands = regime.paper_bands()
    rungs = table(**{"ladder/c10": (0.50, 0.93, -0.05, 0.60), "ladder/c100": (0.30, 0.93, 0.2, 0.6)})
    moves = regime.axis_moves(rungs, bands)
    assert set(moves["from → to"]) == {"c10 → c100"} and set(moves["pending"]) == {"c1000"}
    assert moves.set_index("statistic").loc["npr_c", "last"] == 0.30
    assert regime.axis_moves(rungs.drop("ladder/c10"), bands).empty  # without the base rung there is no move


def test_tail_overlap_is_one_when_t_does_not_change_the_order(bundle):
    share = 0.25
    overlap = regime.tail_overlap(bundle, share)
    assert 0 <= overlap <= 1
    with torch.no_grad():  # a timestep embedding that is the same at every t: the tail sets coincide
        bundle.embedder.timestep_embedder.linear_1.weight.zero_()
    assert regime.tail_overlap(bundle, share) == 1.0


def test_replicates_are_counted_against_the_regime_and_pending_seeds_named():
    bands = regime.paper_bands()
    table = regime.replicate_table(bands)
    assert set(table.index) <= set(recipes.REGIME) and (table["seed"] == [recipes.seed_of(n) for n in table.index]).all()
    both = pd.DataFrame({"in regime": [True, False]}, index=list(recipes.REGIME)[:2])
    sentence = regime.replicate_sentence(both)
    assert sentence.startswith("1 of 2 shipped seeds are in the regime") and list(recipes.REGIME)[2] in sentence
    dense = pd.Series({"npr_c": 0.5, "cos_y": 0.6})  # a replicate whose c is not sparse is not in the regime
    assert not regime.in_regime(dense, bands)


def test_a_move_within_the_seed_spread_does_not_count():
    bands = regime.paper_bands()
    table = pd.DataFrame({"npr_c": [0.5, 0.4], "cos_c": [0.95, 0.95], "cos_y": [0.0, 0.3], "npr_y": [0.5, 0.5]},
                         index=["ladder/c10", "ladder/c10-long"])
    moves = regime.axis_moves(table, bands).set_index("statistic")["moves"]
    assert moves["npr_c"] == "toward" and moves["cos_y"] == "toward"
    spread = {"npr_c": 0.2, "cos_c": 0.0, "cos_y": 0.1, "npr_y": 0.0}
    moves = regime.axis_moves(table, bands, spread).set_index("statistic")["moves"]
    assert moves["npr_c"] == "within seed spread" and moves["cos_y"] == "toward"
    replicates = pd.DataFrame({"npr_c": [0.05, 0.06], "cos_c": [0.99, 0.99], "cos_y": [0.5, 0.7], "npr_y": [0.4, 0.4]})
    assert regime.seed_spread(replicates) == pytest.approx({"npr_c": 0.01, "cos_c": 0.0, "cos_y": 0.2, "npr_y": 0.0})


def test_the_seed_spread_is_the_widest_over_recipes_and_needs_two_seeds():
    regime_seeds = pd.DataFrame({"npr_c": [0.05, 0.06], "cos_c": [0.99, 0.99], "cos_y": [0.5, 0.7],
                                 "npr_y": [0.4, 0.4]})
    base_seeds = pd.DataFrame({"npr_c": [0.40, 0.50, 0.45], "cos_c": [0.9, 0.95, 0.9], "cos_y": [0.0, 0.1, 0.05],
                               "npr_y": [0.4, 0.4, 0.4]})
    lone = base_seeds.iloc[:1] * 10  # one seed has no spread and must not widen it
    spread = regime.seed_spread(regime_seeds, base_seeds, lone)
    assert spread == pytest.approx({"npr_c": 0.1, "cos_c": 0.05, "cos_y": 0.2, "npr_y": 0.0})
    with pytest.raises(ValueError, match="make train-ladder"):
        regime.seed_spread(lone)


def test_the_base_rungs_replicates_are_not_rungs_of_an_axis():
    assert {"ladder/c10-s1", "ladder/c10-s2"}.isdisjoint(regime.shipped_rungs())
    assert [recipes.seed_of(name) for name in recipes.BASE_SEEDS] == [0, 1, 2]
    assert all(recipes.recipe_of(name) == recipes.RUNGS["ladder/c10"] for name in recipes.BASE_SEEDS)


def write_run(folder, npr, device="cpu (1 thread)"):
    """A fabricated shipped run: a log every 100 steps with nPR(c) ``npr`` and its provenance."""
    import json

    from bottleneck_utils.organisms import train

    folder.mkdir(parents=True)
    rows = [{"step": 100 * i, "npr_c": value, "cos_c": 0.9, "head_energy": 0.5 - value / 2, "loss": 0.05 + (i == 9)}
            for i, value in enumerate(npr)]
    train.write_log(folder / "train_log.csv", rows)
    segment = {"steps": [0, 100 * (len(npr) - 1)], "device": device, "precision": "tf32"}
    (folder / "meta.json").write_text(json.dumps({"provenance": {"segments": [segment]}}))


def test_a_jump_of_npr_c_is_found_with_its_device_and_a_smooth_fall_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(regime, "CHECKPOINT_DIR", tmp_path)
    smooth = [0.9 - 0.02 * i for i in range(20)]
    jumpy = smooth[:9] + [smooth[8] + 2 * regime.JUMP_RISE] + smooth[10:]  # the rise at step 900, beside a loss spike
    early = [0.5, 0.5 + 2 * regime.JUMP_RISE] + smooth[2:]  # a rise before JUMP_FROM is not a jump
    write_run(tmp_path / "ladder" / "smooth", smooth)
    write_run(tmp_path / "ladder" / "jumpy", jumpy, device="cuda (one GPU)")
    write_run(tmp_path / "ladder" / "early", early)
    jumps, quiet = regime.npr_jumps(["ladder/smooth", "ladder/jumpy", "ladder/early"])
    assert list(jumps["run"]) == ["ladder/jumpy"] and list(jumps["step"]) == [900]
    assert jumps["trained on"].iloc[0] == "cuda (one GPU), tf32"
    assert jumps["loss / median before"].iloc[0] == pytest.approx(1.05 / 0.05)
    assert quiet == pytest.approx(0.0, abs=1e-12)  # the smooth runs never rise after JUMP_FROM
    sentence = regime.jump_sentence(jumps, 3)
    assert sentence.startswith("1 jump in 1 of the 3 runs") and "cuda (one GPU), tf32" in sentence
    assert sentence.endswith("fell in 1 of the 1.")  # the fabricated head share falls as nPR(c) rises
    assert regime.jump_sentence(jumps.iloc[:0], 3) == "No jump in the 3 runs."
    assert regime.first_divergence("ladder/smooth", "ladder/jumpy") == 900
    assert regime.first_divergence("ladder/smooth", "ladder/smooth") is None


def test_the_shipped_jumps_are_all_in_gpu_steps():
    """What the chapter reports: every jump in the shipped logs happened in a GPU step range."""
    names = regime.shipped_rungs() + list(recipes.REGIME)
    jumps, quiet = regime.npr_jumps(names)
    assert len(jumps) and all(device.startswith("cuda") for device in jumps["trained on"])
    assert quiet < regime.JUMP_RISE


def test_a_rebuild_is_set_beside_its_shipped_replicate(tmp_path, monkeypatch):
    import shutil

    from bottleneck_utils.integrity import CHECKPOINT_DIR
    from bottleneck_utils.organisms import train

    name = "regime/d256-p6-b64-s0"
    monkeypatch.setattr(regime, "REBUILDS_DIR", tmp_path)
    assert regime.rebuild_table(regime.paper_bands()).empty
    assert regime.rebuild_sentence(regime.rebuild_table(regime.paper_bands())).startswith("No rebuild is recorded")
    folder = tmp_path / name.replace("/", "--")
    folder.mkdir()
    for file in ("train_log.csv", "meta.json", "quality.json"):
        shutil.copy(CHECKPOINT_DIR / name / file, folder / file)
    same = regime.rebuild_table(regime.paper_bands())
    assert same.loc[name, "leaves the shipped log at step"] is None and bool(same.loc[name, "in regime"])
    assert "retraces the shipped one" in regime.rebuild_sentence(same)
    log = train.read_log(folder / "train_log.csv", "")
    log.loc[log["step"] >= 300, "npr_c"] += 0.01  # a run that leaves the shipped one at step 300
    log.loc[log.index[-1], "npr_c_ema"] = 0.5  # and ends with a dense c: out of the regime
    train.write_log(folder / "train_log.csv", log.to_dict("records"))
    moved = regime.rebuild_table(regime.paper_bands())
    assert moved.loc[name, "leaves the shipped log at step"] == 300 and not moved.loc[name, "in regime"]
    assert "not in the regime (nPR(c) 50.00%" in regime.rebuild_sentence(moved)
