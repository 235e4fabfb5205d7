"""Continuous conditions in the adaLN slot: the embedder, the bundle, the checks, the sampler and the trainer."""

import csv
import json
import math

import pytest
import torch
from conftest import record_class_labels, tiny_transformer
from diffusers import DDIMScheduler
from diffusers.models.embeddings import get_timestep_embedding

from bottleneck_utils import integrity, models
from bottleneck_utils.continuous import DEFAULT_GRID, ConditionRange, install_condition_embedders
from bottleneck_utils.embeddings import check_labels, class_embeddings, conditional_vectors
from bottleneck_utils.models import DDPM, Bundle, block_embedders, check_embedder_copies, tie_embedder_copies
from bottleneck_utils.organisms import recipes, train
from bottleneck_utils.organisms.recipes import Recipe
from bottleneck_utils.sampling import sample

RANGE = ConditionRange("temperature", 0.0, 4.5)


def continuous_bundle(seed: int = 0) -> Bundle:
    """The tiny DiT of conftest with its label tables replaced by identical continuous embedders."""
    transformer = tiny_transformer(seed=seed)
    embedders = block_embedders(transformer)
    install_condition_embedders(embedders, RANGE)
    torch.manual_seed(seed)
    torch.nn.init.normal_(embedders[0].class_embedder.null_embedding, std=0.5)  # a null vector that is not zero
    tie_embedder_copies(transformer)
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="trailing")
    return Bundle("tiny-continuous", embedders[0], 0, DDPM, transformer.eval(), scheduler, condition=RANGE)


@pytest.fixture
def continuous():
    return continuous_bundle()


# ---------------------------------------------------------------------------------------------------
#                                        The range and the embedder
# ---------------------------------------------------------------------------------------------------


def test_range_from_values_rounds_outwards_and_rejects_bad_ranges():
    assert ConditionRange.of_values("temperature", [0.00037, 2.0, 4.5352]) == ConditionRange("temperature", 0.0, 4.54)
    grid = RANGE.grid(10)
    assert len(grid) == 10 and grid[0] == 0.0 and grid[-1] == 4.5
    for low, high in ((1.0, 1.0), (2.0, 1.0), (0.0, math.inf)):
        with pytest.raises(ValueError, match="low < high"):
            ConditionRange("temperature", low, high)


def test_embedder_is_an_mlp_of_the_rescaled_sinusoid_and_nan_selects_the_null_vector(continuous):
    embedder = continuous.embedder.class_embedder
    values = torch.tensor([0.0, 2.25, 4.5, float("nan")])
    out = embedder(values)  # (4, D)
    features = get_timestep_embedding(torch.tensor([0.0, 500.0, 1000.0]), 256, flip_sin_to_cos=True,
                                      downscale_freq_shift=0)  # T mapped onto [0, 1000]
    # rescaled in float64 then cast, against float32 features of 0/500/1000: sin/cos arguments ≤ 1000 (~6e-5 · |W|)
    assert torch.allclose(out[:3], embedder.mlp(features), atol=1e-5)
    assert torch.equal(out[3], embedder.null_embedding.detach())
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # different temperatures, different vectors


# ---------------------------------------------------------------------------------------------------
#                                     Checks, vectors and the sampler
# ---------------------------------------------------------------------------------------------------


def test_continuous_labels_are_floats_checked_against_the_trained_range(continuous):
    assert continuous.null_label != continuous.null_label  # NaN
    checked = check_labels(continuous, [0.0, 1.5, 4.5])
    assert checked.dtype == torch.float32 and checked.tolist() == [0.0, 1.5, 4.5]
    for bad in ([-0.01], [4.6], [math.inf]):
        with pytest.raises(ValueError, match="outside the trained range"):
            check_labels(continuous, bad)
    with pytest.raises(ValueError, match="include_null=True"):
        check_labels(continuous, [1.0, math.nan])
    assert torch.isnan(check_labels(continuous, [math.nan], include_null=True)).all()


