"""The package's one image convention: ``(N, C, H, W)`` floats in [0, 1] (what the sampler returns), and the
``(N, H, W, C)`` uint8 of a PNG or an ADM/DiT ``.npz``.

Images in another range or dtype are refused rather than clamped: a uint8 batch in 0..255 or a [−1, 1] batch
clamped to [0, 1] would give a plausible but wrong FID.
"""

from __future__ import annotations

import numpy as np
import torch


def check_images(images, what: str = "images") -> torch.Tensor:
    """Returns ``images`` as a float tensor (N, C, H, W) in [0, 1], or raises a ValueError naming the fix.

    Args:
        images: a tensor or array (N, C, H, W) with C = 1 (grey) or 3 (RGB); N may be 0.
        what: how the error message names them.
    """
    if not isinstance(images, torch.Tensor | np.ndarray):
        raise TypeError(f"{what} must be a tensor (N, C, H, W) in [0, 1], got {type(images).__name__}")
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        raise ValueError(f"{what} are uint8 (0..255); pass floats in [0, 1]: images.float() / 255")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be floats in [0, 1], got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what} must be (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}")
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError(f"{what} hold NaN or inf")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        low, high = images.min().item(), images.max().item()
        hint = " (in [-1, 1]? pass (images + 1) / 2)" if low < 0 else " (in 0..255? divide by 255)"
        raise ValueError(f"{what} must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]{hint}")
    return images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] → (N, H, W, C) uint8, rounded (what a PNG stores)."""
    images = check_images(images)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
