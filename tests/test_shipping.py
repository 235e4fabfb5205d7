"""Nothing shipped is ever lost: an install checks the run (recipe, seed, steps) first and is one transaction; the
side-by-side trainer checks its arguments before starting a child and ends its children on any exit; a failed save
leaves no partial file."""

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from bottleneck_utils.integrity import sha256_of
from bottleneck_utils.organisms import cli, data, quality, recipes, train
from bottleneck_utils.organisms.recipes import Recipe
from tools import train_side_by_side

TINY = Recipe(transformer={"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 1, "num_layers": 2,
                           "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 3, "norm_eps": 1e-6},
              steps=6, batch_size=8, ema_decay=0.9, log_every=3, class_names=("a", "b", "c"))
NAME = "ladder/tiny"  # TINY, registered as a rung by the fixture
ROOT = Path(__file__).resolve().parents[1]


def save(out_dir: Path, recipe: Recipe = TINY, steps: int | None = None, seed: int = 0) -> Path:
    """A run folder as ``save_run`` leaves it (freshly initialised weights, no training), with a log."""
    train.save_run(out_dir, train.build_model(recipe, seed), recipe, recipe.steps if steps is None else steps, seed)
    (out_dir / "train_log.csv").write_text("step,loss\n0,nan\n")
    return out_dir


def snapshot(root: Path) -> dict[str, str]:
    """The sha256 of every file under ``root``, by relative path (hidden and temporary files included)."""
    return {str(path.relative_to(root)): sha256_of(path) for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def shipped(tmp_path, monkeypatch) -> Path:
    """A temporary package data (the cwd is ``tmp_path``) that ships ``NAME`` and records another organism."""
    checkpoints = tmp_path / "checkpoints"
    monkeypatch.setattr(train, "CHECKPOINT_DIR", checkpoints)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(recipes.RUNGS, NAME, TINY)
    shutil.copytree(save(tmp_path / "before", seed=1), checkpoints / NAME)
    manifest = {NAME: {"sha256": sha256_of(checkpoints / NAME / "model.safetensors")}, "other": {"sha256": "0" * 64}}
    (checkpoints / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return checkpoints


def fake_quality(monkeypatch) -> None:
    monkeypatch.setattr(quality, "composite_quality",
                        lambda *args: {"per_digit": 0.9, "all_digits": 0.8, "best_cfg": 2.0, "meets_bar": True})


# ---------------------------------------------------------------------------------------------------
#                          The run is checked before anything is measured or shipped
# ---------------------------------------------------------------------------------------------------


def test_finishing_a_copy_of_another_rungs_run_refuses_in_one_line(shipped, tmp_path, monkeypatch):
    fake_quality(monkeypatch)
    save(tmp_path / "runs" / "ladder" / "c10", recipes.RUNGS["ladder/c10"])
    shutil.copytree(tmp_path / "runs" / "ladder" / "c10", tmp_path / "runs" / "ladder" / "lr1e-4")
    before = snapshot(shipped)
    with pytest.raises(SystemExit) as exit_:
        cli.cli(["ladder", "finish", "ladder/lr1e-4"])
    message = str(exit_.value.code)
    assert "\n" not in message and "another recipe than ladder/lr1e-4's (lr 0.001 ≠ 0.0001)" in message
    assert "delete runs/ladder/lr1e-4 and train ladder/lr1e-4 again" in message
    assert snapshot(shipped) == before and not (tmp_path / "runs" / "ladder" / "lr1e-4" / "quality.json").exists()
    cli.cli(["ladder", "finish", "ladder/c10"])  # the genuine run ships
    assert sha256_of(shipped / "ladder" / "c10" / "model.safetensors") == json.loads(
        (shipped / "manifest.json").read_text())["ladder/c10"]["sha256"]


def test_a_smoke_run_is_finished_only_when_asked(shipped, tmp_path, monkeypatch, capsys):
    fake_quality(monkeypatch)
    save(tmp_path / "runs" / "ladder" / "c10", recipes.RUNGS["ladder/c10"], steps=2)
    before = snapshot(shipped)
    with pytest.raises(SystemExit) as exit_:
        cli.cli(["ladder", "finish", "ladder/c10"])
    message = str(exit_.value.code)
    assert "\n" not in message and "2 of ladder/c10's 16,000 steps (a smoke run?)" in message
    assert "--install-short" in message and snapshot(shipped) == before
    cli.cli(["ladder", "finish", "--install-short", "ladder/c10"])
    assert capsys.readouterr().out.strip().endswith("; installed") and (shipped / "ladder" / "c10").is_dir()


def mixed_state(run: Path) -> None:
    """A state.pt of another recipe beside TINY's meta.json."""
    source = train.TensorSource(torch.rand(16, 1, 8, 8) * 2 - 1, torch.randint(3, (16,)))
    train.train_dit(replace(TINY, lr=1e-4), source, 2, 0, run, checkpoint_every=2, progress=False)


@pytest.mark.parametrize("make, message", [
    (lambda run: save(run, replace(TINY, lr=1e-4)), "another recipe than ladder/tiny's (lr 0.0001 ≠ 0.001)"),
    (lambda run: save(run, seed=1), "seed 1, not ladder/tiny's seed 0"),
    (lambda run: save(run, steps=7), "trained for 7 steps, not ladder/tiny's 6"),
    (lambda run: save(run, steps=2), "(install(..., allow_short=True))"),
    (lambda run: (mixed_state(run), save(run)), "the folder mixes two runs"),
    (lambda run: (save(run), (run / "state.pt").write_bytes(b"half")), "state.pt is not a readable PyTorch checkpoint"),
    (lambda run: (save(run), (run / "meta.json").write_text("{")), "meta.json is not valid JSON"),
], ids=["recipe", "seed", "too-long", "smoke", "mixed-state", "bad-state", "bad-meta"])
def test_install_refuses_a_run_that_is_not_the_registrys(shipped, tmp_path, make, message):
    make(tmp_path / "run")
    before = snapshot(shipped)
    with pytest.raises(ValueError) as error:
        train.install(tmp_path / "run", NAME)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert snapshot(shipped) == before


@pytest.mark.parametrize("argv, message", [
    (["mnist-dit", "--steps", "10", "--install"], "is a smoke run: drop --install, or ship it anyway with --install-short"),
    (["mnist-dit", "--steps", "4001", "--install"], "--steps 4,001 is more than the recipe's 4,000"),
    (["mnist-dit", "--seed", "1", "--install"], "ships with seed 0, got --seed 1"),
    (["mnist-classifier", "--seed", "1", "--install"], "ships with seed 0, got --seed 1"),
    (["mnist-classifier", "--steps", "5"], "mnist-classifier trains for a fixed number of epochs: drop --steps"),
])
def test_organism_refuses_an_install_that_could_not_ship_before_training(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    monkeypatch.setattr(train, "organism", lambda name: (recipes.recipe_of(name), None))
    monkeypatch.setattr(train, "train_dit", lambda *args, **kwargs: pytest.fail("training started"))
    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: pytest.fail("training started"))
    with pytest.raises(SystemExit):
        cli.organism_main([*argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------------
#                            An install is one transaction: all of it or nothing
# ---------------------------------------------------------------------------------------------------


def disk_full_during_copy(monkeypatch, checkpoints):
    copy = shutil.copy2

    def half_copy(source, target, **kwargs):
        if Path(source).name != "model.safetensors":
            return copy(source, target, **kwargs)
        Path(target).write_bytes(Path(source).read_bytes()[:100])
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(shutil, "copy2", half_copy)


def corrupt_copy(monkeypatch, checkpoints):
    copy = shutil.copy2

    def flipping_copy(source, target, **kwargs):
        copy(source, target, **kwargs)
        if Path(source).name == "model.safetensors":
            content = bytearray(Path(target).read_bytes())
            content[-1] ^= 1
            Path(target).write_bytes(bytes(content))

    monkeypatch.setattr(shutil, "copy2", flipping_copy)


def manifest_write_raises(monkeypatch, checkpoints):
    monkeypatch.setattr(train, "write_atomically", lambda path, write: (_ for _ in ()).throw(RuntimeError("boom")))


def manifest_swap_fails(monkeypatch, checkpoints):
    rename = os.replace

    def failing_replace(source, target, *args, **kwargs):
        if Path(target) == checkpoints / "manifest.json":
            raise OSError(errno.EIO, "Input/output error", str(target))
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)


def interrupted_swap(monkeypatch, checkpoints):
    rename = os.rename

    def interrupted_rename(source, target, *args, **kwargs):
        if Path(target) == checkpoints / NAME and Path(source).name != "old":  # the new folder moving in
            raise KeyboardInterrupt
        return rename(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "rename", interrupted_rename)


@pytest.mark.parametrize("sabotage, error, message", [
    (disk_full_during_copy, ValueError, "No space left on device"),
    (corrupt_copy, ValueError, "the staged copy"),
    (manifest_write_raises, RuntimeError, "boom"),
    (manifest_swap_fails, ValueError, "Input/output error"),
    (interrupted_swap, KeyboardInterrupt, None),
], ids=lambda value: getattr(value, "__name__", None))
def test_a_failed_install_leaves_everything_shipped_byte_identical(shipped, tmp_path, monkeypatch, sabotage, error,
                                                                     message):
    run = save(tmp_path / "run")
    before = snapshot(shipped)
    sabotage(monkeypatch, shipped)
    with pytest.raises(error, match=message) as raised:
        train.install(run, NAME)
    assert snapshot(shipped) == before
    assert sorted(p.name for p in shipped.iterdir()) == ["ladder", "manifest.json"]  # no staging folder left
    assert error is not ValueError or "nothing shipped changed" in str(raised.value)


def test_an_install_swaps_the_folder_and_records_its_sha(shipped, tmp_path):
    run = save(tmp_path / "run")
    (shipped / NAME / "stale.txt").write_text("from the previous install")
    sha = train.install(run, NAME)
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest == {NAME: {"sha256": sha}, "other": {"sha256": "0" * 64}}
    assert sha == sha256_of(run / "model.safetensors") == sha256_of(shipped / NAME / "model.safetensors")
    assert not (shipped / NAME / "stale.txt").exists()
    assert sorted(p.name for p in shipped.iterdir()) == ["ladder", "manifest.json"]


# ---------------------------------------------------------------------------------------------------
#                        Side by side: arguments first, and no orphan child processes
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["--device", "cdua"], "unsupported device 'cdua'"),
    (["--report-every", "0"], "argument --report-every: must be a finite number > 0, got 0"),
    (["--report-every", "-1"], "argument --report-every: must be a finite number > 0, got -1"),
    (["--minutes", "nan"], "argument --minutes: must be a finite number > 0, got nan"),
    (["--minutes", "-2"], "argument --minutes: must be a finite number > 0, got -2"),
    (["ladder/c10"], "rungs ['ladder/c10'] are named twice"),
])
def test_side_by_side_checks_every_argument_before_starting_a_child(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "Popen", lambda *args, **kwargs: pytest.fail("a child was started"))
    with pytest.raises(SystemExit):
        train_side_by_side.main(["--minutes", "1", "ladder/c10", *argv])
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def children() -> set[int]:
    """The process ids of this process's children (Linux's /proc)."""
    return {int(pid) for path in Path("/proc/self/task").glob("*/children") for pid in path.read_text().split()}


def raise_(error):
    raise error


@pytest.mark.skipif(not list(Path("/proc/self/task").glob("*/children")), reason="needs Linux's /proc/PID/task/*/children")
@pytest.mark.parametrize("extra, report, error", [
    ({}, lambda: raise_(RuntimeError("report failed")), RuntimeError),
    ({}, lambda: raise_(KeyboardInterrupt()), KeyboardInterrupt),
    ({"a/missing": ["/nonexistent/python"]}, lambda: None, FileNotFoundError),
], ids=["exception", "ctrl-c", "failed-start"])
def test_side_by_side_ends_its_children_on_any_exit(tmp_path, monkeypatch, extra, report, error):
    monkeypatch.chdir(tmp_path)
    before = children()
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]
    with pytest.raises(error):
        train_side_by_side.run_side_by_side({"a/slow": slow, **extra}, 30.0, 0.1, report)
    assert children() == before  # ended and reaped: none left writing into runs/


