"""Sphinx extension: serve MathJax from the built book, so equations render without network access.

MathJax 2.7 comes from the ``jupyter-server-mathjax`` wheel (requirements-nodeps.txt), which ships it as package
data. After the HTML build, its ``static`` folder is copied to ``_build/html/_static/mathjax``; ``_config.yml``
points ``mathjax_path`` there (relative to ``_static``) and selects the STIX-Web font, the one the wheel ships.
"""

from __future__ import annotations

import shutil
from importlib.util import find_spec
from pathlib import Path


def mathjax_dir() -> Path:
    """The folder holding ``MathJax.js`` in the installed ``jupyter_server_mathjax`` package.

    The package is located, not imported: importing it needs jupyter_server, which the book does not install.
    """
    spec = find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("jupyter_server_mathjax is not installed: pip install --no-deps -r requirements-nodeps.txt")
    folder = Path(spec.submodule_search_locations[0]) / "static"
    if not (folder / "MathJax.js").is_file():
        raise FileNotFoundError(f"{folder} has no MathJax.js: pip install --no-deps -r requirements-nodeps.txt")
    return folder


def copy_mathjax(app, exception) -> None:
    """``build-finished``: copies MathJax into the HTML output (once; an existing copy is kept)."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(mathjax_dir(), target, dirs_exist_ok=True)


def setup(app):
    mathjax_dir()  # fail at the start of the build, not after it
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
