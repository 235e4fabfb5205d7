"""The model registry ``bottleneck_utils.models.load``: original ``.pt`` checkpoints, diffusers pipeline folders,
the hub cache (offline) and the embedded MNIST DiT. Everything is synthetic, tiny, CPU and offline."""

import argparse
import json
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from bottleneck_utils import integrity, models
from bottleneck_utils.embeddings import conditional_vectors, first_sampling_timestep
from bottleneck_utils.flow import FlowODE

try:  # tests/ is on sys.path under pytest's default import mode; tests.synthetic if tests/ becomes a package
    from tests import synthetic
except ImportError:
    import synthetic

LABELS = [0, 3, 9, synthetic.NUM_CLASSES]  # the last is the CFG null class
TIMESTEPS = [999, 500, 37, 0]


@pytest.fixture(scope="module")
def state_dict():
    return synthetic.original_dit_state_dict(seed=0)


@pytest.fixture(scope="module")
def checkpoint(state_dict, tmp_path_factory):
    return synthetic.save_checkpoint(tmp_path_factory.mktemp("ckpt") / "DiT-S-2-toy.pt", OrderedDict(state_dict))


# ---------------------------------------------------------------------------------------------------
#                               Original .pt, embedder only: c = y + t
# ---------------------------------------------------------------------------------------------------


def test_c_matches_the_original_dit_formula(checkpoint, state_dict):
    bundle = models.load(str(checkpoint), family="dit")
    assert bundle.transformer is None and bundle.num_classes == synthetic.NUM_CLASSES
    assert bundle.hidden_size == synthetic.HIDDEN and bundle.sha256 == integrity.sha256_of(checkpoint)
    c = conditional_vectors(bundle, LABELS, TIMESTEPS, include_null=True)  # (T, n, D)
    reference = synthetic.reference_c(state_dict, LABELS, TIMESTEPS)
    assert c.shape == reference.shape == (len(TIMESTEPS), len(LABELS), synthetic.HIDDEN)
    # float32 model against a float64 hand-written reference: rounding of two width-384 layers (~1e-6)
    torch.testing.assert_close(c.double(), reference, atol=1e-4, rtol=1e-5)
    # the parts: y is a table row, t is the MLP of the sinusoid
    y = conditional_vectors(bundle, LABELS, 500, part="y", include_null=True)
    assert torch.equal(y, state_dict["y_embedder.embedding_table.weight"][LABELS])  # table rows, copied
    t = conditional_vectors(bundle, None, TIMESTEPS, part="t")[:, 0]
    torch.testing.assert_close(t.double(), synthetic.reference_t_embedding(state_dict, TIMESTEPS), atol=1e-4,
                               rtol=1e-5)  # as for c above


def test_sinusoid_is_the_original_one(checkpoint):
    bundle = models.load(str(checkpoint), family="dit")
    features = bundle.embedder.time_proj(torch.tensor([999.0, 1.0]))
    # float32 sin/cos of arguments up to 999: the argument alone carries ~999 · 6e-8 = 6e-5 of rounding
    torch.testing.assert_close(features.double(), synthetic.reference_timestep_frequencies([999.0, 1.0]),
                               atol=2e-4, rtol=0)


def test_freq_shift_1_gives_a_different_but_close_c(checkpoint, state_dict):
    original = conditional_vectors(models.load(str(checkpoint), family="dit"), LABELS[:3], TIMESTEPS)
    diffusers_like = conditional_vectors(models.load(str(checkpoint), family="dit", freq_shift=1), LABELS[:3], TIMESTEPS)
    assert models.load(str(checkpoint), family="dit", freq_shift=1).embedder.time_proj.downscale_freq_shift == 1
    # t = 0: cos(0)=1, sin(0)=0 whatever the frequencies, so the two conventions agree exactly there
    assert torch.equal(diffusers_like[-1], original[-1])
    # t > 0: the switch matters ...
    assert (diffusers_like[:-1] - original[:-1]).abs().max() > 1e-2
    # ... but only slightly: the same label still points the same way
    cosine = torch.nn.functional.cosine_similarity(diffusers_like, original, dim=-1)
    assert cosine.min() > 0.8
    # and the switched sinusoid is exactly diffusers' divide-by-(half − 1) one
    half = 128
    i = torch.arange(half, dtype=torch.float64)
    args = 999.0 * torch.exp(-torch.log(torch.tensor(10000.0, dtype=torch.float64)) * i / (half - 1))
    shifted = models.load(str(checkpoint), family="dit", freq_shift=1).embedder.time_proj(torch.tensor([999.0]))
    # float32 sin/cos of an argument up to 999, as in test_sinusoid_is_the_original_one
    torch.testing.assert_close(shifted[0].double(), torch.cat([args.cos(), args.sin()]), atol=2e-4, rtol=0)


