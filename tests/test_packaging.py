"""pyproject.toml declares what the package imports: a fresh `pip install .` gets a working package."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_ONLY = {"IPython", "nbformat", "myst_nb"}  # imported inside the functions that notebooks and tools/book.py call


def imported_modules() -> set[str]:
    """Top-level names of every module the package imports (at module level or inside functions)."""
    names = set()
    for path in (ROOT / "bottleneck_utils").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"bottleneck_utils"}


def normalized(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_package_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {normalized(r) for r in project["dependencies"]}
    book_extra = {normalized(r) for r in project["optional-dependencies"]["book"]} | {"ipython"}
    providers = packages_distributions()
    missing = []
    for module in sorted(imported_modules()):
        distributions = {name.lower().replace("_", "-") for name in providers.get(module, [module])}
        allowed = declared | (book_extra if module in NOTEBOOK_ONLY else set())
        if not distributions & allowed:
            missing.append(f"{module} (from {sorted(distributions)})")
    assert missing == [], f"imported but not declared in pyproject.toml: {missing}"
    assert "pandas" in declared
