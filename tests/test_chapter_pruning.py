"""The pruning protocol (chapters.pruning): settings, interval text, and the claims of the pruning, regime and beyond
chapters judged from fabricated results, where a deliberately harmful setting must come out "not reproduced"."""

from pathlib import Path

import jupytext
import pandas as pd
import pytest
import torch

from bottleneck_utils.chapters import beyond, paper, pruning, regime, report
from tools import book

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize("name, module", [("pruning", pruning), ("regime", regime), ("beyond", beyond)])
def test_parameters_cell_assigns_exactly_the_spec(name, module):
    assert book.declared_parameters(jupytext.read(NOTEBOOKS / f"{name}.md")) == set(module.PARAMETERS)


def test_interval_text_is_the_one_format():
    assert pruning.interval_text(1.234, -0.5, 2.0) == "+1.23 [-0.50, +2.00]"
    assert pruning.interval_text(1.234, 0.5, 2.0, 1, signed=False) == "1.2 [0.5, 2.0]"
    table = fid_table({"baseline": (10, 0, 0, 0), "tail 39%, tᵢ": (11, 1, 0.5, 1.5)})
    assert pruning.change_text(table, "tail 39%, tᵢ") == "+1.00 [+0.50, +1.50]"
    assert pruning.change_text(table, "missing") == pruning.change_text(table, None) == "—"


def test_paired_interval_brackets_the_mean():
    values = torch.tensor([0.0, 1.0] * 50)
    mean, low, high = pruning.paired_interval(values)
    assert mean == 0.5 and low < 0.5 < high and high - low < 0.3


def parameters(**changes) -> dict:
    values = {"model": "tiny", "device": "cpu", "dtype": "float32", "autocast": "auto", "seed": 0, "n_samples": 10,
              "num_steps": 4, "cfg_scale": None, "batch_size": 10, "tail_fractions": [0.25, 0.5],
              "head_fractions": [0.05], "tail_energy_shares": [], "taus": [], "schedules": ["every", "first", "last"],
              "k": 2, "head_schedules": ["every"], "control_schedules": ["every"], "granularity": "per-sample",
              "null_policy": "mask", "noise_seeds": [1], "n_boot": None, "reference_stats": "", "cpu_threads": None,
              "grid_columns": 2, "flow_comparison": [], "samples_dir": ""}
    assert set(values) == set(pruning.PARAMETERS)
    return values | changes


def test_resolve_fills_defaults_and_refuses_a_sweep_that_cannot_run():
    p = pruning.resolve(parameters(), embedded=True)
    assert (p["num_steps"], p["cfg_scale"], p["n_boot"], p["cpu_threads"], p["autocast"]) == (4, 3.0, 100, 1, None)
    for bad in ({"schedules": ["never"]}, {"k": 5}, {"noise_seeds": [0]}, {"tail_fractions": [1.5]},
                {"granularity": "sideways"}):
        with pytest.raises(ValueError):
            pruning.resolve(parameters(**bad), embedded=True)


def test_chapter_settings_pair_every_mask_with_its_schedules_and_a_control(bundle):
    p = pruning.resolve(parameters(), embedded=True)
    found = pruning.chapter_masks(bundle, p)
    settings, fixed, recomputed = pruning.chapter_settings(found, p)
    kinds = pd.Series([kind for kind, _, _ in settings.values()]).value_counts().to_dict()
    assert kinds == {"tail": 6, "random": 3, "none": 1, "head": 1, "recomputed": 1}  # 2 tails × 3 schedules
    assert fixed == "tail 25%, tᵢ" and recomputed == "tail 25% recomputed, tᵢ"
    assert settings["random (tail 25%), tᵢ"][1].removed_count == settings[fixed][1].removed_count
    assert found["magnitudes"].shape == (bundle.num_classes, bundle.hidden_size)  # the null row dropped


# ---------------------------------------------------------------------------------------------------
#                       The pruning chapter's claims, from a fabricated bootstrap table
# ---------------------------------------------------------------------------------------------------


