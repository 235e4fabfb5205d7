"""The similarity chapter's logic (bottleneck_utils.chapters.similarity): its parameters, measurements, figures and
verdict rows, on a tiny random bundle and on fabricated results."""

import ast

import jupytext
import matplotlib
import pandas as pd
import pytest
import torch

from bottleneck_utils import stats
from bottleneck_utils.chapters import paper, regime, report, similarity
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from tests.conftest import tiny_bundle
from tools import book

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

SOURCE = book.SOURCES / "similarity.md"


def test_parameters_cell_assigns_exactly_the_spec():
    assert book.declared_parameters(jupytext.read(SOURCE)) == set(similarity.PARAMETERS)


def test_every_paper_value_is_quoted_by_the_prose():
    prose = SOURCE.read_text()
    assert all(f"{{glue:text}}`{name}" in prose for name in similarity.paper_values())
    assert similarity.paper_values()["paper_npr_high"] == paper.BARS["sparse_npr"]  # one regime bar, two names


def test_the_book_judges_the_in_regime_rung_with_mnist_dit_beside_it():
    """The default judged model is a shipped in-regime replicate; mnist-dit is shown beside it as the contrast."""
    source = jupytext.read(SOURCE)
    cell = next(cell for cell in source.cells if "parameters" in cell.metadata.get("tags", []))
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse(cell.source).body}
    assert values["model"] in regime.replicate_table(regime.paper_bands()).query("`in regime`").index
    assert "mnist-dit" in values["beside"] and values["model"] not in values["beside"]


def test_measure_reads_c_at_t0_every_table_and_the_schedule(bundle):
    other = tiny_bundle(seed=1)
    other.name = "tiny-1"
    results = similarity.measure(bundle, 10, {0: bundle, 1: other}, {"tiny": bundle}, 0.4,
                                 {"tiny": bundle, "tiny-1": other})  # the judged model's own name is skipped
    t0 = first_sampling_timestep(bundle, 10)
    assert results["t0"] == t0 == 999  # DDIM, 10 trailing steps of 1000: the first is 999
    y, t = (conditional_vectors(bundle, timesteps=t0, part=part) for part in ("y", "t"))
    torch.testing.assert_close(results["c"], y + t[0])
    assert results["ours"] == stats.summary(y, t[0], detail=True)
    # each sinusoid's column is the summary of the bundle loaded with it
    assert list(results["shifts"].columns) == ["shift 0 (original DiT)", "shift 1 (diffusers)"]
    y1, t1 = (conditional_vectors(other, timesteps=t0, part=part) for part in ("y", "t"))
    assert results["shifts"].iloc[:, 1].to_dict() == pytest.approx(stats.summary(y1, t1[0]))
    assert results["shifts"].iloc[:, 0].to_dict() == pytest.approx(stats.summary(y, t[0]))
    # the paper's models and ours, in one table
    comparison = results["comparison"]
    assert list(comparison.index) == [*paper.TABLE4, "tiny", "tiny-1"]
    assert comparison.loc["tiny", "cosine (y+t)"] == results["ours"]["cos_c"]
    assert list(comparison["source"].iloc[-2:]) == [similarity.JUDGED, similarity.BESIDE]
    # the model beside it: measured the same way at its own t₀
    assert results["models"] == ["tiny", "tiny-1"] and list(similarity.by_model(results)) == ["tiny", "tiny-1"]
    assert results["beside"]["tiny-1"]["ours"] == stats.summary(y1, t1[0], detail=True)
    assert comparison.loc["tiny-1", "nPR (y+t)"] == results["beside"]["tiny-1"]["ours"]["npr_c"]
    # the whole DDPM range, every integer timestep
    cosine = results["sweep"]["cosine"]
    assert len(cosine) == 1000 and results["cos_min_t"] == cosine.min().item()
    assert results["above_99"] == (cosine > 0.99).double().mean().item()
    assert cosine[int(results["t_at_max"])] == results["cos_max_t"]
    assert list(results["path_table"].index) == ["tiny"] and set(results["paths"]) == {"tiny"}


def test_without_compared_organisms_there_is_no_path_table(bundle):
    sweeps, table = similarity.paths({}, 0.4)
    assert sweeps == {} and table is None
    assert "schedule_models` is empty" in similarity.path_sentence(None, 0.4)


def test_path_sentence_reads_one_sentence_per_organism():
    table = pd.DataFrame({"time": ["ddpm", "flow"], "nPR(c) at t₀": [0.1, 0.2], "nPR(c) max": [0.3, 0.4],
                          "‖Δc̄‖/‖c̄(t₀)‖": [0.25, 1.5], "tail(t₀) ∩ tail(end)": [1.0, 0.5]},
                         index=pd.Index(["a", "b"], name="model"))
    sentence = similarity.path_sentence(table, 0.39)
    assert sentence.count("The class-mean c of") == 2
    assert "b (flow time) travels 1.50 of its own" in sentence and "50% of its t₀ tail set (39%" in sentence


