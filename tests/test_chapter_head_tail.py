"""The head-and-tail chapter's logic (bottleneck_utils.chapters.head_tail): its parameters, the head/tail split, the
threshold sweep, the variance across classes, the class probe, its figures and its verdict rows, on a tiny random
bundle and on fabricated results."""

import ast

import jupytext
import matplotlib
import pytest
import torch

from bottleneck_utils import stats
from bottleneck_utils.chapters import head_tail, regime, report
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from tests.conftest import tiny_bundle
from tools import book

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

SOURCE = book.SOURCES / "head_tail.md"


def test_parameters_cell_assigns_exactly_the_spec():
    assert book.declared_parameters(jupytext.read(SOURCE)) == set(head_tail.PARAMETERS)


def test_every_paper_value_is_quoted_by_the_prose():
    prose = SOURCE.read_text()
    assert all(f"{{glue:text}}`{name}" in prose for name in head_tail.paper_values())


def test_the_book_judges_the_in_regime_rung_with_mnist_dit_beside_it():
    cell = next(cell for cell in jupytext.read(SOURCE).cells if "parameters" in cell.metadata.get("tags", []))
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}
    assert values["model"] in regime.replicate_table(regime.paper_bands()).query("`in regime`").index
    assert "mnist-dit" in values["beside"] and values["model"] not in values["beside"]


@pytest.mark.parametrize("head_share, tail_share", [(0.6, 0.5), (0.0, 0.3), (0.02, 1.0), (-0.1, 0.3)])
def test_shares_that_overlap_or_leave_0_1_are_refused(head_share, tail_share, bundle):
    with pytest.raises(ValueError, match="head_share and tail_share must be in"):
        head_tail.check_shares(head_share, tail_share)
    with pytest.raises(ValueError, match="head_share and tail_share must be in"):
        head_tail.measure(bundle, 10, head_share, tail_share, 4)
    head_tail.check_shares(0.02, 0.3894)


def test_nearest_centroid_accuracy_is_one_when_separable_and_chance_without_a_class():
    labels = torch.arange(4).expand(6, -1)  # (T, n)
    separable = torch.eye(4).expand(6, -1, -1) + 0.01 * torch.randn(6, 4, 4, generator=torch.Generator().manual_seed(0))
    assert head_tail.nearest_centroid_accuracy(separable, labels) == 1.0
    assert head_tail.nearest_centroid_accuracy(torch.zeros(6, 4, 3), labels) == 0.25  # every point alike: class 0


def test_measure_splits_the_mean_vector_into_head_and_tail(bundle):
    results = head_tail.measure(bundle, 10, 0.1, 0.4, 4)
    t0 = first_sampling_timestep(bundle, 10)
    c = conditional_vectors(bundle, timesteps=t0).double()
    torch.testing.assert_close(results["c_mean"], c.mean(0))
    D, magnitude = results["D"], results["c_mean"].abs()
    assert (D, results["n_head"], results["n_tail"]) == (16, 2, 6)
    assert set(results["head_dims"].tolist()) == set(magnitude.topk(2).indices.tolist())
    assert set(results["tail_dims"].tolist()) == set((-magnitude).topk(6).indices.tolist())
    assert results["tail_tau"] < results["head_tau"] and results["max_c"] == magnitude.max().item()
    assert results["energy_head"] == pytest.approx((magnitude.topk(2).values ** 2).sum() / (magnitude ** 2).sum())
    assert results["npr_c"] == stats.mean_npr(c).item() and 0 <= results["head_from_t"] <= 2
    y, t = (conditional_vectors(bundle, timesteps=t0, part=part) for part in ("y", "t"))
    assert results["cos_y"] == pytest.approx(stats.summary(y, t[0])["cos_y"], rel=1e-6)  # the regime's statistic
    # the paper's thresholds and the sweep
    assert list(results["paper_taus"]["τ"]) == list(head_tail.PAPER_TAUS)
    assert results["s_tail_001"] == stats.tail_fraction(results["c_mean"], 0.01).item()
    assert results["per_class"].shape == (5, 200)
    # the variance across classes
    assert results["mean_variance"] == pytest.approx(c.var(0, unbiased=False).mean().item(), rel=1e-12)
    assert 1 <= results["dims_50"] <= results["dims_90"] <= D
    assert results["cumulative"][-1].item() == pytest.approx(1.0)
    # the probe: one point per class and timestep
    assert results["points"].shape == (4, 5, 16) and results["chance"] == 0.2
    assert set(results["accuracy"]) == {"full", "head only", "tail only"}
    assert all(0 <= value <= 1 for value in results["accuracy"].values())


def test_figures_have_their_panels(bundle):
    results = head_tail.measure(bundle, 10, 0.1, 0.4, 4)
    magnitudes = head_tail.magnitudes_figure(results, "tiny")
    assert len(magnitudes.axes) == 3 and "t₀ = 999" in magnitudes._suptitle.get_text()
    variance = head_tail.variance_figure(results, "tiny")
    assert variance.axes[1].get_title() == f"{results['dims_90']} dims hold 90% of the variance"
    tsne = head_tail.tsne_figure(results, 12, 0, "tiny")
    assert [len(ax.collections[0].get_offsets()) for ax in tsne.axes] == [12, 12, 12]
    assert tsne.axes[1].get_title().startswith("head only (2 dims)")
    for figure in (magnitudes, head_tail.thresholds_figure(results, "tiny"), variance, tsne):
        plt.close(figure)
    one_dim = results | {"views": results["views"] | {"head only": results["views"]["head only"][:1]}}
    tsne = head_tail.tsne_figure(one_dim, 12, 0, "tiny")  # a head of one coordinate (hidden size below ~75)
    assert tsne.axes[1].get_title().startswith("head only (1 dims)")
    plt.close(tsne)


