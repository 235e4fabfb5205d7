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
