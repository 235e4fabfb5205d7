"""The continuous-conditions chapter's module: its parameters match the notebook's, its measurements run end to end on
a tiny continuous DiT with fabricated Ising data, and its verdict rows follow the numbers they are given."""

import dataclasses
import math
from pathlib import Path

import jupytext
import matplotlib
import numpy as np
import pytest
import torch
from conftest import tiny_transformer
from diffusers import DDIMScheduler

from bottleneck_utils.chapters import continuous as chapter
from bottleneck_utils.chapters import paper, report
from bottleneck_utils.continuous import ConditionRange, install_condition_embedders
from bottleneck_utils.models import DDPM, Bundle, block_embedders, tie_embedder_copies
from bottleneck_utils.organisms.data import IsingData
from tools import book

matplotlib.use("Agg")

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "continuous.md"
RANGE = ConditionRange("temperature", 0.0, 4.5)
TINY_PARAMETERS = {"model": "tiny-continuous", "device": "cpu", "dtype": "float32", "seed": 0, "num_steps": 3,
                   "cfg_scale": 1.0, "n_grid": 8, "n_samples": 12, "n_bins": 3, "n_bootstrap": 20,
                   "tail_fractions": [0.4, 0.6], "last_k": 2, "head_ks": [2, 4], "text_model": None,
                   "text_prompts_file": None, "text_device": "cpu"}


def continuous_bundle(seed: int = 0) -> Bundle:
    """conftest's tiny DiT with its label tables replaced by identical continuous embedders over ``RANGE``."""
    transformer = tiny_transformer(seed=seed)
    embedders = block_embedders(transformer)
    install_condition_embedders(embedders, RANGE)
    tie_embedder_copies(transformer)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="trailing")
    return Bundle("tiny-continuous", embedders[0], 0, DDPM, transformer.eval(), scheduler, condition=RANGE)


def fabricated_real(n: int = 60, size: int = 8) -> IsingData:
    """Random spins at temperatures spread over ``RANGE``: a stand-in for the mdsdata set (offline)."""
    generator = np.random.default_rng(0)
    spins = np.where(generator.random((n, size, size)) > 0.5, 1, -1).astype(np.int8)
    return IsingData(spins=spins, temperature=np.linspace(0.1, 4.4, n), above_tc=np.zeros(n, dtype=np.int64))


@pytest.fixture(scope="module")
def results():
    return chapter.measure(continuous_bundle(), TINY_PARAMETERS, real=fabricated_real())


# ---------------------------------------------------------------------------------------------------
#                                              Parameters
# ---------------------------------------------------------------------------------------------------


def test_the_parameters_cell_assigns_exactly_the_spec():
    assert book.declared_parameters(jupytext.read(NOTEBOOK)) == set(chapter.PARAMETERS)


def test_the_notebook_defines_no_function_or_class():
    code = "\n".join(cell.source for cell in jupytext.read(NOTEBOOK).cells if cell.cell_type == "code")
    assert not any(line.lstrip().startswith(("def ", "class ")) for line in code.splitlines())
    assert "claim_row" not in code and "precondition_row" not in code


def test_the_spec_accepts_the_tiny_parameters_and_refuses_a_bad_type():
    assert report.notebook_parameters(dict(TINY_PARAMETERS), chapter.PARAMETERS) == TINY_PARAMETERS
    with pytest.raises(TypeError, match="num_steps"):
        report.notebook_parameters(TINY_PARAMETERS | {"num_steps": 2.5}, chapter.PARAMETERS)


@pytest.mark.parametrize("bad", [{"tail_fractions": [0.0]}, {"tail_fractions": [1.0]}, {"last_k": 0},
                                 {"last_k": 4}, {"head_ks": [0]}])
def test_measure_refuses_bad_pruning_parameters(bad):
    with pytest.raises(ValueError, match="tail_fractions"):
        chapter.measure(continuous_bundle(), TINY_PARAMETERS | bad, real=fabricated_real())


