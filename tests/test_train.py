"""The trainer: original DiT initialisation, one shared embedder, saved as identical per-block copies; resumable
runs; the DDPM and flow objectives; nothing shipped is touched unless asked."""

import csv
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from bottleneck_utils import stats
from bottleneck_utils.models import block_embedders, check_embedder_copies
from bottleneck_utils.organisms import cli, recipes, train
from bottleneck_utils.organisms.recipes import Recipe

TINY = Recipe(transformer={"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 1, "num_layers": 2,
                    "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 3, "norm_eps": 1e-6}, steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, label_dropout=0.5, log_every=3, class_names=["a", "b", "c"])


def test_initialisation_is_the_original_dits():
    model = train.build_transformer(TINY.transformer, seed=0)
    embedders = block_embedders(model)
    assert all(e is embedders[0] for e in embedders)  # one shared module
    assert embedders[0].class_embedder.dropout_prob == 0.0  # the trainer drops labels itself
    for block in model.transformer_blocks:
        assert block.norm1.linear.weight.abs().sum() == 0 and block.norm1.linear.bias.abs().sum() == 0
    for layer in (model.proj_out_1, model.proj_out_2):
        assert layer.weight.abs().sum() == 0
    table = embedders[0].class_embedder.embedding_table.weight
    assert table.shape == (4, 16)
    assert 0.005 < table.std().item() < 0.05  # N(0, 0.02) on 64 values


def tiny_source():
    g = torch.Generator().manual_seed(0)
    return train.TensorSource(torch.rand(32, 1, 8, 8, generator=g) * 2 - 1, torch.randint(3, (32,), generator=g))


def tiny_training(out_dir, recipe=TINY, steps=6, checkpoint_every=500):
    return train.train_dit(recipe, tiny_source(), steps, 0, out_dir, checkpoint_every=checkpoint_every,
                           progress=False)


def same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_training_is_seeded_and_logs_the_summary(tmp_path):
    first, again = tiny_training(tmp_path / "a"), tiny_training(tmp_path / "b")
    assert same_weights(first, again)  # bit-identical rerun: same batch shapes, same machine
    rows = list(csv.DictReader((tmp_path / "a" / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 3, 6]
    assert set(stats.SUMMARY_KEYS) | {f"{k}_ema" for k in stats.SUMMARY_KEYS} <= set(rows[0])
    assert all(-1 <= float(r["cos_c"]) <= 1 and 0 < float(r["npr_y_ema"]) <= 1 for r in rows)
    assert float(rows[-1]["loss"]) > 0


@pytest.mark.parametrize("objective", ["ddpm", "flow-sit"])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, objective):
    recipe = replace(TINY, objective=objective)
    whole = tiny_training(tmp_path / "whole", recipe, steps=6, checkpoint_every=2)
    tiny_training(tmp_path / "cut", recipe, steps=4, checkpoint_every=2)  # stops at 4, state saved
    resumed = tiny_training(tmp_path / "cut", recipe, steps=6, checkpoint_every=2)  # continues from 4
    assert same_weights(whole, resumed)  # the same float ops in the same order: bit-identical here
    assert (tmp_path / "whole" / "train_log.csv").read_text() == (tmp_path / "cut" / "train_log.csv").read_text()


def test_a_run_of_another_recipe_is_not_resumed(tmp_path):
    tiny_training(tmp_path / "run", steps=2, checkpoint_every=2)
    with pytest.raises(ValueError, match="another recipe or seed; pass a new --out"):
        tiny_training(tmp_path / "run", replace(TINY, lr=1e-4), steps=4)


def test_summary_logged_in_training_equals_the_chapter_computation(tmp_path):
    """The log's numbers are stats.summary of the saved EMA embedder, recomputed through the public API."""
    from bottleneck_utils.embeddings import class_embeddings, timestep_embeddings
    from bottleneck_utils.models import DDPM, Bundle

    ema = tiny_training(tmp_path / "run")
    last = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))[-1]
    bundle = Bundle("tiny", block_embedders(ema)[0], 3, DDPM)
    chapter = stats.summary(class_embeddings(bundle), timestep_embeddings(bundle, 999)[0])
    for key in stats.SUMMARY_KEYS:
        assert float(last[f"{key}_ema"]) == pytest.approx(chapter[key], rel=1e-12)  # the same float64 maths


def test_flow_loss_on_a_fixed_batch_is_the_hand_computed_one():
    """SiT: x_t = t·x0 + (1 − t)·ε, target x0 − ε; REPA: x_t = (1 − t)·x0 + t·ε, target ε − x0."""
    x0 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(7)
    t, noise = torch.rand(4, generator=g), torch.randn(x0.shape, generator=g)
    s = t[:, None, None, None]
    for objective, x_t, target in [("flow-sit", s * x0 + (1 - s) * noise, x0 - noise),
                                   ("flow-repa", (1 - s) * x0 + s * noise, noise - x0)]:
        got_x, got_t, got_target = train.noisy_batch(replace(TINY, objective=objective), x0, torch.Generator().manual_seed(7))
        assert torch.equal(got_t, t) and torch.equal(got_x, x_t) and torch.equal(got_target, target)
    model = train.build_transformer(TINY.transformer, seed=0)
    labels = torch.tensor([0, 1, 2, 3])
    expected = ((model(s * x0 + (1 - s) * noise, timestep=t, class_labels=labels).sample - (x0 - noise)) ** 2).mean()
    got_x, got_t, got_target = train.noisy_batch(replace(TINY, objective="flow-sit"), x0, torch.Generator().manual_seed(7))
    loss = torch.nn.functional.mse_loss(model(got_x, timestep=got_t, class_labels=labels).sample, got_target)
    assert torch.equal(loss, expected)


def test_short_ddpm_schedules_scale_beta_as_dit():
    schedule = train.ddpm_schedule(50)
    assert schedule["beta_start"] == pytest.approx(0.002) and schedule["beta_end"] == pytest.approx(0.4)
    assert train.time_convention(replace(TINY, train_timesteps=50)).first_time == 49
    with pytest.raises(ValueError, match="train_timesteps must be an int >= 2"):
        train.ddpm_schedule(1)


def test_install_ships_a_finished_run_and_records_its_sha(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setitem(recipes.ORGANISMS, "tiny", TINY)  # only a registry's recipe ships
    ema = tiny_training(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="finish the run before installing"):
        train.install(tmp_path / "run", "tiny")  # nothing saved yet
    assert not (tmp_path / "checkpoints").exists()
    train.save_run(tmp_path / "run", ema, TINY, 6, 0)
    sha = train.install(tmp_path / "run", "tiny")
    state = load_file(tmp_path / "checkpoints" / "tiny" / "model.safetensors")
    key = "norm1.emb.class_embedder.embedding_table.weight"
    assert torch.equal(state[f"transformer_blocks.0.{key}"], state[f"transformer_blocks.1.{key}"])
    assert json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())["tiny"]["sha256"] == sha
    from diffusers import DiTTransformer2DModel

    config = json.loads((tmp_path / "checkpoints" / "tiny" / "config.json").read_text())
    reloaded = DiTTransformer2DModel.from_config(config)
    reloaded.load_state_dict(state)
    check_embedder_copies(reloaded)
    with pytest.raises(ValueError, match="blocks \\[1\\]"):
        with torch.no_grad():
            reloaded.transformer_blocks[1].norm1.emb.class_embedder.embedding_table.weight[0, 0] += 1
        check_embedder_copies(reloaded)


@pytest.mark.parametrize("argv, message", [
    (["mnist-dit", "--steps", "-1"], "must be a positive integer"),
    (["mnist-dit", "--steps", "0"], "must be a positive integer"),
    (["no-such-organism"], "unknown organism"),
])
def test_cli_rejects_bad_arguments_before_writing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    with pytest.raises(SystemExit):
        cli.organism_main([*argv, "--out", str(tmp_path / "run")])
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "checkpoints").exists()


