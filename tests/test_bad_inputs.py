"""Bad inputs a user would plausibly pass to every public entry point: each raises one line, from the package, that
names the problem (and the fix), before any work and without writing anything. A documented harmless behaviour is
tested as such.

Entry points: ``models.load``; ``embeddings`` (conditional_vectors, timestep_sweep); every ``stats`` function; the
mask builders and ``masks.prune``; ``sampling`` (sample, save_npz, write_pngs, shards); the feature extractors,
metrics and evaluators; ``text_conditions``; the ``tools/book.py``, ``sampling`` and ``train`` command lines; and
the notebooks' parameter check.
"""

import os
import pickle
import re

import numpy as np
import pytest
import torch
from conftest import tiny_bundle

from bottleneck_utils import adaln_cost, embeddings, masks, metrics, models, sampling, stats
from bottleneck_utils import features as extractors
from bottleneck_utils import images as image_io
from bottleneck_utils.chapters import report
from bottleneck_utils.continuous import ConditionRange, install_condition_embedders
from bottleneck_utils.models import block_embedders, tie_embedder_copies
from bottleneck_utils.organisms import classifier, cli, composite, quality, train
from tests import synthetic
from tools import book

NAN, INF = float("nan"), float("inf")


def one_line(error: pytest.ExceptionInfo) -> str:
    """The message, checked to be a single line without torch's advice to turn the safety check off."""
    message = str(error.value)
    assert "\n" not in message.strip() and "weights_only=False" not in message, message
    return message


@pytest.fixture
def continuous():
    """The tiny DiT of conftest with a temperature in the label slot (trained range [1, 4])."""
    bundle = tiny_bundle()
    condition = ConditionRange("temperature", 1.0, 4.0)
    install_condition_embedders(block_embedders(bundle.transformer), condition)
    tie_embedder_copies(bundle.transformer)
    bundle.condition, bundle.num_classes, bundle.embedder = condition, 0, block_embedders(bundle.transformer)[0]
    return bundle


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    state_dict = synthetic.original_dit_state_dict(seed=0)
    for name in ("DiT-S-2.pt", "mdt_s2.pt", "lightningdit-s.pt", "repa_s.pt"):
        synthetic.save_checkpoint(folder / name, state_dict)
    synthetic.tiny_pipeline_folder(folder / "pipe")
    return folder


# ---------------------------------------------------------------------------------------------------
#                                              models.load
# ---------------------------------------------------------------------------------------------------


class Evil:
    """A pickle that would run a shell command if unpickled without weights_only."""

    def __reduce__(self):
        return os.system, ("touch pwned-by-pickle",)


@pytest.mark.parametrize("name", ["no-such-model", "mnist_dit", "DiT-XL-2"])
def test_load_refuses_unknown_names(name):
    with pytest.raises(ValueError, match=f"unknown model '{name}': expected one of") as raised:
        models.load(name)
    one_line(raised)


