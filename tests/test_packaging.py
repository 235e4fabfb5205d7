"""pyproject.toml declares what the package imports: a fresh `pip install .` gets a working package."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_ONLY = {"IPython", "nbformat", "myst_nb"}  # imported inside the functions that notebooks and tools/book.py call
OPTIONAL = {"torchdiffeq": "sit"}  # imported only where used, with a one-line install hint when absent: its extra


def imported_modules(folder: Path, pattern: str = "*.py") -> set[str]:
    """Top-level names of every module the files under ``folder`` import (at module level or inside functions)."""
    names = set()
    for path in folder.glob(pattern):
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
    package = ROOT / "bottleneck_utils"
    chapters_only = imported_modules(package / "chapters") - imported_modules(package / "organisms") - \
        imported_modules(package)  # the chapters wing is what the book imports: it may use the book extra
    for module in sorted(imported_modules(package, "**/*.py")):
        distributions = {name.lower().replace("_", "-") for name in providers.get(module, [module])}
        allowed = declared | (book_extra if module in NOTEBOOK_ONLY | chapters_only else set())
        if module in OPTIONAL:
            allowed |= {normalized(r) for r in project["optional-dependencies"][OPTIONAL[module]]}
        if not distributions & allowed:
            missing.append(f"{module} (from {sorted(distributions)})")
    assert missing == [], f"imported but not declared in pyproject.toml: {missing}"
    assert "pandas" in declared
