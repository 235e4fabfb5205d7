"""Model registry: one ``load()`` for the embedded organisms, hub DiTs and original ``.pt`` checkpoints.

Every loader returns a :class:`Bundle` whose ``embedder`` is a diffusers ``CombinedTimestepLabelEmbeddings``:
its output is exactly the paper's conditional vector c = y + t, taken before the adaLN MLP. In a
continuous-condition bundle (``ising-dit``) the label table is replaced by an MLP of the condition, so c = t + e(T)
(see :mod:`bottleneck_utils.continuous`), and ``bundle.condition`` holds the trained range. A U-Net organism's
embedder is a :class:`unet.UNetEmbedder`, with the same attributes and call signature.

Where c lives:
    * diffusers ``DiTTransformer2DModel``: each block owns a copy, ``transformer_blocks[i].norm1.emb``, and the
      final layer reuses block 0's. The conversion from the original checkpoint copies one table into every
      block, so the copies must be identical; :func:`check_embedder_copies` asserts it.
    * original DiT/SiT/REPA/MG/LightningDiT/MDT code: ``c = t_embedder(t) + y_embedder(y)``, with keys
      ``t_embedder.mlp.{0,2}.*`` and ``y_embedder.embedding_table.weight`` (row ``num_classes`` = CFG null).
    * a U-Net organism (recipe ``"family": "unet"``, e.g. ``mnist-unet``): diffusers' ``UNet2DModel`` adds its
      class table to the timestep embedding, c = time_embedding(time_proj(t)) + class_embedding(y), which every
      resnet reads; the bundle's embedder is a :class:`unet.UNetEmbedder` over those modules, and its transformer
      a :class:`unet.ConditionedUNet` that runs the U-Net on that embedder's c (see :mod:`bottleneck_utils.unet`).

The timestep sinusoid (``freq_shift``):
    The original DiT uses frequencies ``exp(-ln(10000) · i / half)``; diffusers' ``Timesteps(...,
    downscale_freq_shift=1)`` divides by ``half - 1`` instead. The hub weights were trained with the first and
    are run by diffusers with the second, so t (and with it c, its cosine and its nPR) differs slightly. The
    paper measured the original code: pass ``freq_shift=0`` to match its tables; the default ``None`` keeps
    the convention the model is run with (1 for diffusers models, 0 for original checkpoints).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel, UNet2DModel
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings
from safetensors import SafetensorError

from bottleneck_utils import adaln_code, integrity
from bottleneck_utils.continuous import NULL, ConditionRange, install_condition_embedders
from bottleneck_utils.convert import ORIGINAL_FIX, check_original_ndims, drop_training_heads, original_to_diffusers
from bottleneck_utils.flow import FlowODE
from bottleneck_utils.unet import ConditionedUNet

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TimeConvention:
    """How a model family feeds time to its embedder.

    Attributes:
        kind: ``"ddpm"`` (integer t in [0, 999], noise at 999), ``"flow"`` (continuous t in [0, 1]) or ``"sigma"``
            (flow matching fed σ · 1000, as SD3).
        first_time: t₀, the highest-noise time at which sampling starts, when no scheduler decides it.
        t_max: the largest valid time.
    """

    kind: str
    first_time: float
    t_max: float


DDPM = TimeConvention("ddpm", first_time=999.0, t_max=999.0)
# SiT and LightningDiT integrate from noise at t=0 to data at t=1; REPA's sampler runs t from 1 (noise) to 0.
FAMILIES = {
    "dit": DDPM,
    "mdt": DDPM,
    "sit": TimeConvention("flow", first_time=0.0, t_max=1.0),
    "lightningdit": TimeConvention("flow", first_time=0.0, t_max=1.0),
    "repa": TimeConvention("flow", first_time=1.0, t_max=1.0),
}
OBJECTIVES = {"ddpm": None, "flow-sit": "sit", "flow-repa": "repa"}  # a trained organism's objective → flow family


def objective_time(objective: str = "ddpm", train_timesteps: int = 1000) -> TimeConvention:
    """The time convention of a model trained with ``objective``: DDPM over ``train_timesteps`` integer steps (noise
    at the last), or SiT's / REPA's flow time in [0, 1]."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    if objective == "ddpm":
        return TimeConvention("ddpm", first_time=float(train_timesteps - 1), t_max=float(train_timesteps - 1))
    return FAMILIES[OBJECTIVES[objective]]


