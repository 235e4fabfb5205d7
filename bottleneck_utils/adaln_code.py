"""A bottleneck built into training: the adaLN sees only a k-dimensional code of c, or c pays an L1 penalty.

The paper names this as future work and does not test it. If the conditioning only needs a few coordinates, a
model trained to use a k-dimensional code should lose no quality.

Narrowing. Every adaLN projection of a diffusers DiT reads silu(c): each block's ``norm1.linear`` (D → 6D) and the
final layer's ``proj_out_1`` (D → 2D). Narrowing replaces each ``W silu(c) + b`` by ``(W Pᵀ)(P silu(c)) + b`` with
ONE projection P (k × D) shared by all of them, so z = P silu(c) (k numbers per sample) is all the network sees of
the condition. P starts at the top-k right singular vectors of silu(c) over every label × timestep of the model
being narrowed: the narrowed model starts as the plain one restricted to the k directions that carry most of
silu(c)'s energy. With k = D and P = I it IS the plain model.

This module is the architecture alone. The recipes that train it (``code_width``, ``l1_c``, ``init_from`` of
:class:`bottleneck_utils.organisms.recipes.Recipe`) are applied by :func:`bottleneck_utils.organisms.train.prepare`.
"""

from __future__ import annotations

import torch
from diffusers import DiTTransformer2DModel
from torch import nn

# ---------------------------------------------------------------------------------------------------
#                                    Narrowing the adaLN input to k dims
# ---------------------------------------------------------------------------------------------------


def _adaln_layers(model: DiTTransformer2DModel) -> list[tuple[nn.Module, str]]:
    """(owner, attribute) of every linear that reads silu(c): each block's ``norm1.linear``, then ``proj_out_1``."""
    return [(block.norm1, "linear") for block in model.transformer_blocks] + [(model, "proj_out_1")]


def code_width(model: DiTTransformer2DModel) -> int | None:
    """k of a narrowed model (the width of z = P silu(c)), or None for a plain one."""
    layer = model.proj_out_1
    return layer[0].out_features if isinstance(layer, nn.Sequential) else None


def narrow(model: DiTTransformer2DModel, basis: torch.Tensor) -> DiTTransformer2DModel:
    """Makes every adaLN projection read z = P silu(c) through one shared P = ``basis`` (k, D); returns the model.

    Each ``Linear(D, m)`` with weight W becomes ``Sequential(P, Linear(k, m))`` with weight W Pᵀ and the same bias,
    so the output is unchanged whenever silu(c) lies in the row space of P (always, for k = D and P = I).
    """
    if code_width(model) is not None:
        raise ValueError("this model is already narrowed; narrow a plain DiT")
    hidden = model.inner_dim
    if basis.ndim != 2 or basis.shape[1] != hidden or not 1 <= basis.shape[0] <= hidden:
        raise ValueError(f"basis must be (k, {hidden}) with 1 <= k <= {hidden}, got {tuple(basis.shape)}")
    projection = nn.Linear(hidden, basis.shape[0], bias=False)  # P, shared: (k, D)
    projection.weight.data.copy_(basis)
    for owner, name in _adaln_layers(model):
        wide = getattr(owner, name)
        narrow_linear = nn.Linear(basis.shape[0], wide.out_features)  # (m, k)
        with torch.no_grad():
            narrow_linear.weight.copy_(wide.weight @ basis.T)
            narrow_linear.bias.copy_(wide.bias)
        setattr(owner, name, nn.Sequential(projection, narrow_linear))
    return model


def adaln_macs(hidden: int, depth: int, k: int | None = None) -> int:
    """Multiply-accumulates per sample of the adaLN projections: depth·D·6D + D·2D plain; D·k + depth·k·6D + k·2D
    narrowed (P is applied once and shared)."""
    if k is None:
        return depth * hidden * 6 * hidden + hidden * 2 * hidden
    return hidden * k + depth * k * 6 * hidden + k * 2 * hidden


# ---------------------------------------------------------------------------------------------------
#                                    Recipes: warm start, narrowing, L1
# ---------------------------------------------------------------------------------------------------