def test_bad_freq_shift(checkpoint):
    with pytest.raises(ValueError, match="freq_shift"):
        models.load(str(checkpoint), family="dit", freq_shift=0.5)


# ---------------------------------------------------------------------------------------------------
#                                   Wrapped training checkpoints
# ---------------------------------------------------------------------------------------------------


def test_ema_is_preferred_over_model(tmp_path, state_dict):
    other = synthetic.original_dit_state_dict(seed=99)
    path = synthetic.save_checkpoint(
        tmp_path / "DiT-S-2-0400000.pt",
        {"model": other, "ema": state_dict, "opt": synthetic.optimizer_state(other)},
    )
    bundle = models.load(str(path))
    table = bundle.embedder.class_embedder.embedding_table.weight
    assert torch.equal(table, state_dict["y_embedder.embedding_table.weight"])
    assert not torch.equal(table, other["y_embedder.embedding_table.weight"])
    torch.testing.assert_close(conditional_vectors(bundle, [1], 999).double(),  # tolerance as in the first test
                               synthetic.reference_c(state_dict, [1], 999)[0], atol=1e-4, rtol=1e-5)


def test_model_is_used_without_ema_and_ddp_prefix_is_stripped(tmp_path, state_dict):
    prefixed = {f"module.{key}": value for key, value in state_dict.items()}
    path = synthetic.save_checkpoint(tmp_path / "SiT-S-2.pt", {"model": prefixed, "opt": synthetic.optimizer_state(prefixed)})
    bundle = models.load(str(path), full=True, num_heads=synthetic.HEADS)
    assert torch.equal(bundle.embedder.class_embedder.embedding_table.weight,
                       state_dict["y_embedder.embedding_table.weight"])
    assert bundle.time.kind == "flow" and isinstance(bundle.scheduler, FlowODE)  # family sit, from the name


def test_official_training_checkpoint_with_args_namespace(tmp_path, state_dict):
    other = synthetic.original_dit_state_dict(seed=99)
    args = argparse.Namespace(model="DiT-S/2", image_size=64, num_classes=10, global_seed=0, lr=1e-4)
    path = synthetic.save_checkpoint(
        tmp_path / "0400000.pt",
        {"model": other, "ema": state_dict, "opt": synthetic.optimizer_state(other), "args": args, "steps": 400000},
    )
    bundle = models.load(str(path), family="dit")
    assert torch.equal(bundle.embedder.class_embedder.embedding_table.weight,
                       state_dict["y_embedder.embedding_table.weight"])


# ---------------------------------------------------------------------------------------------------
#                                 Families and their time conventions
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, family",
    [
        ("SiT-XL-2-256.pt", "sit"),
        ("repa_xl.pt", "repa"),
        ("DiT-XL-2-256x256.pt", "dit"),
        ("mdt_xl2_v2_ckpt.pt", "mdt"),
        ("lightningdit-xl-imgnet-800ep.pt", "lightningdit"),
    ],
)
def test_infer_family(name, family):
    assert models.infer_family(name) == family


@pytest.mark.parametrize("name", ["checkpoint.pt", "0400000.pt", "repa-sit-xl.pt", "edit-sitting.pt"])
def test_infer_family_refuses_ambiguous_or_missing(name):
    with pytest.raises(ValueError, match="family="):
        models.infer_family(name)


def test_family_from_the_directory_is_not_used(tmp_path, state_dict):
    folder = tmp_path / "SiT"
    folder.mkdir()
    path = synthetic.save_checkpoint(folder / "last.pt", state_dict)
    with pytest.raises(ValueError, match="family="):
        models.load(str(path))
    with pytest.raises(ValueError, match="unknown family"):
        models.load(str(path), family="unet")