def test_load_model_refuses_a_class_conditional_model(monkeypatch):
    class_conditional = dataclasses.replace(continuous_bundle(), condition=None)
    monkeypatch.setattr(chapter, "load", lambda *args, **kwargs: class_conditional)
    with pytest.raises(ValueError, match="class-conditional"):
        chapter.load_model(TINY_PARAMETERS)


# ---------------------------------------------------------------------------------------------------
#                                             Measurements
# ---------------------------------------------------------------------------------------------------


def test_quality_is_measured_at_evenly_spaced_temperatures(results):
    assert torch.equal(results["requested"], torch.linspace(0.0, 4.5, 12, dtype=torch.float64))
    assert np.allclose(results["edges"], np.linspace(0.0, 4.5, 4))
    assert results["baseline_images"].shape == (12, 1, 8, 8)
    baseline = results["baseline"]
    assert baseline["dE_low"] <= baseline["dE"] <= baseline["dE_high"] and -1 <= baseline["spearman"] <= 1


def test_statistics_are_those_of_c_equal_y_plus_t(results):
    c, y, t = results["c"], results["y"], results["t_vector"]
    assert c.shape == (8, 16) and torch.allclose(c, y + t)
    cosines = torch.nn.functional.cosine_similarity(c[:, None], c[None], dim=-1)
    off_diagonal = cosines[~torch.eye(8, dtype=torch.bool)]
    assert math.isclose(results["ours"]["cos_c"], off_diagonal.mean().item(), rel_tol=1e-4)
    assert 0 <= results["above_999"] <= results["above_99"] <= 1


def test_pruning_samples_every_setting_from_the_baseline_noise(results):
    pruned = results["pruned"]
    assert next(iter(pruned)) == "baseline" and len(pruned) == 1 + len(results["settings"])
    assert [name for name, _, _ in results["settings"]][-2:] == [chapter.head_setting(4), "random 4 dims, tᵢ"]
    assert pruned["baseline"]["delta_low"] == pruned["baseline"]["delta_high"] == 0.0  # paired with itself
    assert results["reference_fraction"] == 0.4 and results["pruning"]["setting"].tolist() == list(pruned)
    assert int(pruned[chapter.head_setting(2)]["mask"].removed_count) == 2


def test_glued_values_are_read_from_the_results(results):
    values = chapter.glued(results)
    assert values["n_grid"] == 8 and values["hidden"] == 16 and values["lattice"] == "8×8" and values["n_real"] == 60
    assert values["forty_dE"] == results["pruned"][results["tail_setting"]]["dE"]
    assert values["head_dE"] == results["pruned"][chapter.head_setting(2)]["dE"]
    assert values["paper_cos_low"] <= values["paper_cos_high"]


@pytest.mark.parametrize("name", ["samples_figure", "quality_figure", "table5_figure", "cosine_matrix_figure",
                                  "schedule_figure", "head_tail_figure", "pruning_figure"])