@pytest.mark.parametrize("path", ["/no/such/DiT-XL-2.pt", "./no-such-folder", "~/no-such-pipeline"])
def test_load_refuses_missing_paths(path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.load(path)


@pytest.mark.parametrize("name, kwargs, error, match", [
    ("mdt_s2.pt", {"full": True}, ValueError, "only the embedders of MDT load.*full=False"),
    ("lightningdit-s.pt", {"full": True}, ValueError, "only the embedders of LIGHTNINGDIT load"),
    ("DiT-S-2.pt", {"full": True, "num_heads": 5}, ValueError, "num_heads must be a positive int dividing"),
    ("DiT-S-2.pt", {"full": True}, ValueError, "not one of DiT's sizes.*pass num_heads"),
    ("DiT-S-2.pt", {"family": "unet"}, ValueError, "unknown family 'unet'"),
    ("DiT-S-2.pt", {"dtype": "fp16"}, ValueError, "dtype must be one of"),
    ("DiT-S-2.pt", {"device": "tpu"}, RuntimeError, "unsupported device 'tpu'"),
    ("mnist-dit", {"full": True}, ValueError, "apply to original .pt/.pth checkpoints only"),
    ("pipe", {"family": "dit"}, ValueError, "apply to original .pt/.pth checkpoints only"),
])
def test_load_refuses_bad_arguments(checkpoint_dir, name, kwargs, error, match):
    path = str(checkpoint_dir / name) if (checkpoint_dir / name).exists() else name
    with pytest.raises(error, match=match) as raised:
        models.load(path, **kwargs)
    one_line(raised)


def test_load_of_a_single_safetensors_file_names_the_folder(checkpoint_dir):
    weights = next((checkpoint_dir / "pipe" / "transformer").glob("*.safetensors"))
    with pytest.raises(ValueError, match=r"single \.safetensors file.*pipeline folder around it") as raised:
        models.load(str(weights))
    assert str(checkpoint_dir / "pipe") in one_line(raised)
    (checkpoint_dir / "weights.ckpt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"single \.ckpt file"):
        models.load(str(checkpoint_dir / "weights.ckpt"))


def test_load_of_a_truncated_pipeline_file_is_one_line(tmp_path):
    synthetic.tiny_pipeline_folder(tmp_path / "pipe")
    weights = next((tmp_path / "pipe" / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:4000])
    with pytest.raises(ValueError, match="not a loadable diffusers DiTTransformer2DModel.*truncated") as raised:
        models.load(str(tmp_path / "pipe"))
    one_line(raised)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # one message, not three tracebacks


def test_load_of_a_malicious_pickle_runs_nothing_and_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": Evil()}, tmp_path / "DiT-XL-2.pt")
    with pytest.raises(ValueError, match=r"holds a pickled posix\.system.*not loaded.*re-save") as raised:
        models.load(str(tmp_path / "DiT-XL-2.pt"))
    one_line(raised)
    assert not (tmp_path / "pwned-by-pickle").exists()
    (tmp_path / "DiT-junk.pt").write_bytes(pickle.dumps([1, 2, 3], protocol=2)[:5])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        models.load(str(tmp_path / "DiT-junk.pt"))


def test_load_of_a_non_string_is_a_type_error():
    with pytest.raises(TypeError, match="a model is named by a string or path, got int"):
        models.load(123)


# ---------------------------------------------------------------------------------------------------
#                                  embeddings: conditional_vectors, timestep_sweep
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"timesteps": NAN}, r"timesteps \[nan\] are outside \[0, 999\]"),
    ({"timesteps": [500, INF]}, r"timesteps \[inf\] are outside"),
    ({"timesteps": []}, "timesteps is empty"),
    ({"timesteps": "999"}, "timesteps must be numbers"),
    ({"labels": [2.5]}, r"class ids must be whole numbers, got \[2.5\]"),
    ({"labels": [NAN]}, "class ids must be whole numbers"),
    ({"labels": ["cat"]}, "class ids must be numbers"),
    ({"labels": [True]}, "class ids must be real numbers, got torch.bool"),
    ({"labels": [5]}, r"outside 0..4 \(the null class 5 needs include_null=True\)"),
    ({"part": "c"}, "part must be one of"),
])
def test_conditional_vectors_refuses(bundle, kwargs, match):
    with pytest.raises(ValueError, match=match) as raised:
        embeddings.conditional_vectors(bundle, **kwargs)
    one_line(raised)


@pytest.mark.parametrize("labels, match", [
    ([0.5], r"outside the trained range \[1, 4\]"),
    ([NAN], "NaN is the null temperature.*include_null=True"),
    ([INF], "outside the trained range"),
])
def test_continuous_conditions_refuse(continuous, labels, match):
    with pytest.raises(ValueError, match=match):
        embeddings.conditional_vectors(continuous, labels)


@pytest.mark.parametrize("timesteps, match", [([0, NAN], "outside"), ([], "empty"), ([1000], "outside")])
def test_timestep_sweep_refuses(bundle, timesteps, match):
    with pytest.raises(ValueError, match=match):
        embeddings.timestep_sweep(bundle, timesteps)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True, None])
def test_first_sampling_timestep_refuses_step_counts(bundle, num_steps):
    with pytest.raises(ValueError, match="num_steps must be a positive int"):
        embeddings.first_sampling_timestep(bundle, num_steps)


def test_first_sampling_timestep_leaves_the_scheduler_alone(bundle):
    bundle.scheduler.set_timesteps(7)
    before = bundle.scheduler.timesteps.clone()
    assert embeddings.first_sampling_timestep(bundle, 50) == 999.0
    assert torch.equal(bundle.scheduler.timesteps, before)


# ---------------------------------------------------------------------------------------------------
#                                           every stats function
# ---------------------------------------------------------------------------------------------------

