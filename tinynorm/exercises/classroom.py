r"""The exercises as assignments for two autograders: nbgrader and Otter-Grader.

One assignment per exercise, named like its notebook (``04_layernorm``), so that a
course can hand them out one at a time:

* **nbgrader** (JupyterHub courses): ``python -m tinynorm exercises --nbgrader COURSE``
  writes ``COURSE/source/04_layernorm/04_layernorm.ipynb`` and the six others, with
  nbgrader's cell metadata (``metadata.nbgrader``) and each answer between
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``, and ``COURSE/nbgrader_config.py``
  unless the course has one. ``nbgrader generate_assignment 04_layernorm`` then makes the
  student version, and ``nbgrader autograde`` grades the submissions.
* **Otter-Grader** (Gradescope, or ``otter run`` anywhere): ``python -m tinynorm exercises
  --otter DIR`` writes one master notebook per exercise, ``DIR/04_layernorm/04_layernorm.ipynb``,
  in Otter's format (``# ASSIGNMENT CONFIG``, then ``# BEGIN QUESTION``, ``# BEGIN SOLUTION``
  and ``# BEGIN TESTS`` raw cells), and the ``requirements.txt`` its autograder installs.
  ``otter assign`` turns a master into the student notebook and the autograder zip.

In both, every gradient is graded on its own (``points``): ``dx`` is worth 2 points and
each parameter's gradient 1, so a student whose ``dweight`` is right and ``dx`` wrong
gets the points of ``dweight``. Exercise 7, a whole norm, is graded whole (3 points).
Each graded test is one call of the checker in strict mode,
``check("layernorm", layernorm_backward, gradient="dx", strict=True)``: it passes, or
raises an ``AssertionError`` whose message is the checker's verdict (the wrong gradient,
where, by how much, and the named mistake with its hint), which is what the student's
feedback shows. Otter's tests are exception-based for that reason (its other format
compares printed values with those of the master notebook).

The notebooks are plain JSON, generated from ``solutions.py`` like the student notebooks
(``notebooks.py``), so that the three formats say the same thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .catalog import EXERCISES, Exercise
from .notebooks import (
    cell,
    check_source,
    exercise_code,
    intro,
    keep_solution,
    notebook_json,
    setup_source,
    stub_message,
    task,
    write_json,
)


# ---- what each gradient is worth --------------------------------------------------------------
def points(exercise: Exercise) -> dict[str | None, int]:
    """The graded parts of an exercise and their points: ``dx`` 2, every other gradient 1;
    exercises 7 and 8 (checked whole, by the generic gradchecks) are one part, ``None``, of 3."""
    if exercise.kind != "backward":
        return {None: 3}
    return {g: 2 if g == "dx" else 1 for g in exercise.gradients}


def describe_points(exercise: Exercise) -> str:
    """``"dx 2 points, dweight 1, dbias 1: 4 in all"``, for the notebooks' text."""
    parts = points(exercise)
    if None in parts:
        return f"{parts[None]} points, for the whole " + ("norm" if exercise.kind == "norm" else "exercise")
    listed = ", ".join(f"{g} {p}" + (" points" if i == 0 else "") for i, (g, p) in enumerate(parts.items()))
    return f"{listed}: {sum(parts.values())} in all"


def grading_call(exercise: Exercise, gradient: str | None) -> str:
    """The statement that grades one part: strict, the check raises with its verdict unless
    that part is right. A statement, not an expression: nbgrader would read the value of a
    cell's last expression as a partial score."""
    which = f', gradient="{gradient}"' if gradient else ""
    return f'assert check("{exercise.name}", {exercise.function}{which}, strict=True)'


def assignment_name(exercise: Exercise) -> str:
    """``"04_layernorm"``: the assignment, its folder and its notebook's stem."""
    return f"{exercise.number:02d}_{exercise.name}"


def _part_id(exercise: Exercise, gradient: str | None) -> str:
    return f"{exercise.name}_{gradient or 'norm'}"