@pytest.mark.parametrize(
    "name, family, kind, first_time, t_max",
    [
        ("SiT-S-2.pt", "sit", "flow", 0.0, 1.0),
        ("repa_s.pt", "repa", "flow", 1.0, 1.0),
        ("DiT-S-2.pt", "dit", "ddpm", 999.0, 999.0),
    ],
)
def test_time_conventions(tmp_path, state_dict, name, family, kind, first_time, t_max):
    bundle = models.load(str(synthetic.save_checkpoint(tmp_path / name, state_dict)))
    assert (bundle.time.kind, bundle.time.first_time, bundle.time.t_max) == (kind, first_time, t_max)
    assert models.load(str(tmp_path / name), family=family).time == bundle.time
    assert first_sampling_timestep(bundle) == first_time
    # c at the default timestep is c at t₀ of the family
    assert torch.equal(conditional_vectors(bundle, [2]), conditional_vectors(bundle, [2], first_time))
    with pytest.raises(ValueError, match="outside"):
        conditional_vectors(bundle, [2], t_max + 1)


# ---------------------------------------------------------------------------------------------------
#                                               Errors
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mnist_dit", "DiT-XL-2", "nonsense model name"])
def test_unknown_model_name(name):
    with pytest.raises(ValueError, match="unknown model"):
        models.load(name)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load(str(tmp_path / "DiT-XL-2-256x256.pt"))
    with pytest.raises(FileNotFoundError):
        models.load(str(tmp_path / "no-such-folder"))


def test_missing_keys_are_listed(tmp_path, state_dict):
    broken = {k: v for k, v in state_dict.items() if k not in ("t_embedder.mlp.2.bias", "y_embedder.embedding_table.weight")}
    path = synthetic.save_checkpoint(tmp_path / "DiT-S-2.pt", broken)
    with pytest.raises(KeyError) as error:
        models.load(str(path))
    assert "t_embedder.mlp.2.bias" in str(error.value) and "y_embedder.embedding_table.weight" in str(error.value)
    assert "t_embedder.mlp.0.weight" not in str(error.value)  # only the missing ones


def test_unexpected_key_is_listed_for_full_conversion(tmp_path, state_dict):
    extra = dict(state_dict, **{"decoder.0.weight": torch.zeros(4, 4)})  # a head no DiT backbone has
    path = synthetic.save_checkpoint(tmp_path / "DiT-S-2.pt", extra)
    with pytest.raises(KeyError, match=r"unexpected keys \['decoder.0.weight'\]"):
        models.load(str(path), full=True, num_heads=synthetic.HEADS)
    # the embedder-only path reads just the embedders, so the same file is fine there
    assert models.load(str(path)).num_classes == synthetic.NUM_CLASSES


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "DiT-S-2.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).to(torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        models.load(str(path))
    tensor_only = synthetic.save_checkpoint(tmp_path / "DiT-tensor.pt", torch.zeros(3))
    with pytest.raises(ValueError, match="state dict of tensors"):
        models.load(str(tensor_only))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_on_a_cpu_machine(checkpoint, device):
    with pytest.raises(RuntimeError, match="CUDA"):
        models.load(str(checkpoint), device=device)


def test_unsupported_device(checkpoint):
    with pytest.raises(RuntimeError):
        models.load(str(checkpoint), device="meta")


@pytest.mark.parametrize("dtype", ["float64", "fp16", "bf16", "half"])
def test_bad_dtype(checkpoint, dtype):
    with pytest.raises(ValueError, match="dtype must be one of"):
        models.load(str(checkpoint), dtype=dtype)


def test_bfloat16_bundle(checkpoint, state_dict):
    bundle = models.load(str(checkpoint), dtype="bfloat16")
    assert bundle.dtype == torch.bfloat16 and bundle.embedder.class_embedder.embedding_table.weight.dtype == torch.bfloat16
    c = conditional_vectors(bundle, [1, 2], 999)
    assert c.dtype == torch.float32  # statistics are computed in float32
    # bfloat16 keeps 8 significant bits (relative 4e-3 per operation) through two layers
    torch.testing.assert_close(c.double(), synthetic.reference_c(state_dict, [1, 2], 999)[0], atol=0.1, rtol=0.05)


def test_full_load_of_a_non_standard_width_with_num_heads(tmp_path):
    sd = synthetic.original_dit_state_dict(hidden=64, depth=1)
    path = synthetic.save_checkpoint(tmp_path / "DiT-toy.pt", sd)
    with pytest.raises(ValueError, match="num_heads"):  # the error tells the user to pass num_heads ...
        models.load(str(path), full=True)
    bundle = models.load(str(path), full=True, num_heads=4)  # ... which load() does not accept
    assert bundle.transformer.config.num_attention_heads == 4