def fid_table(rows: dict) -> pd.DataFrame:
    """A :func:`metrics.bootstrap_table` of FID only: setting → (value, delta, delta_low, delta_high)."""
    return pd.DataFrame([{"setting": name, "metric": "FID", "value": v, "low": v - 1, "high": v + 1, "delta": d,
                          "delta_low": lo, "delta_high": hi} for name, (v, d, lo, hi) in rows.items()]
                        ).set_index(["setting", "metric"])


D = 100


def scores(**changes) -> dict:
    """A sweep on a D = 100 model: a harmless 39% tail (three schedules), a destructive 96% tail and head, random
    controls that hurt."""
    rows = {"baseline": (10.0, 0.0, 0.0, 0.0),
            "tail 39%, tᵢ": (10.1, 0.1, -0.2, 0.4), "tail 39%, t₀": (10.0, 0.0, -0.1, 0.1),
            "tail 39%, last-3": (10.0, 0.0, -0.1, 0.1), "tail 96%, tᵢ": (85.0, 75.0, 65.0, 85.0),
            "head top-1 (1.0%), tᵢ": (90.0, 80.0, 70.0, 90.0),
            "random (tail 39%), tᵢ": (20.0, 10.0, 8.0, 12.0), "random (tail 96%), tᵢ": (95.0, 85.0, 75.0, 95.0),
            "random (head top-1 (1.0%)), tᵢ": (11.0, 1.0, 0.5, 1.5)} | changes
    kind = {"baseline": ("none", "—", 0)} | {name: (name.split()[0], name.rsplit(", ", 1)[1], 0) for name in rows
                                             if name != "baseline"}
    removed = {"baseline": 0, "tail 96%, tᵢ": 96, "random (tail 96%), tᵢ": 96, "head top-1 (1.0%), tᵢ": 1,
               "random (head top-1 (1.0%)), tᵢ": 1}
    info = pd.DataFrame([{"setting": name, "mask": kind[name][0], "schedule": kind[name][1],
                          "removed": removed.get(name, 39), "removed %": removed.get(name, 39) / D * 100,
                          "‖c‖² removed %": 1.0}
                         for name in rows]).set_index("setting")
    return {"table": fid_table(rows), "info": info,
            "seed_points": pd.DataFrame({"FID": [10.0, 10.5, 9.8]})}


def verdicts(rows: list[dict]) -> dict[str, str]:
    assert not report.rule_violations(rows)
    return {row["claim"]: row["verdict"] for row in rows}


def judged(**changes) -> dict[str, str]:
    savings = {"headline_ratio": 0.9, "headline_share": 0.3894, "saving_headline": 1e-4}
    return verdicts(pruning.claims(scores(**changes), hidden_size=D, k=3, statistics={"npr_c": 0.01, "cos_y": 0.6}, savings=savings,
                                   embedded=True, n_samples=100))


def test_pruning_claims_reproduce_on_a_harmless_tail():
    outcome = judged()
    assert outcome["precondition: the intact test can see harm: the random control of the tail's size fails it"] \
        == "met"
    intact = [claim for claim in outcome if "leaves quality intact" in claim]
    assert len(intact) == 3 and {outcome[claim] for claim in intact} == {"reproduced"}
    assert outcome["removing nearly all of the tail destroys generation"] == "reproduced"
    assert outcome["zeroing the head top-1 (1.0%) destroys generation"] == "reproduced"
    assert outcome["the tail is the harmless part: it hurts less than as many random coordinates"] == "reproduced"
    assert outcome["a sparse c makes the model faster (Fig. 42)"] == "reproduced but negligible"
    assert outcome["the paper's τ = 0.01 FID changes are above the seed-to-seed noise"] == "not testable here"


def test_a_harmful_tail_is_not_reproduced():
    outcome = judged(**{"tail 39%, tᵢ": (15.0, 5.0, 3.0, 7.0)})  # the interval stays above zero
    assert outcome["zeroing the tail (tail 39%) at every step leaves quality intact"] == "not reproduced"
    # a control that cannot see harm makes the intact claims untestable, never "reproduced"
    blind = judged(**{"random (tail 39%), tᵢ": (10.0, 0.0, -0.5, 0.5)})
    intact = [claim for claim in blind if "leaves quality intact" in claim]
    assert {blind[claim] for claim in intact} == {"not testable here"}


