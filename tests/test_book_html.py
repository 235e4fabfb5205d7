"""Browser check of the built book: headless Chromium loads each chapter; figures, glue and verdicts rendered.

Needs the HTML (`make html`) and Debian's `chromium`; skipped, with the reason, when either is missing.
Screenshots of each page are written to _build/screenshots/ for a person to look at.
"""

import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from bottleneck_utils.chapters import report
from tools import book

HTML = report.ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"]
CHAPTERS_WITH_FIGURES = [name for name in book.CHAPTERS if name != "reproducibility"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(not (HTML / "book" / "similarity.html").is_file(), reason="the book is not built (make html)"),
]


class PageSummary(HTMLParser):
    """Collects the <img> sources, the text, and the header cells of each table."""

    def __init__(self):
        super().__init__()
        self.images, self.text, self.table_headers, self._in_th = [], [], [], False
        self.order = []  # ("img", src) and ("table", first header) in document order
        self.rendered_math = 0  # elements MathJax created (MathJax 2: class MathJax or MathJax_Display)
        self._in_title = False  # the <title> keeps its TeX source: browsers show it as plain text

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
            self.order.append(("img", attrs.get("src", "")))
        if tag == "table":
            self.order.append(("table", None))
        if tag == "span" and {"MathJax", "MathJax_CHTML", "MathJax_SVG"} & set((attrs.get("class") or "").split()):
            self.rendered_math += 1
        self._in_th = tag == "th"
        self._in_title = tag == "title" or self._in_title

    def handle_endtag(self, tag):
        self._in_th = False if tag == "th" else self._in_th
        self._in_title = False if tag == "title" else self._in_title

    def handle_data(self, data):
        if self._in_title:
            return
        self.text.append(data)
        if self._in_th:
            self.table_headers.append(data.strip())
            if self.order and self.order[-1] == ("table", None):
                self.order[-1] = ("table", data.strip())


def chromium(*arguments, tmp_path):
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.parametrize("name", book.CHAPTERS)
def test_chapter_renders_in_a_browser(name, tmp_path):
    page = HTML / "book" / f"{name}.html"
    summary = PageSummary()
    # the virtual-time budget lets MathJax (served from _static, no network) typeset before the DOM is dumped
    summary.feed(chromium("--virtual-time-budget=20000", "--dump-dom", page.as_uri(), tmp_path=tmp_path))
    text = " ".join(summary.text)
    assert "Figure size" not in text  # a figure that rendered as its text repr instead of an image
    assert "{glue" not in text and "glue:text" not in text  # a glue key that was not replaced
    if name in CHAPTERS_WITH_FIGURES:
        figures = [src for src in summary.images if src and "logo" not in src]
        assert figures and all(src.strip() for src in figures)
        assert "Verdict" in text and "verdict" in summary.table_headers
        # the verdict table comes first: before any figure and before any other table
        first_table = next(index for index, item in enumerate(summary.order) if item[0] == "table")
        assert all(kind != "img" or "logo" in src for kind, src in summary.order[:first_table])
        table_starts = [header for kind, header in summary.order if kind == "table"]
        assert table_starts[0] == "claim"
        assert summary.rendered_math > 0 and "\\(" not in text  # equations typeset, none left raw
    shots = report.ROOT / "_build" / "screenshots"
    shots.mkdir(exist_ok=True)
    chromium(f"--screenshot={shots / f'{name}.png'}", "--window-size=1280,2400", page.as_uri(), tmp_path=tmp_path)
    assert (shots / f"{name}.png").stat().st_size > 10_000
