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

This module is an adapter, not a second API: :func:`text_bundle` wraps the conditioning module in a
:class:`~bottleneck_utils.models.Bundle` (``prompt_conditioned=True``), so t comes from
:func:`embeddings.timestep_embeddings`, c from :func:`embeddings.combine`, the statistics from
:func:`stats.summary` (:func:`prompt_summary`) and pruning from :func:`masks.prune` with a global mask. Only y, the
prompt or size embedding, is computed here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings
from diffusers.models.normalization import AdaLayerNormSingle

from bottleneck_utils import embeddings, stats
from bottleneck_utils.models import DDPM, Bundle, TimeConvention

# t₀ and the time range: σ · 1000 with σ = 1 at the start for SD3's flow matching; DDPM's integer t for PixArt
TIMES = {"sd3": TimeConvention("sigma", first_time=1000.0, t_max=1000.0), "pixart": DDPM}
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


def text_bundle(transformer: torch.nn.Module, name: str | None = None) -> Bundle:
    """An embedder-only :class:`Bundle` over the model's conditioning module, for ``embeddings``, ``masks``, ``stats``.

    Its ``embedder`` is the module whose output is c (:func:`conditioning_module`), its time convention the
    model's (t₀ = 1000 for SD3, 999 for PixArt), and ``prompt_conditioned`` is set: ``masks.prune`` then takes a
    global mask (``masks.coordinate_mask``) and hooks that one module, which every block and the output norm read.
    """
    module = conditioning_module(transformer)
    weight = next(module.parameters())
    return Bundle(name or type(transformer).__name__, module, num_classes=0, time=TIMES[model_kind(transformer)],
                  device=weight.device, dtype=weight.dtype, prompt_conditioned=True)


# ---------------------------------------------------------------------------------------------------
#                                       Vectors: c, y alone, t alone
# ---------------------------------------------------------------------------------------------------


def _with_time(bundle: Bundle, y: torch.Tensor, timesteps, part: str) -> torch.Tensor:
    """y (n, D) with t at ``timesteps`` (None: t₀) → :func:`embeddings.combine`'s c, y or t."""
    timesteps = bundle.time.first_time if timesteps is None else timesteps
    t = embeddings.timestep_embeddings(bundle, timesteps)  # (T, D)
    return embeddings.combine(y, t, part, scalar=torch.as_tensor(timesteps).ndim == 0)


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
    bundle = text_bundle(transformer)
    pooled = torch.as_tensor(pooled)
    width = bundle.embedder.text_embedder.linear_1.in_features
    if pooled.ndim != 2 or pooled.shape[0] == 0 or pooled.shape[1] != width:
        raise ValueError(f"pooled embeddings must be (n >= 1, {width}), got shape {tuple(pooled.shape)}")
    if not torch.isfinite(pooled).all():
        raise ValueError("pooled embeddings hold NaN or inf: check the text encoder's output")
    y = bundle.embedder.text_embedder(pooled.to(bundle.device, bundle.dtype))  # (n, D)
    return _with_time(bundle, y, timesteps, part)


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
    bundle = text_bundle(transformer)
    module = bundle.embedder
    if not module.use_additional_conditions:
        raise ValueError("this PixArt model has no size conditions: its c is the timestep embedding t alone")
    resolution = torch.as_tensor(resolution, dtype=torch.float32, device=bundle.device)
    aspect_ratio = torch.as_tensor(aspect_ratio, dtype=torch.float32, device=bundle.device).reshape(-1, 1)
    if resolution.ndim != 2 or resolution.shape[1] != 2 or len(resolution) == 0 or len(aspect_ratio) != len(resolution):
        raise ValueError(f"need resolution (n >= 1, 2) and aspect_ratio (n, 1); got {tuple(resolution.shape)} and "
                         f"{tuple(aspect_ratio.shape)}")
    if not (torch.isfinite(resolution).all() and torch.isfinite(aspect_ratio).all()):
        raise ValueError("resolution and aspect_ratio must be finite")
    n = len(resolution)
    size_features = module.additional_condition_proj(resolution.flatten()).to(bundle.dtype)  # (2n, 256)
    ratio_features = module.additional_condition_proj(aspect_ratio.flatten()).to(bundle.dtype)  # (n, 256)
    y = torch.cat([module.resolution_embedder(size_features).reshape(n, -1),
                   module.aspect_ratio_embedder(ratio_features)], dim=1)  # (n, D)
    return _with_time(bundle, y, timesteps, part)


# ---------------------------------------------------------------------------------------------------
#                                             Statistics
# ---------------------------------------------------------------------------------------------------


def prompt_summary(transformer, pooled: torch.Tensor, timestep=None, detail: bool = False) -> dict[str, float]:
    """:func:`stats.summary` of an SD3-style model's c = y + t over pooled prompt embeddings (n ≥ 2, P), at t₀.

    ``cos_c``, ``npr_c``, ``cos_y`` and ``npr_y`` are the paper's Table 5 columns (``paper.TABLE_COLUMNS``).
    """
    if timestep is not None and torch.as_tensor(timestep).ndim != 0:
        raise ValueError(f"prompt_summary takes one timestep, got {timestep!r}")
    y = pooled_vectors(transformer, pooled, timestep, "y")  # (n, D)
    t = pooled_vectors(transformer, pooled[:1], timestep, "t")[0]  # (D,)
    return stats.summary(y, t, detail=detail)
