"""Continuous conditions in the adaLN slot of a diffusers DiT: c = t + e(T).

The paper's strongest numbers (X-MDPT, MDSGen: cosine > 0.999) come from models whose condition is not a class id
but a continuous feature pushed through an MLP and added to the timestep embedding. The ``ising-dit`` organism is
the closest real test within reach: a diffusers ``DiTTransformer2DModel`` whose label table is replaced, in every
block's ``norm1.emb.class_embedder``, by :class:`ContinuousConditionEmbedding`:

    e(T) = MLP(sinusoid(1000 · (T − low) / (high − low)))

built from the same diffusers parts as the timestep embedder (``Timesteps`` → ``TimestepEmbedding``), so
``CombinedTimestepLabelEmbeddings`` returns c = t + e(T) exactly where a class model returns c = t + y.

The null condition (CFG):
    A condition of ``NaN`` selects a learned null vector, the continuous analogue of the class table's extra row.
    NaN cannot collide with a real temperature, survives ``torch.full_like`` and ``torch.cat`` inside the sampler,
    and any code that forgets to handle it produces NaN outputs instead of a plausible but wrong image.

The trained range:
    :class:`ConditionRange` records the range of the training conditions (rounded outwards to 0.01). Conditions
    outside it raise ``ValueError`` at the public entry points (``embeddings.check_labels``, hence the sampler and
    the statistics): the MLP has never seen them, and an extrapolated vector is not the model's conditional vector.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

NULL = float("nan")  # the CFG null condition of a continuous model
SINUSOID_SCALE = 1000.0  # the trained range is mapped onto [0, 1000], the span of DDPM timesteps
DEFAULT_GRID = 64  # conditions used when a statistic is asked for "every condition" of a continuous model


# ---------------------------------------------------------------------------------------------------
#                                          The trained range
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionRange:
    """A continuous condition and the range it was trained on.

    Attributes:
        name: what the condition is (``"temperature"``).
        low: the smallest trained value.
        high: the largest trained value.
    """

    name: str
    low: float
    high: float

    def __post_init__(self):
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a condition range needs finite low < high, got [{self.low}, {self.high}]")

    @classmethod
    def of_values(cls, name: str, values) -> ConditionRange:
        """The range of the training values, rounded outwards to 0.01 (so T = 0 is inside for T_min = 4e-4)."""
        values = torch.as_tensor(values, dtype=torch.float64)
        return cls(name, math.floor(values.min().item() * 100) / 100, math.ceil(values.max().item() * 100) / 100)

    def grid(self, num: int = DEFAULT_GRID) -> torch.Tensor:
        """``num`` evenly spaced conditions from ``low`` to ``high`` (float64)."""
        if num < 2:
            raise ValueError(f"a condition grid needs at least 2 points, got {num}")
        return torch.linspace(self.low, self.high, num, dtype=torch.float64)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
#                                     The continuous-condition embedder
# ---------------------------------------------------------------------------------------------------


class ContinuousConditionEmbedding(nn.Module):
    """e(T): sinusoidal features of the rescaled condition → Linear–SiLU–Linear; NaN selects a learned null vector.

    It stands in the slot of diffusers' ``LabelEmbedding`` (``norm1.emb.class_embedder``) and is called the same
    way, with one value per sample.

    Args:
        hidden_size: D, the width of c.
        condition: the trained range; it fixes the rescaling onto [0, 1000].
        num_features: width of the sinusoidal features (256, as for the timestep).
    """

    def __init__(self, hidden_size: int, condition: ConditionRange, num_features: int = 256):
        super().__init__()
        self.condition = condition
        self.features = Timesteps(num_features, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.mlp = TimestepEmbedding(in_channels=num_features, time_embed_dim=hidden_size)
        self.null_embedding = nn.Parameter(torch.zeros(hidden_size))

    def rescale(self, values: torch.Tensor) -> torch.Tensor:
        """Maps [low, high] onto [0, 1000] (the sinusoid's usual input span)."""
        low, high = self.condition.low, self.condition.high
        return (values.double() - low) * (SINUSOID_SCALE / (high - low))

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        values = values.flatten()  # (N,)
        null = torch.isnan(values)  # (N,)
        features = self.features(self.rescale(torch.where(null, self.condition.low, values)).float())  # (N, F)
        embedded = self.mlp(features.to(self.null_embedding.dtype))  # (N, D)
        return torch.where(null[:, None], self.null_embedding, embedded)  # (N, D)


def install_condition_embedders(embedders: list[nn.Module], condition: ConditionRange) -> None:
    """Replaces ``class_embedder`` of each ``CombinedTimestepLabelEmbeddings`` with a fresh continuous embedder.

    The trainer calls it on block 0's embedder before sharing it; the loader calls it on every block's copy
    before loading the per-block weights.
    """
    for embedder in embedders:
        hidden_size = embedder.timestep_embedder.linear_2.weight.shape[0]
        device = embedder.timestep_embedder.linear_2.weight.device
        dtype = embedder.timestep_embedder.linear_2.weight.dtype
        embedder.class_embedder = ContinuousConditionEmbedding(hidden_size, condition).to(device=device, dtype=dtype)

