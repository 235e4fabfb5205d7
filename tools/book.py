"""The book's build tooling: papermill executes the MyST notebooks into ``book/``; a guard checks they are fresh.

    python tools/book.py execute [--model M] [--continuous-model M] [--device D] [--samples N] [--only NAME ...]
                                 [--jobs J]
    python tools/book.py check
    python tools/book.py glue-diff [--base REV] [NAME ...]

``execute`` checks every model name and the device before the first chapter runs, gives each chapter only the
parameters it declares (and refuses a parameter no selected chapter declares; ``--model`` only where it is given,
otherwise each chapter runs on its own default model), and writes each executed notebook
through a ``.partial.ipynb`` that is removed if the chapter fails. On a CPU it runs two chapters at a time, each
kernel at one thread (``--jobs``): the chapters' models are small, so two one-thread kernels finish the book sooner
than one two-thread kernel; the appendix waits for the others. ``check`` needs only jupytext and nbformat. ``glue-diff`` compares the values each executed chapter glues
with those of the same chapter committed at ``--base`` (default HEAD): names added, removed or changed.
This is build tooling for a source checkout, not part of the importable package.
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the package of this checkout, installed or not

from bottleneck_utils.chapters import report  # after the path is set

SOURCES = ROOT / "notebooks"
OUTPUTS = report.BOOK_DIR
CHAPTERS = report.chapters()  # _toc.yml's order; the appendix runs last: it reads the others' provenance
CONTINUOUS_CHAPTERS = {"continuous"}  # these take a continuous-condition model (--continuous-model), not --model
LAST_CHAPTERS = {"reproducibility"}  # read every other chapter's provenance, so they run after the others
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


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


def glued_values(notebook) -> dict[str, str]:
    """Every value a notebook glues (myst-nb's ``glue``), by name, in its most telling stored form: Markdown, then
    HTML without pandas' random table ids (a styled table's plain text is only its memory address), then plain text,
    then an image."""
    values = {}
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if record:
                data = {key.removeprefix(record["mime_prefix"]): value for key, value in output.get("data", {}).items()}
                kind = next((k for k in ("text/markdown", "text/html", "text/plain", "image/png") if k in data), None)
                text = "".join(data[kind]) if kind else str(sorted(data))
                values[record["name"]] = re.sub(r"T_[0-9a-f]{5}", "T_", text) if kind == "text/html" else text
    return values


def glue_differences(name: str, base: str) -> list[str]:
    """Lines naming each glued value of ``book/<name>.ipynb`` that differs from the one committed at ``base``."""
    import subprocess

    import nbformat

    committed = subprocess.run(["git", "show", f"{base}:book/{name}.ipynb"], cwd=ROOT, capture_output=True, text=True,
                               check=False)
    if committed.returncode:
        return [f"{name}: no book/{name}.ipynb at {base}"]
    before = glued_values(nbformat.reads(committed.stdout, as_version=4))
    after = glued_values(nbformat.read(OUTPUTS / f"{name}.ipynb", as_version=4))
    lines = [f"{name}: {key} only at {base}: {before[key][:80]!r}" for key in sorted(set(before) - set(after))]
    lines += [f"{name}: {key} is new: {after[key][:80]!r}" for key in sorted(set(after) - set(before))]
    lines += [f"{name}: {key}: {before[key][:80]!r} -> {after[key][:80]!r}" for key in sorted(set(before) & set(after))
              if before[key] != after[key]]
    return lines


def chapter_parameters(args) -> dict[str, dict]:
    """The papermill parameters of each selected chapter, after checking every model name and the device."""
    import jupytext

    from bottleneck_utils import models

    models.resolve_device(args.device)
    named = {args.continuous_model if name in CONTINUOUS_CHAPTERS else args.model for name in args.only}
    for model in named - {None}:  # no --model: each class chapter's own default
        models.check_model(model)
    plans = {}
    for name in args.only:
        declared = declared_parameters(jupytext.read(SOURCES / f"{name}.md"))
        model = args.continuous_model if name in CONTINUOUS_CHAPTERS else args.model
        plans[name] = {"device": args.device} | ({"model": model} if model is not None and "model" in declared else {})
        if args.samples is not None and "n_samples" in declared:
            plans[name]["n_samples"] = args.samples
    if args.samples is not None and not any("n_samples" in plan for plan in plans.values()):
        raise ValueError(f"--samples applies to chapters with an n_samples parameter; none of {args.only} has one")
    return plans


def default_jobs(device: str) -> int:
    """Chapters run at once: two on a CPU with at least two cores (one thread each), else one."""
    return 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1


def one_thread_worker() -> None:
    """A pool worker's set-up: the kernels it starts inherit one BLAS/OpenMP thread (torch reads it at import)."""
    os.environ.update(ONE_THREAD)


