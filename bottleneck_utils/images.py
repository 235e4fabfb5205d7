"""The package's one image convention: ``(N, C, H, W)`` floats in [0, 1] (what the sampler returns), and the
``(N, H, W, C)`` uint8 of a PNG or an ADM/DiT ``.npz``.

Images in another range or dtype are refused rather than clamped: a uint8 batch in 0..255 or a [−1, 1] batch
clamped to [0, 1] would give a plausible but wrong FID.
"""

from __future__ import annotations

import numbers
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def check_images(images, what: str = "images") -> torch.Tensor:
    """Returns ``images`` as a float tensor (N, C, H, W) in [0, 1], or raises a ValueError naming the fix.

    Args:
        images: a tensor or array (N, C, H, W) with C = 1 (grey) or 3 (RGB); N may be 0.
        what: how the error message names them.
    """
    if not isinstance(images, torch.Tensor | np.ndarray):
        raise TypeError(f"{what} must be a tensor (N, C, H, W) in [0, 1], got {type(images).__name__}")
    images = torch.as_tensor(images)
    if images.dtype == torch.uint8:
        raise ValueError(f"{what} are uint8 (0..255); pass floats in [0, 1]: images.float() / 255")
    if not images.is_floating_point():
        raise ValueError(f"{what} must be floats in [0, 1], got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"{what} must be (N, C, H, W) with C = 1 or 3, got shape {tuple(images.shape)}")
    if images.numel() and not torch.isfinite(images).all():
        raise ValueError(f"{what} hold NaN or inf")
    if images.numel() and (images.min() < 0 or images.max() > 1):
        low, high = images.min().item(), images.max().item()
        hint = " (in [-1, 1]? pass (images + 1) / 2)" if low < 0 else " (in 0..255? divide by 255)"
        raise ValueError(f"{what} must lie in [0, 1], got values in [{low:.3g}, {high:.3g}]{hint}")
    return images


def check_int(name: str, value, low: int) -> None:
    """Raises ValueError unless ``value`` is an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] → (N, H, W, C) uint8, rounded (what a PNG stores)."""
    images = check_images(images)
    return (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _check_written(images, labels, first_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 (N, H, W, C), labels (N,)) of what is about to be written, or a ValueError before anything is."""
    pixels = to_uint8(images)  # refuses anything but (N, C, H, W) floats in [0, 1]
    labels = torch.as_tensor(labels).cpu().flatten().numpy()
    labels = labels.astype(np.int64) if labels.size == 0 else labels  # [] is float; an empty shard keeps int labels
    if len(labels) != len(pixels):
        raise ValueError(f"got {len(pixels)} images but {len(labels)} labels; pass one label per image")
    check_int("first_index", first_index, 0)
    return pixels, labels


def _check_creatable(folder: Path, target: Path) -> None:
    """Raises unless ``folder`` (where ``target`` goes) is a writable folder or can be made one: its nearest existing
    ancestor is a writable folder, not a file."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{target} cannot be written: {existing} is a file; choose another path (or move that file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{target} cannot be written: {existing} is read-only; choose a writable folder")


def check_output_dir(path: str | Path) -> Path:
    """``path`` as a folder that :func:`write_pngs` can fill, checked before any work.

    Raises:
        ValueError: ``path`` is a file, or lies under one.
        PermissionError: the folder (or the nearest existing one above it) is read-only.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"the output folder {path} is a file; pass a folder path (or move that file)")
    _check_creatable(path, path)
    return path


def check_output_file(path: str | Path) -> Path:
    """``path`` as a file that :func:`save_npz` can write (or replace), checked before any work.

    Raises:
        ValueError: ``path`` is a folder, or lies under a file.
        PermissionError: its folder (or the nearest existing one above it) is read-only.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; pass a file path such as {path / 'samples.npz'}")
    _check_creatable(path.parent, path)
    return path


def write_pngs(images: torch.Tensor, labels, output_dir: str | Path, first_index: int = 0) -> None:
    """Writes (N, C, H, W) images in [0, 1] as ``{index:06d}_{label}.png``, each through a temporary file.

    Raises:
        ValueError: images outside the convention, labels that do not match them, or an ``output_dir`` that is (or
            lies under) a file; nothing is written then.
        PermissionError: a read-only ``output_dir``.
    """
    pixels, labels = _check_written(images, labels, first_index)
    output_dir = check_output_dir(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for offset, (image, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
        array = image[..., 0] if image.shape[-1] == 1 else image
        write_atomically(output_dir / f"{first_index + offset:06d}_{label}.png",
                         lambda temporary, array=array: Image.fromarray(np.ascontiguousarray(array)).save(
                             temporary, format="PNG"))


def write_atomically(path: Path, write) -> None:
    """Calls ``write(temporary_path)`` on a temporary file beside ``path``, then renames it onto ``path``: a reader
    never sees a half-written file, and on any error the temporary is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_savez(path: Path, **arrays) -> None:
    """``np.savez`` of ``arrays`` to ``path`` through :func:`write_atomically`."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomically(path, write)


def save_npz(images: torch.Tensor, labels, path: str | Path, first_index: int = 0) -> Path:
    """Writes ``arr_0`` (N, H, W, C) uint8 (the ADM/DiT evaluation layout), ``labels`` and ``indices`` atomically.

    N may be 0 (an empty shard): ``arr_0`` is then (0, H, W, C).

    Raises:
        ValueError: images outside the convention, labels that do not match them, or a ``path`` that is a folder (or
            lies under a file); nothing is written then.
        PermissionError: a read-only folder.
    """
    pixels, labels = _check_written(images, labels, first_index)
    check_output_file(path)
    indices = np.arange(first_index, first_index + len(labels))
    atomic_savez(Path(path), arr_0=pixels, labels=labels, indices=indices)
    return Path(path)


def _read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``, or one line naming the file if it is truncated or another format."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable .npz ({type(error).__name__}: {error}): it is truncated or "
                         "another format; sample it again") from None


def load_npz(path: str | Path) -> tuple[torch.Tensor, np.ndarray]:
    """Reads a :func:`save_npz` file back: (N, C, H, W) floats in [0, 1] and the labels.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a truncated file, or one that save_npz did not write.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} does not exist; sample it first (python -m bottleneck_utils.sampling)")
    archive = _read_npz(path)
    missing = {"arr_0", "labels"} - set(archive)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}: it is not a file written by save_npz")
    pixels, labels = archive["arr_0"], archive["labels"]
    if pixels.dtype != np.uint8 or pixels.ndim != 4:
        raise ValueError(f"{path}: arr_0 must be (N, H, W, C) uint8, got {pixels.dtype} {pixels.shape}")
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255, labels