GOOD = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
WITH_NAN = GOOD.clone().index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(NAN))
ZERO_ROW = torch.cat([GOOD[:3], torch.zeros(1, 6)])
CANCELLING = torch.cat([GOOD[:3], -GOOD[:1]])  # with t = GOOD[0], the last c = y + t is zero
STATS_CALLS = {
    "cosine_matrix": lambda v: stats.cosine_matrix(v),
    "mean_offdiag_cosine": lambda v: stats.mean_offdiag_cosine(v),
    "offdiag_cosine_summary": lambda v: stats.offdiag_cosine_summary(v),
    "mean_offdiag_cosine_sweep": lambda v: stats.mean_offdiag_cosine_sweep(v, GOOD[:2]),
    "participation_ratio": lambda v: stats.participation_ratio(v),
    "normalized_participation_ratio": lambda v: stats.normalized_participation_ratio(v),
    "mean_npr": lambda v: stats.mean_npr(v),
    "tail_fraction": lambda v: stats.tail_fraction(v, 0.1),
    "head_fraction": lambda v: stats.head_fraction(v, 0.1),
    "tau_sweep": lambda v: stats.tau_sweep(v, [0.1, 1.0]),
    "head_tail_indices": lambda v: stats.head_tail_indices(v[1], 0.1),  # the row with the NaN
    "per_dim_variance": lambda v: stats.per_dim_variance(v),
    "head_energy_share": lambda v: stats.head_energy_share(v),
    "relative_tail_fraction": lambda v: stats.relative_tail_fraction(v),
    "summary": lambda v: stats.summary(v, GOOD[0]),
}


@pytest.mark.parametrize("name", list(STATS_CALLS))
def test_every_stats_function_refuses_nan(name):
    STATS_CALLS[name](GOOD)  # the good input works
    with pytest.raises(ValueError, match="NaN or inf") as raised:
        STATS_CALLS[name](WITH_NAN)
    one_line(raised)


@pytest.mark.parametrize("name", ["cosine_matrix", "mean_offdiag_cosine", "offdiag_cosine_summary",
                                  "participation_ratio", "normalized_participation_ratio", "mean_npr",
                                  "head_energy_share", "summary"])
def test_statistics_that_divide_by_a_norm_refuse_a_zero_vector(name):
    with pytest.raises(ValueError, match="zero"):
        STATS_CALLS[name](CANCELLING if name == "summary" else ZERO_ROW)


@pytest.mark.parametrize("call, match", [
    (lambda: stats.tail_fraction(GOOD, NAN), "tau must be a number >= 0, got nan"),
    (lambda: stats.head_fraction(GOOD, -1.0), "tau must be a number >= 0"),
    (lambda: stats.tau_sweep(GOOD[0], [0.1, NAN]), "tau must be a number >= 0"),
    (lambda: stats.relative_tail_fraction(GOOD, NAN), "tau must be a number >= 0"),
    (lambda: stats.head_energy_share(GOOD, NAN), r"share must be in \(0, 1\]"),
    (lambda: stats.head_energy_share(GOOD, 0.0), r"share must be in \(0, 1\]"),
    (lambda: stats.mean_offdiag_cosine(GOOD[0]), r"must have shape \(\.\.\., n, d\)"),
    (lambda: stats.mean_offdiag_cosine(GOOD[:1]), "at least 2 vectors"),
    (lambda: stats.mean_offdiag_cosine_sweep(GOOD, GOOD[:, :5]), "the same d"),
    (lambda: stats.participation_ratio(torch.zeros(3, 0)), "d >= 1"),
    (lambda: stats.per_dim_variance(GOOD[None]), r"takes \(n, d\)"),
    (lambda: stats.summary(GOOD, GOOD[0, :5]), r"t of shape \(d,\)"),
    (lambda: stats.mean_npr(torch.ones(2, 3, dtype=torch.bool)), "real numbers"),
])
def test_stats_refuse_bad_thresholds_and_shapes(call, match):
    with pytest.raises(ValueError, match=match) as raised:
        call()
    one_line(raised)


# ---------------------------------------------------------------------------------------------------
#                                       mask builders and prune
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build, error, match", [
    (lambda b: masks.tail_mask(b, NAN, num_steps=4), ValueError, "tau must be a number >= 0, got nan"),
    (lambda b: masks.tail_mask(b, "0.1", num_steps=4), ValueError, "tau must be a number >= 0"),
    (lambda b: masks.head_mask(b, -1.0, num_steps=4), ValueError, "tau must be a number >= 0"),
    (lambda b: masks.tail_mask(b, 0.1, num_steps=0), ValueError, "num_steps must be a positive int"),
    (lambda b: masks.tail_mask(b, 0.1, num_steps=4, granularity="local"), ValueError, "granularity must be one of"),
    (lambda b: masks.topk_mask(b, 2.5, num_steps=4), ValueError, r"k must lie in 0\.\.16"),
    (lambda b: masks.topk_mask(b, 17, num_steps=4), ValueError, r"k must lie in 0\.\.16"),
    (lambda b: masks.topk_mask(b, True, num_steps=4), ValueError, r"k must lie in 0\.\.16"),
    (lambda b: masks.threshold_for_fraction(b, NAN, num_steps=4), ValueError, "strictly between 0 and 1"),
    (lambda b: masks.threshold_for_fraction(b, 1.0, num_steps=4), ValueError, "strictly between 0 and 1"),
    (lambda b: masks.random_mask(torch.zeros(1, 16, dtype=torch.bool)), TypeError, "for a masks.Mask, got Tensor"),
    (lambda b: masks.coordinate_mask([16], 16), ValueError, r"coordinates must lie in 0\.\.15"),
    (lambda b: masks.coordinate_mask([-1], 16), ValueError, r"coordinates must lie in 0\.\.15"),
    (lambda b: masks.coordinate_mask([2.5], 16), ValueError, "coordinates must be whole numbers"),
    (lambda b: masks.coordinate_mask(torch.zeros(15, dtype=torch.bool), 16), ValueError, "hidden size 16"),
    (lambda b: masks.coordinate_mask([0], 0), ValueError, "hidden_size must be a positive int"),
    (lambda b: masks.Mask([[True, False]]), ValueError, "2-D bool tensor .*got list"),
    (lambda b: masks.Mask(torch.zeros(16, dtype=torch.bool)), ValueError, r"2-D bool tensor \(rows, D\)"),
    (lambda b: masks.Schedule("last", 0), ValueError, "needs a step count k >= 1"),
    (lambda b: masks.Schedule("first", 3), ValueError, "k applies to the 'last' schedule only"),
])
def test_mask_builders_refuse(bundle, build, error, match):
    with pytest.raises(error, match=match) as raised:
        build(bundle)
    one_line(raised)


