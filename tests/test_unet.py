"""The class-conditioned U-Net family: c = time_embedding(time_proj(t)) + class_embedding(y), hooked like DiT's c."""

import copy
from dataclasses import replace

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.resnet import ResnetBlock2D
from safetensors.torch import load_file

from bottleneck_utils import embeddings, masks, models, sampling, unet
from bottleneck_utils.models import DDPM, Bundle
from bottleneck_utils.organisms import recipes, train

TINY_UNET = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": [8, 16],
             "layers_per_block": 1, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
             "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 4, "num_class_embeds": 4}
TINY_RECIPE = recipes.Recipe(family="unet", unet=TINY_UNET, steps=2, batch_size=4, lr=1e-3, ema_decay=0.9,
                             label_dropout=0.5, log_every=2, class_names=("a", "b", "c"))


def tiny_unet_bundle(seed=0) -> Bundle:
    model = unet.build_unet(TINY_UNET, seed).eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", timestep_spacing="trailing")
    return Bundle("tiny-unet", model.embedder, model.num_classes, DDPM, model, scheduler)


def batch(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.tensor([999, 500, 20, 3][:n]), torch.arange(n) % 4


def test_the_bundles_c_is_the_unets_time_plus_class_embedding():
    bundle = tiny_unet_bundle()
    net, labels, times = bundle.transformer.unet, torch.arange(4), [999, 500, 3]
    c = embeddings.conditional_vectors(bundle, labels, times, include_null=True)  # (3, 4, 32)
    with torch.no_grad():  # as UNet2DModel.forward forms emb: the timestep broadcast to the batch, then the sum
        expected = torch.stack([net.time_embedding(net.time_proj(torch.full((4,), t)).to(net.dtype))
                                + net.class_embedding(labels).to(net.dtype) for t in times])
    assert bundle.hidden_size == 32 and c.shape == (3, 4, 32)
    # the same float32 ops on batches of other shapes (T timesteps vs n labels): only the BLAS's order may differ
    torch.testing.assert_close(c, expected, rtol=0, atol=1e-6)


def test_the_trunk_reimplementation_is_exact():
    model = unet.build_unet(TINY_UNET, seed=0).eval()
    x, t, y = batch()
    with torch.no_grad():
        for timestep in (t, t[1], 7):  # per sample, a scalar tensor, a Python int
            ours = model(x, timestep, y).sample
            theirs = model.unet(x, timestep, class_labels=y).sample
            assert torch.equal(ours, theirs)  # the same ops in the same order on the same shapes: bit-identical


def test_the_embedder_is_shared_not_registered_and_survives_deepcopy():
    model = unet.build_unet(TINY_UNET, seed=0)
    assert model.embedder.timestep_embedder is model.unet.time_embedding
    assert model.embedder.class_embedder.embedding_table is model.unet.class_embedding
    assert list(model.state_dict()) == [f"unet.{key}" for key in model.unet.state_dict()]  # no duplicate keys
    twin = copy.deepcopy(model)
    assert twin.embedder.timestep_embedder is twin.unet.time_embedding
    assert twin.embedder.class_embedder.embedding_table is twin.unet.class_embedding
    assert twin.embedder.time_proj is twin.unet.time_proj and twin.unet.time_embedding is not model.unet.time_embedding


def test_a_global_mask_equals_zeroing_the_columns_of_every_time_emb_proj():
    bundle = tiny_unet_bundle()
    x, t, y = batch()
    removed = [0, 3, 5, 17, 30]
    mask = masks.coordinate_mask(removed, bundle.hidden_size)
    edited = copy.deepcopy(bundle.transformer.unet)
    projections = [m.time_emb_proj for m in edited.modules() if isinstance(m, ResnetBlock2D)]
    assert len(projections) == 8  # 2 down + 2 mid + 4 up resnets, every one reads c
    with torch.no_grad():
        for projection in projections:
            projection.weight[:, removed] = 0  # silu(0) = 0: zeroing cᵢ removes input column i
        unmasked = bundle.transformer(x, t, y).sample
        with masks.prune(bundle, mask, "every"):
            masked = bundle.transformer(x, t, y).sample
        weight_edit = edited(x, t, class_labels=y).sample
    # a zeroed input and a zeroed weight column both give exact zero products; only the BLAS's order could differ
    torch.testing.assert_close(masked, weight_edit, rtol=0, atol=1e-6)
    assert (masked - unmasked).abs().max() > 1e-3  # the control: the mask does change the output


def test_a_saved_unet_run_loads_and_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    source = train.TensorSource(torch.rand(16, 1, 8, 8, generator=g) * 2 - 1, torch.randint(3, (16,), generator=g))
    ema = train.train_dit(TINY_RECIPE, source, 2, 0, tmp_path, progress=False)
    train.save_run(tmp_path, ema, TINY_RECIPE, 2, 0)
    bundle = models.load(str(tmp_path))
    assert isinstance(bundle.transformer, unet.ConditionedUNet) and bundle.embedder is bundle.transformer.embedder
    assert (bundle.num_classes, bundle.hidden_size, bundle.image_shape) == (3, 32, (1, 8, 8))
    assert set(load_file(tmp_path / "embedder.safetensors")) == set(ema.embedder.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), bundle.transformer.state_dict().values()))
    images = sampling.sample(bundle, [0, 2], num_steps=2, progress=False)
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_the_mnist_recipe_is_mnist_dits_budget_on_a_14x14_unet():
    dit, net = recipes.MNIST_DIT.as_dict(), recipes.MNIST_UNET.as_dict()
    assert {key for key in dit if dit[key] != net[key]} == {"transformer", "unet", "family", "class_table_std"}
    model = unet.build_unet(recipes.MNIST_UNET.unet, seed=0).eval()
    x = torch.randn(2, 1, 14, 14)
    with torch.no_grad():
        assert model(x, torch.tensor([999, 0]), torch.tensor([3, 10])).sample.shape == (2, 1, 14, 14)
    assert (model.num_classes, model.embedder.timestep_embedder.linear_2.out_features) == (10, 128)


