"""Integrity of the shipped weight files: the sha256 of each, recorded in ``checkpoints/manifest.json``.

Every loader of package data (:mod:`bottleneck_utils.models`, :mod:`bottleneck_utils.organisms.classifier`) reads its
weights through :func:`verified`; the trainer records a new sha256 when it installs a run
(``python -m bottleneck_utils.organisms.train NAME --install``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest() -> dict:
    """The recorded sha256 of each shipped checkpoint, by name."""
    return json.loads((CHECKPOINT_DIR / "manifest.json").read_text())


def verified(name: str, path: Path) -> str:
    """Returns the sha256 of ``path``, the weights of the shipped ``name``, after checking it against the manifest.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the manifest has no record of ``name``, or the file's sha256 differs from it.
    """
    retrain = f"python -m bottleneck_utils.organisms.train {name} --install"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; train it with: {retrain}")
    expected = manifest().get(name, {}).get("sha256")
    if expected is None:
        raise ValueError(f"{CHECKPOINT_DIR / 'manifest.json'} has no sha256 for {name!r}; reinstall it with: {retrain}")
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"sha256 of {path} is {actual}, but the manifest records {expected}: the file is corrupt or "
                         f"was replaced; restore it (git checkout) or retrain it with: {retrain}")
    return actual