def test_figures_have_their_panels(bundle):
    other = tiny_bundle(seed=1)
    other.name = "tiny-1"
    results = similarity.measure(bundle, 10, {0: bundle, 1: bundle}, {"tiny": bundle}, 0.4, {"tiny-1": other})
    figures = [similarity.beside_paper_figure(results["comparison"], bundle.name),
               similarity.cosine_matrices_figure(results, 3, bundle),  # 5 classes: a zoom on 3
               similarity.cosine_matrices_figure(results, 10, bundle),  # no zoom on 5 classes
               similarity.schedule_figure(results, {"tiny": bundle, "tiny-1": other}),
               similarity.paths_figure(results["paths"])]
    heatmaps = [len([ax for ax in figure.axes if ax.get_title()]) for figure in figures[1:3]]
    assert heatmaps == [3, 2]
    assert [line.get_label() for line in figures[-1].axes[1].get_lines()] == ["tiny"]
    # Fig. 1: the judged model red, the one beside it blue; the schedule: one nPR curve per model
    bars = figures[0].axes[1].patches
    assert [bar.get_facecolor() for bar in bars[-2:]] == [matplotlib.colors.to_rgba(c) for c in ("C3", "C0")]
    assert [line.get_label() for line in figures[3].axes[1].get_lines()[:2]] == ["tiny", "tiny-1"]
    for figure in figures:
        plt.close(figure)


def fabricated(above_99: float = 0.95, **changes) -> dict:
    """Results of an aligned, sparse model whose y alone is moderately aligned: every claim holds."""
    ours = {"cos_c": 0.99, "cos_y": 0.6, "npr_c": 0.05, "npr_y": 0.5}
    return {"ours": ours | changes, "above_99": above_99}


def verdicts(rows: list[dict]) -> dict[str, str]:
    assert report.rule_violations(rows) == []
    return {row["claim"]: row["verdict"] for row in rows}


def test_claims_reproduced_on_a_model_like_the_papers():
    rows = similarity.claims(fabricated())
    found = verdicts(rows)
    assert list(found.values()) == ["met", "met", "reproduced", "reproduced", "reproduced", "reproduced"]
    # the preconditions are the regime's own rows, the vocabulary every chapter shares
    assert rows[:2] == regime.precondition_rows(fabricated()["ours"], regime.paper_bands())


def test_an_out_of_regime_model_is_not_testable_never_not_reproduced():
    """mnist-dit's numbers: a dense c whose y alone is anti-aligned. nPR(c) and cos(y) are the regime, so they are
    unmet preconditions, not failed claims, and every claim is not testable, though its test would fail."""
    rows = similarity.claims(fabricated(npr_c=0.4943, cos_y=-0.0729, cos_c=0.9366, above_99=0.0))
    found = verdicts(rows)
    assert [found[row["claim"]] for row in rows if row["kind"] == "precondition"] == ["unmet", "unmet"]
    assert {found[row["claim"]] for row in rows if row["kind"] == "claim"} == {"not testable here"}
    assert "not reproduced" not in found.values()
    assert any(not report.holds(row["value"], row["op"], row["bar"]) for row in rows if row["kind"] == "claim")
    # neither regime statistic is judged as a claim of its own: the sparsity claim is the precondition row
    assert not any(row["claim"].startswith("extreme sparsity") for row in rows)


def test_one_unmet_precondition_is_enough():
    dense = verdicts(similarity.claims(fabricated(npr_c=0.5)))
    unaligned_y = verdicts(similarity.claims(fabricated(cos_y=0.2, cos_c=0.99)))
    for found in (dense, unaligned_y):
        assert sorted(found.values()) == ["met", "not testable here", "not testable here", "not testable here",
                                          "not testable here", "unmet"]


def test_in_the_regime_a_failed_test_is_not_reproduced():
    schedule = similarity.claims(fabricated(above_99=0.5))[-1]
    assert schedule["claim"].startswith("the cosine stays") and schedule["verdict"] == "not reproduced"
    too_aligned = verdicts(similarity.claims(fabricated(cos_y=0.95, cos_c=0.999)))
    assert too_aligned["y alone is only moderately aligned: no more than Table 4's most aligned y"] == "not reproduced"
    assert too_aligned["alignment comes mostly from t: c is more aligned than y alone by Table 4's margin"] == (
        "not reproduced")


def test_claims_beside_judge_every_model_by_the_same_rows():
    results = fabricated() | {"models": ["judged", "small"],
                              "beside": {"small": fabricated(npr_c=0.5, cos_y=-0.07, above_99=0.0)}}
    table = similarity.claims_beside(results)
    assert list(table.columns) == ["paper", "judged", "small"]
    assert table["judged"].str.endswith(("met", "reproduced")).all()
    claims = [claim for claim in table.index if not claim.startswith("precondition")]
    assert (table.loc[claims, "small"].str.endswith("→ not testable here")).all()
    assert "→ unmet" in table.iloc[0]["small"]
    assert similarity.beside_sentence(results).count("`small`") == 1 and "outside the regime" in (
        similarity.beside_sentence(results))


def test_verdicts_beside_refuses_models_judged_on_other_claims():
    rows = similarity.claims(fabricated())
    with pytest.raises(ValueError, match="judged on other claims"):
        regime.verdicts_beside({"a": rows, "b": rows[:-1]})
    broken = [*rows[:-1], rows[-1] | {"verdict": "reproduced", "value": 0.0}]
    with pytest.raises(ValueError, match="b: verdicts that do not follow the rule"):
        regime.verdicts_beside({"a": rows, "b": broken})
