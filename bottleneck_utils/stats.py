"""Statistics of conditional vectors: pure functions on tensors, no model knowledge.

Conventions: a batch of vectors is a tensor ``(n, d)`` (n conditions, d = hidden size); a sweep over
timesteps is ``(T, n, d)``. Off-diagonal statistics exclude each vector's cosine with itself.

Every function refuses NaN or inf in its input, and a zero vector where the statistic divides by its norm, with a
``ValueError`` that names the problem: a NaN statistic would otherwise pass for a result.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------------
#                                           Input checks
# ---------------------------------------------------------------------------------------------------


def _checked(vectors, min_ndim: int = 1, what: str = "vectors") -> torch.Tensor:
    """``vectors`` as float64, or a ValueError if it has fewer than ``min_ndim`` axes, no coordinates, or NaN/inf."""
    vectors = torch.as_tensor(vectors)
    if vectors.ndim < min_ndim or vectors.shape[-1] == 0:
        shape = "(..., d)" if min_ndim == 1 else "(..., n, d)"
        raise ValueError(f"{what} must have shape {shape} with d >= 1, got {tuple(vectors.shape)}")
    if vectors.is_complex() or vectors.dtype == torch.bool:
        raise ValueError(f"{what} must be real numbers, got {vectors.dtype}")
    vectors = vectors.double()
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{what} hold NaN or inf: check the model's weights and the labels/timesteps they came from")
    return vectors


# ---------------------------------------------------------------------------------------------------
#                                         Cosine similarity
# ---------------------------------------------------------------------------------------------------


def cosine_matrix(vectors: torch.Tensor) -> torch.Tensor:
    """The (n, n) matrix of pairwise cosine similarities of the rows of ``vectors`` (n, d)."""
    vectors = _checked(vectors, min_ndim=2)
    _check_nonzero(vectors.norm(dim=-1))
    unit = torch.nn.functional.normalize(vectors, dim=-1)  # (n, d)
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
    vectors = _checked(vectors, min_ndim=2)
    n = vectors.shape[-2]
    if n < 2:
        raise ValueError("off-diagonal statistics need at least 2 vectors")
    _check_nonzero(vectors.norm(dim=-1))
    unit = torch.nn.functional.normalize(vectors, dim=-1)  # (..., n, d)
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
    y, t = _checked(y, 2, "y"), _checked(t, 2, "t")
    if y.ndim != 2 or t.ndim != 2 or y.shape[1] != t.shape[1]:
        raise ValueError(f"the sweep needs y (n, d) and t (T, d) of the same d, got {tuple(y.shape)} and "
                         f"{tuple(t.shape)}")
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
    v = _checked(vectors).abs()
    energy = (v * v).sum(-1)
    if (energy == 0).any():
        raise ValueError("a vector is zero: its participation ratio (L1²/L2²) is undefined")
    return v.sum(-1) ** 2 / energy


def normalized_participation_ratio(vectors: torch.Tensor) -> torch.Tensor:
    """nPR = PR / d ∈ (0, 1] of each vector along the last dimension."""
    return participation_ratio(vectors) / torch.as_tensor(vectors).shape[-1]


def mean_npr(vectors: torch.Tensor) -> torch.Tensor:
    """Mean over the rows of the per-vector nPR; ``(..., n, d)`` → ``(...)``.

    The paper does not say whether it takes the nPR of the mean vector or the mean of per-class nPRs;
    this is the latter. ``normalized_participation_ratio(vectors.mean(-2))`` gives the former.
    """
    return normalized_participation_ratio(_checked(vectors, min_ndim=2)).mean(-1)


def _check_tau(tau: float | torch.Tensor) -> torch.Tensor:
    tau = torch.as_tensor(tau, dtype=torch.float64)
    if torch.isnan(tau).any() or (tau < 0).any():
        raise ValueError(f"the threshold tau must be a number >= 0, got {tau.tolist()}")
    return tau


def tail_fraction(vector: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """s_tail(τ) = #{i : |cᵢ| < τ} / d, along the last dimension (τ may be a 1-D sweep: result (..., len(τ)))."""
    tau = _check_tau(tau)
    magnitude = _checked(vector).abs()
    if tau.ndim == 0:
        return (magnitude < tau).double().mean(-1)
    return (magnitude[..., None, :] < tau[:, None]).double().mean(-1)