def test_c_is_t_plus_e_of_T_and_matches_the_module(continuous):
    temperatures, timesteps = [0.5, 2.27, 4.0], [999, 400]
    c = conditional_vectors(continuous, temperatures, timesteps)  # (2, 3, D)
    y = conditional_vectors(continuous, temperatures, timesteps, part="y")
    t = conditional_vectors(continuous, temperatures, timesteps, part="t")
    assert torch.equal(c, y + t)  # c is computed as y + t
    for k, step in enumerate(timesteps):
        module = continuous.embedder(torch.full((3,), step), torch.tensor(temperatures), hidden_dtype=torch.float32)
        # the module adds the same float32 parts: at most an ulp of |c| ≲ 10 apart
        assert torch.allclose(c[k], module, atol=1e-6)


def test_all_conditions_of_a_continuous_bundle_is_a_grid_over_the_range(continuous):
    assert torch.equal(class_embeddings(continuous), class_embeddings(continuous, RANGE.grid(DEFAULT_GRID)))
    assert conditional_vectors(continuous).shape == (DEFAULT_GRID, continuous.hidden_size)


def test_sampler_uses_nan_as_the_null_and_is_seeded(continuous):
    seen = record_class_labels(continuous.transformer)
    first = sample(continuous, [0.5, 4.0], num_steps=3, cfg_scale=3.0, seed=2, progress=False)
    assert seen[0][:2].tolist() == [0.5, 4.0] and torch.isnan(seen[0][2:]).all()
    assert torch.isfinite(first).all() and first.shape == (2, 1, 8, 8)
    assert torch.equal(first, sample(continuous, [0.5, 4.0], num_steps=3, cfg_scale=3.0, seed=2, progress=False))
    with pytest.raises(ValueError, match="outside the trained range"):
        sample(continuous, [5.0], num_steps=1, progress=False)


# ---------------------------------------------------------------------------------------------------
#                                      Trainer, saving and loading
# ---------------------------------------------------------------------------------------------------

TINY = Recipe(transformer={"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 1, "num_layers": 2,
                    "sample_size": 8, "patch_size": 2, "num_embeds_ada_norm": 1, "norm_eps": 1e-6}, condition=RANGE.as_dict(), steps=4, batch_size=8, lr=1e-3, ema_decay=0.9, label_dropout=0.5, log_every=2, class_names=None)


def tiny_training(tmp_path):
    g = torch.Generator().manual_seed(0)
    images, temperatures = torch.rand(32, 1, 8, 8, generator=g) * 2 - 1, torch.rand(32, generator=g) * 4.5
    source = train.TensorSource(images, temperatures)
    return train.train_dit(TINY, source, TINY.steps, 0, tmp_path / "run", progress=False)


def test_trained_continuous_model_saves_and_loads_by_name(tmp_path, monkeypatch):
    model = train.build_transformer(TINY.transformer, seed=0, condition=RANGE)
    null = block_embedders(model)[0].class_embedder.null_embedding
    assert all(e is block_embedders(model)[0] for e in block_embedders(model)) and 0.005 < null.std() < 0.05
    monkeypatch.setattr(train, "CHECKPOINT_DIR", tmp_path)
    monkeypatch.setattr(integrity, "CHECKPOINT_DIR", tmp_path)
    monkeypatch.setitem(models.EMBEDDED, "tiny-continuous", models._load_embedded)
    monkeypatch.setitem(recipes.ORGANISMS, "tiny-continuous", TINY)  # only a registry's recipe ships
    ema = tiny_training(tmp_path)
    rows = list(csv.DictReader((tmp_path / "run" / "train_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 2, 4] and all(-1 <= float(r["cos_c"]) <= 1 for r in rows)
    train.save_run(tmp_path / "run", ema, TINY, 4, 0)
    sha = train.install(tmp_path / "run", "tiny-continuous")
    assert json.loads((tmp_path / "tiny-continuous" / "meta.json").read_text())["condition"] == RANGE.as_dict()
    bundle = models.load("tiny-continuous")
    check_embedder_copies(bundle.transformer)
    assert bundle.sha256 == sha and bundle.condition == RANGE and bundle.num_classes == 0
    expected = block_embedders(ema)[0].class_embedder(torch.tensor([1.0, math.nan]))
    assert torch.equal(class_embeddings(bundle, [1.0, math.nan], include_null=True), expected)