@pytest.mark.parametrize("mask, kwargs, match", [
    (masks.coordinate_mask([0], 8), {}, "the mask has length 8"),
    (masks.Mask(torch.zeros(3, 16, dtype=torch.bool)), {}, "null label"),
    (masks.coordinate_mask([0], 16), {"schedule": "sometimes"}, "schedule must be one of"),
    (masks.coordinate_mask([0], 16), {"schedule": "first"}, "needs the sampler's timesteps"),
    (masks.coordinate_mask([0], 16), {"schedule": "first", "timesteps": [999, NAN]}, "finite and non-empty"),
    (masks.coordinate_mask([0], 16), {"null_policy": "never"}, "null_policy must be one of"),
])
def test_prune_refuses_before_hooking(bundle, mask, kwargs, match):
    with pytest.raises(ValueError, match=match), masks.prune(bundle, mask, **kwargs):
        pass
    assert all(not module._forward_hooks for module in bundle.transformer.modules())


def test_prune_gives_continuous_models_global_masks_only(continuous):
    with pytest.raises(ValueError, match="not label rows: it takes a global mask"), \
            masks.prune(continuous, masks.Mask(torch.zeros(2, 16, dtype=torch.bool))):
        pass


# ---------------------------------------------------------------------------------------------------
#                                sample, save_npz, write_pngs and shards
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"cfg_scale": NAN}, "cfg_scale must be a finite number"),
    ({"cfg_scale": INF}, "cfg_scale must be a finite number"),
    ({"cfg_scale": "4"}, "cfg_scale must be a finite number"),
    ({"num_steps": 0}, "num_steps must be an int >= 1"),
    ({"num_steps": 2.5}, "num_steps must be an int >= 1"),
    ({"num_steps": True}, "num_steps must be an int >= 1"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"first_index": -2}, "first_index must be an int >= 0"),
    ({"labels": [2.5]}, "class ids must be whole numbers"),
    ({"labels": [0, 7]}, r"class ids \[7\] are outside"),
    ({"mask": masks.coordinate_mask([0], 8)}, "the mask has length 8"),
    ({"autocast": "fp8"}, "dtype must be one of"),
])
def test_sample_refuses_before_any_step_and_writes_nothing(bundle, tmp_path, kwargs, match):
    calls = []
    bundle.transformer.register_forward_pre_hook(lambda *args: calls.append(1))
    arguments = {"labels": [0, 1], "num_steps": 2, "progress": False, "output_dir": tmp_path / "png"} | kwargs
    with pytest.raises(ValueError, match=match) as raised:
        sampling.sample(bundle, **arguments)
    one_line(raised)
    assert calls == [] and not (tmp_path / "png").exists()


IMAGES = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("images, labels, error, match", [
    ((IMAGES * 255).to(torch.uint8), [0, 1], ValueError, r"uint8 \(0\.\.255\); pass floats in \[0, 1\]"),
    (IMAGES * 2 - 1, [0, 1], ValueError, r"must lie in \[0, 1\].*\(images \+ 1\) / 2"),
    (IMAGES * 255, [0, 1], ValueError, "must lie in .*divide by 255"),
    (IMAGES.masked_fill(IMAGES > 0.5, NAN), [0, 1], ValueError, "NaN or inf"),
    (IMAGES[0], [0], ValueError, r"must be \(N, C, H, W\) with C = 1 or 3"),
    (IMAGES.repeat(1, 2, 1, 1), [0, 1], ValueError, "C = 1 or 3"),
    (IMAGES, [0, 1, 2], ValueError, "got 2 images but 3 labels"),
    (IMAGES.tolist(), [0, 1], TypeError, "must be a tensor"),
])
@pytest.mark.parametrize("writer", ["save_npz", "write_pngs"])
def test_writers_refuse_and_write_nothing(tmp_path, writer, images, labels, error, match):
    target = tmp_path / ("out.npz" if writer == "save_npz" else "png")
    with pytest.raises(error, match=match) as raised:
        getattr(sampling, writer)(images, labels, target)
    one_line(raised)
    assert list(tmp_path.iterdir()) == []


