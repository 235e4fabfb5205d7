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


# ---------------------------------------------------------------------------------------------------
#                                  One summary, one key scheme
# ---------------------------------------------------------------------------------------------------

SUMMARY_KEYS = ("cos_c", "cos_y", "npr_c", "npr_y", "t_share", "head_energy", "tail_rel")


def head_energy_share(vectors: torch.Tensor, share: float = 0.02) -> torch.Tensor:
    """Share of ‖c‖² held by the top ``share`` of coordinates (at least one), per vector: (..., d) → (...)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    energy = vectors.double() ** 2  # (..., d)
    k = max(1, round(share * vectors.shape[-1]))
    return energy.topk(k, dim=-1).values.sum(-1) / energy.sum(-1)


def relative_tail_fraction(vectors: torch.Tensor, relative_tau: float = 0.01) -> torch.Tensor:
    """s_tail at τ = ``relative_tau`` · max|cᵢ| of each vector: a scale-free tail share, (..., d) → (...)."""
    tau = _check_tau(relative_tau)
    magnitude = vectors.double().abs()
    return (magnitude < tau * magnitude.amax(-1, keepdim=True)).double().mean(-1)


def summary(y: torch.Tensor, t: torch.Tensor, head_share: float = 0.02, relative_tau: float = 0.01) -> dict[str, float]:
    """The statistics of c = y + t that every chapter and every training log report, under one key scheme.

    Args:
        y: class (or condition) embeddings (n, d), n ≥ 2.
        t: the timestep embedding at one timestep (d,).
        head_share: the share of coordinates that :func:`head_energy_share` counts as the head (paper: 1–2%).
        relative_tau: τ as a share of max|cᵢ| for :func:`relative_tail_fraction`.

    Returns:
        ``cos_c``/``cos_y``: mean off-diagonal cosine of c and of y; ``npr_c``/``npr_y``: mean per-vector nPR;
        ``t_share``: ‖t‖² / (‖t‖² + mean ‖yᵢ‖²), the share of the energy of c that t carries were y ⟂ t;
        ``head_energy``: mean share of ‖c‖² in the top ``head_share`` coordinates; ``tail_rel``: mean share of
        coordinates with |cᵢ| < ``relative_tau`` · max|c|.
    """
    if y.ndim != 2 or t.shape != y.shape[-1:]:
        raise ValueError(f"summary needs y of shape (n, d) and t of shape (d,), got {tuple(y.shape)} and {tuple(t.shape)}")
    if not (torch.isfinite(y).all() and torch.isfinite(t).all()):
        raise ValueError("summary got non-finite embeddings (NaN or inf): check the model's weights and timestep")
    y, t = y.double(), t.double()
    c = y + t  # (n, d)
    t_energy = (t * t).sum()
    return {
        "cos_c": mean_offdiag_cosine(c).item(),
        "cos_y": mean_offdiag_cosine(y).item(),
        "npr_c": mean_npr(c).item(),
        "npr_y": mean_npr(y).item(),
        "t_share": (t_energy / (t_energy + (y * y).sum(-1).mean())).item(),
        "head_energy": head_energy_share(c, head_share).mean().item(),
        "tail_rel": relative_tail_fraction(c, relative_tau).mean().item(),
    }
