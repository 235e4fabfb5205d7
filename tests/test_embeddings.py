"""c = y + t, y and t from the embedder modules, and the checks on their inputs."""

import pytest
import torch

from bottleneck_utils.embeddings import (
    class_embeddings,
    conditional_vectors,
    first_sampling_timestep,
    timestep_embeddings,
)


def test_c_is_y_plus_t_and_matches_the_module(bundle):
    labels, timesteps = [0, 3, 4], [999, 500, 0]
    c = conditional_vectors(bundle, labels, timesteps)  # (T, n, d)
    y = conditional_vectors(bundle, labels, timesteps, part="y")
    t = conditional_vectors(bundle, labels, timesteps, part="t")
    assert c.shape == (3, 3, bundle.hidden_size) and t.shape == (3, 1, bundle.hidden_size)
    assert torch.equal(c, y + t)  # c is computed as y + t
    for k, step in enumerate(timesteps):  # the diffusers module computes the same vector
        module = bundle.embedder(torch.full((3,), step), torch.tensor(labels), hidden_dtype=torch.float32)
        # the module adds the same float32 parts: at most an ulp of |c| ≲ 10 apart
        assert torch.allclose(c[k], module, atol=1e-6)


def test_scalar_timestep_gives_a_matrix_and_default_is_t0(bundle):
    c = conditional_vectors(bundle, timesteps=999)
    assert c.shape == (bundle.num_classes, bundle.hidden_size)
    assert torch.equal(conditional_vectors(bundle), c)  # default timestep = the convention's t₀ = 999


def test_null_class_excluded_unless_asked(bundle):
    assert class_embeddings(bundle).shape[0] == bundle.num_classes
    with pytest.raises(ValueError, match="include_null=True"):
        class_embeddings(bundle, [bundle.num_classes])
    null = class_embeddings(bundle, [bundle.num_classes], include_null=True)
    table = bundle.embedder.class_embedder.embedding_table.weight
    assert torch.equal(null[0], table[bundle.num_classes])


@pytest.mark.parametrize("labels", [[-1], [0, 99]])
def test_out_of_range_labels(bundle, labels):
    with pytest.raises(ValueError, match="class ids"):
        conditional_vectors(bundle, labels, 10)


@pytest.mark.parametrize("timesteps", [[-1], [1000], 1e6])
def test_out_of_range_timesteps(bundle, timesteps):
    with pytest.raises(ValueError, match="outside"):
        timestep_embeddings(bundle, timesteps)


def test_unknown_part(bundle):
    with pytest.raises(ValueError, match="part must be one of"):
        conditional_vectors(bundle, part="c")


def test_first_sampling_timestep(bundle):
    assert first_sampling_timestep(bundle, 50) == 999.0  # trailing spacing starts at the top
    from diffusers import DDIMScheduler

    leading = DDIMScheduler(num_train_timesteps=1000, timestep_spacing="leading")
    assert first_sampling_timestep(bundle, 50, scheduler=leading) == 980.0
    with pytest.raises(ValueError, match="num_steps"):
        first_sampling_timestep(bundle, 0)


def test_timestep_sweep_matches_direct_statistics(bundle):
    from bottleneck_utils import stats
    from bottleneck_utils.embeddings import timestep_sweep

    timesteps = [0, 10, 500, 998, 999]
    sweep = timestep_sweep(bundle, timesteps, chunk=2)
    c = conditional_vectors(bundle, timesteps=timesteps)  # (T, n, d)
    # the sweep works in float64 from y and t; c here was rounded to float32 first (relative 6e-8 per coordinate)
    assert torch.allclose(sweep["cosine"], stats.mean_offdiag_cosine(c), atol=1e-6)
    assert torch.allclose(sweep["npr"], stats.mean_npr(c), atol=1e-6)
    assert sweep["timestep"].tolist() == timesteps


def test_sampling_timesteps_start_at_t0_and_fall():
    from bottleneck_utils.embeddings import first_sampling_timestep, sampling_timesteps
    from bottleneck_utils.models import load

    bundle = load("mnist-dit")
    steps = sampling_timesteps(bundle, 10)
    assert len(steps) == 10 and steps[0].item() == first_sampling_timestep(bundle, 10)
    assert (steps.diff() < 0).all()
