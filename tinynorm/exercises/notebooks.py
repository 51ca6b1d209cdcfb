r"""The exercise notebooks, generated from ``solutions.py`` so that the two never drift.

``python -m tinynorm exercises --student OUTDIR`` writes one notebook per exercise in
which every solution region (the lines between the ``BEGIN SOLUTION`` and
``END SOLUTION`` comments) is replaced by ``raise NotImplementedError(...)``;
``--solutions OUTDIR`` keeps the regions (and drops the marker comments). The
student notebooks committed in ``notebooks/exercises/`` are this command's output, and
a test regenerates them and compares the bytes.

Cells carry tags: ``setup`` (imports), ``exercise`` (the code to complete) and
``check`` (the call to ``check``). The grader (``grading.py``) runs every code cell
of a student's notebook except the ``check`` ones.

Written as plain JSON (nbformat 4.5), so that generating needs no Jupyter package;
cell ids are derived from the exercise, so the same input gives the same bytes.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import solutions
from .catalog import CONVENTIONS, EXERCISES, Exercise

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"

SETUP = "import numpy as np\n\nfrom tinynorm.exercises import check"

DOUBLE_SETUP = "from tinynorm.backend import namespace_of\nfrom tinynorm.exercises import check"

NORM_SETUP = """from typing import Any

import numpy as np

from tinynorm.autograd import Context, Function
from tinynorm.exercises import check, register
from tinynorm.nn.module import Parameter
from tinynorm.norms._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes
from tinynorm.backend import namespace_of
from tinynorm.ops import sum_to
from tinynorm.registry import Case, NormSpec, ParamSpec, sample
from tinynorm.tensor import Tensor, ones"""

HOW_TO = (
    "**How to work.** Derive the gradient on paper first, then fill in the code cell: replace each "
    "`raise NotImplementedError(...)` with your code. Run the check cell after every attempt. "
    "It prints *not implemented yet* until you start, then either PASSED or which gradient is wrong, "
    "where, by how much, and (when your answer matches a known common mistake) a hint naming it."
)


def replace_solutions(source: str, replace: Callable[[str, list[str]], list[str]]) -> str:
    """``source`` with each solution region (the lines between the ``BEGIN SOLUTION`` and
    ``END SOLUTION`` marker lines) replaced by ``replace(indent, lines)``: ``indent`` is the
    region's marker's, ``lines`` are the region's, and the markers themselves are dropped."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            if region is not None:
                raise ValueError(f"solution region opened twice:\n{source}")
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif marker == END:
            if region is None:
                raise ValueError(f"'{END}' without '{BEGIN}':\n{source}")
            out += replace(indent, region)
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise ValueError(f"solution region not closed:\n{source}")
    return "\n".join(out)


def keep_solution(indent: str, lines: list[str]) -> list[str]:
    """For ``replace_solutions``: the region's lines, as they are (the instructor's copy)."""
    return lines


def raise_stub(message: str) -> Callable[[str, list[str]], list[str]]:
    """For ``replace_solutions``: the region becomes ``raise NotImplementedError(message)``."""
    return lambda indent, lines: [f"{indent}raise NotImplementedError({message!r})"]


def stub_message(exercise: Exercise) -> str:
    """What the student's stub raises."""
    return f"exercise {exercise.number}: your code here"


def exercise_code(exercise: Exercise, names: tuple[str, ...], replace: Callable[[str, list[str]], list[str]]) -> str:
    """The source of ``names`` (objects of ``solutions.py``), each solution region replaced
    by ``replace(indent, lines)`` (see ``replace_solutions``)."""
    parts = [replace_solutions(inspect.getsource(getattr(solutions, name)), replace) for name in names]
    return "\n\n\n".join(parts)


def cell(kind: str, source: str, cell_id: str, tag: str | None = None) -> dict[str, Any]:
    """A notebook cell (nbformat 4.5) without outputs; ``tag`` goes into ``metadata.tags``."""
    new: dict[str, Any] = {
        "cell_type": kind,
        "id": cell_id,
        "metadata": {"tags": [tag]} if tag else {},
        "source": source.splitlines(keepends=True),
    }
    if kind == "code":
        new["execution_count"] = None
        new["outputs"] = []
    return new


def intro(exercise: Exercise, note: str = "") -> str:
    """The first cell: the title, ``note`` (e.g. who this copy is for), how to work."""
    text = f"# Exercise {exercise.number}: {exercise.title}\n\n"
    if note:
        text += f"{note}\n\n"
    text += HOW_TO
    return text + "\n\n" + CONVENTIONS if exercise.kind == "backward" else text


def task(exercise: Exercise) -> str:
    """The markdown cell that says what to derive and write."""
    if exercise.kind == "norm":
        return exercise.task
    return f"## The task\n\nWrite `{exercise.signature}`.\n\n{exercise.task}"


def setup_source(exercise: Exercise) -> str:
    """The imports the exercise's code cells need."""
    return {"norm": NORM_SETUP, "double": DOUBLE_SETUP}.get(exercise.kind, SETUP)


def check_source(exercise: Exercise) -> str:
    """The student's own check cell (printing the verdict, never raising unless strict)."""
    if exercise.kind == "norm":
        return f'register(my_norm_spec())\ncheck("{exercise.name}", {exercise.function})'
    return f'check("{exercise.name}", {exercise.function})'


def notebook_json(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """A whole notebook around ``cells``, as the JSON dictionary nbformat 4.5 describes."""
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_json(path: Path, nb: dict[str, Any]) -> Path:
    """Write a notebook (or any JSON) the same way every time: sorted keys, one-space indent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def notebook(exercise: Exercise, with_solutions: bool = False) -> dict[str, Any]:
    """The notebook of one exercise, as the JSON dictionary nbformat 4.5 describes."""
    n = exercise.number
    note = "*Instructor's copy, with the solutions.*" if with_solutions else ""
    solution = keep_solution if with_solutions else raise_stub(stub_message(exercise))
    cells = [
        cell("markdown", intro(exercise, note), f"ex{n}-intro"),
        cell("code", setup_source(exercise), f"ex{n}-setup", "setup"),
        cell("markdown", task(exercise), f"ex{n}-task"),
        cell("code", exercise_code(exercise, exercise.objects, solution), f"ex{n}-code", "exercise"),
    ]
    if exercise.spec_objects:
        cells.append(
            cell("code", exercise_code(exercise, exercise.spec_objects, keep_solution), f"ex{n}-spec", "exercise")
        )
    cells.append(cell("code", check_source(exercise), f"ex{n}-check", "check"))
    return notebook_json(cells)


def filename(exercise: Exercise) -> str:
    return f"{exercise.number:02d}_{exercise.name}.ipynb"


def write_notebooks(outdir: str | Path, with_solutions: bool = False) -> list[Path]:
    """Write every exercise's notebook into ``outdir`` (created if needed); return the paths."""
    outdir = Path(outdir)
    return [write_json(outdir / filename(e), notebook(e, with_solutions)) for e in EXERCISES.values()]