def test_the_mnist_unet_recipe_starts_its_class_table_as_dits_and_the_shipped_one_predates_it():
    recipe = recipes.MNIST_UNET
    assert recipe.class_table_std == train.EMBEDDING_INIT_STD == 0.02
    table = train.build_model(recipe, seed=0).unet.class_embedding.weight.detach().double()  # (11, 128)
    assert table.std().item() == pytest.approx(0.02, rel=0.05)  # 1408 draws: the sd of the estimate is ~2%
    default = unet.build_unet(recipe.unet, seed=0).unet.class_embedding.weight.detach().double()
    assert default.std().item() == pytest.approx(1.0, rel=0.05)  # diffusers' N(0, 1)
    same = unet.build_unet(recipe.unet, seed=0, class_table_std=0.02)
    assert torch.equal(same.unet.conv_in.weight, unet.build_unet(recipe.unet, seed=0).unet.conv_in.weight)  # only the table
    shipped, meta = train.saved_run(train.CHECKPOINT_DIR / "mnist-unet")
    assert shipped.class_table_std is None and meta["seed"] == 0  # trained from N(0, 1): the beyond chapter's U-Net
    with pytest.raises(ValueError, match="a U-Net recipe's option"):
        train.build_model(replace(recipes.MNIST_DIT, class_table_std=0.02), seed=0)
    with pytest.raises(ValueError, match="must be a number > 0"):
        unet.build_unet(TINY_UNET, seed=0, class_table_std=0.0)


def test_a_skip_block_is_refused_in_one_line():
    skip = TINY_UNET | {"down_block_types": ["SkipDownBlock2D", "AttnSkipDownBlock2D"],
                        "up_block_types": ["AttnSkipUpBlock2D", "SkipUpBlock2D"],
                        "block_out_channels": [32, 32], "norm_num_groups": 32}  # diffusers' skip blocks use 32 groups
    with pytest.raises(ValueError, match=r"without skip_conv only, got \['SkipDownBlock2D'") as error:
        unet.build_unet(skip, seed=0)
    assert "\n" not in str(error.value)
