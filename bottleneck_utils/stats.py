"""Statistics of conditional vectors: pure functions on tensors, no model knowledge.

Conventions: a batch of vectors is a tensor ``(n, d)`` (n conditions, d = hidden size); a sweep over
timesteps is ``(T, n, d)``. Off-diagonal statistics exclude each vector's cosine with itself.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------------
#                                         Cosine similarity
# ---------------------------------------------------------------------------------------------------


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """The (n, n) matrix of pairwise cosine similarities of the rows of ``vectors`` (n, d)."""
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)  # (n, d)
    return unit @ unit.T  # (n, n)


def _check_nonzero(norms: torch.Tensor, scale: float = 0.0) -> None:
    """Raises if a vector is (numerically) zero: it has no direction, so no cosine."""
    if (norms <= 1e-6 * scale).any() or (norms == 0).any():
        raise ValueError("a conditional vector is zero (or cancels to ~1e-6 of its parts); its cosine is undefined")


def _off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    n = matrix.shape[-1]
    if n < 2:
        raise ValueError("off-diagonal statistics need at least 2 vectors")
    keep = ~torch.eye(n, dtype=torch.bool, device=matrix.device)
    return matrix[..., keep]  # (..., n(n-1))


def mean_offdiag_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal cosine in O(n·d), through (‖Σᵢ ûᵢ‖² − n) / (n(n−1)).

    Works on ``(n, d)`` or on a stack ``(..., n, d)``; returns a scalar or a tensor of shape ``(...)``.
    """
    n = vectors.shape[-2]
    if n < 2:
        raise ValueError("off-diagonal statistics need at least 2 vectors")
    _check_nonzero(vectors.double().norm(dim=-1))
    unit = torch.nn.functional.normalize(vectors.double(), dim=-1)  # (..., n, d)
    total = unit.sum(dim=-2)  # (..., d)
    return ((total * total).sum(dim=-1) - n) / (n * (n - 1))


def offdiag_cosine_summary(vectors: torch.Tensor) -> dict[str, float]:
    """Mean, median and minimum off-diagonal cosine of the rows of ``vectors`` (n, d).

    The paper reports one number per model and does not say how it aggregates; the mean is our default
    and the median and minimum show how much that choice matters.
    """
    values = _off_diagonal(cosine_matrix(vectors))
    return {"mean": values.mean().item(), "median": values.median().item(), "min": values.min().item()}


def mean_offdiag_cosine_sweep(y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean off-diagonal cosine of ``c = yᵢ + t_k`` for every timestep k, without forming c.

    Uses ‖yᵢ + t‖² = ‖yᵢ‖² + 2 yᵢ·t + ‖t‖², so the norms of all n·T vectors and the sum of unit vectors
    over classes come from two matrix products: O(T·n·d) time and O(T·n + T·d) memory.

    Args:
        y: class embeddings (n, d).
        t: timestep embeddings (T, d).

    Returns:
        (T,) mean off-diagonal cosine at each timestep.
    """
    y, t = y.double(), t.double()
    n = y.shape[0]
    if n < 2:
        raise ValueError("off-diagonal statistics need at least 2 vectors")
    cross = t @ y.T  # (T, n): y_i · t_k
    norms = ((y * y).sum(-1)[None, :] + 2 * cross + (t * t).sum(-1)[:, None]).clamp_min(0).sqrt()  # (T, n)
    _check_nonzero(norms, scale=(y.norm(dim=-1).max() + t.norm(dim=-1).max()).item())
    inverse = 1.0 / norms  # (T, n)
    total = inverse @ y + inverse.sum(-1, keepdim=True) * t  # (T, d): Σᵢ (yᵢ + t_k) / ‖yᵢ + t_k‖
    return ((total * total).sum(-1) - n) / (n * (n - 1))


# ---------------------------------------------------------------------------------------------------
#                                    Participation ratio and sparsity
# ---------------------------------------------------------------------------------------------------


def participation_ratio(vectors: torch.Tensor) -> torch.Tensor:
    """PR = (Σ|cᵢ|)² / Σ cᵢ² of each vector along the last dimension (L1²/L2²; 1 ≤ PR ≤ d)."""
    v = vectors.double().abs()
    return v.sum(-1) ** 2 / (v * v).sum(-1)


def normalized_participation_ratio(vectors: torch.Tensor) -> torch.Tensor:
    """nPR = PR / d ∈ (0, 1] of each vector along the last dimension."""
    return participation_ratio(vectors) / vectors.shape[-1]


def mean_npr(vectors: torch.Tensor) -> torch.Tensor:
    """Mean over the rows of the per-vector nPR; ``(..., n, d)`` → ``(...)``.

    The paper does not say whether it takes the nPR of the mean vector or the mean of per-class nPRs;
    this is the latter. ``normalized_participation_ratio(vectors.mean(-2))`` gives the former.
    """
    return normalized_participation_ratio(vectors).mean(-1)


def _check_tau(tau: float | torch.Tensor) -> torch.Tensor:
    tau = torch.as_tensor(tau, dtype=torch.float64)
    if (tau < 0).any():
        raise ValueError(f"the threshold tau must be >= 0, got {tau.tolist()}")
    return tau


def tail_fraction(vector: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """s_tail(τ) = #{i : |cᵢ| < τ} / d, along the last dimension (τ may be a 1-D sweep: result (..., len(τ)))."""
    tau = _check_tau(tau)
    magnitude = vector.double().abs()
    if tau.ndim == 0:
        return (magnitude < tau).double().mean(-1)
    return (magnitude[..., None, :] < tau[:, None]).double().mean(-1)


def head_fraction(vector: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """s_head(τ) = #{i : |cᵢ| > τ} / d, along the last dimension (the appendix's "sparsity ratio")."""
    tau = _check_tau(tau)
    magnitude = vector.double().abs()
    if tau.ndim == 0:
        return (magnitude > tau).double().mean(-1)
    return (magnitude[..., None, :] > tau[:, None]).double().mean(-1)


def tau_sweep(vector: torch.Tensor, taus: torch.Tensor | list[float]) -> dict[str, torch.Tensor]:
    """s_tail and s_head of one vector (d,) over a list of thresholds, as a dict of (len(taus),) tensors."""
    taus = _check_tau(torch.as_tensor(taus, dtype=torch.float64).flatten())
    return {"tau": taus, "tail": tail_fraction(vector, taus), "head": head_fraction(vector, taus)}


def head_tail_indices(vector: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the head (|cᵢ| > τ) and tail (|cᵢ| < τ) coordinates of one vector (d,)."""
    _check_tau(tau)
    magnitude = vector.abs()
    return torch.nonzero(magnitude > tau).flatten(), torch.nonzero(magnitude < tau).flatten()


def per_dim_variance(vectors: torch.Tensor) -> torch.Tensor:
    """Variance of each coordinate across the conditions (rows): (n, d) → (d,). Population variance."""
    return vectors.double().var(dim=0, unbiased=False)
