"""A budget for the lessons, like the engine's line budget: each norm file in
``tinynorm/norms/`` stays a lesson a student can read.

* Its plain forward and backward (every module-level ``*_forward`` / ``*_backward``
  function) are at most ``LESSON_LINES`` code lines each, and the first of them starts
  within the first screenful after the module docstring.
* It imports nothing from ``tinynorm/kernels/`` but the package itself, and uses it only
  for the one choice ``kernels.pick(...)``.
* It holds none of the speed machinery (``out=`` buffers, in-place helpers, row blocks,
  NumPy's buffer size) and no timing figures: those live in ``tinynorm/kernels/`` and
  ``docs/performance.md``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

NORMS_DIR = Path(__file__).resolve().parents[1] / "tinynorm" / "norms"
LESSON_FILES = sorted(p for p in NORMS_DIR.glob("*.py") if not p.name.startswith("_"))

LESSON_LINES = 25
"""Code lines (not blank, comment or docstring) of one plain forward or backward."""

FIRST_SCREEN = 50
"""Lines after the module docstring within which the first lesson function starts."""

SPEED_MACHINERY = re.compile(r"\bout=|for_each_row_block|blocked_(forward|backward)|\b(mul|add|sub|tanh)_\(|setbufsize")
TIMING = re.compile(r"\d\s*(ms|us|µs|ns)\b|page faults|pull request|\d+(\.\d+)?x (faster|slower)", re.IGNORECASE)


def _code_lines(node: ast.FunctionDef, source_lines: list[str]) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]  # the docstring
    if not body:
        return 0
    lines = source_lines[body[0].lineno - 1 : node.end_lineno]
    return sum(1 for line in lines if line.strip() and not line.strip().startswith("#"))


def _lesson_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.endswith(("_forward", "_backward"))
    ]


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.name)
def test_each_plain_forward_and_backward_fits_the_budget(path):
    source = path.read_text()
    tree = ast.parse(source)
    lessons = _lesson_functions(tree)
    assert any(f.name.endswith("_forward") for f in lessons), f"{path.name}: no plain *_forward function"
    assert any(f.name.endswith("_backward") for f in lessons), f"{path.name}: no plain *_backward function"
    lines = source.splitlines()
    for fn in lessons:
        n = _code_lines(fn, lines)
        assert n <= LESSON_LINES, f"{path.name}: {fn.name} has {n} code lines (budget {LESSON_LINES})"


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.name)
def test_the_formulas_come_within_the_first_screenful(path):
    tree = ast.parse(path.read_text())
    docstring_end = tree.body[0].end_lineno
    first = min(fn.lineno for fn in _lesson_functions(tree))
    assert first - docstring_end <= FIRST_SCREEN, (
        f"{path.name}: the first plain formula starts {first - docstring_end} lines after the docstring"
    )


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.name)
def test_a_lesson_uses_the_kernels_only_to_pick_one(path):
    source = path.read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and "kernels" in node.module:
            pytest.fail(f"{path.name}: imports from {node.module}; a lesson imports only the kernels package")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "kernels":
            assert node.attr == "pick", f"{path.name}: uses kernels.{node.attr}; a lesson only calls kernels.pick"


@pytest.mark.parametrize("path", LESSON_FILES, ids=lambda p: p.name)
def test_a_lesson_holds_no_speed_machinery_and_no_timings(path):
    source = path.read_text()
    for number, line in enumerate(source.splitlines(), 1):
        assert not SPEED_MACHINERY.search(line), f"{path.name}:{number}: speed machinery in a lesson: {line.strip()}"
        assert not TIMING.search(line), f"{path.name}:{number}: a measurement in a lesson: {line.strip()}"


def test_the_budget_test_sees_every_norm_file():
    assert len(LESSON_FILES) >= 10
