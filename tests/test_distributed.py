"""Sharded sampling: torchrun with 2 gloo processes gives the union of a single-process run; atomic .npz."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bottleneck_utils import images as image_io
from bottleneck_utils import masks, sampling
from bottleneck_utils.models import load
from tests.conftest import FLOAT32_DRIFT
from tests.synthetic import tiny_pipeline_folder

ROOT = Path(__file__).resolve().parents[1]
NUM_SAMPLES, STEPS, TAU = 7, 3, 0.5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-dit")
    tiny_pipeline_folder(path)
    return path


def cli_arguments(folder, out: Path) -> list[str]:
    return [str(folder), "--num-samples", str(NUM_SAMPLES), "--steps", str(STEPS), "--seed", "3", "--batch-size", "1",
            "--npz", str(out / "samples.npz"), "--png-dir", str(out / "png"), "--mask", "tail", "--tau", str(TAU),
            "--schedule", "last", "--k", "2"]


@pytest.mark.slow
def test_two_gloo_processes_give_the_single_process_run(folder, tmp_path):
    env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "bottleneck_utils.sampling", *cli_arguments(folder, tmp_path / "two")]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same thread count as the torchrun workers
    try:
        sampling.main(cli_arguments(folder, tmp_path / "one"))  # one process, no process group: one rank of one
    finally:
        torch.set_num_threads(threads)
    two, one = np.load(tmp_path / "two" / "samples.npz"), np.load(tmp_path / "one" / "samples.npz")
    assert np.array_equal(two["labels"], sampling.balanced_labels(10, NUM_SAMPLES).numpy())
    assert np.array_equal(two["indices"], np.arange(NUM_SAMPLES))
    assert np.array_equal(two["arr_0"], one["arr_0"])  # bit-identity: batch size 1 and one thread in both runs
    assert sorted(p.name for p in (tmp_path / "two" / "png").iterdir()) == sorted(
        p.name for p in (tmp_path / "one" / "png").iterdir())
    assert len(list((tmp_path / "two").iterdir())) == 2  # the shards are gone: only samples.npz and png/

    bundle = load(str(folder))  # and the file is what sample() returns for these labels, mask and schedule
    mask = masks.tail_mask(bundle, TAU, num_steps=STEPS)
    assert 0 < mask.removed_count < bundle.hidden_size
    direct = sampling.sample(bundle, two["labels"], num_steps=STEPS, seed=3, mask=mask,
                             schedule=masks.Schedule("last", 2), progress=False)  # one batch of 7, not 7 of 1
    stored, stored_labels = image_io.load_npz(tmp_path / "two" / "samples.npz")
    assert np.array_equal(stored_labels, two["labels"])
    # the file holds the samples rounded to uint8 (half a level), from batches of another size (FLOAT32_DRIFT)
    assert (stored - direct).abs().max() <= 0.5 / 255 + FLOAT32_DRIFT


def test_an_interrupted_write_leaves_no_npz(monkeypatch, tmp_path):
    target = tmp_path / "samples.npz"
    image_io.save_npz(torch.zeros(2, 1, 4, 4), [0, 1], target)
    before = target.read_bytes()
    real_savez = np.savez

    def write_half_then_fail(handle, **arrays):
        real_savez(handle, **{key: arrays[key] for key in list(arrays)[:1]})
        raise KeyboardInterrupt  # the process is stopped half way through the write

    monkeypatch.setattr(np, "savez", write_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        image_io.save_npz(torch.ones(3, 1, 4, 4), [0, 1, 2], target)
    assert target.read_bytes() == before  # the previous complete file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["samples.npz"]  # and no temporary is left behind


def test_a_crash_while_sampling_writes_nothing(tmp_path):
    from tests.conftest import tiny_bundle

    bundle = tiny_bundle()
    calls = []

    def crash_on_third_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")

    bundle.transformer.register_forward_pre_hook(crash_on_third_call)
    with pytest.raises(RuntimeError, match="out of memory"):
        sampling.sample_sharded(bundle, [0, 1, 2, 3], npz_path=tmp_path / "s.npz", num_steps=4, batch_size=2,
                                progress=False)
    assert list(tmp_path.iterdir()) == []


def test_shards_cover_every_index_once():
    for n, world in [(7, 2), (5000, 8), (3, 4)]:
        covered = [i for rank in range(world) for i in range(*sampling.shard_range(n, rank, world))]
        assert covered == list(range(n))


def test_cli_recompute_samples_with_the_recomputed_tail(folder, tmp_path):
    arguments = [str(folder), "--num-samples", "4", "--steps", "3", "--seed", "3", "--batch-size", "4",
                 "--npz", str(tmp_path / "samples.npz"), "--mask", "tail", "--tau", str(TAU), "--recompute"]
    sampling.main(arguments)
    bundle = load(str(folder))
    tail = masks.tail_mask(bundle, TAU, num_steps=3)
    stored, labels = image_io.load_npz(tmp_path / "samples.npz")
    recomputed, fixed = (sampling.sample(bundle, labels, num_steps=3, seed=3, mask=mask, progress=False)
                         for mask in (masks.recomputed(tail), tail))
    # the same batch in one process: only the uint8 rounding (half a level) separates the file from sample()
    assert (stored - recomputed).abs().max() <= 0.5 / 255 + FLOAT32_DRIFT
    assert (stored - fixed).abs().max() > 2 / 255  # and the recomputed tail is not the fixed one


def test_cli_recomputes_a_top_k_head(folder, tmp_path):
    arguments = [str(folder), "--num-samples", "4", "--steps", "3", "--seed", "3", "--batch-size", "4",
                 "--npz", str(tmp_path / "samples.npz"), "--mask", "topk", "--topk", "2", "--recompute"]
    sampling.main(arguments)
    bundle = load(str(folder))
    head = masks.topk_mask(bundle, 2, num_steps=3)
    stored, labels = image_io.load_npz(tmp_path / "samples.npz")
    recomputed = sampling.sample(bundle, labels, num_steps=3, seed=3, mask=masks.recomputed(head), progress=False)
    assert (stored - recomputed).abs().max() <= 0.5 / 255 + FLOAT32_DRIFT  # as above: the uint8 rounding only