def flow_sampler(time: TimeConvention) -> FlowODE:
    """The ODE integrator of a flow family (noise at its t₀: 0 for SiT/LightningDiT, 1 for REPA)."""
    return FlowODE(noise_time=time.first_time)


# Families whose original backbone is a stack of DiT blocks that diffusers' DiTTransformer2DModel runs (full=True;
# REPA is a SiT whose training-only projector heads are dropped); the others (MDT's masked blocks, LightningDiT's
# SwiGLU/RMSNorm/RoPE) load embedders only.
FULL_FAMILIES = ("dit", "sit", "repa")


@dataclass
class Bundle:
    """A loaded model, reduced to what the book needs.

    Attributes:
        name: registry name, hub id or path it was loaded from.
        embedder: the module whose output is c = y + t (block 0's copy for diffusers DiTs, the
            :class:`unet.UNetEmbedder` of a U-Net).
        num_classes: number of real classes; label ``num_classes`` is the CFG null class. 0 for a
            continuous-condition model.
        time: the model's time convention.
        transformer: the full denoiser (a DiT, or a :class:`unet.ConditionedUNet`), or None for embedder-only
            bundles.
        scheduler: the sampling scheduler (a diffusers scheduler, or a :class:`flow.FlowODE` for flow models), or
            None for embedder-only bundles.
        vae: the latent decoder, or None for pixel-space models.
        class_names: human-readable class names, if known.
        sha256: hash of the weights file the bundle came from, for provenance.
        device: the torch device everything lives on.
        dtype: the compute dtype.
        condition: for a continuous-condition model, the condition's name and trained range; None for a
            class-conditional one.
        prompt_conditioned: True for a text-conditioned model (``text_conditions.text_bundle``): its c comes from a
            prompt or size embedding, not from labels the hooks can read, so it takes global masks only and its CFG
            null branch cannot be told apart.
    """

    name: str
    embedder: torch.nn.Module
    num_classes: int
    time: TimeConvention
    transformer: DiTTransformer2DModel | ConditionedUNet | None = None
    scheduler: DDIMScheduler | FlowODE | None = None
    vae: AutoencoderKL | None = None
    class_names: list[str] | None = None
    sha256: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    condition: ConditionRange | None = None
    prompt_conditioned: bool = False

    @property
    def hidden_size(self) -> int:
        return self.embedder.timestep_embedder.linear_2.weight.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int] | None:
        """(C, H, W) of the images :func:`bottleneck_utils.sampling.sample` returns, or None without a transformer.

        A VAE decodes latents of side ``sample_size`` into images ``2 ** (len(block_out_channels) − 1)`` times larger
        (diffusers' ``vae_scale_factor``) with the VAE's output channels.
        """
        if self.transformer is None:
            return None
        config = self.transformer.config
        if self.vae is None:
            return config.in_channels, config.sample_size, config.sample_size
        side = config.sample_size * 2 ** (len(self.vae.config.block_out_channels) - 1)
        return self.vae.config.out_channels, side, side

    @property
    def null_label(self) -> int | float:
        """The label of the CFG null condition: the model's own class count (not a hard-coded 1000), or NaN for a
        continuous-condition model (it selects the learned null vector, see :mod:`bottleneck_utils.continuous`)."""
        return NULL if self.condition is not None else self.num_classes


# ---------------------------------------------------------------------------------------------------
#                                          Devices and dtypes
# ---------------------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device) -> torch.device:
    """Returns ``torch.device(device)``, or raises if that device does not exist here (never falls back)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise RuntimeError(f"unsupported device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} was requested but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise RuntimeError(f"device {str(device)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device 'mps' was requested but MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise RuntimeError(f"unsupported device {str(device)!r}; use 'cpu', 'cuda' or 'mps'")
    return device


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``dtype`` as a torch dtype, or a ValueError naming the accepted names."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def set_freq_shift(embedders: list[torch.nn.Module], freq_shift: float | None) -> None:
    """Sets the sinusoid's ``downscale_freq_shift`` (0 = original DiT, 1 = diffusers) on each embedder."""
    if freq_shift is None:
        return
    if freq_shift not in (0, 1):
        raise ValueError(f"freq_shift must be 0 (original DiT), 1 (diffusers) or None, got {freq_shift!r}")
    for embedder in embedders:
        embedder.time_proj.downscale_freq_shift = freq_shift


