"""A class-conditioned U-Net family: diffusers' ``UNet2DModel`` with a class table, run so that c can be pruned.

In a ``UNet2DModel`` built with ``num_class_embeds`` the class embedding is ADDED to the timestep embedding,

    c = time_embedding(time_proj(t)) + class_embedding(y),   (B, D), D = time_embed_dim

and every resnet reads that one vector as ``time_emb_proj(silu(c))``: the U-Net analogue of DiT's c = y + t.
``UNet2DModel.forward`` forms c inline, so nothing can hook it. :class:`ConditionedUNet` runs the same trunk with c
taken from a :class:`UNetEmbedder`, a module over the U-Net's own embedding modules (no copies) with the call
signature of diffusers' ``CombinedTimestepLabelEmbeddings``: ``masks.prune`` hooks it as it hooks a DiT's embedder,
and ``embeddings`` reads its ``time_proj``, ``timestep_embedder`` and ``class_embedder.embedding_table``.

A U-Net organism is trained by :func:`bottleneck_utils.organisms.train.train_dit` from a recipe with ``"family": "unet"``
(``train.MNIST_UNET``) and loaded by :func:`bottleneck_utils.models.load` like any other organism.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

# ---------------------------------------------------------------------------------------------------
#                                        The MNIST organism
# ---------------------------------------------------------------------------------------------------

# mnist-dit's data (14×14 MNIST in [-1, 1], 10 digits), objective (DDPM, T = 1000) and training budget, on a U-Net.
# Only ONE downsample (14 → 7): a second would give 4, whose upsample (8) no longer matches the 7×7 skip.
# Channels (32, 96), one resnet per down level (two per up level), attention at 7×7: 1,360,193 parameters against
# mnist-dit's 1,272,324 (its one shared embedder counted once; 1,424,772 as saved, with four per-block copies).
# Time embedding: diffusers' default, a positional sinusoid of block_out_channels[0] = 32 channels (DiT: 256),
# cos first (flip_sin_to_cos=True, as DiT) with frequencies exp(−ln(10⁴)·i/16) (freq_shift=0: the ORIGINAL
# DiT's convention; diffusers runs DiT with shift 1, see models' docstring), then the MLP 32 → 128 → 128:
# D = 4 · 32 = 128, mnist-dit's hidden size. Initialisation: diffusers' default (PyTorch's: Kaiming-uniform
# convolutions and linears, the class table N(0, 1), 50× DiT's N(0, 0.02)); the recipe's class_table_std redraws
# the table (recipes.MNIST_UNET: DiT's 0.02; the shipped mnist-unet predates it and started at N(0, 1)).
# Speed: ~1050 ms per training step at batch 128 on one CPU thread (mean of 20 steps after 2 warm-up, two runs:
# 1040 and 1060; mnist-dit: ~520 ms in the same runs, with the other core busy), so 4000 steps take ~70 minutes.
# Lists, not tuples: the recipe goes through JSON (meta.json, the resume check), which turns tuples into lists.
# train.MNIST_UNET is this architecture with mnist-dit's training budget.
MNIST_UNET_CONFIG = {
    "sample_size": 14,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 96],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "num_class_embeds": 11,  # 10 digits + the CFG null class (row 10)
}


# ---------------------------------------------------------------------------------------------------
#                                    c = t + y over the U-Net's modules
# ---------------------------------------------------------------------------------------------------


class LabelTable(nn.Module):
    """y: ``embedding_table`` is the U-Net's own ``class_embedding`` (num_classes + 1 rows, the last the CFG null)."""

    def __init__(self, table: nn.Embedding):
        super().__init__()
        self.embedding_table = table

    def forward(self, class_labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(class_labels)  # (B, D)


class UNetEmbedder(nn.Module):
    """c = time_embedding(time_proj(t)) + class_embedding(y) of a ``UNet2DModel``, over its own modules.

    Attributes:
        time_proj: the U-Net's sinusoid (``unet.time_proj``).
        timestep_embedder: the U-Net's timestep MLP (``unet.time_embedding``, ``linear_1``/``linear_2``).
        class_embedder: a :class:`LabelTable` over ``unet.class_embedding``.
    """

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        self.time_proj = unet.time_proj
        self.timestep_embedder = unet.time_embedding
        self.class_embedder = LabelTable(unet.class_embedding)

    def forward(self, timestep, class_labels: torch.Tensor, hidden_dtype: torch.dtype | None = None) -> torch.Tensor:
        """c (B, D) for labels (B,) and a scalar, (1,) or (B,) timestep, computed as ``UNet2DModel.forward`` does.

        A scalar timestep is broadcast to the batch (a Python number is kept as it is, not cast to long).
        """
        dtype = hidden_dtype or self.timestep_embedder.linear_1.weight.dtype
        timesteps = torch.as_tensor(timestep, device=class_labels.device).reshape(-1)  # (1,) or (B,)
        timesteps = timesteps * torch.ones(len(class_labels), dtype=timesteps.dtype, device=timesteps.device)  # (B,)
        t = self.timestep_embedder(self.time_proj(timesteps).to(dtype=dtype))  # (B, D)
        return t + self.class_embedder(class_labels).to(dtype=dtype)  # (B, D)


# ---------------------------------------------------------------------------------------------------
#                                   The U-Net, run on the hookable c
# ---------------------------------------------------------------------------------------------------


def check_unet(unet: UNet2DModel) -> None:
    """Raises ValueError unless ``unet`` has a class table added to a positional time embedding and no skip blocks."""
    config = unet.config
    if config.class_embed_type is not None or not config.num_class_embeds:
        raise ValueError("the U-Net has no class table: build it with num_class_embeds = classes + 1 (the last row "
                         "is the CFG null class) and class_embed_type=None")
    if config.time_embedding_type != "positional":
        raise ValueError(f"the U-Net's time embedding is {config.time_embedding_type!r}; ConditionedUNet runs "
                         "time_embedding_type='positional' only")
    skipping = [type(block).__name__ for block in [*unet.down_blocks, *unet.up_blocks] if hasattr(block, "skip_conv")]
    if skipping:
        raise ValueError(f"ConditionedUNet runs block types without skip_conv only, got {skipping}; use e.g. "
                         "DownBlock2D/AttnDownBlock2D and UpBlock2D/AttnUpBlock2D")


class ConditionedUNet(nn.Module):
    """A ``UNet2DModel`` (registered as ``unet``) whose trunk reads c from :attr:`embedder`.

    The embedder is kept out of the registered submodules: ``state_dict`` holds the ``unet.*`` keys once, and
    ``deepcopy`` copies it together with the U-Net, so the copy's embedder uses the copy's modules.
    """

    def __init__(self, unet: UNet2DModel):
        super().__init__()
        check_unet(unet)
        self.unet = unet
        object.__setattr__(self, "embedder", UNetEmbedder(unet))

    @property
    def config(self):
        """The U-Net's config (``in_channels``, ``sample_size``, ``num_class_embeds``, …)."""
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def num_classes(self) -> int:
        """Real classes; label ``num_classes`` is the CFG null class."""
        return self.unet.config.num_class_embeds - 1

    def forward(self, sample: torch.Tensor, timestep, class_labels: torch.Tensor) -> UNet2DOutput:
        """``UNet2DModel.forward(sample, timestep, class_labels)`` with c = ``self.embedder(timestep, class_labels)``,
        so a forward hook on the embedder changes what every resnet sees. ``sample`` is (B, C, H, W)."""
        unet = self.unet
        c = self.embedder(timestep, class_labels)  # (B, D)
        if unet.config.center_input_sample:
            sample = 2 * sample - 1.0
        sample = unet.conv_in(sample)  # (B, C₀, H, W)
        residuals = (sample,)
        for block in unet.down_blocks:
            sample, block_residuals = block(hidden_states=sample, temb=c)
            residuals += block_residuals
        if unet.mid_block is not None:
            sample = unet.mid_block(sample, c)
        for block in unet.up_blocks:
            skips, residuals = residuals[-len(block.resnets):], residuals[: -len(block.resnets)]
            sample = block(sample, skips, c)
        sample = unet.conv_out(unet.conv_act(unet.conv_norm_out(sample)))  # (B, C, H, W)
        return UNet2DOutput(sample=sample)


def build_unet(config: dict, seed: int, class_table_std: float | None = None) -> ConditionedUNet:
    """A freshly initialised ``UNet2DModel(**config)`` (diffusers' default initialisation), run as a
    :class:`ConditionedUNet`; with ``class_table_std``, its class table (null row included) is then redrawn
    N(0, std²), as DiT's (std 0.02). Without it the model is exactly the one built before the option existed."""
    torch.manual_seed(seed)
    model = ConditionedUNet(UNet2DModel(**config))
    if class_table_std is not None:
        if isinstance(class_table_std, bool) or not isinstance(class_table_std, int | float) or not class_table_std > 0:
            raise ValueError(f"class_table_std must be a number > 0 (or None: diffusers' N(0, 1)), got {class_table_std!r}")
        nn.init.normal_(model.unet.class_embedding.weight, std=class_table_std)
    return model
