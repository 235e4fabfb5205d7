"""Original DiT checkpoints → diffusers ``DiTTransformer2DModel`` (``bottleneck_utils.convert`` and
``load(..., full=True)``), checked against the official key names and a hand-written original forward pass."""

import pytest
import torch

from bottleneck_utils import convert, models

try:  # tests/ is on sys.path under pytest's default import mode; tests.synthetic if tests/ becomes a package
    from tests import synthetic
except ImportError:
    import synthetic


@pytest.fixture(scope="module")
def state_dict():
    return synthetic.original_dit_state_dict(seed=0)


@pytest.fixture(scope="module")
def full_bundle(state_dict, tmp_path_factory):
    path = synthetic.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "DiT-S-2-toy.pt", state_dict)
    return models.load(str(path), full=True, num_heads=synthetic.HEADS)  # family "dit" inferred from the name


def test_architecture_is_read_off_the_shapes(state_dict):
    config = convert.original_architecture(state_dict, num_heads=synthetic.HEADS)
    assert config == {
        "num_attention_heads": synthetic.HEADS,
        "attention_head_dim": synthetic.HIDDEN // synthetic.HEADS,
        "in_channels": synthetic.IN_CHANNELS,
        "out_channels": 2 * synthetic.IN_CHANNELS,  # learn_sigma
        "num_layers": synthetic.DEPTH,
        "sample_size": synthetic.INPUT_SIZE,
        "patch_size": synthetic.PATCH,
        "num_embeds_ada_norm": synthetic.NUM_CLASSES,  # table rows − the null row
        "norm_eps": 1e-6,
    }
    no_sigma = synthetic.original_dit_state_dict(learn_sigma=False)
    assert convert.original_architecture(no_sigma, synthetic.HEADS)["out_channels"] == synthetic.IN_CHANNELS


def dit_shapes(hidden: int, depth: int, mlp_ratio: int = 4) -> dict[str, torch.Tensor]:
    """The shapes original_architecture reads, as meta tensors (no memory): a 256-px latent DiT with patch 2."""
    shapes = {"x_embedder.proj.weight": (hidden, 4, 2, 2), "pos_embed": (1, 256, hidden),
              "final_layer.linear.weight": (2 * 4 * 4, hidden), "y_embedder.embedding_table.weight": (1001, hidden),
              **{f"blocks.{i}.mlp.fc1.weight": (mlp_ratio * hidden, hidden) for i in range(depth)}}
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


@pytest.mark.parametrize("size", list(convert.DIT_SIZES))
def test_head_count_of_each_dit_size_is_checked_against_width_depth_and_mlp(size):
    hidden, depth, heads = convert.DIT_SIZES[size]
    assert convert.original_architecture(dit_shapes(hidden, depth))["num_attention_heads"] == heads
    for other_depth, mlp_ratio in ((depth - 1, 4), (depth, 3)):  # a DiT width, but not a DiT shape: not assumed
        with pytest.raises(ValueError, match="not one of DiT's sizes.*pass num_heads"):
            convert.original_architecture(dit_shapes(hidden, other_depth, mlp_ratio))
    assert convert.original_architecture(dit_shapes(hidden, depth - 1), num_heads=heads)["num_layers"] == depth - 1


@pytest.mark.parametrize("num_heads", [5, 0, -16, 2.0, True])
def test_num_heads_must_divide_the_width(num_heads):
    with pytest.raises(ValueError, match="num_heads must be a positive int dividing the hidden size 1152"):
        convert.original_architecture(dit_shapes(1152, 28), num_heads=num_heads)


def test_unknown_hidden_size_needs_num_heads():
    odd = synthetic.original_dit_state_dict(hidden=64, depth=1)
    with pytest.raises(ValueError, match="pass num_heads"):
        convert.original_to_diffusers(odd)
    model = convert.original_to_diffusers(odd, num_heads=4)
    assert model.config.num_attention_heads == 4 and model.config.attention_head_dim == 16


def test_weights_map_exactly(state_dict, full_bundle):
    model = full_bundle.transformer
    sd = state_dict
    assert torch.equal(model.pos_embed.proj.weight, sd["x_embedder.proj.weight"])
    assert torch.equal(model.pos_embed.proj.bias, sd["x_embedder.proj.bias"])
    assert torch.equal(model.proj_out_1.weight, sd["final_layer.adaLN_modulation.1.weight"])
    assert torch.equal(model.proj_out_2.weight, sd["final_layer.linear.weight"])
    assert torch.equal(model.proj_out_2.bias, sd["final_layer.linear.bias"])
    for i, block in enumerate(model.transformer_blocks):
        b = f"blocks.{i}."
        for kind in ("weight", "bias"):
            qkv = sd[b + f"attn.qkv.{kind}"]
            d = synthetic.HIDDEN
            # q, k, v are the three consecutive row blocks of qkv (timm's Attention layout)
            assert torch.equal(getattr(block.attn1.to_q, kind), qkv[:d])
            assert torch.equal(getattr(block.attn1.to_k, kind), qkv[d:2 * d])
            assert torch.equal(getattr(block.attn1.to_v, kind), qkv[2 * d:])
            assert torch.equal(getattr(block.attn1.to_out[0], kind), sd[b + f"attn.proj.{kind}"])
            assert torch.equal(getattr(block.ff.net[0].proj, kind), sd[b + f"mlp.fc1.{kind}"])
            assert torch.equal(getattr(block.ff.net[2], kind), sd[b + f"mlp.fc2.{kind}"])
            assert torch.equal(getattr(block.norm1.linear, kind), sd[b + f"adaLN_modulation.1.{kind}"])
        emb = block.norm1.emb
        assert torch.equal(emb.class_embedder.embedding_table.weight, sd["y_embedder.embedding_table.weight"])
        assert torch.equal(emb.timestep_embedder.linear_1.weight, sd["t_embedder.mlp.0.weight"])
        assert torch.equal(emb.timestep_embedder.linear_2.bias, sd["t_embedder.mlp.2.bias"])
        assert emb.time_proj.downscale_freq_shift == 0  # an original checkpoint keeps the original sinusoid
    assert full_bundle.embedder is model.transformer_blocks[0].norm1.emb
    assert full_bundle.num_classes == synthetic.NUM_CLASSES
    assert full_bundle.time.kind == "ddpm" and full_bundle.scheduler is not None