def fake_registry(tmp_path, monkeypatch):
    """Three recipes in a temporary package data and cwd: one shipped, one part-trained, one not started."""
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints" / "r/shipped").mkdir(parents=True)
    (tmp_path / "checkpoints" / "r/shipped" / "quality.json").write_text(json.dumps({"score": 0.5}))
    (tmp_path / "runs" / "r/half").mkdir(parents=True)
    (tmp_path / "runs" / "r/half" / "train_log.csv").write_text("step,loss\n100,0.3\n200,0.2\n")
    return {name: replace(TINY, steps=400) for name in ("r/shipped", "r/half", "r/new")}


def test_registry_status_says_where_each_recipe_stands(tmp_path, monkeypatch, capsys):
    registry = fake_registry(tmp_path, monkeypatch)
    cli.registry_main(["status"], "", registry, None, None, lambda name, quality: f"{name}: {quality['score']}")
    assert capsys.readouterr().out.splitlines() == [
        "shipped   r/shipped: 0.5",
        "training  r/half: logged to step 200 of 400 in runs/r/half",
        "pending   r/new: not started (400 steps)"]


def test_registry_train_without_names_skips_shipped_recipes_and_checks_the_device(tmp_path, monkeypatch, capsys):
    registry, trained = fake_registry(tmp_path, monkeypatch), []
    monkeypatch.setattr(train, "train_dit", lambda recipe, source, steps, seed, out_dir, device: trained.append(
        (str(out_dir), device)))
    monkeypatch.setattr(train, "save_run", lambda *args: None)
    cli.registry_main(["train"], "", registry, lambda recipe: None, lambda name, device, allow_short: {},
                      lambda name, quality: name)
    assert trained == [("runs/r/half", "cpu"), ("runs/r/new", "cpu")]
    assert capsys.readouterr().out.splitlines() == ["r/half; installed", "r/new; installed"]
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cli.registry_main(["train", "--device", "cuda", "r/new"], "", registry, None, None, None)
        assert "CUDA is not available" in capsys.readouterr().err and len(trained) == 2


def test_registry_train_runs_on_the_threads_asked_for(tmp_path, monkeypatch, capsys):
    registry, seen = fake_registry(tmp_path, monkeypatch), []
    monkeypatch.setattr(train, "train_dit", lambda *args, **kwargs: seen.append(torch.get_num_threads()))
    monkeypatch.setattr(train, "save_run", lambda *args: None)
    threads = torch.get_num_threads()
    try:
        for argv in (["train", "r/new"], ["train", "--threads", "2", "r/new"]):
            cli.registry_main(argv, "", registry, lambda recipe: None, lambda name, device, allow_short: {},
                              lambda name, quality: name)
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 2]  # one thread unless asked: lanes side by side on 2 cores only slow each other down
    with pytest.raises(SystemExit):
        cli.registry_main(["train", "--threads", "0", "r/new"], "", registry, None, None, None)
    assert len(seen) == 2
