"""The README's benchmark figures name the RESULTS.md rows they come from, and those rows
are ones the benchmarks write: a figure cannot point at a row that no run produces."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import run  # noqa: E402

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _figures() -> list[list[str]]:
    """The rows of the README's benchmark table: what, figure, where from."""
    section = re.search(r"^## Benchmarks\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert section, "README has no '## Benchmarks' section"
    rows = [line for line in section.group(1).splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]
    return [c for c in cells[1:] if c[0] != "what"]  # past the header


def test_every_benchmark_figure_names_a_section_and_row_a_run_writes() -> None:
    figures = _figures()
    assert len(figures) >= 5
    areas = {*run.FOUNDATION, *run.areas()}
    sources = "\n".join(p.read_text() for p in (ROOT / "benchmarks").glob("*.py"))
    for what, _figure, where in figures:
        for cited in where.split("; "):
            section = re.match(r"`([a-z_]+)(?: at [\d,]+ customers)?`", cited)
            assert section and section.group(1) in areas, (what, cited)
            for name in re.findall(r'"([^"]+)"', cited):
                # the row's name, as the benchmark's code writes it (up to a placeholder)
                start = re.split(r"\{", name)[0]
                assert start in sources, (what, name)


def test_a_figure_is_a_number_or_says_it_is_yet_to_be_measured() -> None:
    for what, figure, _ in _figures():
        # a figure leads with its number and unit; what follows says what it is made of
        measured = re.match(r"^[\d.,]+ (s|ms|x|GB|MB)(?![\w])", figure)
        assert measured or figure.startswith(("to be measured", "to be re-measured")), what