def test_per_block_embedders_are_identical_copies(full_bundle):
    models.check_embedder_copies(full_bundle.transformer)  # does not raise
    embedders = models.block_embedders(full_bundle.transformer)
    assert len(embedders) == synthetic.DEPTH
    # copies, not one shared module: perturbing one must not change the others (next test relies on it)
    assert embedders[0] is not embedders[1]
    assert embedders[0].class_embedder.embedding_table.weight.data_ptr() != \
        embedders[1].class_embedder.embedding_table.weight.data_ptr()


@pytest.mark.parametrize("part", ["class_embedder.embedding_table.weight", "timestep_embedder.linear_2.bias"])
def test_check_embedder_copies_raises_after_perturbing_block_1(tmp_path, state_dict, part):
    path = synthetic.save_checkpoint(tmp_path / "DiT-S-2-toy.pt", state_dict)
    model = models.load(str(path), full=True, num_heads=synthetic.HEADS).transformer
    with torch.no_grad():
        model.transformer_blocks[1].norm1.emb.get_parameter(part).view(-1)[3] += 1e-3
    with pytest.raises(ValueError, match=r"blocks \[1\] differ"):
        models.check_embedder_copies(model)


def test_pos_embed_equals_the_checkpoints_fixed_sincos(state_dict, full_bundle):
    # the converter drops the checkpoint's pos_embed and lets diffusers recompute it; that is only right if
    # diffusers' sin-cos table is DiT's (which the synthetic checkpoint stores, as DiT does)
    pos = full_bundle.transformer.pos_embed.pos_embed
    assert pos.shape == state_dict["pos_embed"].shape
    # the same float64 sin-cos formula, cast to float32: values in [-1, 1] round within 6e-8
    torch.testing.assert_close(pos, state_dict["pos_embed"], atol=1e-6, rtol=0)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_forward_matches_the_original_dit(tmp_path, learn_sigma):
    sd = synthetic.original_dit_state_dict(seed=1, learn_sigma=learn_sigma)
    bundle = models.load(str(synthetic.save_checkpoint(tmp_path / "model.pt", sd)), family="dit", full=True,
                         num_heads=synthetic.HEADS)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, synthetic.IN_CHANNELS, synthetic.INPUT_SIZE, synthetic.INPUT_SIZE, generator=gen)
    t = torch.tensor([999.0, 500.0, 3.0])
    y = torch.tensor([0, 7, synthetic.NUM_CLASSES])  # the last is the CFG null class
    with torch.no_grad():
        out = bundle.transformer(x, timestep=t, class_labels=y).sample
        reference = synthetic.reference_dit_forward(sd, x, t, y)
    assert out.shape == reference.shape == (3, (2 if learn_sigma else 1) * synthetic.IN_CHANNELS, 8, 8)
    assert reference.abs().mean() > 0.1  # every weight matters: not a trivially-zero output
    # float32 diffusers against the float64 hand-written forward: rounding through 2 blocks of width 384 (~1e-5)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
    # and the diffusers sinusoid (freq_shift=1) is measurably not the original model
    models.set_freq_shift(models.block_embedders(bundle.transformer), 1)
    with torch.no_grad():
        shifted = bundle.transformer(x, timestep=t, class_labels=y).sample
    assert (shifted - reference).abs().max() > 1e-2


def test_missing_and_unexpected_keys_are_all_listed(state_dict):
    broken = dict(state_dict)
    del broken["blocks.1.mlp.fc2.weight"]
    del broken["t_embedder.mlp.0.bias"]
    broken["blocks.0.attn.q_norm.weight"] = torch.ones(64)
    broken["projectors.0.0.weight"] = torch.ones(2, 2)
    with pytest.raises(KeyError) as error:
        convert.original_to_diffusers(broken, num_heads=synthetic.HEADS, path="toy.pt")
    message = str(error.value)
    for key in ("blocks.1.mlp.fc2.weight", "t_embedder.mlp.0.bias", "blocks.0.attn.q_norm.weight",
                "projectors.0.0.weight"):
        assert key in message
    assert "missing" in message and "unexpected" in message and "toy.pt" in message


def test_not_a_backbone_is_rejected(state_dict):
    embedders_only = {k: v for k, v in state_dict.items() if k.startswith(("t_embedder", "y_embedder"))}
    with pytest.raises(KeyError, match="not a DiT/SiT backbone"):
        convert.original_to_diffusers(embedders_only)


def test_a_pos_embed_that_is_not_dits_sincos_table_is_refused(state_dict):
    """diffusers recomputes DiT's fixed table instead of loading it: a learned or shifted one would be lost."""
    learned = dict(state_dict, pos_embed=state_dict["pos_embed"] + 0.01)
    with pytest.raises(ValueError, match="toy.pt: its pos_embed is not DiT's fixed sin-cos table"):
        convert.original_to_diffusers(learned, num_heads=synthetic.HEADS, path="toy.pt")