def test_figures_draw(results, name):
    figure = getattr(chapter, name)(results)
    titles = [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
    assert any("tiny-continuous" in title for title in titles)
    matplotlib.pyplot.close(figure)


def test_tables_render(results):
    assert "tiny-continuous" in chapter.table5_view(results).to_html()
    assert chapter.table1_view(results).data.loc["tiny-continuous", "D"] == 16
    assert len(chapter.pruning_view(results).data) == 1 + len(results["settings"])
    assert "binned comparison" in chapter.quality_table(results).to_html()
    assert "statistics at t₀" in chapter.statistics_table(results).to_html()
    assert "relative change of FID" in chapter.table7_view().to_html()


def test_measure_text_without_a_model_is_none_and_a_model_needs_prompts(capsys):
    assert chapter.measure_text(None, None, "cpu") is None and "not measured" in capsys.readouterr().out
    with pytest.raises(ValueError, match="text_prompts_file"):
        chapter.measure_text("some/model", None, "cpu")


# ---------------------------------------------------------------------------------------------------
#                                               Verdict
# ---------------------------------------------------------------------------------------------------


def fabricated_results(**changes) -> dict:
    """A results object as :func:`chapter.measure` gives, with the numbers of a model that passes every test."""
    bars = paper.BARS
    baseline = {"spearman": 0.95, "dE": 0.02, "dE_low": 0.015, "dE_high": 0.025}

    def setting(dE, delta_low, delta_high, dE_low=None):
        return {"dE": dE, "dE_low": dE if dE_low is None else dE_low, "spearman": 0.9, "delta_low": delta_low,
                "delta_high": delta_high}

    pruned = {"baseline": setting(0.02, 0.0, 0.0), "tail 40%, tᵢ": setting(0.021, -0.004, 0.005),
              "random 40%, tᵢ": setting(0.2, 0.1, 0.3), chapter.head_setting(2): setting(0.5, 0.3, 0.6, dE_low=0.4),
              chapter.head_setting(8): setting(0.9, 0.7, 1.0, dE_low=0.8)}
    results = {"baseline": baseline, "ours": {"cos_c": 0.9999, "cos_y": 0.999, "npr_c": 0.01},
               "above_99": 0.95, "reference_removed": 0.4, "pruned": pruned, "tail_setting": "tail 40%, tᵢ",
               "random_setting": "random 40%, tᵢ", "largest_setting": "tail 40%, tᵢ", "head_ks": [2, 8],
               "hidden": 64, "text_row": None}
    assert results["ours"]["npr_c"] <= bars["sparse_npr"] and bars["continuous_npr_range"][0] > 0.01
    return results | changes


def verdicts(rows: list[dict]) -> dict[str, str]:
    return {row["claim"]: row["verdict"] for row in rows}


def test_claims_follow_the_rule_and_name_every_row():
    rows = chapter.claims(fabricated_results())
    assert report.rule_violations(rows) == [] and len(rows) == 11
    found = verdicts(rows)
    assert found["precondition: the organism follows T: rank correlation"] == "met"
    assert found["continuous conditions: c = y + t is almost one direction (Table 5)"] == "reproduced"
    assert found["continuous conditions: y alone is already highly aligned (Table 5)"] == "reproduced"
    assert found["the nPR of c is moderate for continuous conditions (Table 5)"] == "not reproduced"  # 1% < the range
    assert found["pruning the tail (40% of c) keeps quality (Table 7)"] == "reproduced"
    assert found["zeroing a few head coordinates destroys generation (top-2)"] == "reproduced"
    assert found["SD3 (Table 5): the cosine of c"] == "not testable here"
    head = next(row for row in rows if row["claim"].startswith("zeroing"))
    assert "harm from top-2 (3.1% of D)" in head["ours"] and "×25.00" in head["ours"]


def test_a_harmful_tail_mask_is_not_reproduced():
    results = fabricated_results()
    results["pruned"]["tail 40%, tᵢ"] = results["pruned"]["tail 40%, tᵢ"] | {"delta_low": 0.01, "delta_high": 0.05}
    found = verdicts(chapter.claims(results))
    assert found["pruning the tail (40% of c) keeps quality (Table 7)"] == "not reproduced"


def test_a_harmless_random_control_makes_the_pruning_claim_untestable():
    results = fabricated_results()
    results["pruned"]["random 40%, tᵢ"] = results["pruned"]["random 40%, tᵢ"] | {"delta_low": -0.01}
    found = verdicts(chapter.claims(results))
    assert found["pruning the tail (40% of c) keeps quality (Table 7)"] == "not testable here"


def test_an_organism_that_ignores_T_makes_its_claims_untestable_and_a_text_row_is_judged():
    results = fabricated_results(baseline={"spearman": 0.1, "dE": 0.02, "dE_low": 0.015, "dE_high": 0.025},
                                 text_row={"cos_c": 0.5})
    found = verdicts(chapter.claims(results))
    assert found["precondition: the organism follows T: rank correlation"] == "unmet"
    assert found["continuous conditions: c = y + t is almost one direction (Table 5)"] == "not testable here"
    assert found["SD3 (Table 5): the cosine of c"] == "not reproduced"


def test_head_onset_names_no_harm_when_no_head_interval_clears_the_baseline():
    results = fabricated_results()
    for k in (2, 8):
        results["pruned"][chapter.head_setting(k)]["dE_low"] = 0.01
    assert chapter.head_onset(results) == "no harm up to top-8"