def head_fraction(vector: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """s_head(τ) = #{i : |cᵢ| > τ} / d, along the last dimension (the appendix's "sparsity ratio")."""
    tau = _check_tau(tau)
    magnitude = _checked(vector).abs()
    if tau.ndim == 0:
        return (magnitude > tau).double().mean(-1)
    return (magnitude[..., None, :] > tau[:, None]).double().mean(-1)


def tau_sweep(vector: torch.Tensor, taus: torch.Tensor | list[float]) -> dict[str, torch.Tensor]:
    """s_tail and s_head of one vector (d,) over a list of thresholds, as a dict of (len(taus),) tensors."""
    taus = _check_tau(torch.as_tensor(taus, dtype=torch.float64).flatten())
    return {"tau": taus, "tail": tail_fraction(vector, taus), "head": head_fraction(vector, taus)}


def head_tail_indices(vector: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the head (|cᵢ| > τ) and tail (|cᵢ| < τ) coordinates of one vector (d,)."""
    tau = _check_tau(tau)
    magnitude = _checked(vector).abs()
    if magnitude.ndim != 1 or tau.ndim != 0:
        raise ValueError(f"head_tail_indices takes one vector (d,) and one tau, got {tuple(magnitude.shape)}")
    return torch.nonzero(magnitude > tau).flatten(), torch.nonzero(magnitude < tau).flatten()


def per_dim_variance(vectors: torch.Tensor) -> torch.Tensor:
    """Variance of each coordinate across the conditions (rows): (n, d) → (d,). Population variance."""
    vectors = _checked(vectors, min_ndim=2)
    if vectors.ndim != 2:
        raise ValueError(f"per_dim_variance takes (n, d) vectors, got shape {tuple(vectors.shape)}")
    return vectors.var(dim=0, unbiased=False)


# ---------------------------------------------------------------------------------------------------
#                                  One summary, one key scheme
# ---------------------------------------------------------------------------------------------------

SUMMARY_KEYS = ("cos_c", "cos_y", "npr_c", "npr_y", "t_share", "head_energy", "tail_rel")
DETAIL_KEYS = ("cos_c_median", "cos_c_min", "npr_c_of_mean", "pr_c", "cos_y_median", "cos_y_min", "npr_y_of_mean",
               "pr_y")


def head_energy_share(vectors: torch.Tensor, share: float = 0.02) -> torch.Tensor:
    """Share of ‖c‖² held by the top ``share`` of coordinates (at least one), per vector: (..., d) → (...)."""
    if not 0 < share <= 1:  # also catches NaN
        raise ValueError(f"share must be in (0, 1], got {share}")
    energy = _checked(vectors) ** 2  # (..., d)
    if (energy.sum(-1) == 0).any():
        raise ValueError("a vector is zero: its head energy share is undefined")
    k = max(1, round(share * vectors.shape[-1]))
    return energy.topk(k, dim=-1).values.sum(-1) / energy.sum(-1)


def relative_tail_fraction(vectors: torch.Tensor, relative_tau: float = 0.01) -> torch.Tensor:
    """s_tail at τ = ``relative_tau`` · max|cᵢ| of each vector: a scale-free tail share, (..., d) → (...)."""
    tau = _check_tau(relative_tau)
    magnitude = _checked(vectors).abs()
    return (magnitude < tau * magnitude.amax(-1, keepdim=True)).double().mean(-1)


HEAD_SHARE = 0.02  # the head of summary(): the top 2% of coordinates (the paper's head is 1–2% of D)
RELATIVE_TAU = 0.01  # the tail of summary(): coordinates below 1% of max|cᵢ|


def summary(y: torch.Tensor, t: torch.Tensor, head_share: float = HEAD_SHARE, relative_tau: float = RELATIVE_TAU,
            detail: bool = False) -> dict[str, float]:
    """The statistics of c = y + t that every chapter and every training log report, under one key scheme.

    Args:
        y: class (or condition) embeddings (n, d), n ≥ 2.
        t: the timestep embedding at one timestep (d,).
        head_share: the share of coordinates that :func:`head_energy_share` counts as the head (paper: 1–2%).
        relative_tau: τ as a share of max|cᵢ| for :func:`relative_tail_fraction`.
        detail: add :data:`DETAIL_KEYS`, the readings of the paper's numbers that it leaves open (O(n²·d)).

    Returns:
        :data:`SUMMARY_KEYS`: ``cos_c``/``cos_y``: mean off-diagonal cosine of c and of y; ``npr_c``/``npr_y``: mean
        per-vector nPR; ``t_share``: ‖t‖² / (‖t‖² + mean ‖yᵢ‖²), the share of the energy of c that t carries were
        y ⟂ t; ``head_energy``: mean share of ‖c‖² in the top ``head_share`` coordinates; ``tail_rel``: mean share
        of coordinates with |cᵢ| < ``relative_tau`` · max|c|. With ``detail``, for ``x`` in ``c``, ``y``:
        ``cos_x_median``/``cos_x_min`` (the median and minimum off-diagonal cosine), ``npr_x_of_mean`` (the nPR of
        the mean vector) and ``pr_x`` (the mean per-vector PR).
    """
    y, t = _checked(y, 2, "y"), _checked(t, 1, "t")
    if y.ndim != 2 or t.shape != y.shape[-1:]:
        raise ValueError(f"summary needs y of shape (n, d) and t of shape (d,), got {tuple(y.shape)} and {tuple(t.shape)}")
    c = y + t  # (n, d)
    t_energy = (t * t).sum()
    values = {
        "cos_c": mean_offdiag_cosine(c).item(),
        "cos_y": mean_offdiag_cosine(y).item(),
        "npr_c": mean_npr(c).item(),
        "npr_y": mean_npr(y).item(),
        "t_share": (t_energy / (t_energy + (y * y).sum(-1).mean())).item(),
        "head_energy": head_energy_share(c, head_share).mean().item(),
        "tail_rel": relative_tail_fraction(c, relative_tau).mean().item(),
    }
    if detail:
        for name, vectors in (("c", c), ("y", y)):
            cosine = offdiag_cosine_summary(vectors)
            values |= {f"cos_{name}_median": cosine["median"], f"cos_{name}_min": cosine["min"],
                       f"npr_{name}_of_mean": normalized_participation_ratio(vectors.mean(0)).item(),
                       f"pr_{name}": participation_ratio(vectors).mean().item()}
    return values