def run_chapter(name: str, parameters: dict) -> tuple[Path, float]:
    """Executes one chapter; returns its executed notebook and the seconds it took."""
    started = time.perf_counter()
    return execute(name, parameters), time.perf_counter() - started


def finished_chapters(names: list[str], plans: dict[str, dict], jobs: int):
    """Yields ``(name, outcome)`` as chapters end: ``(path, seconds)``, or the exception that stopped the chapter."""
    if jobs == 1:  # in this process
        for name in names:
            try:
                yield name, run_chapter(name, plans[name])
            except Exception as error:  # noqa: BLE001 -- handed to the caller, which reports it
                yield name, error
        return
    context = multiprocessing.get_context("fork")  # the workers see this process's module state
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=one_thread_worker) as pool:
        futures = {pool.submit(run_chapter, name, plans[name]): name for name in names}
        for future in as_completed(futures):
            yield futures[future], future.exception() or future.result()


def previous_seconds(name: str) -> float:
    """How long ``book/<name>.ipynb`` took when it was last executed (papermill's record); inf when unknown."""
    import nbformat

    path = OUTPUTS / f"{name}.ipynb"
    if not path.is_file():
        return float("inf")
    return float(nbformat.read(path, as_version=4).metadata.get("papermill", {}).get("duration") or float("inf"))


def execute_all(plans: dict[str, dict], jobs: int) -> list[str]:
    """Executes every planned chapter, ``jobs`` at a time, ``LAST_CHAPTERS`` after the rest; returns the failures.

    A failed chapter does not stop the others running: its error is printed when it ends, and the returned line
    names it. The last chapters do not start after a failure.
    """
    failures = []
    first, last = [name for name in plans if name not in LAST_CHAPTERS], [name for name in plans if name in LAST_CHAPTERS]
    if jobs > 1:  # longest first (by the last execution's time), so that no long chapter starts last and runs alone
        first.sort(key=previous_seconds, reverse=True)
    for wave in (first, last):
        for name, outcome in finished_chapters(wave, plans, jobs):
            if isinstance(outcome, BaseException):
                print(f"notebooks/{name}.md failed:\n{outcome}", file=sys.stderr, flush=True)
                first_line = next((line for line in str(outcome).splitlines() if line.strip()), "")
                failures.append(f"notebooks/{name}.md failed ({type(outcome).__name__}: {first_line}); "
                                f"its traceback is printed above")
            else:
                print(f"executed notebooks/{name}.md -> {outcome[0]} in {outcome[1]:.0f} s", flush=True)
        if failures:  # the last chapters would read a missing or stale chapter
            break
    return failures


def positive_int(text: str) -> int:
    """An argparse type: an int >= 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("execute", help="execute the notebooks with papermill into book/")
    run.add_argument("--model", default=None,
                     help="class-conditional model of the class chapters (default: each chapter's own, e.g. the "
                          "in-regime rung of the similarity and head-tail chapters)")
    run.add_argument("--continuous-model", default="ising-dit",
                     help=f"continuous-condition model of {sorted(CONTINUOUS_CHAPTERS)}")
    run.add_argument("--device", default="cpu")
    run.add_argument("--samples", type=positive_int, default=None, help="n_samples, for chapters that sample")
    run.add_argument("--only", nargs="+", choices=CHAPTERS, default=CHAPTERS)
    run.add_argument("--jobs", type=positive_int, default=None,
                     help="chapters at once (default: 2 on a CPU with 2+ cores, one thread each; else 1)")
    sub.add_parser("check", help="fail if an executed notebook is missing or stale")
    glue = sub.add_parser("glue-diff", help="compare each chapter's glued values with those committed at --base")
    glue.add_argument("names", nargs="*", default=CHAPTERS, help="chapters (default: all)")
    glue.add_argument("--base", default="HEAD")
    args = parser.parse_args(argv)
    if args.command == "glue-diff":
        lines = [line for name in args.names for line in glue_differences(name, args.base)]
        print("\n".join(lines) or f"every glued value equals the one at {args.base}")
        return
    if args.command == "check":
        problems = stale_notebooks()
        print("\n".join(problems) or "all executed notebooks match their sources")
        sys.exit(1 if problems else 0)
    try:
        plans = chapter_parameters(args)
    except (ValueError, OSError, RuntimeError, TypeError) as error:  # before any chapter has run
        parser.error(str(error))
    jobs = args.jobs or default_jobs(args.device)
    print(f"executing {len(plans)} chapters, {jobs} at a time", flush=True)
    started = time.perf_counter()
    failures = execute_all(plans, jobs)
    if failures:
        sys.exit("\n".join(failures))
    print(f"all {len(plans)} chapters executed in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
