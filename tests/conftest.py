"""Shared fixtures: offline, CPU, tiny configs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from diffusers import DDIMScheduler, DiTTransformer2DModel

from bottleneck_utils.models import DDPM, Bundle, block_embedders, tie_embedder_copies

# Tolerance for two float32 runs of the same model that differ in batch size, shard or thread count: the BLAS
# picks its blocking (and so its summation order) by shape, which moves pixels by ~1e-5 after 3 DDIM steps on one
# CPU (issue 9), more with more steps. A wrong noise stream or a missed mask moves them by > 1e-2.
FLOAT32_DRIFT = 1e-3


def tiny_transformer(num_classes=5, seed=0, **overrides) -> DiTTransformer2DModel:
    """A random-init pixel-space DiT small enough for CPU tests; adaLN and output layers are random too."""
    torch.manual_seed(seed)
    config = {"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 1, "num_layers": 2, "sample_size": 8,
              "patch_size": 2, "num_embeds_ada_norm": num_classes, "norm_eps": 1e-6} | overrides
    return tie_embedder_copies(DiTTransformer2DModel(**config)).eval()  # identical copies, as converted ones are


def tiny_bundle(num_classes=5, seed=0, **overrides) -> Bundle:
    transformer = tiny_transformer(num_classes, seed, **overrides)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="trailing")
    return Bundle("tiny", block_embedders(transformer)[0], num_classes, DDPM, transformer, scheduler)


@pytest.fixture
def bundle():
    return tiny_bundle()


def record_class_labels(transformer) -> list[torch.Tensor]:
    """Wraps ``transformer.forward`` to record the ``class_labels`` of every call; returns the list they go into."""
    seen, forward = [], transformer.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["class_labels"].clone())
        return forward(*args, **kwargs)

    transformer.forward = spy
    return seen