# ---------------------------------------------------------------------------------------------------
#                                     Hub ids: offline behaviour
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty HF home in tmp_path, offline. huggingface_hub reads these constants at import, so patch both."""
    from huggingface_hub import constants

    home, cache = tmp_path / "hf_home", tmp_path / "hf_home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_uncached_hub_id_offline_fails_fast_and_writes_nothing(empty_hf_cache, monkeypatch):
    import huggingface_hub

    calls = []
    real_snapshot_download = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_snapshot_download(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    before = sorted(empty_hf_cache.parent.rglob("*"))
    start = time.monotonic()
    with pytest.raises(OSError) as error:
        models.load("facebook/DiT-XL-2-256")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "not in the local" in message and "pass a local path" in message and "facebook/DiT-XL-2-256" in message
    assert sorted(empty_hf_cache.parent.rglob("*")) == before
    # offline, only the cache is consulted: no download is even attempted
    assert calls and all(call.get("local_files_only") for call in calls)


def test_a_failed_download_is_one_oserror_naming_the_fix(empty_hf_cache, monkeypatch):
    """Online, an uncached id is downloaded; when that fails, whatever the network error, one OSError says so."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def snapshot_download(repo, local_files_only=False, **kwargs):
        if local_files_only:
            raise LocalEntryNotFoundError("not in the cache")
        raise ConnectionError("Max retries exceeded with url: /api/models/facebook/DiT-XL-2-256")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(OSError, match=r"not in the local cache and could not be downloaded \(ConnectionError\); run "
                                      "with network access or pass a local path") as error:
        models.load("facebook/DiT-XL-2-256")
    assert error.value.__cause__ is None and "\n" not in str(error.value)