def test_zero_labels_give_an_empty_batch_that_saves_and_merges(bundle, tmp_path):
    """Documented harmless behaviour: no labels (an empty torchrun shard) sample nothing and save (0, H, W, C)."""
    images = sampling.sample(bundle, [], num_steps=2, progress=False)
    assert images.shape == (0, *bundle.image_shape)
    image_io.save_npz(images, [], tmp_path / "empty.npz")
    loaded, labels = image_io.load_npz(tmp_path / "empty.npz")
    assert loaded.shape == (0, 1, 8, 8) and labels.shape == (0,)
    shards = [sampling._shard_path(tmp_path / "all.npz", rank, 2) for rank in range(2)]
    image_io.save_npz(sampling.sample(bundle, [3], num_steps=2, progress=False), [3], shards[0])
    image_io.save_npz(images, [], shards[1], first_index=1)  # rank 1 of 2 got no labels
    sampling.merge_npz_shards(tmp_path / "all.npz", 2)
    assert image_io.load_npz(tmp_path / "all.npz")[1].tolist() == [3]


def test_a_missing_shard_names_the_rank_file(tmp_path):
    image_io.save_npz(IMAGES, [0, 1], sampling._shard_path(tmp_path / "s.npz", 0, 2))
    with pytest.raises(FileNotFoundError, match=r"shards \[.*shard0001-of-0002.npz'\] are missing; a rank did not"):
        sampling.merge_npz_shards(tmp_path / "s.npz", 2)
    assert not (tmp_path / "s.npz").exists()


def test_load_npz_refuses_a_file_of_another_layout(tmp_path):
    np.savez(tmp_path / "other.npz", images=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"lacks \['arr_0', 'labels'\]: it is not a file written by save_npz"):
        image_io.load_npz(tmp_path / "other.npz")


# ---------------------------------------------------------------------------------------------------
#                                  feature extractors, metrics, evaluators
# ---------------------------------------------------------------------------------------------------


class Pooled(torch.nn.Module):
    """A cheap stand-in extractor, (B, 3, 299, 299) → (B, 12)."""

    def forward(self, pixels):
        return torch.nn.functional.adaptive_avg_pool2d(pixels, 2).flatten(1)


@pytest.mark.parametrize("call, match", [
    (lambda: extractors.clean_resize((IMAGES * 255).to(torch.uint8)), "uint8"),
    (lambda: extractors.inception_features(IMAGES * 2 - 1, Pooled(), progress=False), r"\(images \+ 1\) / 2"),
    (lambda: extractors.inception_features(IMAGES * 255, Pooled(), progress=False), "divide by 255"),
    (lambda: classifier.classifier_outputs(torch.nn.Linear(1, 1), torch.rand(2, 1, 28, 28)),
     r"takes \(1, 14, 14\) images"),
    (lambda: extractors.quantize(torch.rand(2, 1, 4, 4) + 1), r"must lie in \[0, 1\]"),
])
def test_extractors_refuse_images_outside_the_convention(call, match):
    with pytest.raises(ValueError, match=match) as raised:
        call()
    one_line(raised)


REAL = np.random.default_rng(0).normal(size=(30, 4))
PROBS = np.full((30, 3), 1 / 3)


@pytest.mark.parametrize("call, match", [
    (lambda: metrics.fid(REAL, REAL[:, :3]), "have 4 dims, the reference 3"),
    (lambda: metrics.fid(np.where(REAL > 1, np.nan, REAL), REAL), "NaN or inf"),
    (lambda: metrics.fid(REAL[:1], REAL), r"\(n >= 2, f\) matrix"),
    (lambda: metrics.kid(REAL, REAL, num_subsets=0), "num_subsets >= 1"),
    (lambda: metrics.class_accuracy(PROBS, np.zeros(29, int)), r"probs must be \(29, K\)"),
    (lambda: metrics.class_accuracy(PROBS, np.zeros(30)), "integer class ids"),
    (lambda: metrics.inception_style_score(PROBS * 100), "rows of a softmax"),
    (lambda: metrics.inception_style_score(np.log(PROBS)), "rows of a softmax"),
    (lambda: metrics.knn_radii(REAL, k=30), r"k must lie in 1\.\.29"),
    (lambda: metrics.knn_radii(REAL, k=2.5), r"k must lie in 1\.\.29"),
    (lambda: metrics.precision_recall(REAL, REAL[:, :2]), "have 2 dims, the reference 4"),
    (lambda: metrics.Reference.from_features(REAL[:1]), r"\(n >= 2, f\) matrix"),
    (lambda: metrics.SampleSet.build(REAL, np.zeros(29), metrics.Reference.from_features(REAL)),
     "got 30 samples but labels of shape"),
    (lambda: quality.mnist_evaluator(n_kid=1), r"n_kid must be an int in 2\.\.10000"),
    (lambda: metrics.inception_evaluator(" "), "needs reference statistics"),
])
def test_metrics_refuse(call, match):
    with pytest.raises(ValueError, match=match) as raised:
        call()
    one_line(raised)


