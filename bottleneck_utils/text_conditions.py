"""The conditional vector of text-conditioned diffusion transformers in diffusers: SD3 and PixArt.

Where c lives (the analogue of the paper's c = y + t, taken before the adaLN MLPs):

* **SD3** (``SD3Transformer2DModel``): ``transformer.time_text_embed``, a ``CombinedTimestepTextProjEmbeddings``:
  c = t + y with t = ``timestep_embedder(time_proj(t))`` and y = ``text_embedder(pooled)``, where ``pooled`` is
  the pipeline's pooled prompt embedding (CLIP-L and CLIP-G pooled outputs, concatenated: 2048 wide). This one
  vector feeds every joint block's ``norm1``/``norm1_context`` and ``norm_out``. Time is the flow-matching
  scheduler's σ·1000, so t₀ = 1000.
* **PixArt** (``PixArtTransformer2DModel``): ``transformer.adaln_single.emb``, a
  ``PixArtAlphaCombinedTimestepSizeEmbeddings``: c = t, plus [resolution; aspect-ratio] embeddings when the model
  uses additional conditions. **The prompt does not enter c**: PixArt reads the text through cross-attention
  only. Its c can be studied over timesteps and over the size conditions, not over prompts, and asking for
  prompt statistics raises. Time is DDPM's integer t, t₀ = 999.

The statistics are those of :mod:`bottleneck_utils.stats`; :func:`table5_row` gives the paper's Table 5 columns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings
from diffusers.models.normalization import AdaLayerNormSingle

from bottleneck_utils import masks, stats
from bottleneck_utils.embeddings import PARTS

FIRST_TIME = {"sd3": 1000.0, "pixart": 999.0}  # t₀: σ = 1 for SD3's flow matching, t = 999 for PixArt's DDPM
T_MAX = {"sd3": 1000.0, "pixart": 999.0}
PIXART_NO_PROMPT = (
    "PixArt's adaLN vector c (adaln_single) does not depend on the prompt: the text enters through "
    "cross-attention only, so per-prompt statistics of c are constant by construction. Use size_vectors() "
    "(resolution / aspect-ratio conditions) or a timestep sweep instead"
)

# ---------------------------------------------------------------------------------------------------
#                                    Finding the conditioning module
# ---------------------------------------------------------------------------------------------------


def model_kind(transformer: torch.nn.Module) -> str:
    """``"sd3"`` for a ``time_text_embed`` of timestep + pooled text, ``"pixart"`` for an ``adaln_single``."""
    if isinstance(getattr(transformer, "time_text_embed", None), CombinedTimestepTextProjEmbeddings):
        return "sd3"
    if isinstance(getattr(transformer, "adaln_single", None), AdaLayerNormSingle):
        return "pixart"
    raise TypeError(
        f"{type(transformer).__name__} has neither an SD3-style time_text_embed (CombinedTimestepTextProjEmbeddings) "
        "nor a PixArt-style adaln_single (AdaLayerNormSingle); for class-conditional DiTs use "
        "bottleneck_utils.embeddings"
    )


def conditioning_module(transformer: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is c: SD3's ``time_text_embed``, PixArt's ``adaln_single.emb``."""
    if model_kind(transformer) == "sd3":
        return transformer.time_text_embed
    return transformer.adaln_single.emb


def first_time(transformer: torch.nn.Module) -> float:
    """t₀, the highest-noise timestep at which the model's default sampler starts (1000 for SD3, 999 for PixArt)."""
    return FIRST_TIME[model_kind(transformer)]


# ---------------------------------------------------------------------------------------------------
#                                       Vectors: c, y alone, t alone
# ---------------------------------------------------------------------------------------------------


def _check_timesteps(transformer, timesteps) -> tuple[torch.Tensor, bool]:
    timesteps = first_time(transformer) if timesteps is None else timesteps
    scalar = torch.as_tensor(timesteps).ndim == 0
    timesteps = torch.as_tensor(timesteps, dtype=torch.float32).flatten()
    t_max = T_MAX[model_kind(transformer)]
    if len(timesteps) == 0 or not torch.isfinite(timesteps).all() or (timesteps < 0).any() or (timesteps > t_max).any():
        raise ValueError(f"timesteps must be a non-empty list of values in [0, {t_max:g}], "
                         f"got {timesteps.tolist()[:5]}")
    return timesteps, scalar