def test_check_model_reads_no_weights_and_fails_like_load(empty_hf_cache, tmp_path):
    synthetic.tiny_pipeline_folder(tmp_path / "pipe")
    for name in ("mnist-dit", str(tmp_path / "pipe")):
        models.check_model(name)  # found, nothing loaded
    with pytest.raises(OSError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE is set"):
        models.check_model("facebook/DiT-XL-2-256")
    with pytest.raises(ValueError, match="unknown model"):
        models.check_model("no-such-model")


def test_cached_hub_id_loads_offline(empty_hf_cache):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hf_cache / "models--tiny--dit-toy"
    synthetic.tiny_pipeline_folder(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    bundle = models.load("tiny/dit-toy")
    assert bundle.name == "tiny/dit-toy" and bundle.num_classes == synthetic.NUM_CLASSES
    assert bundle.class_names == [f"class-{i}" for i in range(synthetic.NUM_CLASSES)]


# ---------------------------------------------------------------------------------------------------
#                                     Local diffusers pipeline folders
# ---------------------------------------------------------------------------------------------------


def test_local_pipeline_folder(tmp_path):
    transformer = synthetic.tiny_pipeline_folder(tmp_path / "pipe")
    bundle = models.load(str(tmp_path / "pipe"))
    assert bundle.num_classes == synthetic.NUM_CLASSES
    assert bundle.class_names == [synthetic.TINY_ID2LABEL[str(i)] for i in range(synthetic.NUM_CLASSES)]
    weights = sorted((tmp_path / "pipe" / "transformer").glob("*.safetensors"))
    assert len(weights) == 1 and bundle.sha256 == integrity.sha256_of(weights[0])
    assert len(bundle.sha256) == 64
    assert bundle.vae is not None and bundle.vae.config.latent_channels == synthetic.IN_CHANNELS
    assert bundle.scheduler is not None and bundle.time.kind == "ddpm" and bundle.time.t_max == 999
    assert bundle.embedder is bundle.transformer.transformer_blocks[0].norm1.emb
    # a diffusers model keeps diffusers' sinusoid unless asked otherwise
    assert bundle.embedder.time_proj.downscale_freq_shift == 1
    # the weights are the saved ones: c is the saved embedder's output
    saved = transformer.transformer_blocks[0].norm1.emb.eval()
    labels, t = torch.tensor([0, 4]), torch.tensor([999.0, 999.0])
    with torch.no_grad():
        expected = saved.timestep_embedder(saved.time_proj(t)) + saved.class_embedder.embedding_table(labels)
    torch.testing.assert_close(conditional_vectors(bundle, [0, 4], 999), expected)  # float32 defaults: 1e-5 rel.
    # freq_shift=0 is set on every block's copy, not just block 0's
    original = models.load(str(tmp_path / "pipe"), freq_shift=0)
    assert [e.time_proj.downscale_freq_shift for e in models.block_embedders(original.transformer)] == [0, 0]


def test_pipeline_folder_without_id2label_or_vae(tmp_path):
    synthetic.tiny_pipeline_folder(tmp_path / "pipe", id2label=None)
    shutil.rmtree(tmp_path / "pipe" / "vae")
    bundle = models.load(str(tmp_path / "pipe"))
    assert bundle.class_names is None and bundle.vae is None and bundle.num_classes == synthetic.NUM_CLASSES


def test_pipeline_with_differing_block_embedders_is_refused(tmp_path):
    synthetic.tiny_pipeline_folder(tmp_path / "pipe", identical_embedders=False)
    with pytest.raises(ValueError, match="differ from block 0"):
        models.load(str(tmp_path / "pipe"))


# ---------------------------------------------------------------------------------------------------
#                                     The embedded mnist-dit organism
# ---------------------------------------------------------------------------------------------------


def _copy_embedded(tmp_path: Path, monkeypatch) -> Path:
    """A private copy of checkpoints/mnist-dit with a manifest computed from the copy itself.

    The shipped file may be rewritten by a training run while the tests run; the copy is retried until it
    parses, so the copy is self-consistent whatever the shipped manifest says.
    """
    from safetensors import SafetensorError, safe_open

    source = integrity.CHECKPOINT_DIR / "mnist-dit"
    if not (source / "model.safetensors").is_file():
        pytest.skip("mnist-dit has not been trained in this checkout")
    root = tmp_path / "checkpoints"
    for attempt in range(5):
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root / "mnist-dit", ignore=shutil.ignore_patterns("train_log.csv"))
        try:
            with safe_open(root / "mnist-dit" / "model.safetensors", "pt") as handle:
                list(handle.keys())
            break
        except (SafetensorError, OSError):  # caught mid-write; try again
            time.sleep(1)
    else:
        pytest.skip("mnist-dit/model.safetensors kept changing while it was copied")
    sha = integrity.sha256_of(root / "mnist-dit" / "model.safetensors")
    (root / "manifest.json").write_text(json.dumps({"mnist-dit": {"sha256": sha}}))
    monkeypatch.setattr(integrity, "CHECKPOINT_DIR", root)
    return root


def test_embedded_copy_loads(tmp_path, monkeypatch):
    root = _copy_embedded(tmp_path, monkeypatch)
    bundle = models.load("mnist-dit")
    assert bundle.sha256 == json.loads((root / "manifest.json").read_text())["mnist-dit"]["sha256"]
    assert bundle.num_classes == 10 and bundle.class_names == [str(i) for i in range(10)]
    assert bundle.vae is None and bundle.scheduler is not None and bundle.time.kind == "ddpm"
    models.check_embedder_copies(bundle.transformer)
    assert bundle.embedder.time_proj.downscale_freq_shift == 1  # trained and run with diffusers' sinusoid
    c = conditional_vectors(bundle, None, 999)
    assert c.shape == (10, bundle.hidden_size) and torch.isfinite(c).all()


def test_corrupted_embedded_checkpoint_is_rejected(tmp_path, monkeypatch):
    root = _copy_embedded(tmp_path, monkeypatch)
    weights = root / "mnist-dit" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the tensor data
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        models.load("mnist-dit")


def test_missing_embedded_weights(tmp_path, monkeypatch):
    root = _copy_embedded(tmp_path, monkeypatch)
    (root / "mnist-dit" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="bottleneck_utils.organisms.cli organism mnist-dit"):
        models.load("mnist-dit")


def test_shipped_mnist_dit_matches_its_manifest():
    """The shipped checkpoint against the shipped manifest (may fail transiently while it is being retrained)."""
    weights = integrity.CHECKPOINT_DIR / "mnist-dit" / "model.safetensors"
    if not weights.is_file():
        pytest.skip("mnist-dit has not been trained in this checkout")
    bundle = models.load("mnist-dit")
    assert bundle.sha256 == integrity.manifest()["mnist-dit"]["sha256"]
    assert bundle.num_classes == 10