# ---- nbgrader ------------------------------------------------------------------------------------
NBGRADER_SOLUTION = ("### BEGIN SOLUTION", "### END SOLUTION")

NBGRADER_CONFIG = '''"""nbgrader's configuration for this course, written by `python -m tinynorm exercises --nbgrader`.

nbgrader reads it from the directory its commands run in: run them from this folder.
The defaults do the rest: assignments in source/, students' work in submitted/, the
gradebook in gradebook.db. Edit freely; tinynorm never overwrites this file.
"""

c = get_config()  # noqa: F821 (nbgrader defines it)

# The course's name on JupyterHub, used by `nbgrader release_assignment` and `nbgrader collect`.
c.CourseDirectory.course_id = {course_id!r}
'''


def _nbgrader(kind: str, source: str, exercise: Exercise, part: str, **flags: Any) -> dict[str, Any]:
    """A cell with nbgrader's metadata (schema 3): ``flags`` sets solution, grade, locked, points."""
    new = cell(kind, source, f"ex{exercise.number}-{part}")
    meta = {"grade": False, "locked": False, "solution": False, "task": False} | flags
    new["metadata"]["nbgrader"] = meta | {"grade_id": f"{exercise.name}_{part}", "schema_version": 3}
    return new


def nbgrader_notebook(exercise: Exercise) -> dict[str, Any]:
    """The source notebook of one exercise for nbgrader, the solutions inside markers.

    The instructions and the imports are locked (nbgrader restores them before grading);
    the answer cell is a solution cell; the student's own check cell is a plain cell; then
    one locked grade cell per part, each worth its ``points``.
    """
    begin, end = NBGRADER_SOLUTION
    marked = exercise_code(exercise, exercise.objects, lambda indent, lines: [indent + begin, *lines, indent + end])
    note = (
        f"*Graded by nbgrader, each gradient on its own ({describe_points(exercise)}). The grading cells "
        "at the end run the same check, strictly: a wrong answer there shows the verdict of your check cell.*"
    )
    cells = [
        _nbgrader("markdown", intro(exercise, note), exercise, "intro", locked=True),
        _nbgrader("code", setup_source(exercise), exercise, "setup", locked=True),
        _nbgrader("markdown", task(exercise), exercise, "task", locked=True),
        _nbgrader("code", marked, exercise, "code", solution=True),
    ]
    if exercise.spec_objects:  # exercise 7's NormSpec: shown whole, the student may change it
        spec = exercise_code(exercise, exercise.spec_objects, keep_solution)
        cells.append(cell("code", spec, f"ex{exercise.number}-spec", "exercise"))
    cells.append(cell("code", check_source(exercise), f"ex{exercise.number}-check", "check"))
    grading = "## Grading\n\nEach cell below grades one part of your answer; do not change them."
    cells.append(_nbgrader("markdown", grading, exercise, "grading", locked=True))
    for gradient, worth in points(exercise).items():
        part = gradient or "norm"
        source = grading_call(exercise, gradient)
        cells.append(_nbgrader("code", source, exercise, part, grade=True, locked=True, points=worth))
    return notebook_json(cells)


def write_nbgrader_course(course_dir: str | Path) -> list[Path]:
    """Write every exercise as an nbgrader source assignment under ``course_dir/source/``,
    and ``course_dir/nbgrader_config.py`` unless the course already has one; return the
    notebooks written."""
    course_dir = Path(course_dir)
    paths = []
    for exercise in EXERCISES.values():
        name = assignment_name(exercise)
        paths.append(write_json(course_dir / "source" / name / f"{name}.ipynb", nbgrader_notebook(exercise)))
    config = course_dir / "nbgrader_config.py"
    if not config.exists():
        config.write_text(NBGRADER_CONFIG.format(course_id=course_dir.resolve().name), encoding="utf-8")
    return paths


# ---- Otter-Grader ----------------------------------------------------------------------------------
OTTER_REQUIREMENTS = """\
# What Otter's autograder (on Gradescope) installs before grading. If your copy of
# tinynorm is not on the package index, name it as pip would: a git URL or a wheel's path.
tinynorm
"""