def test_summary_and_beside_read_the_same_settings():
    found = scores()
    summary = pruning.summary_table(found["table"], found["info"])
    assert summary.loc["tail 39%, tᵢ", "Δ FID"] == "+0.10 [-0.20, +0.40]"
    assert summary.loc["tail 39%, tᵢ", "FID"] == "10.10 [9.10, 11.10]"
    beside = pruning.beside_paper(found["table"], found["info"], D, 3)
    assert beside.loc[paper.TABLE2[1]["setting"], "ours"] == "tail 39%, tᵢ"
    assert pruning.headline(found["info"], D, 3) == {"every": "tail 39%, tᵢ", "first": "tail 39%, t₀",
                                                    "last": "tail 39%, last-3"}


# ---------------------------------------------------------------------------------------------------
#                           The short protocol's claims (regime and beyond chapters)
# ---------------------------------------------------------------------------------------------------


def results(**changes):
    rows = {key: {"setting": key, "per_digit": 0.9, "Δ per_digit": 0.0, "CI low": -0.01, "CI high": 0.01,
                  "FID": 10.0} for key in ["unpruned", "tail-every", "tail-first", "tail-last", "random-tail", "head"]}
    for key, values in changes.items():
        rows[key] |= values
    return pd.DataFrame(rows).T


HARMFUL = {"tail-every": {"CI low": -0.05, "Δ per_digit": -0.03}, "head": {"per_digit": 0.3},
           "random-tail": {"CI high": -0.1, "Δ per_digit": -0.2}}


def test_rung_claims_follow_the_stated_rule():
    def outcome(results):
        rows = pruning.rung_claims(results, requires=[])
        assert not report.rule_violations(rows)
        return {row["claim"].split(":")[0]: report.holds(row["value"], row["op"], row["bar"]) for row in rows}

    first = outcome(results())
    assert first["tail-every"] and not first["head"]
    assert not first["the tail matters less than a random set of its size"]  # the intervals overlap
    worse = outcome(results(**HARMFUL))
    assert not worse["tail-every"] and worse["head"]
    assert worse["the tail matters less than a random set of its size"]
    unmet = regime.precondition_rows(pd.Series({"npr_c": 0.5, "cos_y": 0.6}), regime.paper_bands())
    assert [row["verdict"] for row in unmet] == [report.PRECONDITION_WORDS[1], report.PRECONDITION_WORDS[0]]
    rows = pruning.rung_claims(results(**HARMFUL), requires=unmet)
    assert {report.verdict(True, precondition=False)} == {row["verdict"] for row in rows}


def test_beyond_claims_judge_each_organism_and_variant():
    quality = pd.DataFrame({"code width": [float("nan"), 4.0, 8.0], "L1 λ": [0.0, 0.0, 0.0],
                            "ΔFID": [0.0, 5.0, 0.1], "ΔFID low": [0.0, 4.0, -0.2], "ΔFID high": [0.0, 6.0, 0.4],
                            "Δaccuracy": [0.0, 0.0, 0.0], "Δaccuracy low": [0.0, -0.01, -0.01],
                            "Δaccuracy high": [0.0, 0.01, 0.01]},
                           index=[beyond.CONTROL, "beyond/k4", "beyond/k8"])
    stats = pd.DataFrame({"npr_c": [0.05, 0.05], "cos_y": [0.6, 0.6]}, index=["dit", "unet"])
    kept, organism_rows = beyond.claims(quality, {"FID": 1.0, "accuracy": 0.02}, stats,
                                        {"dit": results(), "unet": results(**HARMFUL)}, regime.paper_bands())
    assert [row["verdict"] for row in kept] == ["not reproduced", "reproduced"]  # k = 4 costs 4–6 FID
    assert kept[0]["ours"].startswith("ΔFID +5.00 [+4.00, +6.00] in ±1.00; Δaccuracy")
    outcome = verdicts(organism_rows)
    assert outcome["dit: tail-every: harmless"] == "reproduced"
    assert outcome["unet: tail-every: harmless"] == "not reproduced"