# ---------------------------------------------------------------------------------------------------
#                                   diffusers DiT: per-block embedders
# ---------------------------------------------------------------------------------------------------


def block_embedders(transformer: DiTTransformer2DModel) -> list[torch.nn.Module]:
    """The per-block copies of the conditioning embedder, ``transformer_blocks[i].norm1.emb``."""
    return [block.norm1.emb for block in transformer.transformer_blocks]


def tie_embedder_copies(transformer: DiTTransformer2DModel) -> DiTTransformer2DModel:
    """Copies block 0's embedder weights into every other block's copy (diffusers initialises each one apart).

    This is what the conversion from an original checkpoint does, so a freshly built model passes
    :func:`check_embedder_copies` afterwards. Returns the transformer.
    """
    reference = block_embedders(transformer)[0].state_dict()
    for embedder in block_embedders(transformer)[1:]:
        embedder.load_state_dict(reference)
    return transformer


def check_embedder_copies(transformer: DiTTransformer2DModel) -> None:
    """Raises ``ValueError`` if the per-block copies of the embedder differ.

    We raise rather than warn: every statistic in the book is computed from block 0's copy, which stands for
    the whole model only if all copies are equal (as the conversion from the original checkpoint makes them).
    """
    reference = block_embedders(transformer)[0].state_dict()
    differing = [
        index
        for index, embedder in enumerate(block_embedders(transformer))
        if any(not torch.equal(reference[key], value) for key, value in embedder.state_dict().items())
    ]
    if differing:
        raise ValueError(
            f"the conditioning embedders of blocks {differing} differ from block 0's; c = y + t is not one "
            "vector in this model, so the paper's statistics are not defined for it"
        )


def _moved(model, device, dtype):
    """``model.to(device, dtype)``, casting only when the dtype differs: diffusers logs a warning for any dtype."""
    model = model.to(device)
    return (model if next(model.parameters()).dtype == dtype else model.to(dtype)).eval()


def _diffusers_bundle(name, transformer, scheduler, vae, class_names, sha256, device, dtype, freq_shift,
                      condition=None, time=None):
    check_embedder_copies(transformer)
    transformer = _moved(transformer, device, dtype)
    set_freq_shift(block_embedders(transformer), freq_shift)
    if vae is not None:
        vae = _moved(vae, device, dtype)
    return Bundle(
        name=name,
        embedder=block_embedders(transformer)[0],
        num_classes=0 if condition is not None else transformer.config.num_embeds_ada_norm,
        time=time or objective_time("ddpm", scheduler.config.num_train_timesteps),
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        class_names=class_names,
        sha256=sha256,
        device=device,
        dtype=dtype,
        condition=condition,
    )


# ---------------------------------------------------------------------------------------------------
#                                  Embedded model organisms (package data)
# ---------------------------------------------------------------------------------------------------


def embedded_dir(name: str) -> Path:
    """The package-data folder of the shipped organism ``name``."""
    return integrity.CHECKPOINT_DIR / name


