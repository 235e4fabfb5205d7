"""One plain classifier-free-guidance sampling loop over a diffusers scheduler.

Unlike ``DiTPipeline`` it takes the null label from the model (``num_classes``, not a hard-coded 1000),
draws every sample's initial noise from ``(seed, sample index)`` so that runs with different batch sizes,
masks or shards start from the same noise, and works for pixel-space models without a VAE.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from bottleneck_utils.embeddings import check_labels
from bottleneck_utils.models import Bundle


def initial_noise(bundle: Bundle, indices: torch.Tensor, seed: int) -> torch.Tensor:
    """The starting noise of the samples with these global indices, (n, C, H, W), on the CPU.

    Sample i's noise depends only on ``(seed, i)``.
    """
    config = bundle.transformer.config
    shape = (config.in_channels, config.sample_size, config.sample_size)
    generator = torch.Generator()
    noise = torch.empty(len(indices), *shape)
    for row, index in enumerate(indices.tolist()):
        generator.manual_seed(seed * 1_000_003 + index)
        noise[row] = torch.randn(shape, generator=generator)
    return noise


def _guided_eps(bundle: Bundle, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, cfg: float):
    """ε with CFG on every channel (the original DiT guides only 3 of 4; see the paper digest)."""
    channels = x.shape[1]
    if cfg == 1.0:
        return bundle.transformer(x, timestep=t.expand(len(x)), class_labels=labels).sample[:, :channels]
    null = torch.full_like(labels, bundle.null_label)
    both = bundle.transformer(
        torch.cat([x, x]), timestep=t.expand(2 * len(x)), class_labels=torch.cat([labels, null])
    ).sample[:, :channels]  # (2B, C, H, W); learned-σ channels, if any, are dropped
    conditional, unconditional = both.chunk(2)
    return unconditional + cfg * (conditional - unconditional)


def _decode(bundle: Bundle, x: torch.Tensor) -> torch.Tensor:
    if bundle.vae is not None:
        x = bundle.vae.decode(x / bundle.vae.config.scaling_factor).sample
    return (x.float() / 2 + 0.5).clamp(0, 1).cpu()  # (B, C, H, W) in [0, 1]


@torch.no_grad()
def sample(
    bundle: Bundle,
    labels,
    *,
    num_steps: int = 50,
    cfg_scale: float = 4.0,
    seed: int = 0,
    batch_size: int = 256,
    first_index: int = 0,
    output_dir: str | Path | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Samples one image per label with CFG.

    Args:
        bundle: a model with a transformer and a scheduler.
        labels: class ids, one per image.
        num_steps: scheduler steps.
        cfg_scale: guidance scale; 1.0 switches CFG off (one forward per step).
        seed: the noise of sample i is drawn from ``(seed, first_index + i)``.
        batch_size: images per forward pass (CFG doubles it).
        first_index: global index of the first label (for shards of a larger run).
        output_dir: if given, each image is also written as ``{index:06d}_{label}.png``.
        progress: show a tqdm bar over batches.

    Returns:
        float tensor (N, C, H, W) in [0, 1], on the CPU.
    """
    if bundle.transformer is None or bundle.scheduler is None:
        raise ValueError(f"{bundle.name} is an embedder-only bundle; sampling needs a transformer and a scheduler")
    if num_steps < 1 or batch_size < 1:
        raise ValueError(f"num_steps and batch_size must be >= 1, got {num_steps}, {batch_size}")
    labels = check_labels(bundle, labels)
    scheduler = bundle.scheduler
    scheduler.set_timesteps(num_steps)
    images = []
    for start in tqdm(range(0, len(labels), batch_size), desc="sampling", disable=not progress):
        batch = labels[start : start + batch_size]
        indices = torch.arange(first_index + start, first_index + start + len(batch))
        x = initial_noise(bundle, indices, seed).to(bundle.device, bundle.dtype)  # (B, C, H, W)
        for t in scheduler.timesteps:
            eps = _guided_eps(bundle, x, t.to(bundle.device), batch, cfg_scale)
            x = scheduler.step(eps, t, x).prev_sample
        images.append(_decode(bundle, x))
    images = torch.cat(images) if images else torch.empty(0)
    if output_dir is not None:
        write_pngs(images, labels.cpu(), output_dir, first_index)
    return images


def write_pngs(images: torch.Tensor, labels: torch.Tensor, output_dir: str | Path, first_index: int = 0) -> None:
    """Writes (N, C, H, W) images in [0, 1] as ``{index:06d}_{label}.png``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    for offset, (image, label) in enumerate(zip(pixels, labels.tolist())):
        array = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(np.ascontiguousarray(array)).save(output_dir / f"{first_index + offset:06d}_{label}.png")