def test_a_smoke_run_side_by_side_finishes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    started, finished = [], []
    monkeypatch.setattr(train_side_by_side, "run_side_by_side",
                        lambda commands, *args: started.extend(commands.values()) or dict.fromkeys(commands, 0))
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: finished.append(args))
    assert train_side_by_side.main(["--minutes", "1", "--steps", "1", "ladder/c10"]) == 0
    assert started[0][-4:] == ["--device", "cpu", "--steps", "1"] and "--install" not in started[0]
    assert finished == [] and "nothing finished or shipped" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
#                                A failed save leaves no partial file
# ---------------------------------------------------------------------------------------------------


def test_a_failed_scheduler_save_leaves_no_partial_file(tmp_path, monkeypatch):
    def half_then_full_disk(self, path):
        Path(path).write_text('{"_class_name": ')
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(DDIMScheduler, "to_json_file", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        train.save_run(tmp_path, train.build_model(TINY, 0), TINY, 6, 0)
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["config.json", "embedder.safetensors", "model.safetensors"]  # no meta.json: not a saved run


def test_a_failed_state_save_keeps_the_previous_state_whole(tmp_path, monkeypatch):
    source = train.TensorSource(torch.rand(16, 1, 8, 8) * 2 - 1, torch.randint(3, (16,)))
    train.train_dit(TINY, source, 2, 0, tmp_path, checkpoint_every=2, progress=False)
    before = snapshot(tmp_path)["state.pt"]
    save = torch.save

    def half_then_full_disk(state, path):
        save(state, path)
        with open(path, "r+b") as handle:
            handle.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(torch, "save", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        train.train_dit(TINY, source, 4, 0, tmp_path, checkpoint_every=2, progress=False)
    assert snapshot(tmp_path)["state.pt"] == before and sorted(snapshot(tmp_path)) == ["state.pt", "train_log.csv"]


FILE_SIZE_LIMIT = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    import torch
    from bottleneck_utils import images
    from bottleneck_utils.organisms import train
    from bottleneck_utils.organisms.recipes import Recipe

    out = Path(sys.argv[1])
    recipe = Recipe.from_dict(json.loads(sys.argv[2]))
    model = train.build_model(recipe, 0)
    optimizer = torch.optim.AdamW(model.parameters())
    pictures = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))  # ~200 kB, incompressible
    writes = {
        "state.pt": lambda: train._save_state(out / "state.pt", 1, recipe, 0, model, model, optimizer,
                                              torch.Generator(), [], 0.0),
        "png": lambda: images.write_pngs(pictures, [0], out / "pngs"),
        "npz": lambda: images.save_npz(pictures, [0], out / "samples.npz"),
    }
    try:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    except (AttributeError, ValueError, OSError) as error:
        print(json.dumps({"skip": f"the file size limit cannot be set here: {error}"}))
        sys.exit()
    failed = {}
    for name, write in writes.items():
        try:
            write()
        except Exception as error:
            failed[name] = type(error).__name__
    print(json.dumps({"failed": failed}))
""")


@pytest.mark.slow
def test_writes_past_the_file_size_limit_leave_no_partial_file(tmp_path):
    """state.pt, PNGs and .npz under RLIMIT_FSIZE (a full disk, for one process): each write fails, none is left."""
    pytest.importorskip("resource", reason="RLIMIT_FSIZE is POSIX only")
    result = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path / "out"), json.dumps(TINY.as_dict())],
                            capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if "skip" in outcome:
        pytest.skip(outcome["skip"])
    assert sorted(outcome["failed"]) == ["npz", "png", "state.pt"]
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []


def test_a_regime_replicate_ships_with_its_own_seed():
    """The regime recipe's replicates share one recipe and differ in their seed, which the shipping check reads."""
    names = sorted(recipes.REGIME)
    assert len(names) >= 3 and all(recipes.recipe_of(name) == recipes.REGIME_RECIPE for name in names)
    assert sorted(recipes.seed_of(n) for n in names) == list(range(len(names)))
    assert recipes.seed_of("ladder/c10") == 0
