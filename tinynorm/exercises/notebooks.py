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
from pathlib import Path
from typing import Any

from . import solutions
from .catalog import CONVENTIONS, EXERCISES, Exercise

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"

SETUP = "import numpy as np\n\nfrom tinynorm.exercises import check"

NORM_SETUP = """from typing import Any

import numpy as np

from tinynorm.autograd import Context, Function
from tinynorm.exercises import check, register
from tinynorm.nn.module import Parameter
from tinynorm.norms._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes
from tinynorm.ops import namespace_of, sum_to
from tinynorm.registry import Case, NormSpec, ParamSpec, sample
from tinynorm.tensor import Tensor, ones"""

HOW_TO = (
    "**How to work.** Derive the gradient on paper first, then fill in the code cell: replace each "
    "`raise NotImplementedError(...)` with your code. Run the check cell after every attempt. "
    "It prints *not implemented yet* until you start, then either PASSED or which gradient is wrong, "
    "where, by how much, and (when your answer matches a known common mistake) a hint naming it."
)


def strip_solutions(source: str, stub: str | None) -> str:
    """``source`` with each solution region replaced by ``raise NotImplementedError(stub)``
    (indented like the region's marker), or, when ``stub`` is None, with the markers removed."""
    out: list[str] = []
    inside = False
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"solution region opened twice:\n{source}")
            inside = True
            if stub is not None:
                indent = line[: len(line) - len(line.lstrip())]
                out.append(f"{indent}raise NotImplementedError({stub!r})")
        elif marker == END:
            if not inside:
                raise ValueError(f"'{END}' without '{BEGIN}':\n{source}")
            inside = False
        elif not inside or stub is None:
            out.append(line)
    if inside:
        raise ValueError(f"solution region not closed:\n{source}")
    return "\n".join(out)


def _code(names: tuple[str, ...], exercise: Exercise, with_solutions: bool) -> str:
    stub = None if with_solutions else f"exercise {exercise.number}: your code here"
    parts = [strip_solutions(inspect.getsource(getattr(solutions, name)), stub) for name in names]
    return "\n\n\n".join(parts)


def _lesson_imports(exercise: Exercise) -> str:
    """Import lines for the package functions a model answer calls (the lessons of
    ``tinynorm/norms/``): the instructor's copy runs, the student's copy needs none."""
    used: dict[str, set[str]] = {}
    for name in exercise.objects:
        for called in getattr(solutions, name).__code__.co_names:
            fn = getattr(solutions, called, None)
            if inspect.isfunction(fn) and called not in exercise.objects and fn.__module__ != solutions.__name__:
                used.setdefault(fn.__module__, set()).add(called)
    return "".join(f"\nfrom {module} import {', '.join(sorted(names))}" for module, names in sorted(used.items()))


def _cell(kind: str, source: str, cell_id: str, tag: str | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {
        "cell_type": kind,
        "id": cell_id,
        "metadata": {"tags": [tag]} if tag else {},
        "source": source.splitlines(keepends=True),
    }
    if kind == "code":
        cell["execution_count"] = None
        cell["outputs"] = []
    return cell


def notebook(exercise: Exercise, with_solutions: bool = False) -> dict[str, Any]:
    """The notebook of one exercise, as the JSON dictionary nbformat 4.5 describes."""
    n = exercise.number
    title = f"# Exercise {n}: {exercise.title}\n\n"
    if with_solutions:
        title += "*Instructor's copy, with the solutions.*\n\n"
    if exercise.kind == "norm":
        intro = title + HOW_TO
        task = exercise.task
        check_source = f'register(my_norm_spec())\ncheck("{exercise.name}", {exercise.function})'
        setup = NORM_SETUP
    else:
        intro = title + HOW_TO + "\n\n" + CONVENTIONS
        task = f"## The task\n\nWrite `{exercise.signature}`.\n\n{exercise.task}"
        check_source = f'check("{exercise.name}", {exercise.function})'
        setup = SETUP + (_lesson_imports(exercise) if with_solutions else "")
    cells = [
        _cell("markdown", intro, f"ex{n}-intro"),
        _cell("code", setup, f"ex{n}-setup", "setup"),
        _cell("markdown", task, f"ex{n}-task"),
        _cell("code", _code(exercise.objects, exercise, with_solutions), f"ex{n}-code", "exercise"),
    ]
    if exercise.spec_objects:
        cells.append(_cell("code", _code(exercise.spec_objects, exercise, True), f"ex{n}-spec", "exercise"))
    cells.append(_cell("code", check_source, f"ex{n}-check", "check"))
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def filename(exercise: Exercise) -> str:
    return f"{exercise.number:02d}_{exercise.name}.ipynb"


def write_notebooks(outdir: str | Path, with_solutions: bool = False) -> list[Path]:
    """Write every exercise's notebook into ``outdir`` (created if needed); return the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for exercise in EXERCISES.values():
        path = outdir / filename(exercise)
        text = json.dumps(notebook(exercise, with_solutions), indent=1, sort_keys=True, ensure_ascii=False)
        path.write_text(text + "\n", encoding="utf-8")
        paths.append(path)
    return paths
