"""The conditioning-vector hook of text-conditioned DiTs, on tiny random-init SD3 and PixArt transformers."""

import pytest
import torch
from diffusers import PixArtTransformer2DModel, SD3Transformer2DModel

from bottleneck_utils import embeddings, masks, stats
from bottleneck_utils.chapters import paper
from bottleneck_utils.text_conditions import (
    conditioning_module,
    encode_prompts,
    pooled_vectors,
    prompt_summary,
    prompt_vectors,
    size_vectors,
    text_bundle,
)

POOLED = 12


@pytest.fixture
def sd3():
    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
                                 num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                 pooled_projection_dim=POOLED, out_channels=4, pos_embed_max_size=16).eval()


@pytest.fixture
def pixart():
    torch.manual_seed(0)
    return PixArtTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=12,
                                    num_attention_heads=2, cross_attention_dim=24, caption_channels=12,
                                    out_channels=4, use_additional_conditions=True).eval()


def toy_encoder(prompts):
    """A deterministic stand-in for a text encoder: each prompt seeds its own pooled vector."""
    rows = []
    for prompt in prompts:
        generator = torch.Generator().manual_seed(sum(map(ord, prompt)))
        rows.append(torch.randn(POOLED, generator=generator))
    return torch.stack(rows)  # (n, POOLED)


def pooled_batch(n=5):
    return torch.randn(n, POOLED, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------------
#                                                 SD3
# ---------------------------------------------------------------------------------------------------


def test_sd3_c_is_the_output_of_time_text_embed_and_splits_into_y_plus_t(sd3):
    pooled = pooled_batch()
    c = pooled_vectors(sd3, pooled, [1000, 250])  # (2, 5, D)
    y, t = pooled_vectors(sd3, pooled, [1000, 250], "y"), pooled_vectors(sd3, pooled, [1000, 250], "t")
    assert c.shape == (2, 5, 16) and t.shape == (2, 1, 16)
    assert torch.equal(c, y + t)  # c is computed as y + t
    with torch.no_grad():
        module = sd3.time_text_embed(torch.full((5,), 250.0), pooled)
    # the module adds the same float32 parts: at most an ulp of |c| ≲ 10 apart
    assert torch.allclose(c[1], module, atol=1e-6)
    # the default timestep is t₀ = 1000; one timestep against a batch of two: BLAS rounding of |c| ≲ 10
    assert torch.allclose(pooled_vectors(sd3, pooled), c[0], atol=1e-6)


def test_prompts_go_through_the_encoder_and_bad_prompt_lists_fail(sd3):
    prompts = ["a cat", "a dog on a bench", "an astronaut"]
    assert torch.equal(prompt_vectors(sd3, prompts, toy_encoder), pooled_vectors(sd3, toy_encoder(prompts)))
    with pytest.raises(ValueError, match="prompt list is empty"):
        prompt_vectors(sd3, [], toy_encoder)
    with pytest.raises(TypeError, match="list of strings"):
        encode_prompts("a cat", toy_encoder)
    with pytest.raises(ValueError, match="one pooled vector per prompt"):
        encode_prompts(prompts, lambda p: toy_encoder(p)[:1])
    with pytest.raises(ValueError, match=r"\(n >= 1, 12\)"):
        pooled_vectors(sd3, torch.zeros(0, POOLED))
    with pytest.raises(ValueError, match="timesteps"):
        pooled_vectors(sd3, pooled_batch(), 1001)


def test_prompt_summary_is_stats_summary_of_y_and_t(sd3):
    pooled = pooled_batch(6)
    row = prompt_summary(sd3, pooled)
    assert tuple(row) == stats.SUMMARY_KEYS and set(paper.TABLE_COLUMNS.values()) <= set(row)
    y, t = pooled_vectors(sd3, pooled, part="y"), pooled_vectors(sd3, pooled, part="t")[0]
    assert row == stats.summary(y, t)  # the same vectors through the same function
    # c = y + t formed in float32 (pooled_vectors) or float64 (summary): rounding of |c| ≲ 10 only
    assert row["cos_c"] == pytest.approx(stats.mean_offdiag_cosine(pooled_vectors(sd3, pooled)).item(), rel=1e-6)


def test_text_bundle_feeds_the_common_embeddings(sd3, pixart):
    bundle = text_bundle(sd3)
    assert bundle.prompt_conditioned and bundle.embedder is conditioning_module(sd3) and bundle.hidden_size == 16
    assert bundle.time.first_time == 1000.0 and text_bundle(pixart).time.first_time == 999.0
    t = pooled_vectors(sd3, pooled_batch(), part="t")[0]  # at t₀, through the bundle
    assert torch.equal(embeddings.timestep_embeddings(bundle, [1000.0])[0], t)
    with pytest.raises(ValueError, match="text-conditioned"):
        embeddings.conditional_vectors(bundle, [0])
    with pytest.raises(ValueError, match="null_policy='leave'"), masks.prune(bundle, masks.coordinate_mask([0], 16),
                                                                            null_policy="leave"):
        pass


def sd3_forward(sd3, pooled):
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(len(pooled), 4, 8, 8, generator=generator)
    text = torch.randn(len(pooled), 3, 16, generator=generator)
    with torch.no_grad():
        return sd3(latents, encoder_hidden_states=text, pooled_projections=pooled,
                   timestep=torch.full((len(pooled),), 500.0)).sample


def test_sd3_pruning_zeroes_c_for_every_consumer_and_is_undone_on_exit(sd3):
    pooled = pooled_batch(2)
    before = sd3_forward(sd3, pooled)
    mask = masks.coordinate_mask([0, 5, 9], 16)
    seen = []  # c as each consumer receives it: every block's norm1 (emb=) and the output norm (2nd argument)
    consumers = [block.norm1 for block in sd3.transformer_blocks] + [sd3.norm_out]
    probes = [module.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("emb", a[-1])), with_kwargs=True)
              for module in consumers]
    with masks.prune(text_bundle(sd3), mask):
        pruned = sd3_forward(sd3, pooled)
    for probe in probes:
        probe.remove()
    assert len(seen) == len(consumers)
    assert all((c[:, [0, 5, 9]] == 0).all() and (c[:, 1] != 0).all() for c in seen)
    assert not torch.allclose(pruned, before, atol=1e-3)  # a real change, not rounding
    assert torch.equal(sd3_forward(sd3, pooled), before)  # bit-identity: the same batch on the same machine


