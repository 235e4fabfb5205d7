"""The package's three wings: the pipeline imports no organism or chapter, organisms import no chapter, and no
module imports one of the package's own modules inside a function (where a cycle would hide)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "bottleneck_utils"
WINGS = ("organisms", "chapters")  # below the pipeline, in the order the arrows point: chapters -> organisms -> pipeline


def wing_of(module: str) -> str:
    """'pipeline', 'organisms' or 'chapters' for a dotted module name under bottleneck_utils."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in WINGS else "pipeline"


def package_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported bottleneck_utils module, inside a function?) for every import of the package in ``path``."""
    tree = ast.parse(path.read_text())
    inner = {id(node) for function in ast.walk(tree) if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
             for node in ast.walk(function)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bottleneck_utils"):
            targets = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(target, id(node) in inner) for target in targets]
        elif isinstance(node, ast.Import):
            found += [(a.name, id(node) in inner) for a in node.names if a.name.startswith("bottleneck_utils")]
    return found


def module_name(path: Path) -> str:
    return ".".join(("bottleneck_utils", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


MODULES = sorted(PACKAGE.rglob("*.py"))
RANK = {"pipeline": 0, "organisms": 1, "chapters": 2}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_and_sit_at_the_top(path):
    importer = wing_of(module_name(path))
    for target, in_function in package_imports(path):
        assert RANK[wing_of(target)] <= RANK[importer], f"{module_name(path)} ({importer}) imports {target}"
        assert not in_function, f"{module_name(path)} imports {target} inside a function"


def test_the_check_fails_on_an_upward_import(tmp_path):
    """The same walk flags a pipeline module that imports a chapter, and a function-level import."""
    bad = tmp_path / "bad.py"
    bad.write_text("from bottleneck_utils.chapters import report\n\ndef f():\n    from bottleneck_utils import stats\n")
    found = package_imports(bad)
    assert ("bottleneck_utils.chapters.report", False) in found and ("bottleneck_utils.stats", True) in found
    assert RANK[wing_of("bottleneck_utils.chapters.report")] > RANK["pipeline"]


def test_no_import_cycles():
    graph = {module_name(p): {t for t, _ in package_imports(p)} for p in MODULES}
    graph = {m: {t if t in graph else t.rsplit(".", 1)[0] for t in targets} & set(graph) for m, targets in graph.items()}
    state = {}

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join(trail + [module])}"
        state[module] = "open"
        for target in sorted(graph[module]):
            if target != module and not target.endswith("__init__"):
                visit(target, trail + [module])
        state[module] = "done"

    for module in graph:
        visit(module, [])