def _checked_file(name: str, path: Path, check_sha: bool = True) -> str:
    """The sha256 of a weights file: checked against the manifest for a shipped organism, only computed for a run."""
    if check_sha:
        return integrity.verified(name, path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run has not saved its model yet")
    return integrity.sha256_of(path)


def _organism_fix(name: str, folder: Path, check_sha: bool) -> str:
    """What to do about a damaged file of an organism: restore or retrain a shipped one, retrain a run."""
    return integrity.shipped_fix(name) if check_sha else f"the run {folder} is damaged: delete it and train it again"


def _config(folder: Path, fix: str) -> dict:
    """An organism's ``config.json`` (the model's diffusers config)."""
    return integrity.read_json(folder / "config.json", "the model config", fix)


def _embedder_only(name: str, folder: Path, meta: dict, time: TimeConvention, device, dtype, check_sha) -> Bundle:
    """A shipped organism of which only the embedder is kept (a ladder rung no pruning run uses)."""
    sha = _checked_file(name, folder / "embedder.safetensors", check_sha)
    fix = _organism_fix(name, folder, check_sha)
    config = _config(folder, fix)
    width = config["num_attention_heads"] * config["attention_head_dim"]
    # a dropout probability > 0 gives the table its CFG null row, as in training; the copy itself never drops
    embedder = CombinedTimestepLabelEmbeddings(config["num_embeds_ada_norm"], width, class_dropout_prob=0.1)
    embedder.class_embedder.dropout_prob = 0.0
    path = folder / "embedder.safetensors"
    integrity.load_weights(embedder, integrity.read_safetensors(path, fix), path, fix)
    return Bundle(name, _moved(embedder, device, dtype), config["num_embeds_ada_norm"], time,
                  class_names=meta["class_names"], sha256=sha, device=device, dtype=dtype)


def _load_embedded(name: str, device: torch.device, dtype: torch.dtype, freq_shift: float | None) -> Bundle:
    return load_organism(embedded_dir(name), name, device, dtype, freq_shift)


def load_organism(folder: Path, name: str, device: torch.device, dtype: torch.dtype, freq_shift: float | None,
                  check_sha: bool = True) -> Bundle:
    """A trained organism from its folder (``meta.json``, ``config.json``, weights); ``check_sha`` compares the
    weights with the manifest's entry ``name`` (shipped organisms), otherwise the hash is only recorded (a run)."""
    fix = _organism_fix(name, folder, check_sha)
    meta = integrity.read_json(folder / "meta.json", "the organism's meta", fix)
    recipe = meta.get("recipe", {})
    time = objective_time(recipe.get("objective", "ddpm"), recipe.get("train_timesteps", 1000))
    if recipe.get("family") == "unet":
        return _load_unet_organism(name, folder, meta, time, device, dtype, freq_shift, check_sha)
    if not (folder / "model.safetensors").is_file() and (folder / "embedder.safetensors").is_file():
        return _embedder_only(name, folder, meta, time, device, dtype, check_sha)
    actual = _checked_file(name, folder / "model.safetensors", check_sha)
    condition = ConditionRange(**meta["condition"]) if meta.get("condition") else None
    transformer = DiTTransformer2DModel.from_config(_config(folder, fix))
    if condition is not None:  # the label table of every block is replaced by the continuous embedder
        install_condition_embedders(block_embedders(transformer), condition)
    if recipe.get("code_width"):  # a bottleneck-trained DiT: its adaLN reads a k-dim code (adaln_code.narrow)

        adaln_code.narrow(transformer, torch.zeros(recipe["code_width"], transformer.inner_dim))  # P is then loaded
    weights = folder / "model.safetensors"
    integrity.load_weights(transformer, integrity.read_safetensors(weights, fix), weights, fix)
    return _diffusers_bundle(name, transformer, _organism_scheduler(folder, time, fix), None, meta["class_names"],
                             actual, device, dtype, freq_shift, condition, time)


def _organism_scheduler(folder: Path, time: TimeConvention, fix: str) -> DDIMScheduler | FlowODE:
    """A trained organism's sampler: the ODE integrator of a flow objective, else the DDIM scheduler saved beside it."""
    if time.kind == "flow":
        return flow_sampler(time)
    return _from_pretrained(DDIMScheduler, folder, "scheduler", fix)


def _load_unet_organism(name: str, folder: Path, meta: dict, time: TimeConvention, device, dtype, freq_shift,
                        check_sha) -> Bundle:
    """A trained U-Net organism: ``UNet2DModel`` config and weights, run as a :class:`unet.ConditionedUNet`."""
    actual = _checked_file(name, folder / "model.safetensors", check_sha)
    fix = _organism_fix(name, folder, check_sha)
    model = ConditionedUNet(UNet2DModel.from_config(_config(folder, fix)))
    weights = folder / "model.safetensors"
    integrity.load_weights(model.unet, integrity.read_safetensors(weights, fix), weights, fix)
    model = _moved(model, device, dtype)
    set_freq_shift([model.embedder], freq_shift)
    return Bundle(name, model.embedder, model.num_classes, time, model, _organism_scheduler(folder, time, fix),
                  class_names=meta["class_names"], sha256=actual, device=device, dtype=dtype)


# every shipped organism of the manifest: mnist-dit, mnist-sit, ising-dit and the ladder rungs (ladder/...)
EMBEDDED = {name: _load_embedded for name in integrity.manifest() if name != "mnist-classifier"}


# ---------------------------------------------------------------------------------------------------
#                                       Hugging Face hub / local dirs
# ---------------------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE")


def _hub_snapshot(repo: str) -> Path:
    """The local folder of a hub repo: the cache first (so an offline machine answers at once), else a download."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except LocalEntryNotFoundError:
        if _hub_offline():
            raise OSError(f"weights for {repo!r} are not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                          "run with network access or pass a local path") from None
    try:
        return Path(snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as error:  # noqa: BLE001 (network errors come in many types; one message for all of them)
        raise OSError(f"weights for {repo!r} are not in the local cache and could not be downloaded "
                      f"({type(error).__name__}); run with network access or pass a local path") from None


PIPELINE_FIX = "download or save the pipeline again"


def _load_diffusers(repo: str, device, dtype, freq_shift) -> Bundle:
    """Loads a diffusers DiT pipeline folder: ``transformer/``, ``vae/``, ``scheduler/``, ``model_index.json``."""
    folder = Path(repo) if Path(repo).is_dir() else _hub_snapshot(repo)
    transformer = _from_pretrained(DiTTransformer2DModel, folder, "transformer")
    scheduler = _from_pretrained(DDIMScheduler, folder, "scheduler")
    vae = _from_pretrained(AutoencoderKL, folder, "vae") if (folder / "vae").is_dir() else None
    index = (integrity.read_json(folder / "model_index.json", "the pipeline index", PIPELINE_FIX)
             if (folder / "model_index.json").is_file() else {})
    names = None
    if "id2label" in index:
        names = [index["id2label"][str(i)] for i in range(len(index["id2label"]))]
    weights = sorted((folder / "transformer").glob("*.safetensors"))
    sha = integrity.sha256_of(weights[0]) if weights else None
    return _diffusers_bundle(repo, transformer, scheduler, vae, names, sha, device, dtype, freq_shift)


def _from_pretrained(cls, folder: Path, subfolder: str, fix: str = PIPELINE_FIX):
    """``cls.from_pretrained(folder, subfolder=...)`` with one line of error for a missing, truncated or bad file."""
    try:
        return cls.from_pretrained(folder, subfolder=subfolder)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{folder / subfolder} is not a loadable diffusers {cls.__name__} ({reason}); the file may be "
                         f"truncated or from another model: {fix}") from None


# ---------------------------------------------------------------------------------------------------
#                                Original .pt checkpoints (DiT, SiT, REPA, ...)
# ---------------------------------------------------------------------------------------------------

EMBEDDER_KEYS = {
    "t_embedder.mlp.0.weight": "timestep_embedder.linear_1.weight",
    "t_embedder.mlp.0.bias": "timestep_embedder.linear_1.bias",
    "t_embedder.mlp.2.weight": "timestep_embedder.linear_2.weight",
    "t_embedder.mlp.2.bias": "timestep_embedder.linear_2.bias",
    "y_embedder.embedding_table.weight": "class_embedder.embedding_table.weight",
}


def read_original_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Reads an original-format ``.pt`` with ``weights_only=True``, preferring its ``ema`` sub-dict."""
    checkpoint = integrity.read_checkpoint(path, ORIGINAL_FIX)  # allows the argparse.Namespace of DiT's train.py
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("ema"), dict):
        checkpoint = checkpoint["ema"]
    elif isinstance(checkpoint, dict) and isinstance(checkpoint.get("model"), dict):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (nor one under 'ema' or 'model')")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _require_keys(state_dict: dict, keys, path) -> None:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        raise KeyError(f"{path} is missing the keys {missing}; is it an original DiT-family checkpoint?")


