"""Reading the files the pipeline depends on, each failure one line naming the file and the fix; and the integrity of
the shipped weight files: the sha256 of each, recorded in ``checkpoints/manifest.json``.

Every loader of package data (:mod:`bottleneck_utils.models`, :mod:`bottleneck_utils.organisms.classifier`) reads its
weights through :func:`verified`; the trainer records a new sha256 when it installs a run
(``python -m bottleneck_utils.organisms.cli organism NAME --install``). The loaders read every JSON file (the manifest, a
model's ``config.json``, ``meta.json`` and ``model_index.json``) through :func:`read_json`, and every weights file
through :func:`read_safetensors` or :func:`read_checkpoint`, then :func:`load_weights`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
RESTORE_MANIFEST = ("restore it with: git checkout bottleneck_utils/checkpoints/manifest.json "
                    "(or re-clone the repository)")
CONFLICT_MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0].strip()


def read_text(path: str | Path, what: str, fix: str) -> str:
    """The UTF-8 text of ``path``, or one line naming ``what`` it is, why it cannot be read and ``fix``.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: it cannot be read or is not UTF-8.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} is missing; {fix}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} {path} cannot be read ({_first_line(error)}); {fix}") from None


def read_json(path: str | Path, what: str, fix: str, kind: type = dict):
    """The parsed content of the JSON file ``path``, or one line naming the file, what is wrong and the fix.

    Args:
        path: the file.
        what: what the file is, for the message (``"the manifest"``, ``"the run's meta.json"``).
        fix: what to do about it, e.g. ``"delete the run folder and train again"``.
        kind: the JSON type the top level must have (``dict`` for an object, ``list`` for an array).

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is unreadable, holds merge-conflict markers, is not valid JSON (truncated, edited) or
            its top level is not a ``kind``.
    """
    path = Path(path)
    text = read_text(path, what, fix)
    if CONFLICT_MARKER.search(text):
        raise ValueError(f"{what} {path} holds git merge-conflict markers (<<<<<<<, =======, >>>>>>>); resolve the "
                         f"conflict, or {fix}")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{what} {path} is not valid JSON ({error.msg}, line {error.lineno}): it is truncated or "
                         f"damaged; {fix}") from None
    if not isinstance(content, kind):
        raise ValueError(f"{what} {path} holds a JSON {type(content).__name__}, not a {kind.__name__}; {fix}")  # noqa: TRY004 (a bad file)
    return content


def read_safetensors(path: str | Path, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file on the CPU, or one line naming the file and the fix.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the file is truncated or not a safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({_first_line(error)}): it is truncated or "
                         f"damaged; {fix}") from None


def read_checkpoint(path: str | Path, fix: str, map_location="cpu", allowed: tuple = (argparse.Namespace,)):
    """``torch.load(path, weights_only=True)``: only tensors, plain containers and the ``allowed`` classes.

    A pickle that would build any other object (and so could run code) is refused without running it, in one line
    rather than torch's advice to lift the guard. The official DiT ``train.py`` saves an ``argparse.Namespace``,
    which is allowed by default.

    Raises:
        ValueError: the file is truncated, another format, or pickles an object of another class.
    """
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError,
            KeyError, IndexError, TypeError, UnicodeDecodeError) as error:  # the last four: the unpickler on cut files
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found:  # the guard refused a pickled object: nothing of it ran
            raise ValueError(f"{path} holds a pickled {found.group(1)}, which is not loaded (only tensors and plain "
                             f"containers are): it may run code; {fix}") from None
        reason = "" if isinstance(error, pickle.UnpicklingError) else f" ({_first_line(error).split('. ')[0]})"
        raise ValueError(f"{path} is not a readable PyTorch checkpoint{reason}: it is truncated or another format; "
                         f"{fix}") from None


def load_weights(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], path: str | Path, fix: str) -> None:
    """``module.load_state_dict(state_dict)`` (strict), or one line naming the file, its first misfit and the fix.

    Raises:
        ValueError: the file's tensors have other names or shapes than the module built from its config.
    """
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        first = (details or [_first_line(error)])[0].split(": copying")[0]
        more = " and more" if len(details) > 1 else ""
        raise ValueError(f"the tensors of {path} do not fit the model ({first}{more}): the weights are from another "
                         f"model or damaged; {fix}") from None


def manifest() -> dict[str, dict]:
    """The recorded sha256 of each shipped checkpoint, by name.

    Raises:
        ValueError: the manifest is truncated, holds merge-conflict markers, or an entry lacks its sha256.
    """
    path = CHECKPOINT_DIR / "manifest.json"
    recorded = read_json(path, "the checkpoint manifest", RESTORE_MANIFEST)
    bad = [name for name, entry in recorded.items() if not isinstance(entry, dict) or
           not isinstance(entry.get("sha256"), str)]
    if bad:
        raise ValueError(f"the checkpoint manifest {path} has no sha256 string for {bad}; {RESTORE_MANIFEST}")
    return recorded


def retrain_command(name: str) -> str:
    """The command that trains and installs the shipped organism ``name`` again."""
    return f"python -m bottleneck_utils.organisms.cli organism {name} --install"


def shipped_fix(name: str) -> str:
    """What to do about a damaged file of the shipped organism ``name``: restore it, or retrain it."""
    return f"restore it with git checkout (or re-clone the repository), or retrain it with: {retrain_command(name)}"


def verified(name: str, path: Path) -> str:
    """Returns the sha256 of ``path``, the weights of the shipped ``name``, after checking it against the manifest.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: the manifest has no record of ``name``, or the file's sha256 differs from it.
    """
    retrain = retrain_command(name)
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
