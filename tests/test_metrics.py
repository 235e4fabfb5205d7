"""Metrics: the offline Inception equals clean-fid's clean mode; FID/KID are clean-fid's; P/R, scores, bootstrap."""

import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.inception_torchscript import InceptionV3W
from threadpoolctl import threadpool_limits

from bottleneck_utils import features as extractors
from bottleneck_utils import metrics
from bottleneck_utils.images import write_pngs
from bottleneck_utils.organisms import classifier
from bottleneck_utils.organisms.classifier import MnistClassifier


class _Holder(torch.nn.Module):
    """The file layout clean-fid downloads: a TorchScript module with the network under ``.layers``."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        return self.layers(x)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """OpenBLAS threads spin-wait for each other on a busy shared CPU (13x slower here): use one."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def inception():
    return extractors.CleanInception()


def random_images(n, seed, size=24):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
#                                  Inception features = clean-fid clean mode
# ---------------------------------------------------------------------------------------------------


def test_offline_inception_matches_cleanfids_own_loader_and_pipeline(inception, tmp_path):
    # Put the shipped weights where clean-fid's InceptionV3W reads its download, and let clean-fid read, resize
    # and embed the PNGs itself (mode="clean"); our in-memory path must give the same features.
    torch.jit.script(_Holder(inception.layers)).save(str(tmp_path / "inception-2015-12-05.pt"))
    theirs = InceptionV3W(str(tmp_path), download=False)
    images = random_images(2, seed=0)
    write_pngs(images, torch.arange(2), tmp_path / "png")
    expected = cleanfid_fid.get_folder_features(str(tmp_path / "png"), theirs, num_workers=0, batch_size=4,
                                                device=torch.device("cpu"), mode="clean", verbose=False)
    ours = extractors.inception_features(images, inception, progress=False)
    assert ours.shape == (2, extractors.INCEPTION_DIM) and np.abs(ours).mean() > 0.01
    # the same float32 network on the same 2 images: ~1e-6 of rounding on features ≲ 10; another resize or
    # normalisation would move them by > 1e-2
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


class PooledPixels(torch.nn.Module):
    """A cheap stand-in extractor, (B, 3, 299, 299) → (B, 12): 2×2 average pools of each channel.

    It keeps the folder tests fast; a 2048-d FID needs a 2048×2048 matrix square root (minutes on 2 CPUs).
    """

    def forward(self, pixels):
        return torch.nn.functional.adaptive_avg_pool2d(pixels, 2).flatten(1)


def test_folder_features_and_fid_go_through_cleanfid(tmp_path):
    first, second = random_images(6, seed=1), random_images(6, seed=2) * 0.5
    write_pngs(first, torch.arange(6), tmp_path / "a")
    write_pngs(second, torch.arange(6), tmp_path / "b")
    features_a = extractors.inception_features(first, PooledPixels(), progress=False)
    features_b = extractors.inception_features(second, PooledPixels(), progress=False)
    # float32 means of ~150² pixels in [0, 255], perhaps summed in another order: relative rounding ~1e-7
    np.testing.assert_allclose(extractors.folder_features(tmp_path / "a", PooledPixels()), features_a, rtol=1e-6)
    by_folder = float(cleanfid_fid.compute_fid(str(tmp_path / "a"), str(tmp_path / "b"), mode="clean", num_workers=0,
                                               batch_size=50, device=torch.device("cpu"),
                                               custom_feat_extractor=PooledPixels().eval(), verbose=False))
    assert by_folder > 100  # halving the pixel values moves the mean a lot
    assert by_folder == pytest.approx(metrics.fid(features_a, features_b), rel=1e-5)  # those features, through sqrtm


# ---------------------------------------------------------------------------------------------------
#                                            FID and KID
# ---------------------------------------------------------------------------------------------------


def gaussian(n, shift=0.0, seed=0, dim=8):
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, dim))


def test_fid_and_kid_are_cleanfids():
    real, fake = gaussian(400, seed=0), gaussian(300, shift=1.0, seed=1)
    assert metrics.fid(fake, real) == cleanfid_fid.fid_from_feats(fake, real)
    reference = metrics.Reference.from_features(real)
    # float64, the same mean and covariance formulas as clean-fid's: only summation-order rounding
    assert metrics.fid_to_reference(fake, reference) == pytest.approx(metrics.fid(fake, real), rel=1e-10)
    np.random.seed(5)
    expected_kid = cleanfid_fid.kernel_distance(fake, real, 20, 100)
    assert metrics.kid(fake, real, seed=5, num_subsets=20, max_subset_size=100) == expected_kid
    assert metrics.fid(fake, real) > 10 * metrics.fid(gaussian(300, seed=2), real)