def _otter_stub(exercise: Exercise):
    """The answer's region for Otter: the solution (kept in the autograder's copy, dropped
    from the student's) and a prompt, the stub, that only the student's copy keeps."""
    stub = f"raise NotImplementedError({stub_message(exercise)!r})"

    def replace(indent: str, lines: list[str]) -> list[str]:
        return [
            f"{indent}# BEGIN SOLUTION NO PROMPT",
            *lines,
            f"{indent}# END SOLUTION",
            f'{indent}""" # BEGIN PROMPT',
            f"{indent}{stub}",
            f'{indent}""" # END PROMPT',
        ]

    return replace


def _otter_test(exercise: Exercise, gradient: str | None, worth: int) -> str:
    """One exception-based test: a function whose arguments Otter takes from the
    submission's namespace, and its call (for ``otter assign``'s run on the solutions)."""
    name = f"test_{gradient or exercise.name}"
    return (
        f'""" # BEGIN TEST CONFIG\npoints: {worth}\n""" # END TEST CONFIG\n'
        f"def {name}({exercise.function}):\n"
        "    from tinynorm.exercises import check\n\n"
        f"    {grading_call(exercise, gradient)}\n\n\n"
        f"{name}({exercise.function})"
    )


def otter_notebook(exercise: Exercise) -> dict[str, Any]:
    """The master notebook of one exercise for ``otter assign``: one question, its
    answer between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` cells, one test per part."""
    name = assignment_name(exercise)
    config = (
        "# ASSIGNMENT CONFIG\n"
        f"name: {name}\n"
        "requirements: requirements.txt\n"
        "export_cell:\n  pdf: false\n"
        "generate: true\n"
        "tests:\n  ok_format: false\n"
    )
    note = (
        f"*Graded by Otter-Grader, each gradient on its own ({describe_points(exercise)}). "
        f'`grader.check("{exercise.name}")` runs the tests: a failing one shows the checker\'s verdict.*'
    )
    n = exercise.number
    cells = [
        cell("raw", config, f"ex{n}-config"),
        cell("markdown", intro(exercise, note), f"ex{n}-intro"),
        cell("code", setup_source(exercise), f"ex{n}-setup"),
        cell("raw", f"# BEGIN QUESTION\nname: {exercise.name}", f"ex{n}-question"),
        cell("markdown", task(exercise), f"ex{n}-task"),
        cell("raw", "# BEGIN SOLUTION", f"ex{n}-solution"),
        cell("code", exercise_code(exercise, exercise.objects, _otter_stub(exercise)), f"ex{n}-code"),
    ]
    if exercise.spec_objects:
        cells.append(cell("code", exercise_code(exercise, exercise.spec_objects, keep_solution), f"ex{n}-spec"))
    cells += [cell("raw", "# END SOLUTION", f"ex{n}-end-solution"), cell("raw", "# BEGIN TESTS", f"ex{n}-tests")]
    for gradient, worth in points(exercise).items():
        cells.append(cell("code", _otter_test(exercise, gradient, worth), f"ex{n}-test-{gradient or 'norm'}"))
    cells += [cell("raw", "# END TESTS", f"ex{n}-end-tests"), cell("raw", "# END QUESTION", f"ex{n}-end-question")]
    return notebook_json(cells)


def write_otter_masters(outdir: str | Path) -> list[Path]:
    """Write every exercise's Otter master notebook, ``outdir/<name>/<name>.ipynb``, with
    the ``requirements.txt`` its config names; return the notebooks written."""
    outdir = Path(outdir)
    paths = []
    for exercise in EXERCISES.values():
        name = assignment_name(exercise)
        paths.append(write_json(outdir / name / f"{name}.ipynb", otter_notebook(exercise)))
        (outdir / name / "requirements.txt").write_text(OTTER_REQUIREMENTS, encoding="utf-8")
    return paths