def _parameter(module: torch.nn.Module) -> torch.Tensor:
    return next(module.parameters())


def _combine(y: torch.Tensor, t: torch.Tensor, part: str, scalar: bool) -> torch.Tensor:
    """y (n, D) and t (T, D) → c = y + t (T, n, D), y (T, n, D) or t (T, 1, D); the T axis dropped if scalar."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    vectors = {"y+t": y[None] + t[:, None], "y": y.expand(len(t), *y.shape), "t": t[:, None]}[part].float()
    return vectors[0] if scalar else vectors


def _time_embeddings(module: torch.nn.Module, timesteps: torch.Tensor) -> torch.Tensor:
    weight = _parameter(module)
    features = module.time_proj(timesteps.to(weight.device))  # (T, 256)
    return module.timestep_embedder(features.to(weight.dtype))  # (T, D)


@torch.no_grad()
def pooled_vectors(transformer, pooled: torch.Tensor, timesteps=None, part: str = "y+t") -> torch.Tensor:
    """c = y + t (or y, or t) of an SD3-style model for precomputed pooled prompt embeddings.

    Args:
        transformer: an ``SD3Transformer2DModel`` (or any model with a ``CombinedTimestepTextProjEmbeddings``).
        pooled: (n, P) pooled prompt embeddings, n ≥ 1 (``pipeline.encode_prompt(...)[2]`` for SD3).
        timesteps: a scalar or a list in [0, 1000]; None means t₀ = 1000.
        part: ``"y+t"``, ``"y"`` or ``"t"``.

    Returns:
        float32 ``(n, D)`` for a scalar timestep, ``(T, n, D)`` for a list (``"t"``: ``(1, D)`` or ``(T, 1, D)``).
    """
    if model_kind(transformer) != "sd3":
        raise ValueError(PIXART_NO_PROMPT)
    module = transformer.time_text_embed
    timesteps, scalar = _check_timesteps(transformer, timesteps)
    pooled = torch.as_tensor(pooled)
    width = module.text_embedder.linear_1.in_features
    if pooled.ndim != 2 or pooled.shape[0] == 0 or pooled.shape[1] != width:
        raise ValueError(f"pooled embeddings must be (n >= 1, {width}), got shape {tuple(pooled.shape)}")
    weight = _parameter(module)
    y = module.text_embedder(pooled.to(weight.device, weight.dtype))  # (n, D)
    return _combine(y, _time_embeddings(module, timesteps), part, scalar)


def encode_prompts(prompts: list[str], encoder: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
    """Pooled embeddings (n, P) of the prompts, from ``encoder`` (a callable: list of prompts → (n, P)).

    For SD3: ``encoder = lambda p: pipe.encode_prompt(p, None, None, do_classifier_free_guidance=False)[2]``.
    """
    if isinstance(prompts, str) or not all(isinstance(prompt, str) for prompt in prompts):
        raise TypeError("prompts must be a list of strings")
    if len(prompts) == 0:
        raise ValueError("the prompt list is empty: give at least one prompt (two for pairwise statistics)")
    pooled = encoder(list(prompts))
    if not isinstance(pooled, torch.Tensor) or pooled.ndim != 2 or pooled.shape[0] != len(prompts):
        shape = tuple(pooled.shape) if isinstance(pooled, torch.Tensor) else type(pooled).__name__
        raise ValueError(f"the encoder must return one pooled vector per prompt, (n={len(prompts)}, P); got {shape}")
    return pooled


def prompt_vectors(transformer, prompts: list[str], encoder, timesteps=None, part: str = "y+t") -> torch.Tensor:
    """:func:`pooled_vectors` for prompts, encoded by ``encoder`` (see :func:`encode_prompts`)."""
    if model_kind(transformer) != "sd3":
        raise ValueError(PIXART_NO_PROMPT)
    return pooled_vectors(transformer, encode_prompts(prompts, encoder), timesteps, part)


@torch.no_grad()
def size_vectors(transformer, resolution, aspect_ratio, timesteps=None, part: str = "y+t") -> torch.Tensor:
    """c = t + [resolution; aspect-ratio] embedding (or either part) of a PixArt model with additional conditions.

    Args:
        transformer: a ``PixArtTransformer2DModel`` built with ``use_additional_conditions=True``.
        resolution: (n, 2) heights and widths in pixels.
        aspect_ratio: (n, 1) or (n,) height / width.
        timesteps: a scalar or a list in [0, 999]; None means t₀ = 999.
        part: ``"y+t"``, ``"y"`` (the size embedding) or ``"t"``.
    """
    if model_kind(transformer) != "pixart":
        raise ValueError("size_vectors is for PixArt models; use pooled_vectors or prompt_vectors for SD3")
    module = transformer.adaln_single.emb
    if not module.use_additional_conditions:
        raise ValueError("this PixArt model has no size conditions: its c is the timestep embedding t alone")
    timesteps, scalar = _check_timesteps(transformer, timesteps)
    weight = _parameter(module)
    resolution = torch.as_tensor(resolution, dtype=torch.float32, device=weight.device)
    aspect_ratio = torch.as_tensor(aspect_ratio, dtype=torch.float32, device=weight.device).reshape(-1, 1)
    if resolution.ndim != 2 or resolution.shape[1] != 2 or len(resolution) == 0 or len(aspect_ratio) != len(resolution):
        raise ValueError(f"need resolution (n >= 1, 2) and aspect_ratio (n, 1); got {tuple(resolution.shape)} and "
                         f"{tuple(aspect_ratio.shape)}")
    n = len(resolution)
    size_features = module.additional_condition_proj(resolution.flatten()).to(weight.dtype)  # (2n, 256)
    ratio_features = module.additional_condition_proj(aspect_ratio.flatten()).to(weight.dtype)  # (n, 256)
    y = torch.cat([module.resolution_embedder(size_features).reshape(n, -1),
                   module.aspect_ratio_embedder(ratio_features)], dim=1)  # (n, D)
    return _combine(y, _time_embeddings(module, timesteps), part, scalar)


# ---------------------------------------------------------------------------------------------------
#                                             Statistics
# ---------------------------------------------------------------------------------------------------


def summary(vectors: torch.Tensor) -> dict[str, float]:
    """Mean/median/min off-diagonal cosine, mean nPR and nPR of the mean vector of (n ≥ 2, D) vectors."""
    cosine = stats.offdiag_cosine_summary(vectors)
    return {"cosine": cosine["mean"], "cosine_median": cosine["median"], "cosine_min": cosine["min"],
            "nPR": stats.mean_npr(vectors).item(),
            "nPR_of_mean": stats.normalized_participation_ratio(vectors.mean(0)).item()}


def table5_row(transformer, pooled: torch.Tensor, timestep=None) -> dict[str, float]:
    """The paper's Table 5 columns for an SD3-style model: cosine and nPR of c = y + t and of y alone, at t₀."""
    c = pooled_vectors(transformer, pooled, timestep, "y+t")  # (n, D)
    y = pooled_vectors(transformer, pooled, timestep, "y")  # (n, D)
    return {"cosine_yt": stats.mean_offdiag_cosine(c).item(), "nPR_yt": stats.mean_npr(c).item(),
            "cosine_y": stats.mean_offdiag_cosine(y).item(), "nPR_y": stats.mean_npr(y).item()}


# ---------------------------------------------------------------------------------------------------
#                                          Pruning c (global masks)
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def prune(transformer, mask: masks.Mask):
    """Zeroes a global mask's coordinates of c, at every step, inside the ``with`` block.

    c is formed once per forward pass, in :func:`conditioning_module`, and every consumer (all blocks and the
    output norm) reads that one tensor, so one forward hook prunes it everywhere. Only global masks
    (``masks.coordinate_mask``, ``masks.random_mask`` of one) apply: a text-conditioned model has no label table
    for per-sample rows.
    """
    module = conditioning_module(transformer)
    if not isinstance(mask, masks.Mask) or mask.granularity != "global":
        raise ValueError("text-conditioned models take a global masks.Mask (e.g. masks.coordinate_mask)")
    width = _parameter(module.timestep_embedder.linear_2).shape[0]
    if mask.hidden_size != width:
        raise ValueError(f"the mask has length {mask.hidden_size}, but this model's c has {width} coordinates")
    removed = mask.removed[0].to(_parameter(module).device)  # (D,)
    handle = module.register_forward_hook(lambda _module, _args, output: output.masked_fill(removed, 0))
    try:
        yield mask
    finally:
        handle.remove()