def test_kid_restores_numpy_global_state():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    metrics.kid(gaussian(50), gaussian(50, seed=1), seed=0, num_subsets=3)
    assert np.random.rand() == expected


# ---------------------------------------------------------------------------------------------------
#                                  Classifier scores and precision/recall
# ---------------------------------------------------------------------------------------------------


def test_accuracy_and_inception_style_score():
    confident = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]]  # (8, 4) one-hot, every class equally often
    assert metrics.inception_style_score(confident) == pytest.approx(4.0, rel=1e-6)  # the 1e-12 guards in the logs
    assert metrics.inception_style_score(np.full((8, 4), 0.25)) == pytest.approx(1.0, rel=1e-6)  # as above
    assert metrics.class_accuracy(confident, np.array([0, 1, 2, 3, 0, 1, 2, 0])) == 7 / 8


def brute_force_precision_recall(real, fake, k):
    def radius(points, i):
        d = sorted(np.linalg.norm(points[i] - p) for j, p in enumerate(points) if j != i)
        return d[k - 1]

    real_r = [radius(real, i) for i in range(len(real))]
    fake_r = [radius(fake, j) for j in range(len(fake))]
    precision = np.mean([any(np.linalg.norm(f - r) <= real_r[i] for i, r in enumerate(real)) for f in fake])
    recall = np.mean([any(np.linalg.norm(r - f) <= fake_r[j] for j, f in enumerate(fake)) for r in real])
    return precision, recall


def test_precision_recall_matches_the_definition():
    real, fake = gaussian(40, seed=3, dim=3), gaussian(30, shift=1.5, seed=4, dim=3)
    expected = brute_force_precision_recall(real, fake, k=3)
    got = metrics.precision_recall(real, fake, k=3)
    assert (got["precision"], got["recall"]) == expected  # the same counts over the same n
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1
    far = metrics.precision_recall(real, fake + 100, k=3)
    assert far == {"precision": 0.0, "recall": 0.0}


def test_the_references_neighbour_radii_are_computed_once_and_give_the_same_manifolds(monkeypatch):
    real, fake = gaussian(40, seed=3, dim=3), gaussian(30, shift=1.5, seed=4, dim=3)
    reference = metrics.Reference.from_features(real)
    calls = []
    radii = metrics.knn_radii
    monkeypatch.setattr(metrics, "knn_radii", lambda features, k=3: calls.append(len(features)) or radii(features, k))
    first, second = (metrics.SampleSet.build(fake + shift, np.zeros(30), reference) for shift in (0.0, 0.5))
    assert calls.count(len(real)) == 1  # the real set's radii once; each generated set's own radii every time
    direct = metrics.Manifolds.build(real, fake)
    assert np.array_equal(first.manifolds.fake_in_real, direct.fake_in_real)
    assert np.array_equal(first.manifolds.real_in_fake, direct.real_in_fake)
    assert not np.array_equal(second.manifolds.real_in_fake, direct.real_in_fake)
    with pytest.raises(ValueError, match="statistics only"):
        metrics.Reference(reference.mu, reference.sigma).knn_radii(3)


def test_classifier_outputs_quantize_and_shape():
    torch.manual_seed(0)
    model = MnistClassifier().eval()
    images = torch.rand(5, 1, 14, 14)
    features, probs = classifier.classifier_outputs(model, images)
    assert features.shape == (5, 128) and probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=1e-6)  # a float32 softmax over 10 classes sums to 1 ± 1e-7
    again, _ = classifier.classifier_outputs(model, extractors.quantize(images))
    np.testing.assert_array_equal(features, again)


# ---------------------------------------------------------------------------------------------------
#                                       The paired bootstrap
# ---------------------------------------------------------------------------------------------------


