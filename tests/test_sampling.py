"""The CFG sampling loop: seeding, batching, shards, null label, PNG output."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import FLOAT32_DRIFT, record_class_labels
from PIL import Image

from bottleneck_utils.sampling import initial_noise, resolve_autocast, sample


def test_shapes_range_and_bit_identical_rerun(bundle):
    first = sample(bundle, [0, 1, 2, 3], num_steps=4, seed=1, progress=False)
    again = sample(bundle, [0, 1, 2, 3], num_steps=4, seed=1, progress=False)
    assert first.shape == (4, 1, 8, 8)
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert torch.equal(first, again)  # bit-identity: the same batch on the same machine


def test_batch_size_and_shards_do_not_change_samples(bundle):
    labels = [4, 0, 2, 2, 1, 3]
    whole = sample(bundle, labels, num_steps=3, seed=7, batch_size=6, progress=False)
    batched = sample(bundle, labels, num_steps=3, seed=7, batch_size=4, progress=False)
    shard = sample(bundle, labels[3:], num_steps=3, seed=7, first_index=3, progress=False)
    assert torch.allclose(whole, batched, atol=FLOAT32_DRIFT)  # other batch: BLAS rounding only (conftest)
    assert torch.allclose(whole[3:], shard, atol=FLOAT32_DRIFT)
    misplaced = sample(bundle, labels[3:], num_steps=3, seed=7, first_index=0, progress=False)
    assert (whole[3:] - misplaced).abs().max() > 10 * FLOAT32_DRIFT  # a wrong noise stream is far outside it


def test_stochastic_scheduler_noise_follows_the_sample_not_the_batch(bundle):
    """DDPM adds noise at every step: it must come from each sample's own generator, like the initial noise."""
    from diffusers import DDPMScheduler

    ddpm = dataclasses.replace(bundle, scheduler=DDPMScheduler(num_train_timesteps=1000, clip_sample=False,
                                                                timestep_spacing="trailing"))
    labels = [4, 0, 2, 2, 1, 3]
    whole = sample(ddpm, labels, num_steps=4, seed=7, batch_size=6, progress=False)
    batched = sample(ddpm, labels, num_steps=4, seed=7, batch_size=4, progress=False)
    shard = sample(ddpm, labels[3:], num_steps=4, seed=7, first_index=3, progress=False)
    torch.manual_seed(123)  # the global generator must not matter
    again = sample(ddpm, labels, num_steps=4, seed=7, batch_size=6, progress=False)
    assert torch.equal(whole, again)  # bit-identity: the same batch on the same machine
    assert torch.allclose(whole, batched, atol=FLOAT32_DRIFT) and torch.allclose(whole[3:], shard, atol=FLOAT32_DRIFT)
    deterministic = sample(bundle, labels, num_steps=4, seed=7, progress=False)  # DDIM from the same noise
    assert not torch.allclose(whole, deterministic, atol=10 * FLOAT32_DRIFT)  # the step noise was really added


def test_noise_depends_on_seed_and_index_only(bundle):
    noise = initial_noise(bundle, torch.arange(5), seed=3)
    assert torch.equal(noise[2:], initial_noise(bundle, torch.arange(2, 5), seed=3))
    assert not torch.equal(noise, initial_noise(bundle, torch.arange(5), seed=4))


def test_cfg_uses_the_models_null_class(bundle):
    seen = record_class_labels(bundle.transformer)
    sample(bundle, [1, 2], num_steps=1, cfg_scale=3.0, progress=False)
    assert seen[0].tolist() == [1, 2, bundle.num_classes, bundle.num_classes]


def test_cfg_scale_changes_output_and_one_disables_it(bundle):
    guided = sample(bundle, [1, 2], num_steps=3, cfg_scale=4.0, progress=False)
    plain = sample(bundle, [1, 2], num_steps=3, cfg_scale=1.0, progress=False)
    assert not torch.allclose(guided, plain, atol=10 * FLOAT32_DRIFT)  # a real change, not rounding


def test_writes_pngs(bundle, tmp_path):
    images = sample(bundle, [3, 1], num_steps=2, output_dir=tmp_path, first_index=10, progress=False)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["000010_3.png", "000011_1.png"]
    written = np.asarray(Image.open(tmp_path / "000010_3.png"))
    assert np.array_equal(written, (images[0, 0] * 255).round().to(torch.uint8).numpy())


def test_bad_input_fails_before_work(bundle):
    with pytest.raises(ValueError, match="class ids"):
        sample(bundle, [0, 5], progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        sample(bundle, [0], num_steps=0, progress=False)
    bundle.transformer = None
    with pytest.raises(ValueError, match="embedder-only"):
        sample(bundle, [0], progress=False)


# ---------------------------------------------------------------------------------------------------
#                          Masked sampling, balanced labels and the .npz layout
# ---------------------------------------------------------------------------------------------------


def test_pruned_and_unpruned_runs_share_their_noise(bundle):
    from bottleneck_utils import masks

    nothing = masks.coordinate_mask([], bundle.hidden_size)
    plain = sample(bundle, [0, 3], num_steps=3, seed=5, progress=False)
    assert torch.equal(sample(bundle, [0, 3], num_steps=3, seed=5, mask=nothing, progress=False), plain)
    pruned = sample(bundle, [0, 3], num_steps=3, seed=5, progress=False,
                    mask=masks.coordinate_mask(torch.arange(0, bundle.hidden_size, 2), bundle.hidden_size))
    assert not torch.allclose(pruned, plain, atol=10 * FLOAT32_DRIFT)  # a real change, not rounding


def test_balanced_labels_and_npz_round_trip(tmp_path):
    from bottleneck_utils.images import load_npz, save_npz
    from bottleneck_utils.sampling import balanced_labels

    assert balanced_labels(3, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(ValueError, match="num_samples"):
        balanced_labels(3, 0)
    images = torch.rand(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    save_npz(images, [2, 0, 1, 2], tmp_path / "s.npz", first_index=10)
    with np.load(tmp_path / "s.npz") as archive:
        assert archive["arr_0"].shape == (4, 5, 5, 3) and archive["arr_0"].dtype == np.uint8
        assert archive["indices"].tolist() == [10, 11, 12, 13]
    loaded, labels = load_npz(tmp_path / "s.npz")
    # uint8 storage rounds to the nearest of 256 levels: half a level, plus float32 rounding of x·255 (~1e-7)
    assert labels.tolist() == [2, 0, 1, 2] and (loaded - images).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("autocast, device, resolved", [
    ("auto", "cpu", None), ("auto", "cuda", "bfloat16"), ("auto", "cuda:1", "bfloat16"), ("none", "cuda", None),
    ("bfloat16", "cpu", "bfloat16"), ("float16", "cuda", "float16")])
def test_resolve_autocast(autocast, device, resolved):
    assert resolve_autocast(autocast, device) == resolved
