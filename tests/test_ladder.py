"""The regime ladder: each rung changes one factor of the base recipe; a finished rung is measured and shipped."""

import importlib.util
import json
import sys
import time
from pathlib import Path

import pytest
import torch

from bottleneck_utils import integrity
from bottleneck_utils.organisms import cli, composite, quality, recipes, train
from bottleneck_utils.organisms.recipes import Recipe
from tools import train_side_by_side

FACTORS = {"classes", "width", "lr", "train_timesteps", "objective", "steps"}


def factors(recipe: Recipe) -> dict:
    width = recipe.transformer["num_attention_heads"] * recipe.transformer["attention_head_dim"]
    return {"classes": recipe.classes, "width": width, "lr": recipe.lr, "train_timesteps": recipe.train_timesteps,
            "objective": recipe.objective, "steps": recipe.steps}


@pytest.mark.parametrize("name", sorted(recipes.RUNGS))
def test_each_rung_differs_from_the_base_in_its_own_factors_only(name):
    base, recipe = factors(recipes.RUNGS["ladder/c10"]), factors(recipes.RUNGS[name])
    changed = {key for key in FACTORS if recipe[key] != base[key]}
    allowed = {"ladder/c1000": {"classes"}, "ladder/flow-c1000": {"classes", "objective"},
               "ladder/c10-long": {"steps"}, "ladder/d256-long": {"width", "steps"}}.get(name)
    assert changed <= (allowed or FACTORS) and len(changed) <= 3
    assert recipe["classes"] == recipes.RUNGS[name].transformer["num_embeds_ada_norm"]
    assert len(recipes.RUNGS[name].class_names) == recipe["classes"]


def test_a_finished_rung_is_measured_and_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(recipes, "QUALITY_SAMPLES", {10: 20})
    monkeypatch.setattr(quality, "CFG_SCALES", (1.0, 2.0))
    monkeypatch.setattr(recipes, "QUALITY_STEPS", 2)
    recipe = recipes.RUNGS["ladder/c10"]
    digits = torch.rand(50, 1, 12, 12)
    source = composite.CompositeDigits(digits, torch.randint(10, (50,)), 10)
    out_dir = tmp_path / "runs" / "ladder" / "c10"
    ema = train.train_dit(recipe, source, 2, 0, out_dir, progress=False)
    train.save_run(out_dir, ema, recipe, 2, 0)
    measured = cli.finish_rung("ladder/c10", allow_short=True)  # 2 of its steps: a smoke run
    assert set(measured["by_cfg"]) == {"1.0", "2.0"} and 0 <= measured["per_digit"] <= 1
    assert measured["meets_bar"] == (measured["per_digit"] >= quality.BAR)
    shipped = tmp_path / "checkpoints" / "ladder" / "c10"
    assert json.loads((shipped / "quality.json").read_text()) == measured and measured["device"] == "cpu"
    assert (shipped / "model.safetensors").is_file()  # c10 is one of the pruning rungs
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    assert manifest["ladder/c10"]["sha256"] == integrity.sha256_of(shipped / "model.safetensors")


def test_finish_without_a_trained_run_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="ladder train ladder/c100"):
        cli.finish_rung("ladder/c100")


def test_a_rung_shipped_without_weights_loads_its_embedder_with_the_null_row(tmp_path, monkeypatch):
    from bottleneck_utils import models

    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    recipe = recipes.RUNGS["ladder/c100"]
    source = composite.CompositeDigits(torch.rand(50, 1, 12, 12), torch.randint(10, (50,)), 100)
    out_dir = tmp_path / "run"
    ema = train.train_dit(recipe, source, 1, 0, out_dir, progress=False)
    train.save_run(out_dir, ema, recipe, 1, 0)
    train.install(out_dir, "ladder/c100", weights=False, allow_short=True)  # 1 step: a smoke run
    bundle = models.load_organism(tmp_path / "checkpoints" / "ladder" / "c100", "ladder/c100", torch.device("cpu"),
                                  torch.float32, None, check_sha=False)
    assert bundle.transformer is None and bundle.num_classes == 100
    table = ema.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.weight
    assert torch.equal(bundle.embedder.class_embedder.embedding_table.weight, table)  # 101 rows: the null included
    assert table.shape[0] == 101


def test_bench_train_step_runs_on_a_rungs_data():
    """bench_train draws its random digits at the rung's cell size, so its model sees the rung's canvas."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench_train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_train)
    recipe = recipes.RUNGS["ladder/c10"]
    assert bench_train.step_flops(bench_train.training_step(recipe, batch_size=2)) > 0
    shares = bench_train.time_by_kind(bench_train.training_step(recipes.REGIME_RECIPE, batch_size=2), repeats=1)
    assert sum(shares.values()) == pytest.approx(1.0) and shares["matmul"] > 0  # every op counted, once


def test_side_by_side_runs_commands_at_once_and_stops_those_past_the_deadline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quick = [sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"]
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]
    reports = []
    started = time.monotonic()
    status = train_side_by_side.run_side_by_side({"a/quick": quick, "a/slow": slow}, 3.0, 1.0,
                                                 lambda: reports.append(1), threads=2)
    assert status == {"a/quick": 0, "a/slow": None} and time.monotonic() - started < 30
    assert (tmp_path / "runs" / "a" / "quick" / "train.out").read_text() == "2\n" and len(reports) >= 2


def test_side_by_side_refuses_unknown_rungs_before_starting_anything(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        train_side_by_side.main(["--minutes", "1", "ladder/c10", "ladder/nope"])
    assert "unknown rungs ['ladder/nope']" in capsys.readouterr().err and not (tmp_path / "runs").exists()


def test_dropped_rungs_are_out_of_the_ladder_and_each_gives_its_reason():
    from bottleneck_utils.chapters import regime

    assert set(recipes.DROPPED_RUNGS).isdisjoint(recipes.RUNGS)
    assert not {rung for rungs in regime.AXES.values() for rung in rungs} - set(recipes.RUNGS)
    assert all(len(reason) > 40 for reason in recipes.DROPPED_RUNGS.values())