def embedder_from_original(state_dict: dict[str, torch.Tensor], path="checkpoint") -> CombinedTimestepLabelEmbeddings:
    """Builds the c = y + t embedder from original ``t_embedder``/``y_embedder`` weights (freq shift 0)."""
    _require_keys(state_dict, EMBEDDER_KEYS, path)
    check_original_ndims(state_dict, path)
    table = state_dict["y_embedder.embedding_table.weight"]  # (num_classes + 1, D)
    embedder = CombinedTimestepLabelEmbeddings(table.shape[0] - 1, table.shape[1], class_dropout_prob=0.1)
    integrity.load_weights(embedder, {new: state_dict[old] for old, new in EMBEDDER_KEYS.items()}, path, ORIGINAL_FIX)
    set_freq_shift([embedder], 0)
    return embedder


def infer_family(path: str | Path) -> str:
    """Guesses the model family from a checkpoint's file name; raises if no family or several match."""
    stem = Path(path).name.lower()
    found = [family for family in FAMILIES if re.search(rf"(^|[^a-z]){family}([^a-z]|$)", stem)]
    if len(found) != 1:
        raise ValueError(
            f"cannot tell the model family of {Path(path).name!r} from its name; pass family= one of "
            f"{sorted(FAMILIES)} (it fixes the time convention: DDPM integer t or flow t in [0, 1])"
        )
    return found[0]


