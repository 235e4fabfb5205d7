"""Property tests: every statistic against a brute-force computation, on random and planted inputs."""

import itertools

import pytest
import torch

from bottleneck_utils import stats


def brute_offdiag(vectors):
    values = [
        torch.nn.functional.cosine_similarity(vectors[i].double(), vectors[j].double(), dim=0).item()
        for i, j in itertools.permutations(range(len(vectors)), 2)
    ]
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("seed", range(5))
def test_mean_offdiag_identity_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(7, 13, generator=g) + 2 * torch.randn(13, generator=g)
    brute = brute_offdiag(vectors)
    # float64 throughout: an algebraic identity against pairwise cosines differs by rounding only (~1e-15 · n)
    assert stats.mean_offdiag_cosine(vectors).item() == pytest.approx(brute.mean().item(), abs=1e-12)
    summary = stats.offdiag_cosine_summary(vectors)
    assert summary["mean"] == pytest.approx(brute.mean().item(), abs=1e-12)
    assert summary["median"] == pytest.approx(brute.median().item(), abs=1e-12)  # torch median: lower middle
    assert summary["min"] == pytest.approx(brute.min().item(), abs=1e-12)


def test_cosine_planted_extremes():
    direction = torch.randn(32)
    aligned = torch.stack([direction * s for s in (0.5, 1.0, 3.0)])  # same direction, different norms
    # float64 unit vectors of float32 inputs: exact up to float64 rounding (~1e-16 · d)
    assert stats.mean_offdiag_cosine(aligned).item() == pytest.approx(1.0, abs=1e-12)
    orthogonal = torch.eye(5) * 3.0
    assert stats.mean_offdiag_cosine(orthogonal).item() == pytest.approx(0.0, abs=1e-12)
    opposite = torch.stack([direction, -direction])
    assert stats.mean_offdiag_cosine(opposite).item() == pytest.approx(-1.0, abs=1e-12)


def test_cosine_matrix_is_symmetric_with_unit_diagonal():
    matrix = stats.cosine_matrix(torch.randn(6, 9))
    assert torch.allclose(matrix, matrix.T, rtol=0, atol=1e-12)  # float64 dot products in two orders
    assert torch.allclose(matrix.diagonal(), torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)  # as above


def test_sweep_matches_per_timestep_brute_force():
    g = torch.Generator().manual_seed(0)
    y, t = torch.randn(9, 17, generator=g) * 0.3, torch.randn(6, 17, generator=g)
    sweep = stats.mean_offdiag_cosine_sweep(y, t)
    expected = torch.stack([brute_offdiag(y + t_k).mean() for t_k in t])  # float64 again: rounding only below
    assert torch.allclose(sweep, expected, atol=1e-12)
    # and the batched (T, n, d) path of mean_offdiag_cosine agrees too
    assert torch.allclose(stats.mean_offdiag_cosine(y[None] + t[:, None]), expected, atol=1e-12)


def test_offdiag_needs_two_vectors():
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_offdiag_cosine(torch.randn(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        stats.mean_offdiag_cosine_sweep(torch.randn(1, 4), torch.randn(3, 4))


def test_participation_ratio_planted():
    d = 40
    one_hot = torch.zeros(d)
    one_hot[3] = -5.0
    assert stats.participation_ratio(one_hot).item() == 1.0  # 5² / 25, exact in float64
    assert stats.normalized_participation_ratio(torch.full((d,), -2.0)).item() == 1.0  # 80² / 160 / 40, exact
    k_hot = torch.zeros(d)
    k_hot[:8] = torch.tensor([1.0, -1, 1, -1, 1, 1, -1, 1])
    assert stats.participation_ratio(k_hot).item() == 8.0  # 8² / 8, exact
    assert stats.normalized_participation_ratio(k_hot).item() == 8 / d


def test_participation_ratio_brute_force_and_mean_npr():
    vectors = torch.randn(5, 11)
    brute = torch.tensor([v.abs().sum().item() ** 2 / (v * v).sum().item() / 11 for v in vectors], dtype=torch.float64)
    # the brute force sums float32 in Python floats, the package in float64 tensors: rounding ~1e-7 relative
    assert torch.allclose(stats.normalized_participation_ratio(vectors), brute, rtol=1e-6, atol=0)
    assert stats.mean_npr(vectors).item() == pytest.approx(brute.mean().item(), rel=1e-6)


def test_head_tail_fractions_planted():
    vector = torch.tensor([0.001, -0.002, 0.5, -6.0, 0.009, 0.02, 7.0, -0.0])
    assert stats.tail_fraction(vector, 0.01).item() == 4 / 8  # counts over 8: exact in binary
    assert stats.head_fraction(vector, 1.0).item() == 2 / 8
    sweep = stats.tau_sweep(vector, [0.0, 0.01, 1.0, 10.0])
    assert sweep["tail"].tolist() == [0.0, 4 / 8, 6 / 8, 1.0]
    assert sweep["head"].tolist() == [7 / 8, 4 / 8, 2 / 8, 0.0]
    head, tail = stats.head_tail_indices(vector, 1.0)
    assert head.tolist() == [3, 6]
    assert tail.tolist() == [0, 1, 2, 4, 5, 7]


def test_fractions_brute_force_random():
    vector = torch.randn(100) * torch.rand(100) ** 4
    for tau in (0.0, 1e-3, 0.05, 0.3):  # a count over 100: a miscount moves it by 0.01, far beyond approx's 1e-6
        tail = sum(abs(v) < tau for v in vector.tolist()) / 100
        head = sum(abs(v) > tau for v in vector.tolist()) / 100
        assert stats.tail_fraction(vector, tau).item() == pytest.approx(tail)
        assert stats.head_fraction(vector, tau).item() == pytest.approx(head)


@pytest.mark.parametrize("call", [
    lambda v: stats.tail_fraction(v, -0.1),
    lambda v: stats.head_fraction(v, -1.0),
    lambda v: stats.tau_sweep(v, [0.1, -0.1]),
    lambda v: stats.head_tail_indices(v, -2.0),
])
def test_negative_tau_is_rejected(call):
    with pytest.raises(ValueError, match="tau must be a number >= 0"):
        call(torch.randn(10))


def test_per_dim_variance():
    vectors = torch.randn(8, 5)
    vectors[:, 2] = 3.0  # a constant coordinate has zero variance
    variance = stats.per_dim_variance(vectors)
    assert variance[2].item() == 0.0
    brute = ((vectors[:, 0] - vectors[:, 0].mean()) ** 2).mean().item()  # in float32: rounding ~1e-7 relative
    assert variance[0].item() == pytest.approx(brute, rel=1e-6)


def test_zero_vectors_are_rejected_not_averaged():
    y = torch.randn(4, 8)
    with pytest.raises(ValueError, match="zero"):
        stats.mean_offdiag_cosine(torch.cat([y, torch.zeros(1, 8)]))
    with pytest.raises(ValueError, match="zero"):
        stats.mean_offdiag_cosine_sweep(y, torch.stack([torch.randn(8), -y[2]]))  # y_2 + t_1 cancels
