"""The book's build tooling: papermill executes the MyST notebooks into ``book/``; a guard checks they are fresh.

    python tools/book.py execute [--model M] [--continuous-model M] [--device D] [--samples N] [--only NAME ...]
    python tools/book.py check

``execute`` checks every model name and the device before the first chapter runs, gives each chapter only the
parameters it declares (and refuses a parameter no selected chapter declares), and writes each executed notebook
through a ``.partial.ipynb`` that is removed if the chapter fails. ``check`` needs only jupytext and nbformat.
This is build tooling for a source checkout, not part of the importable package.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package of this checkout, installed or not

from bottleneck_utils import report  # after the path is set

SOURCES = ROOT / "notebooks"
OUTPUTS = report.BOOK_DIR
CHAPTERS = report.chapters()  # _toc.yml's order; the appendix runs last: it reads the others' provenance
CONTINUOUS_CHAPTERS = {"continuous"}  # these take a continuous-condition model (--continuous-model), not --model


def declared_parameters(notebook) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    if not cells:
        return set()
    return {target.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)}


def execute(name: str, parameters: dict, output_dir: Path = OUTPUTS) -> Path:
    """Executes ``notebooks/<name>.md`` with papermill into ``<output_dir>/<name>.ipynb``; returns the path.

    Raises:
        ValueError: a parameter the chapter does not declare (papermill alone would ignore it).
        papermill.PapermillExecutionError: a cell failed; no output is left behind.
    """
    import jupytext
    import nbformat
    import papermill

    source = jupytext.read(SOURCES / f"{name}.md")
    unknown = sorted(set(parameters) - declared_parameters(source))
    if unknown:
        raise ValueError(f"notebooks/{name}.md declares no parameters {unknown}; its parameters cell lists "
                         f"{sorted(declared_parameters(source))}")
    target = Path(output_dir) / f"{name}.ipynb"
    partial = target.with_suffix(".partial.ipynb")
    try:
        notebook = papermill.execute_notebook(source, str(partial), parameters=parameters, kernel_name="python3",
                                              cwd=str(ROOT), progress_bar=False)
        report.lift_provenance(notebook)
        nbformat.write(notebook, partial)
        partial.replace(target)  # a failed run never leaves a half-executed notebook under the real name
    finally:
        partial.unlink(missing_ok=True)
    return target


def code_cells(notebook) -> list[str]:
    """The source of each code cell, without papermill's injected-parameters cell."""
    return [cell.source.strip() for cell in notebook.cells
            if cell.cell_type == "code" and "injected-parameters" not in cell.metadata.get("tags", [])]


def stale_notebooks(output_dir: Path = OUTPUTS) -> list[str]:
    """Chapters whose ``<output_dir>/<name>.ipynb`` is missing or whose code differs from ``notebooks/<name>.md``."""
    import jupytext
    import nbformat

    problems = []
    for name in CHAPTERS:
        executed = Path(output_dir) / f"{name}.ipynb"
        if not executed.is_file():
            problems.append(f"{executed.parent.name}/{executed.name} is missing (run: make execute)")
        elif code_cells(nbformat.read(executed, as_version=4)) != code_cells(jupytext.read(SOURCES / f"{name}.md")):
            problems.append(f"{executed.parent.name}/{executed.name} is stale: its code differs from "
                            f"notebooks/{name}.md")
    return problems


def chapter_parameters(args) -> dict[str, dict]:
    """The papermill parameters of each selected chapter, after checking every model name and the device."""
    import jupytext

    from bottleneck_utils import models

    models.resolve_device(args.device)
    for model in {args.continuous_model if name in CONTINUOUS_CHAPTERS else args.model for name in args.only}:
        models.check_model(model)
    plans = {}
    for name in args.only:
        declared = declared_parameters(jupytext.read(SOURCES / f"{name}.md"))
        model = args.continuous_model if name in CONTINUOUS_CHAPTERS else args.model
        plans[name] = {"device": args.device} | ({"model": model} if "model" in declared else {})
        if args.samples is not None and "n_samples" in declared:
            plans[name]["n_samples"] = args.samples
    if args.samples is not None and not any("n_samples" in plan for plan in plans.values()):
        raise ValueError(f"--samples applies to chapters with an n_samples parameter; none of {args.only} has one")
    return plans


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute the notebooks with papermill into book/")
    run.add_argument("--model", default="mnist-dit", help="class-conditional model of the class chapters")
    run.add_argument("--continuous-model", default="ising-dit",
                     help=f"continuous-condition model of {sorted(CONTINUOUS_CHAPTERS)}")
    run.add_argument("--device", default="cpu")
    run.add_argument("--samples", type=positive_int, default=None, help="n_samples, for chapters that sample")
    run.add_argument("--only", nargs="+", choices=CHAPTERS, default=CHAPTERS)
    sub.add_parser("check", help="fail if an executed notebook is missing or stale")
    args = parser.parse_args(argv)
    if args.command == "check":
        problems = stale_notebooks()
        print("\n".join(problems) or "all executed notebooks match their sources")
        sys.exit(1 if problems else 0)
    try:
        plans = chapter_parameters(args)
    except (ValueError, OSError, RuntimeError, TypeError) as error:  # before any chapter has run
        parser.error(str(error))
    for name, parameters in plans.items():
        print(f"executing notebooks/{name}.md -> {execute(name, parameters)}", flush=True)


if __name__ == "__main__":
    main()