def test_bootstrap_ci_and_paired_deltas():
    rng = np.random.default_rng(0)
    real = gaussian(300, seed=10)
    reference = metrics.Reference.from_features(real)
    labels = rng.integers(0, 4, 200)
    probs = np.eye(4)[labels] * 0.9 + 0.025
    base = gaussian(200, seed=11)
    sets = {
        "baseline": metrics.SampleSet.build(base, labels, reference, probs),
        "same": metrics.SampleSet.build(base.copy(), labels, reference, probs),
        "shifted": metrics.SampleSet.build(base + 1.0, labels, reference, np.roll(probs, 1, axis=1)),
    }
    table = metrics.bootstrap_table(sets, reference, "baseline", n_boot=30, kid_subsets=10, progress=False)
    assert set(table.index.get_level_values("metric")) == {"FID", "KID", "accuracy", "IS-style", "precision", "recall"}
    same = table.loc["same"]
    assert (same["delta"] == 0).all() and (same["delta_low"] == 0).all() and (same["delta_high"] == 0).all()
    shifted = table.loc["shifted"]
    assert shifted.loc["FID", "delta_low"] > 0 and shifted.loc["accuracy", "delta_high"] < 0
    assert ((table["low"] <= table["value"]) & (table["value"] <= table["high"])).all()
    assert table.loc[("baseline", "accuracy"), "value"] == 1.0
    with pytest.raises(ValueError, match="same labels"):
        metrics.bootstrap_table({"baseline": sets["baseline"],
                                 "other": metrics.SampleSet.build(base, labels[::-1], reference)},
                                reference, "baseline", progress=False)


# ---------------------------------------------------------------------------------------------------
#                                       Reference statistics files
# ---------------------------------------------------------------------------------------------------


def test_reference_stats_round_trip_and_bad_files(tmp_path):
    stats = metrics.Reference(np.zeros(2048), np.eye(2048))
    path = metrics.save_reference(stats, tmp_path / "ref.npz")
    loaded = metrics.load_reference(path)
    assert np.array_equal(loaded.mu, stats.mu) and np.array_equal(loaded.sigma, stats.sigma)
    assert loaded.features is None

    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip file at all")
    np.savez(tmp_path / "keys.npz", means=np.zeros(3))
    np.savez(tmp_path / "shape.npz", mu=np.zeros(10), sigma=np.eye(10))
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("no images here")
    for name, message in [("empty.npz", "is empty"), ("garbage.npz", "not a readable .npz"),
                          ("keys.npz", "expected 'arr_0'"), ("shape.npz", "mu must be"),
                          ("no_images", "holds no images")]:
        with pytest.raises(ValueError, match=message):
            metrics.load_reference(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        metrics.load_reference(tmp_path / "missing.npz")


def test_bootstrap_standard_error_of_a_proportion():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 400)
    guesses = np.where(rng.random(400) < 0.7, labels, (labels + 1) % 4)  # 70% right
    features = gaussian(400, seed=12)
    reference = metrics.Reference.from_features(gaussian(300, seed=13))
    sets = {"baseline": metrics.SampleSet.build(features, labels, reference, np.eye(4)[guesses])}
    table = metrics.bootstrap_table(sets, reference, "baseline", n_boot=200, progress=False)
    accuracy = table.loc[("baseline", "accuracy")]
    binomial_se = np.sqrt(accuracy["value"] * (1 - accuracy["value"]) / 400)
    # 200 bootstrap rounds estimate an SE with a relative error of about 1/√(2·200) = 5%: 0.2 is 4 of those
    assert accuracy["se"] == pytest.approx(binomial_se, rel=0.2)


def test_one_paired_bootstrap_and_one_interval_serve_every_chapter():
    """The regime's per-sample interval is the same bootstrap as the FID table's: the same index draws and the same
    normal interval, mean ± z·SE of the drawn means (z = 1.96 at 95%)."""
    from bottleneck_utils.chapters import pruning

    differences = np.random.default_rng(3).normal(-0.1, 0.5, 40)
    means = [differences[i].mean() for i in metrics.paired_resamples(40, 200, seed=7)]
    half = 1.959964 * np.std(means, ddof=1)
    mean, low, high = pruning.paired_interval(torch.as_tensor(differences), n_boot=200, seed=7)
    assert mean == pytest.approx(differences.mean()) and (low, high) == pytest.approx((mean - half, mean + half))
    first = next(iter(metrics.paired_resamples(40, 1, seed=7)))
    assert np.array_equal(first, np.random.default_rng(7).integers(0, 40, 40))  # bootstrap_table's draws