def _load_original(path, family, device, dtype, freq_shift, full, num_heads) -> Bundle:
    family = family or infer_family(path)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    if full and family not in FULL_FAMILIES:
        raise ValueError(f"only the embedders of {family.upper()} load: its backbone is not a stack of DiT blocks that "
                         f"diffusers can run; use full=False (full conversion: {', '.join(FULL_FAMILIES)})")
    state_dict = read_original_state_dict(path)
    sha = integrity.sha256_of(path)
    if full:
        transformer = original_to_diffusers(drop_training_heads(state_dict, path), num_heads=num_heads, path=path)
        transformer = _moved(transformer, device, dtype)
        embedders = block_embedders(transformer)
        set_freq_shift(embedders, 0 if freq_shift is None else freq_shift)
        bundle_time = FAMILIES[family]
        if bundle_time.kind == "flow":
            scheduler = flow_sampler(bundle_time)
        else:
            scheduler = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
        return Bundle(str(path), embedders[0], transformer.config.num_embeds_ada_norm, bundle_time, transformer,
                      scheduler, sha256=sha, device=device, dtype=dtype)
    embedder = embedder_from_original(state_dict, path).to(device=device, dtype=dtype).eval()
    set_freq_shift([embedder], freq_shift)
    table_rows = state_dict["y_embedder.embedding_table.weight"].shape[0]
    return Bundle(str(path), embedder, table_rows - 1, FAMILIES[family], sha256=sha, device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------------
#                                               load()
# ---------------------------------------------------------------------------------------------------


def load(
    name_or_path: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    *,
    freq_shift: float | None = None,
    family: str | None = None,
    full: bool = False,
    num_heads: int | None = None,
) -> Bundle:
    """Loads a model into a :class:`Bundle`.

    Args:
        name_or_path: an embedded name (``"mnist-dit"``, ``"mnist-sit"``, ``"ising-dit"``, ``"ladder/c1000"``, …),
            a training run's folder (``runs/mnist-sit``), a diffusers hub id (``"facebook/DiT-XL-2-256"``) or local
            pipeline folder, or an original-format ``.pt``/``.pth`` checkpoint.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; a device that does not exist raises.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        freq_shift: the timestep sinusoid's frequency shift: 0 = original DiT (use it to match the paper),
            1 = diffusers, None = the model's own convention. See the module docstring.
        family: for ``.pt`` files, one of ``dit, mdt, sit, lightningdit, repa`` (the time convention);
            guessed from the file name when None.
        full: for ``.pt`` files of the DiT and SiT families, convert the whole backbone into a diffusers
            ``DiTTransformer2DModel`` (needed for sampling); otherwise only the embedders are read. The other
            families (MDT, LightningDiT, REPA) load embedders only, and ``full=True`` raises for them.
        num_heads: attention heads, for a full conversion whose shape is not one of DiT's sizes (S/B/L/XL).

    Raises:
        ValueError: an unknown name, a wrong checkpoint format or a bad argument.
        FileNotFoundError: a path that does not exist.
        OSError: hub weights that are not in the cache and cannot be downloaded.
        RuntimeError: a device that is not available.
    """
    device, dtype = resolve_device(device), resolve_dtype(dtype)
    source = model_source(name_or_path)
    name_or_path = str(name_or_path)
    if source != "original" and (family is not None or full or num_heads is not None):
        raise ValueError("family=, full= and num_heads= apply to original .pt/.pth checkpoints only; "
                         f"{name_or_path!r} is a {source} model")
    if source == "embedded":
        return EMBEDDED[name_or_path](name_or_path, device, dtype, freq_shift)
    if source == "original":
        return _load_original(Path(name_or_path), family, device, dtype, freq_shift, full, num_heads)
    if source == "run":  # a training run's folder (python -m bottleneck_utils.organisms.cli organism NAME --out DIR)
        return load_organism(Path(name_or_path), name_or_path, device, dtype, freq_shift, check_sha=False)
    return _load_diffusers(name_or_path, device, dtype, freq_shift)


def model_source(name_or_path: str | Path) -> str:
    """What :func:`load` reads for ``name_or_path``, decided without reading weights.

    Returns:
        ``"embedded"`` (a shipped organism), ``"original"`` (a ``.pt``/``.pth`` file), ``"run"`` (a training
        run's folder, with ``meta.json``), ``"folder"`` (a diffusers pipeline folder) or ``"hub"`` (a hub id).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unknown name, or a file that ``load`` cannot read (e.g. a single ``.safetensors``).
    """
    if not isinstance(name_or_path, str | os.PathLike):
        raise TypeError(f"a model is named by a string or path, got {type(name_or_path).__name__}")
    name, path = str(name_or_path), Path(name_or_path)
    if name in EMBEDDED:
        return "embedded"
    if path.suffix in (".pt", ".pth"):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return "original"
    if path.is_dir() and (path / "meta.json").is_file():
        return "run"
    if path.is_dir():
        return "folder"
    if path.is_file():
        hint = (f"the diffusers pipeline folder around it (e.g. {path.parent.parent})" if path.suffix == ".safetensors"
                else "a diffusers pipeline folder")
        raise ValueError(f"{path} is a single {path.suffix or 'extensionless'} file, which holds no model config: pass "
                         f"{hint} or an original .pt/.pth checkpoint")
    if name.startswith(("/", ".", "~")):
        raise FileNotFoundError(f"{name} does not exist")
    if name.startswith("ladder/"):
        raise ValueError(f"the ladder rung {name!r} is not shipped; train it with: python -m bottleneck_utils.organisms.cli "
                         f"ladder train {name}")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return _hub_id(name)
    raise ValueError(
        f"unknown model {name!r}: expected one of {sorted(EMBEDDED)}, a hub id like "
        "'facebook/DiT-XL-2-256', a diffusers pipeline folder, or an original .pt/.pth checkpoint"
    )


def _hub_id(name: str) -> str:
    """``"hub"`` for an owner/name of ASCII letters, digits, '-', '_' and '.', which the hub accepts; else one line."""
    foreign = sorted({char for char in name if not char.isascii()})
    if foreign:
        raise ValueError(f"{name!r} is not a valid hub id: {''.join(foreign)!r} is not ASCII (hub ids use letters, "
                         "digits, '-', '_' and '.'); retype the id, or pass a local path")
    return "hub"


def check_model(name_or_path: str | Path) -> None:
    """Raises what :func:`load` would raise for an unknown name, a missing path, or (offline) an uncached hub id,
    without reading any weights: the check a long run makes before it starts."""
    if model_source(name_or_path) == "hub" and _hub_offline():
        _hub_snapshot(str(name_or_path))