def test_pruning_rejects_masks_that_do_not_fit(sd3):
    with pytest.raises(ValueError, match="length 8"), masks.prune(text_bundle(sd3), masks.coordinate_mask([0], 8)):
        pass
    per_sample = masks.Mask(torch.zeros(3, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="global"), masks.prune(text_bundle(sd3), per_sample):
        pass


# ---------------------------------------------------------------------------------------------------
#                                                PixArt
# ---------------------------------------------------------------------------------------------------


def test_pixart_c_is_t_plus_size_embeddings_and_matches_adaln_single(pixart):
    resolution, ratio = torch.tensor([[512.0, 512.0], [768.0, 512.0]]), torch.tensor([[1.0], [1.5]])
    c = size_vectors(pixart, resolution, ratio)  # (2, D) at t₀ = 999
    y, t = size_vectors(pixart, resolution, ratio, part="y"), size_vectors(pixart, resolution, ratio, part="t")
    assert c.shape == (2, 24) and torch.equal(c, y + t)  # c is computed as y + t
    with torch.no_grad():
        module = pixart.adaln_single.emb(torch.full((2,), 999.0), resolution, ratio, batch_size=2,
                                         hidden_dtype=torch.float32)
    # the module adds the same float32 parts: at most an ulp of |c| ≲ 10 apart
    assert torch.allclose(c, module, atol=1e-6)


def test_pixart_has_no_prompt_in_c(pixart):
    with pytest.raises(ValueError, match="cross-attention"):
        pooled_vectors(pixart, pooled_batch())
    with pytest.raises(ValueError, match="cross-attention"):
        prompt_vectors(pixart, ["a cat"], toy_encoder)
    plain = PixArtTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                     num_attention_heads=2, cross_attention_dim=16, caption_channels=12,
                                     out_channels=4, use_additional_conditions=False)
    with pytest.raises(ValueError, match="timestep embedding t alone"):
        size_vectors(plain, [[512.0, 512.0]], [1.0])


def test_pixart_pruning_reaches_the_blocks(pixart):
    generator = torch.Generator().manual_seed(4)
    inputs = {"hidden_states": torch.randn(1, 4, 8, 8, generator=generator),
              "encoder_hidden_states": torch.randn(1, 3, 12, generator=generator), "timestep": torch.tensor([500.0]),
              "added_cond_kwargs": {"resolution": torch.tensor([[512.0, 512.0]]),
                                    "aspect_ratio": torch.tensor([[1.0]])}}
    with torch.no_grad():
        before = pixart(**inputs).sample
        with masks.prune(text_bundle(pixart), masks.coordinate_mask(torch.arange(12), 24)):
            pruned = pixart(**inputs).sample
        assert not torch.allclose(before, pruned, atol=1e-3)  # a real change, not rounding
        assert torch.equal(pixart(**inputs).sample, before)  # bit-identity: the same batch on the same machine


def test_unsupported_model_is_refused():
    with pytest.raises(TypeError, match="time_text_embed"):
        conditioning_module(torch.nn.Linear(2, 2))