def test_bootstrap_refuses_bad_rounds_and_level():
    reference = metrics.Reference.from_features(REAL)
    sets = {"baseline": metrics.SampleSet.build(REAL, np.zeros(30, int), reference)}
    for n_boot, level in ((1, 0.95), (10, 1.0), (2.5, 0.95)):
        with pytest.raises(ValueError, match="need n_boot >= 2 and 0 < level < 1"):
            metrics.bootstrap_table(sets, reference, "baseline", n_boot=n_boot, level=level, progress=False)
    with pytest.raises(ValueError, match="the baseline 'base' is not among the settings"):
        metrics.bootstrap_table(sets, reference, "base", progress=False)


@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (b"not a zip file", "not a readable .npz"),
    ({"means": np.zeros(3)}, "expected 'arr_0'"),
    ({"arr_0": np.zeros((4, 8, 8), np.uint8)}, r"arr_0 must be \(N >= 2, H, W, 3\) uint8"),
    ({"arr_0": np.zeros((4, 8, 8, 3), np.float32)}, "uint8 images"),
    ({"mu": np.zeros(10), "sigma": np.eye(10)}, r"mu must be \(2048,\)"),
    ({"mu": np.full(2048, np.nan), "sigma": np.eye(2048)}, "NaN or inf"),
])
def test_reference_files_are_checked_before_inception_loads(tmp_path, monkeypatch, content, match):
    def no_network(*args, **kwargs):
        raise AssertionError("Inception was loaded before the reference file was checked")

    monkeypatch.setattr(extractors, "CleanInception", no_network)
    path = tmp_path / "reference.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    with pytest.raises(ValueError, match=match) as raised:
        metrics.inception_evaluator(path)
    one_line(raised)


def test_a_missing_reference_and_an_image_free_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(extractors, "CleanInception", lambda *a: pytest.fail("loaded before the check"))
    with pytest.raises(FileNotFoundError, match="do not exist"):
        metrics.inception_evaluator(tmp_path / "missing.npz")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("no images")
    with pytest.raises(ValueError, match="holds no images"):
        metrics.inception_evaluator(tmp_path / "notes")


def test_no_evaluator_for_images_it_cannot_score(continuous):
    """Chosen by the bundle's image shape and class count, not its name: 1×8×8 temperature samples fit neither."""
    with pytest.raises(ValueError, match=r"no evaluator fits tiny's images \(1, 8, 8\) with 0 classes"):
        quality.evaluator_for(continuous)


# ---------------------------------------------------------------------------------------------------
#                                          text_conditions
# ---------------------------------------------------------------------------------------------------


def test_text_conditions_refuse_bad_embeddings():
    from diffusers import SD3Transformer2DModel

    from bottleneck_utils import text_conditions

    torch.manual_seed(0)
    sd3 = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                pooled_projection_dim=12, out_channels=4, pos_embed_max_size=16).eval()
    for pooled, timesteps, match in ((torch.full((2, 12), NAN), None, "NaN or inf"),
                                     (torch.zeros(2, 11), None, r"\(n >= 1, 12\)"),
                                     (torch.zeros(2, 12), NAN, "outside"),
                                     (torch.zeros(2, 12), [], "empty")):
        with pytest.raises(ValueError, match=match):
            text_conditions.pooled_vectors(sd3, pooled, timesteps)
    with pytest.raises(ValueError, match="one timestep"):
        text_conditions.prompt_summary(sd3, torch.zeros(2, 12), [1000, 500])


