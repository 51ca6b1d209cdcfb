r"""Finding a student's answers, for the grader (``tests/test_exercises.py``).

``TINYNORM_STUDENT`` names what to grade: a ``.py`` file, a notebook (``.ipynb``), or a
folder of them. Each exercise's answer is looked up by the name of its function
(``layernorm_backward``, ``my_norm_spec``, ...). Unset, the model answers in
``solutions.py`` are graded, so the grading tests pass in CI; because a grade of
"passed" then says nothing about a student, every grading run ends with
:func:`report`: whose answers were graded, and a warning for each set variable whose
name looks like a misspelt ``TINYNORM_STUDENT`` (``TINYNORM_STUDENTS``, ``tinynorm_student``).
"""

from __future__ import annotations

import difflib
import json
import os
import runpy
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import solutions

ENV = "TINYNORM_STUDENT"
SIMILAR = 0.8  # difflib's ratio above which a name counts as a misspelling of ENV (TINYNORM_STRICT is 0.77)


def load_answers(path: str | Path) -> dict[str, Any]:
    """The names a student's file (or every file of a folder) defines."""
    path = Path(path)
    if path.is_dir():
        namespace: dict[str, Any] = {}
        for child in sorted(path.iterdir()):
            if child.suffix in (".py", ".ipynb"):
                namespace.update(load_answers(child))
        return namespace
    if path.suffix == ".ipynb":
        return _run_notebook(path)
    if path.suffix == ".py":
        return runpy.run_path(str(path), run_name="student_answers")
    raise ValueError(f"{ENV}: expected a .py file, an .ipynb notebook or a folder, got {str(path)!r}")


def _run_notebook(path: Path) -> dict[str, Any]:
    """Run the notebook's code cells, except those tagged ``check``, in one namespace.

    IPython-only lines (``%magic``, ``!shell``) are skipped; a cell that raises is
    reported as a warning and the next cells still run, as they would in Jupyter.
    """
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    namespace: dict[str, Any] = {"__name__": "student_answers"}
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code" or "check" in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            exec(compile("\n".join(lines), f"{path.name}, cell {i}", "exec"), namespace)
        except Exception as err:  # the student's cell; the grade will say what is missing
            warnings.warn(f"{path.name}, cell {i} raised {type(err).__name__}: {err}", stacklevel=2)
    return namespace


def answers() -> dict[str, Any]:
    """What ``TINYNORM_STUDENT`` points to, or the model answers when it is unset."""
    path = os.environ.get(ENV)
    if not path:
        return vars(solutions)
    if not Path(path).exists():
        raise FileNotFoundError(f"{ENV}={path!r}: no such file or folder")
    return load_answers(path)


def whose_answers(environ: Mapping[str, str] | None = None) -> str:
    """One line saying what :func:`answers` grades: the file or folder, or the model answers."""
    path = (os.environ if environ is None else environ).get(ENV)
    if path is None:
        return f"tinynorm exercises: grading the model answers ({ENV} is not set)"
    if not path:
        return f"tinynorm exercises: grading the model answers ({ENV} is empty)"
    return f"tinynorm exercises: grading {path}"


def similar_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """The set environment variables whose names look like ``TINYNORM_STUDENT`` misspelt:
    other capitals, a letter more, fewer or swapped."""
    environ = os.environ if environ is None else environ
    return sorted(
        name for name in environ if name != ENV and difflib.SequenceMatcher(None, name.upper(), ENV).ratio() >= SIMILAR
    )


def report(environ: Mapping[str, str] | None = None) -> list[str]:
    """The lines a grading run prints: :func:`whose_answers`, then a warning per misspelling."""
    environ = os.environ if environ is None else environ
    lines = [whose_answers(environ)]
    for name in similar_variables(environ):
        lines.append(f"warning: {name} is set, but the grader reads {ENV}; did you mean {ENV}={environ[name]!r}?")
    return lines
