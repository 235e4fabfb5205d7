"""The DiT-XL/2 path of the pruning chapter, on CPU: a random DiT of XL's structure (latent, learned σ, 1000
classes) but tiny width, a tiny VAE, autocast, masks with 1001 rows, Inception features, reference files."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

from bottleneck_utils import features as extractors
from bottleneck_utils import masks, metrics
from bottleneck_utils.models import load, tie_embedder_copies
from bottleneck_utils.organisms import quality
from bottleneck_utils.sampling import balanced_labels, sample

STEPS = 3


@pytest.fixture(scope="module")
def xl_like(tmp_path_factory):
    """A diffusers DiT pipeline folder like facebook/DiT-XL-2-256's: 4→8 channels, patch 2, 1000 classes."""
    folder = tmp_path_factory.mktemp("dit-xl-like")
    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                        num_layers=2, sample_size=4, patch_size=2, num_embeds_ada_norm=1000)
    tie_embedder_copies(transformer)
    transformer.save_pretrained(folder / "transformer")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                  latent_channels=4, norm_num_groups=4, sample_size=8).save_pretrained(folder / "vae")
    DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False).save_pretrained(
        folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return load(str(folder))


def test_five_samples_per_class():
    labels = balanced_labels(1000, 5000)
    assert torch.equal(torch.bincount(labels), torch.full((1000,), 5))


def test_autocast_masked_sampling_with_vae_decode(xl_like):
    dtypes = []
    handle = xl_like.transformer.transformer_blocks[0].attn1.to_q.register_forward_hook(
        lambda module, args, output: dtypes.append(output.dtype))
    mask = masks.tail_mask(xl_like, 0.05, num_steps=STEPS)  # per sample: one row per class and the null class
    assert mask.removed.shape == (1001, xl_like.hidden_size) and mask.removed_count > 0
    labels = balanced_labels(1000, 4) * 250  # classes 0, 250, 500, 750
    bf16 = sample(xl_like, labels, num_steps=STEPS, cfg_scale=1.5, mask=mask, schedule=masks.Schedule("last", 2),
                  autocast="bfloat16", progress=False)
    fp32 = sample(xl_like, labels, num_steps=STEPS, cfg_scale=1.5, mask=mask, schedule=masks.Schedule("last", 2),
                  progress=False)
    handle.remove()
    assert bf16.shape == (4, 3, 8, 8) and bf16.isfinite().all()  # RGB images, decoded by the VAE
    assert torch.bfloat16 in dtypes and torch.float32 in dtypes
    # bfloat16 keeps 8 significant bits (4e-3 relative per operation); 3 steps stay far below 0.1, and > 0 shows
    # that autocast really ran
    assert 0 < (bf16 - fp32).abs().max() < 0.1


def test_inception_evaluator_on_decoded_samples(xl_like, tmp_path):
    images = sample(xl_like, [1, 2], num_steps=STEPS, progress=False)  # (2, 3, 8, 8)
    real = (np.random.default_rng(0).random((2, 8, 8, 3)) * 255).astype(np.uint8)
    np.savez(tmp_path / "reference_batch.npz", arr_0=real)  # the ADM / DiT reference-batch layout
    evaluator = quality.evaluator_for(xl_like, tmp_path / "reference_batch.npz", k=1)
    assert evaluator.name == "Inception FID" and evaluator.reference.features.shape == (2, extractors.INCEPTION_DIM)
    samples = evaluator.sample_set(images, [1, 2])
    assert samples.features.shape == (2, extractors.INCEPTION_DIM) and samples.probs is None
    assert samples.manifolds.real_in_fake.shape == (2, 2)
    assert np.isfinite(metrics.kid(samples.features, evaluator.reference.features, num_subsets=2))


def test_reference_statistics_are_required_and_checked(xl_like, tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="needs reference statistics"):
        quality.evaluator_for(xl_like, "")
    with pytest.raises(ValueError, match="is empty"):
        quality.evaluator_for(xl_like, tmp_path / "empty.npz")
    np.savez(tmp_path / "grey.npz", arr_0=np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 images"):
        quality.evaluator_for(xl_like, tmp_path / "grey.npz")
