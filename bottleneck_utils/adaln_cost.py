"""What a sparse c could save: the adaLN projection restricted to the kept coordinates, its FLOP share of a
forward pass, and its measured time against the dense projection (the paper's Fig. 42 says "faster", with no
numbers). Used by the pruning chapter and by ``benchmarks/bench_pruning.py``.

c enters a DiT only through the adaLN projections, ``Linear(D, 6D)`` on ``silu(c)`` in each block and
``Linear(D, 2D)`` in the final layer. ``silu(0) = 0``, so the columns of zeroed coordinates contribute nothing
and can be dropped: that is the only saving a sparse c offers without retraining.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

DIT_XL = {"hidden": 1152, "tokens": 256, "depth": 28}  # DiT-XL/2 at 256 px: 32×32 latents, patch 2


def compact_projection(linear: torch.nn.Linear, removed: torch.Tensor) -> torch.nn.Linear:
    """The adaLN projection ``Linear(D, 6D)`` restricted to the kept coordinates of c.

    ``compact(silu(c[:, kept]))`` equals ``linear(silu(c_masked))`` up to float rounding, with a (6D, |kept|)
    matrix instead of (6D, D).

    Args:
        linear: the projection, e.g. ``transformer_blocks[i].norm1.linear``.
        removed: (D,) bool, the coordinates a global mask zeroes.
    """
    if removed.dtype != torch.bool or removed.shape != (linear.in_features,):
        raise ValueError(f"removed must be a ({linear.in_features},) bool tensor, got {removed.dtype} "
                         f"{tuple(removed.shape)}; pass Mask.removed[0] of a global mask")
    kept = (~removed).nonzero().flatten()  # (|kept|,)
    compact = torch.nn.Linear(len(kept), linear.out_features, bias=linear.bias is not None)
    compact = compact.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        compact.weight.copy_(linear.weight[:, kept])  # (6D, |kept|)
        if linear.bias is not None:
            compact.bias.copy_(linear.bias)
    return compact


def adaln_flop_share(hidden: int, tokens: int, depth: int) -> float:
    """Share of one DiT forward's FLOPs (per sample) spent in the adaLN projections.

    adaLN: ``depth`` projections ``Linear(D, 6D)`` and the final ``Linear(D, 2D)``, once per sample. The blocks:
    per token qkv, output and a 4×-wide MLP (12 D² multiply-adds) and attention (2 N D).
    """
    if min(hidden, tokens, depth) < 1:
        raise ValueError(f"hidden, tokens and depth must be >= 1, got {hidden}, {tokens}, {depth}")
    adaln = depth * 6 * hidden**2 + 2 * hidden**2
    blocks = depth * (tokens * 12 * hidden**2 + 2 * tokens**2 * hidden)
    return adaln / (adaln + blocks)


def random_removed(hidden: int, fraction: float, seed: int = 0) -> torch.Tensor:
    """(hidden,) bool with ``round(fraction · hidden)`` coordinates set, drawn from ``seed``: a mask of that share."""
    if not 0 <= fraction <= 1:  # also catches NaN
        raise ValueError(f"fraction must lie in [0, 1], got {fraction!r}")
    removed = torch.zeros(hidden, dtype=torch.bool)
    removed[torch.randperm(hidden, generator=torch.Generator().manual_seed(seed))[: round(fraction * hidden)]] = True
    return removed


def _seconds(fn, inner: int, cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def projection_ratio(linear: torch.nn.Linear, removed: torch.Tensor, batch: int, rounds: int = 9, inner: int = 5,
                     seed: int = 0) -> float:
    """Median over alternated rounds of (gather + compact projection time) / (dense projection time).

    Both sides project ``silu(c)`` for a random c (batch, D) with the removed coordinates zeroed, on the linear's
    device; the two are timed alternately (dense first in even rounds, compact first in odd ones) after a check
    that they agree, so drift of a shared machine cancels. Below 1: the compact projection is faster.
    """
    if batch < 1 or rounds < 1 or inner < 1:
        raise ValueError(f"batch, rounds and inner must be >= 1, got {batch}, {rounds}, {inner}")
    compact = compact_projection(linear, removed)
    device = linear.weight.device
    kept = (~removed).nonzero().flatten().to(device)
    generator = torch.Generator().manual_seed(seed)
    c = torch.randn(batch, linear.in_features, generator=generator).masked_fill(removed, 0).to(device)  # (B, D)
    dense, sparse = (lambda: linear(F.silu(c))), (lambda: compact(F.silu(c[:, kept])))  # (B, 6D) each
    if not torch.allclose(dense(), sparse(), atol=1e-4):  # float32 sums of ≤ D terms of |silu(c) · W| ≲ 1
        raise RuntimeError("the compact projection disagrees with the dense one")
    ratios = []
    for round_ in range(rounds):
        order = (dense, sparse) if round_ % 2 == 0 else (sparse, dense)
        first, second = (_seconds(fn, inner, device.type == "cuda") for fn in order)
        dense_s, sparse_s = (first, second) if round_ % 2 == 0 else (second, first)
        ratios.append(sparse_s / dense_s)
    return statistics.median(ratios)