def test_measure_models_keeps_the_judged_model_first_and_tabulates_each(bundle):
    other = tiny_bundle(seed=1)
    found = head_tail.measure_models({"tiny": bundle, "tiny-1": other}, 10, 0.1, 0.4, 4)
    assert list(found) == ["tiny", "tiny-1"] and found["tiny-1"]["npr_c"] != found["tiny"]["npr_c"]
    table = head_tail.beside_table(found)
    assert list(table.columns) == ["paper", "tiny (outside the regime)", "tiny-1 (outside the regime)"]
    assert table.loc["nPR(c) at t₀ (mean over classes)", "tiny (outside the regime)"] == f"{found['tiny']['npr_c']:.2%}"
    assert table.loc["cos(y) at t₀", "paper"] == "0.5194–0.8540 (Table 4)"
    with pytest.raises(ValueError, match="head_share and tail_share must be in"):
        head_tail.measure_models({"tiny": bundle}, 10, 0.6, 0.5, 4)


def fabricated(**changes) -> dict:
    """Results of a sparse model of the paper's scale whose head carries the class: every claim holds."""
    return {"npr_c": 0.05, "cos_y": 0.6, "max_c": 2.0, "s_tail_001": 0.9, "energy_head": 0.8, "n_head": 23, "dims_90": 10,
            "D": 1152, "mean_variance": 0.001, "accuracy": {"full": 0.9, "head only": 0.88, "tail only": 0.12},
            "chance": 0.1} | changes


def by_claim(rows: list[dict]) -> dict[str, str]:
    assert report.rule_violations(rows) == []
    return {row["claim"]: row["verdict"] for row in rows}


def test_claims_reproduced_on_a_model_like_the_papers():
    rows = head_tail.claims(fabricated(), 0.02)
    verdicts = by_claim(rows)
    assert len(verdicts) == 9 and set(verdicts.values()) == {"met", "reproduced"}
    assert "the head (top 2% of dims) holds most of the magnitude (§3)" in verdicts
    # the regime preconditions are the rows every chapter shares
    assert rows[:2] == regime.precondition_rows(fabricated(), regime.paper_bands())


def test_a_tail_that_carries_the_class_is_not_reproduced():
    rows = head_tail.claims(fabricated(accuracy={"full": 0.9, "head only": 0.2, "tail only": 0.9}), 0.02)
    verdicts = by_claim(rows)
    assert verdicts["tail-only loses the class (Fig. 13)"] == "not reproduced"
    assert verdicts["head-only keeps the class (Fig. 13)"] == "not reproduced"


def test_a_dense_or_small_c_makes_its_claims_untestable():
    verdicts = by_claim(head_tail.claims(fabricated(npr_c=0.5, max_c=0.1), 0.02))
    assert [v for claim, v in verdicts.items() if claim.startswith("precondition")] == ["unmet", "met", "unmet"]
    assert {v for claim, v in verdicts.items() if not claim.startswith("precondition")} == {"not testable here"}
    # no margin over chance: the tail's share of it is undefined, so the claim is not judged
    chance_only = by_claim(head_tail.claims(fabricated(accuracy={"full": 0.1, "head only": 0.1, "tail only": 0.1}),
                                            0.02))
    assert chance_only["tail-only loses the class (Fig. 13)"] == "not testable here"


def test_an_out_of_regime_model_is_not_testable_never_not_reproduced():
    """mnist-dit's numbers: a dense c, y alone anti-aligned, the class in the tail. Every test but one would fail,
    yet each claim is not testable here: the regime is a precondition, not a claim."""
    mnist_dit = fabricated(npr_c=0.4943, cos_y=-0.0729, max_c=1.412, s_tail_001=0.055, energy_head=0.25, n_head=3,
                           dims_90=74, D=128, mean_variance=0.0096,
                           accuracy={"full": 1.0, "head only": 0.115, "tail only": 0.99})
    rows = head_tail.claims(mnist_dit, 0.02)
    verdicts = by_claim(rows)
    assert [row["verdict"] for row in rows if row["kind"] == "precondition"] == ["unmet", "unmet", "met"]
    assert {row["verdict"] for row in rows if row["kind"] == "claim"} == {"not testable here"}
    assert "not reproduced" not in verdicts.values()
    assert sum(not report.holds(row["value"], row["op"], row["bar"]) for row in rows if row["kind"] == "claim") == 6
    # the same numbers on an in-regime model are judged: the failed tests become "not reproduced"
    judged = by_claim(head_tail.claims(mnist_dit | {"npr_c": 0.05, "cos_y": 0.6}, 0.02))
    assert list(judged.values()).count("not reproduced") == 6


def test_claims_beside_judge_every_model_by_the_same_rows():
    table = head_tail.claims_beside({"judged": fabricated(), "small": fabricated(npr_c=0.5, cos_y=-0.07)}, 0.02)
    assert list(table.columns) == ["paper", "judged", "small"]
    claims = [claim for claim in table.index if not claim.startswith("precondition")]
    assert table.loc[claims, "judged"].str.endswith("→ reproduced").all()
    assert table.loc[claims, "small"].str.endswith("→ not testable here").all()