# ---------------------------------------------------------------------------------------------------
#                                   command lines and notebook parameters
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, match", [
    (["execute", "--continuous-model", "does-not-exist"], "unknown model 'does-not-exist'"),
    (["execute", "--model", "/no/such/model.pt"], "does not exist"),
    (["execute", "--device", "cuda:7"], "CUDA|does not exist"),
    (["execute", "--samples", "0"], "is not a positive integer"),
    (["execute", "--samples", "many"], "is not a positive integer"),
    (["execute", "--samples", "10", "--only", "similarity"], "--samples applies to chapters with an n_samples"),
    (["execute", "--only", "appendix"], "invalid choice: 'appendix'"),
])
def test_book_execute_checks_everything_before_the_first_chapter(monkeypatch, capsys, argv, match):
    executed = []
    monkeypatch.setattr(book, "execute", lambda name, parameters: executed.append(name))
    with pytest.raises(SystemExit) as exit_:
        book.main(argv)
    assert exit_.value.code == 2 and executed == []
    assert re.search(match, capsys.readouterr().err)


def test_book_execute_refuses_an_undeclared_parameter(tmp_path):
    with pytest.raises(ValueError, match=r"notebooks/similarity.md declares no parameters \['n_classes'\]"):
        book.execute("similarity", {"n_classes": "abc"}, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, match", [
    (["--num-samples", "0"], "'0' must be a finite number >= 1"),
    (["--num-samples", "ten"], "'ten' is not an int"),
    (["--steps", "-1"], "must be a finite number >= 1"),
    (["--cfg", "nan"], "'nan' must be a finite number"),
    (["--mask", "tail", "--tau", "nan"], "'nan' must be a finite number >= 0"),
    (["--mask", "tail"], "--mask tail needs --tau"),
    (["--mask", "topk"], "--mask topk needs .*--topk"),
    (["--tau", "0.1"], "--tau goes with --mask tail/head"),
    (["--schedule", "last"], "--k goes with --schedule last"),
    (["--k", "2"], "--k goes with --schedule last"),
    (["--mask", "head", "--tau", "1", "--recompute"], "--recompute goes with --mask tail or topk only"),
    (["--mask", "tail", "--tau", "1", "--recompute", "--random-control"], "--recompute goes with --mask tail or topk"),
    (["--mask", "head", "--tau", "1", "--granularity", "local"], "invalid choice: 'local'"),
])
def test_sampling_cli_refuses_before_loading(tmp_path, capsys, monkeypatch, argv, match):
    monkeypatch.setattr(sampling, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    base = ["mnist-dit", "--num-samples", "4", "--npz", str(tmp_path / "s.npz")]
    with pytest.raises(SystemExit) as exit_:
        sampling.main(base + argv)
    assert exit_.value.code == 2 and list(tmp_path.iterdir()) == []
    assert re.search(match, capsys.readouterr().err)


@pytest.mark.parametrize("argv, match", [
    (["mnist-dit", "--steps", "-1"], "must be a positive integer"),
    (["mnist-dit", "--steps", "0"], "must be a positive integer"),
    (["mnist-dit", "--steps", "many"], "invalid positive_int value"),
    (["no-such-organism"], "unknown organism 'no-such-organism'"),
])
def test_train_cli_refuses_before_training(monkeypatch, capsys, argv, match):
    monkeypatch.setattr(train, "train_dit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(SystemExit) as exit_:
        cli.organism_main(argv)
    assert exit_.value.code == 2 and match in capsys.readouterr().err


@pytest.mark.parametrize("values, error, match", [
    ({"num_steps": "50"}, TypeError, "bad notebook parameters: num_steps='50'"),
    ({"num_steps": True}, TypeError, "num_steps=True"),
    ({"num_steps": 2.0}, TypeError, "num_steps=2.0"),
    ({"num_steps": 5, "zoom": 3}, ValueError, r"parameters \['zoom'\] are not both listed and typed"),
])
def test_notebook_parameter_check(values, error, match):
    report.check_parameters({"num_steps": 5, "flag": True}, {"num_steps": int, "flag": bool})  # good values pass
    with pytest.raises(error, match=match):
        report.check_parameters(values, {"num_steps": int})


def test_compute_refuses_a_mask_of_another_width():
    with pytest.raises(ValueError, match=r"removed must be a \(8,\) bool tensor"):
        adaln_cost.compact_projection(torch.nn.Linear(8, 48), torch.zeros(8))


# ---------------------------------------------------------------------------------------------------
#                                          composite digits
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: composite.label_digits(7), "10, 100 or 1000 classes"),
    (lambda: composite.class_of_digits(torch.tensor([[1, 2, 3]]), 100), "integer \\(n, 4\\) tensor of 0..9"),
    (lambda: composite.class_of_digits(torch.tensor([[1, 2, 3, 10]]), 100), "integer \\(n, 4\\) tensor of 0..9"),
    (lambda: composite.class_of_digits(torch.tensor([[1.0, 2, 3, 4]]), 100), "integer \\(n, 4\\) tensor of 0..9"),
    (lambda: composite.digits_of_class(torch.tensor([2.5]), 10), "whole numbers"),
    (lambda: composite.digits_of_class(torch.tensor([100]), 100), "class ids must be in 0..99"),
    (lambda: composite.tile(torch.zeros(2, 3, 1, 12, 12)), "cells must be \\(n, 4, 1, s, s\\)"),
    (lambda: composite.cells_of(torch.zeros(1, 1, 24, 23)), "composite canvases are \\(n, 1, 2s, 2s\\)"),
])
def test_composite_digits_refuse_bad_shapes_and_ids(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---------------------------------------------------------------------------------------------------
#                          The beyond variants: registry, finishing, the chapter's measurements
# ---------------------------------------------------------------------------------------------------


def test_beyond_finish_without_a_run_names_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        cli.finish_variant("beyond/k2")
    assert "python -m bottleneck_utils.organisms.cli beyond train beyond/k2" in one_line(error)
    assert not list(tmp_path.iterdir())  # nothing written


def test_beyond_cli_refuses_an_unknown_variant_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli.cli(["beyond", "train", "beyond/k3"])
    assert "unknown names ['beyond/k3']" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_retraining_a_shipped_recipe_needs_install_and_is_refused_before_writing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli.cli(["regime", "train", "regime/d256-p6-b64-s0", "--threads", "2"])
    err = capsys.readouterr().err
    assert "shipped already: add --install" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
    cli.cli(["regime", "train"])  # every replicate shipped: says so, trains nothing
    assert "every recipe of this registry is shipped" in capsys.readouterr().out and not list(tmp_path.iterdir())


@pytest.mark.parametrize("names, match", [(["beyond/k2"], "the control beyond/full is not shipped"),
                                          (["beyond/full", "beyond/k3"], "not beyond variants")])
def test_variant_quality_refuses_before_sampling(names, match):
    from bottleneck_utils.chapters import beyond

    with pytest.raises(ValueError, match=match) as error:
        beyond.variant_quality(names, 10, 2, 1.0, 0, [1, 2, 3, 4, 5], 2)
    one_line(error)


def test_variant_statistics_refuses_an_unshipped_name():
    from bottleneck_utils.chapters import beyond

    with pytest.raises(ValueError, match="not shipped beyond variants") as error:
        beyond.variant_statistics(["beyond/k3"])
    assert "make train-beyond" in one_line(error)


@pytest.mark.parametrize("strength", [-0.1, float("nan"), "0.1", True])
def test_l1_penalty_refuses_a_strength_that_is_not_a_number_at_least_zero(strength):
    with pytest.raises(ValueError, match=r"a recipe's l1_c\) must be a number >= 0"):
        train.l1_penalty(None, strength, torch.zeros(1), torch.zeros(1, dtype=torch.long))


def test_resolve_autocast_names_the_choices():
    from bottleneck_utils.sampling import resolve_autocast

    with pytest.raises(ValueError, match="autocast must be one of auto, none, bfloat16, float16, got 'bf16'"):
        resolve_autocast("bf16", "cpu")


def test_allow_tf32_refuses_an_unknown_device_in_one_line():
    with pytest.raises(RuntimeError, match="unsupported device 'gpu0'"):
        train.allow_tf32_on_cuda("gpu0")


@pytest.mark.parametrize("flag", ["--threads", "--steps"])
def test_side_by_side_refuses_non_positive_counts(flag, tmp_path, monkeypatch, capsys):
    from tools import train_side_by_side

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        train_side_by_side.main(["--minutes", "1", flag, "0", "ladder/c10"])
    assert "must be a positive integer" in capsys.readouterr().err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("call, match", [
    (lambda: sampling.dit_timesteps(1000, 0), "num_steps"),
    (lambda: sampling.dit_timesteps(1000, 1001), r"num_steps must be <= 1000"),
    (lambda: sampling.dit_timesteps(1000, 2.5), "num_steps"),
])
def test_dit_timesteps_refuse_a_step_count_outside_one_to_t(call, match):
    with pytest.raises(ValueError, match=match) as error:
        call()
    one_line(error)


def test_the_learned_sigma_scheduler_refuses_a_flow_model():
    from bottleneck_utils.flow import FlowODE

    bundle = tiny_bundle()
    bundle.scheduler = FlowODE(noise_time=0.0)
    with pytest.raises(ValueError, match="is a flow model") as error:
        sampling.learned_sigma_scheduler(bundle, 10)
    one_line(error)


def test_a_pruning_plan_needs_every_sampling_parameter_and_writes_nothing_without(tmp_path):
    from bottleneck_utils.chapters import pruning_samples

    with pytest.raises(ValueError, match="missing: .*noise_seeds") as error:
        pruning_samples.write_plan(tmp_path / "runs", {"model": "mnist-dit"})
    one_line(error)
    assert not (tmp_path / "runs").exists()
