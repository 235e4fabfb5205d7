"""The pruning chapter's runs sampled elsewhere (chapters.pruning_samples): the plan, the CLI that samples every
run into its own .npz, and the chapter's reader, which must refuse a file of another run, plan or length."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bottleneck_utils.chapters import pruning, pruning_samples
from bottleneck_utils.models import load
from bottleneck_utils.sampling import balanced_labels, sample
from tests.conftest import FLOAT32_DRIFT
from tests.synthetic import tiny_pipeline_folder
from tests.test_chapter_pruning import parameters


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """A tiny DiT folder, the chapter's resolved parameters with a samples_dir, and that folder sampled by the CLI
    (after the chapter's first call wrote the plan and named the command)."""
    root = tmp_path_factory.mktemp("pruning-samples")
    tiny_pipeline_folder(root / "model")
    p = pruning.resolve(parameters(model=str(root / "model"), samples_dir=str(root / "runs"), n_samples=6,
                                   num_steps=3, tail_fractions=[0.25], schedules=["every"]), embedded=False)
    bundle = load(p["model"])
    settings, _, _ = pruning.chapter_settings(pruning.chapter_masks(bundle, p), p)
    labels = balanced_labels(bundle.num_classes, p["n_samples"])
    with pytest.raises(FileNotFoundError, match="bottleneck_utils.chapters.pruning_samples") as error:
        pruning_samples.reader(bundle, settings, labels, p)
    assert len(str(error.value).splitlines()) == 1 and [f.name for f in (root / "runs").iterdir()] == ["plan.json"]
    pruning_samples.main([p["samples_dir"], "--batch-size", "4"])
    return p, bundle, settings, labels


def test_every_run_is_written_once_and_reads_as_the_chapter_would_sample_it(sampled):
    p, bundle, settings, labels = sampled
    names = pruning_samples.run_names(settings, p["noise_seeds"])
    assert pruning_samples.missing_runs(p["samples_dir"], names) == [] and len(names) == len(settings) + 1
    read = pruning_samples.reader(bundle, settings, labels, p)
    for name, (_, mask, schedule) in settings.items():
        here = sample(bundle, labels, num_steps=p["num_steps"], cfg_scale=p["cfg_scale"], seed=p["seed"],
                      batch_size=p["batch_size"], mask=mask, schedule=schedule or "every", null_policy=p["null_policy"],
                      progress=False)
        # 8-bit files: half a level of rounding, from batches of another size (FLOAT32_DRIFT)
        assert (read(name, mask, schedule, p["seed"]) - here).abs().max() <= 0.5 / 255 + FLOAT32_DRIFT
    files = sorted(pruning_samples.run_file(p["samples_dir"], "x").parent.glob("*.npz"))
    stamps = {path: path.stat().st_mtime_ns for path in files}
    pruning_samples.main([p["samples_dir"]])  # nothing left to sample: nothing rewritten
    assert {path: path.stat().st_mtime_ns for path in stamps} == stamps


def test_the_chapter_reads_its_runs_from_the_folder(sampled):
    p, bundle, settings, labels = sampled

    class Evaluator:  # the chapter scores what it reads; here only the images matter
        def sample_set(self, images, labels):
            return images

    assert pruning_samples.reader(bundle, settings, labels, p | {"samples_dir": ""}) is None  # the chapter samples
    runs = pruning.chapter_runs(bundle, Evaluator(), settings, labels, p,
                                pruning_samples.reader(bundle, settings, labels, p))
    assert runs["source"].startswith("reading the runs from") and set(runs["sets"]) == set(settings)
    assert set(runs["seed_sets"]) == set(p["noise_seeds"])
    assert not torch.equal(runs["sets"]["baseline"], runs["seed_sets"][p["noise_seeds"][0]])  # other noise


def test_a_file_of_another_run_or_labels_and_a_damaged_file_are_refused(sampled, tmp_path):
    p, bundle, settings, labels = sampled
    copy = tmp_path / "runs"
    shutil.copytree(p["samples_dir"], copy)
    q = p | {"samples_dir": str(copy)}
    tail = next(name for name, (kind, _, _) in settings.items() if kind == "tail")
    tail_file = pruning_samples.run_file(copy, tail)
    shutil.copy(pruning_samples.run_file(copy, "baseline"), tail_file)  # the unpruned images posing as the tail's
    read = pruning_samples.reader(bundle, settings, labels, q)
    _, mask, schedule = settings[tail]
    with pytest.raises(ValueError, match="another run .*mask.*differ"):
        read(tail, mask, schedule, p["seed"])
    with pytest.raises(ValueError, match="other labels"):
        pruning_samples.reader(bundle, settings, labels.flip(0), q)("baseline", None, None, p["seed"])
    tail_file.write_bytes(pruning_samples.run_file(copy, "baseline").read_bytes()[:200])  # truncated
    with pytest.raises(ValueError, match="not a complete run file") as error:
        read(tail, mask, schedule, p["seed"])
    assert len(str(error.value).splitlines()) == 1


def test_a_folder_planned_with_other_parameters_is_refused_and_kept(sampled):
    p, bundle, settings, labels = sampled
    plan = (pruning_samples.run_file(p["samples_dir"], "x").parent / "plan.json").read_bytes()
    with pytest.raises(ValueError, match=r"planned with other parameters \(cfg_scale\)"):
        pruning_samples.reader(bundle, settings, labels, p | {"cfg_scale": 2.0})
    assert (pruning_samples.run_file(p["samples_dir"], "x").parent / "plan.json").read_bytes() == plan


def test_run_files_are_named_apart():
    names = ["tail 39%, tᵢ", "tail 39%, t₀", "random (tail 39%), tᵢ", "baseline, noise seed 1"]
    assert len({pruning_samples.run_file("d", name) for name in names}) == len(names)


@pytest.mark.slow
def test_two_gloo_processes_write_the_files_of_one(sampled, tmp_path):
    p = sampled[0]
    shutil.copytree(p["samples_dir"], tmp_path / "two")
    for path in (tmp_path / "two").glob("*.npz"):
        path.unlink()
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "bottleneck_utils.chapters.pruning_samples", str(tmp_path / "two"), "--batch-size", "4"]
    finished = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    one = sorted(Path(p["samples_dir"]).glob("*.npz"))
    assert [path.name for path in one] == sorted(path.name for path in (tmp_path / "two").glob("*.npz"))
    for path in one:
        a, b = np.load(path), np.load(tmp_path / "two" / path.name)
        assert str(a["run"]) == str(b["run"]) and np.array_equal(a["labels"], b["labels"])
        # other shards, other batch shapes: at most one 8-bit level where FLOAT32_DRIFT crosses a rounding edge
        assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1
