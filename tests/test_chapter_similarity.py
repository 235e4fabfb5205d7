"""The similarity chapter's logic (bottleneck_utils.chapters.similarity): its parameters, measurements, figures and
verdict rows, on a tiny random bundle and on fabricated results."""

import jupytext
import matplotlib
import pandas as pd
import pytest
import torch

from bottleneck_utils import stats
from bottleneck_utils.chapters import paper, report, similarity
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from tests.conftest import tiny_bundle
from tools import book

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen


def test_parameters_cell_assigns_exactly_the_spec():
    assert book.declared_parameters(jupytext.read(book.SOURCES / "similarity.md")) == set(similarity.PARAMETERS)


def test_measure_reads_c_at_t0_every_table_and_the_schedule(bundle):
    other = tiny_bundle(seed=1)
    results = similarity.measure(bundle, 10, {0: bundle, 1: other}, {"tiny": bundle}, 0.4)
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
    assert list(comparison.index) == [*paper.TABLE4, "tiny"]
    assert comparison.loc["tiny", "cosine (y+t)"] == results["ours"]["cos_c"]
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
    results = similarity.measure(bundle, 10, {0: bundle, 1: bundle}, {"tiny": bundle}, 0.4)
    figures = [similarity.beside_paper_figure(results["comparison"], bundle.name),
               similarity.cosine_matrices_figure(results, 3, bundle),  # 5 classes: a zoom on 3
               similarity.cosine_matrices_figure(results, 10, bundle),  # no zoom on 5 classes
               similarity.schedule_figure(results, bundle), similarity.paths_figure(results["paths"])]
    heatmaps = [len([ax for ax in figure.axes if ax.get_title()]) for figure in figures[1:3]]
    assert heatmaps == [3, 2]
    assert [line.get_label() for line in figures[-1].axes[1].get_lines()] == ["tiny"]
    for figure in figures:
        plt.close(figure)


def fabricated(above_99: float = 0.95, **changes) -> dict:
    """Results of an aligned, sparse model whose y alone is moderately aligned: every claim holds."""
    ours = {"cos_c": 0.99, "cos_y": 0.6, "npr_c": 0.05, "npr_y": 0.5}
    return {"ours": ours | changes, "above_99": above_99}


def verdicts(rows: list[dict]) -> dict[str, str]:
    assert report.rule_violations(rows) == []
    return {row["claim"].split(":")[0] if row["kind"] == "claim" else "precondition": row["verdict"] for row in rows}


def test_claims_reproduced_on_a_model_like_the_papers():
    found = verdicts(similarity.claims(fabricated()))
    assert found["precondition"] == "met"
    assert set(found.values()) == {"met", "reproduced"} and len(found) == 5


def test_a_dense_c_fails_the_sparsity_claim():
    rows = similarity.claims(fabricated(npr_c=0.5))
    sparsity = next(row for row in rows if row["claim"].startswith("extreme sparsity"))
    assert sparsity["verdict"] == "not reproduced" and sparsity["value"] == 0.5


def test_an_unaligned_c_makes_the_alignment_claims_untestable():
    rows = similarity.claims(fabricated(cos_c=0.3, above_99=0.0))
    assert [row["verdict"] for row in rows] == ["reproduced", "unmet", "not testable here", "not testable here",
                                                "not testable here"]
    schedule = similarity.claims(fabricated(above_99=0.5))[-1]
    assert schedule["claim"].startswith("the cosine stays") and schedule["verdict"] == "not reproduced"
