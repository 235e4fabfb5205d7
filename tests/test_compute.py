"""What a sparse c saves: the compact adaLN projection, its FLOP share, and the timed ratio against the dense one."""

import pytest
import torch

from bottleneck_utils import adaln_cost


def test_compact_projection_equals_the_masked_dense_one(bundle):
    linear = bundle.transformer.transformer_blocks[0].norm1.linear
    removed = torch.zeros(bundle.hidden_size, dtype=torch.bool)
    removed[::3] = True
    compact = adaln_cost.compact_projection(linear, removed)
    c = torch.randn(5, bundle.hidden_size).masked_fill(removed, 0)  # (5, D)
    silu = torch.nn.functional.silu
    assert compact.weight.shape == (linear.out_features, int((~removed).sum()))
    # the same dot products without the zero terms: float32 rounding of sums of ~|c|·|W| ≲ 10 terms (~1e-6)
    assert torch.allclose(compact(silu(c[:, ~removed])), linear(silu(c)), atol=1e-5)


def test_adaln_flop_share_by_hand():
    # D = 2, 1 token, 1 block: adaLN 6·4 + 2·4 = 32; block 12·4 + 2·1·2 = 52
    assert adaln_cost.adaln_flop_share(2, 1, 1) == 32 / (32 + 52)
    share_xl = adaln_cost.adaln_flop_share(**adaln_cost.DIT_XL)
    assert 0.001 < share_xl < 0.01  # per-sample projections against 256 tokens of work: well under 1%
    with pytest.raises(ValueError, match=">= 1"):
        adaln_cost.adaln_flop_share(0, 256, 28)


def test_random_removed_has_the_share_and_follows_the_seed():
    removed = adaln_cost.random_removed(1152, 0.3894, seed=3)
    assert removed.dtype == torch.bool and removed.sum() == round(0.3894 * 1152)
    assert torch.equal(removed, adaln_cost.random_removed(1152, 0.3894, seed=3))
    assert not torch.equal(removed, adaln_cost.random_removed(1152, 0.3894, seed=4))
    with pytest.raises(ValueError, match=r"fraction must lie in \[0, 1\]"):
        adaln_cost.random_removed(1152, float("nan"))


def test_projection_ratio_is_a_positive_time_ratio_and_checks_its_mask():
    linear = torch.nn.Linear(64, 6 * 64)
    ratio = adaln_cost.projection_ratio(linear, adaln_cost.random_removed(64, 0.5), batch=8, rounds=3, inner=2)
    assert ratio > 0
    with pytest.raises(ValueError, match=r"removed must be a \(64,\) bool tensor"):
        adaln_cost.projection_ratio(linear, torch.zeros(63, dtype=torch.bool), batch=8)
    with pytest.raises(ValueError, match="batch, rounds and inner must be >= 1"):
        adaln_cost.projection_ratio(linear, adaln_cost.random_removed(64, 0.5), batch=0)
