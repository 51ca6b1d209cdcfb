"""The exercises in two autograders, nbgrader and Otter-Grader (``tinynorm/exercises/classroom.py``).

The first tests read the generated notebooks and run their grading code in-process. The
end-to-end tests run the real tools, offline, on three submissions of exercise 4
(LayerNorm): the right answer, the classic mistake of dropping the mean term, and the
untouched stub. They must score full, partial and zero marks, and the feedback must name
the mistake. They are skipped where nbgrader or otter-grader is not installed (the
``classroom`` extra, which CI installs), and take about a minute each (every nbgrader and
otter command starts a Python that imports Jupyter's whole server stack): deselect them
with ``-m "not classroom"``.
"""

from __future__ import annotations

import ast
import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinynorm.cli import main
from tinynorm.exercises import EXERCISES, ExerciseFailedError, check, solutions, unregister
from tinynorm.exercises.classroom import (
    NBGRADER_SOLUTION,
    assignment_name,
    nbgrader_notebook,
    otter_notebook,
    points,
    write_nbgrader_course,
)
from tinynorm.exercises.notebooks import exercise_code, keep_solution
from tinynorm.registry import NORMS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # nbgrader and otter are installed beside this Python
INSTRUCTORS = ROOT / "docs" / "instructors.md"

# Two students' answers to exercise 4, written as students write them (not derived from
# solutions.py): the right one, and the same with the mean term of dx dropped.
RIGHT = """
def layernorm_backward(dy, x, weight, bias, eps):
    n = x.shape[-1]
    centered = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt((centered**2).sum(axis=-1, keepdims=True) / n + eps)
    xhat = centered * rstd
    g = dy * weight
    dx = rstd * (g - g.sum(axis=-1, keepdims=True) / n - xhat * (g * xhat).sum(axis=-1, keepdims=True) / n)
    rows = tuple(range(x.ndim - 1))
    return dx, (dy * xhat).sum(axis=rows), dy.sum(axis=rows)
"""
DROPPED_MEAN_TERM = RIGHT.replace("g - g.sum(axis=-1, keepdims=True) / n - xhat", "g - xhat")
STUDENTS = {"alice": RIGHT, "bob": DROPPED_MEAN_TERM, "carol": None}  # carol hands in the stub
EXPECTED = {"alice": 4.0, "bob": 2.0, "carol": 0.0}  # of 4: dx 2 points, dweight 1, dbias 1
HINT = "hint (dropped mean term)"
GRADIENTS = ("dx", "dweight", "dbias")


def _answer(code: str):
    namespace = {"np": np}
    exec(code, namespace)
    return namespace["layernorm_backward"]


def _stub(*args):
    raise NotImplementedError("exercise 4: your code here")


# ---- grading one gradient alone ------------------------------------------------------------------
def test_the_planted_answers_are_right_and_wrong_as_intended():
    assert check("layernorm", _answer(RIGHT), quiet=True)
    result = check("layernorm", _answer(DROPPED_MEAN_TERM), quiet=True)
    assert [v.name for v in result.wrong] == ["dx"] and result.mistakes == {"dropped_mean_term"}


@pytest.mark.parametrize(("gradient", "passes"), [("dx", False), ("dweight", True), ("dbias", True)])
def test_check_grades_one_gradient_alone(gradient, passes):
    result = check("layernorm", _answer(DROPPED_MEAN_TERM), gradient=gradient, quiet=True)
    assert bool(result) is passes
    if passes:
        assert result.message.startswith(f"[layernorm] {gradient} PASSED")
    else:
        assert HINT in result.message and "right: dweight, dbias" in result.message


def test_a_passing_gradient_says_which_others_are_wrong():
    result = check("layernorm", _answer(DROPPED_MEAN_TERM), gradient="dbias", quiet=True)
    expected = "[layernorm] dbias PASSED: it agrees with finite differences in every case (wrong: dx)."
    assert result.message == expected


@pytest.mark.parametrize("gradient", ["dx", "dweight", "dbias"])
def test_a_stub_fails_every_gradient(gradient):
    result = check("layernorm", _stub, gradient=gradient, quiet=True)
    assert not result and "not implemented yet" in result.message


def test_a_strict_failure_raises_the_verdict_and_prints_it_only_there(capsys):
    with pytest.raises(ExerciseFailedError, match=re.escape(HINT)) as raised:
        check("layernorm", _answer(DROPPED_MEAN_TERM), gradient="dx", strict=True)
    assert isinstance(raised.value, AssertionError)
    assert capsys.readouterr().out == ""
    assert check("layernorm", _answer(DROPPED_MEAN_TERM), gradient="dweight", strict=True)
    assert "dweight PASSED" in capsys.readouterr().out


@pytest.mark.parametrize(("name", "gradient"), [("layernorm", "dalpha"), ("layernorm", "x"), ("own_norm", "dx")])
def test_a_gradient_the_exercise_does_not_have_is_refused(name, gradient):
    with pytest.raises(ValueError, match=f"got '{gradient}'"):
        check(name, solutions.layernorm_backward, gradient=gradient)


# ---- points ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXERCISES)
def test_every_gradient_earns_its_own_points(name):
    exercise = EXERCISES[name]
    worth = points(exercise)
    if exercise.kind != "backward":  # exercises 7 and 8 are graded whole
        assert worth == {None: 3}
    else:
        assert tuple(worth) == exercise.gradients
        assert all(p == (2 if g == "dx" else 1) for g, p in worth.items())


# ---- the nbgrader source notebooks --------------------------------------------------------------
def _source(c) -> str:
    return "".join(c["source"])


@pytest.mark.parametrize("name", EXERCISES)
def test_nbgrader_notebook_has_nbgraders_metadata(name):
    exercise = EXERCISES[name]
    cells = nbgrader_notebook(exercise)["cells"]
    meta = [c["metadata"]["nbgrader"] for c in cells if "nbgrader" in c["metadata"]]
    keys = {"grade", "grade_id", "locked", "schema_version", "solution", "task"}
    assert all(keys <= set(m) and m["schema_version"] == 3 for m in meta)
    ids = [m["grade_id"] for m in meta]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[A-Za-z0-9_]+", i) for i in ids)
    graded = {m["grade_id"]: m["points"] for m in meta if m["grade"]}
    assert graded == {f"{exercise.name}_{g or 'norm'}": p for g, p in points(exercise).items()}
    assert all(m["locked"] for m in meta if m["grade"])
    (solution,) = [c for c in cells if c["metadata"].get("nbgrader", {}).get("solution")]
    begin, end = NBGRADER_SOLUTION
    source = _source(solution)
    assert source.count(begin) == source.count(end) >= 1
    unmarked = "\n".join(line for line in source.splitlines() if line.strip() not in NBGRADER_SOLUTION)
    assert unmarked == exercise_code(exercise, exercise.objects, keep_solution)


def _run_cells(cells, answer: str | None = None) -> dict[str, str]:
    """Run a notebook's code cells in one namespace, the solution cell replaced by ``answer``;
    return each grade cell's outcome: "passed", or the message it raised."""
    namespace: dict = {}
    outcomes = {}
    for c in cells:
        if c["cell_type"] != "code":
            continue
        meta = c["metadata"].get("nbgrader", {})
        source = answer if meta.get("solution") and answer is not None else _source(c)
        if meta.get("grade"):
            try:
                exec(source, namespace)
                outcomes[meta["grade_id"]] = "passed"
            except AssertionError as err:
                outcomes[meta["grade_id"]] = str(err)
        else:
            exec(source, namespace)
    return outcomes


@pytest.mark.parametrize("name", EXERCISES)
def test_nbgrader_grade_cells_pass_the_model_answer(name, capsys):
    try:
        outcomes = _run_cells(nbgrader_notebook(EXERCISES[name])["cells"])
    finally:
        unregister(solutions.my_norm_spec().name)  # exercise 7's check cell registers its norm
    assert set(outcomes.values()) == {"passed"}, outcomes
    assert solutions.my_norm_spec().name not in NORMS


def test_nbgrader_grade_cells_credit_each_gradient_of_a_partly_wrong_answer(capsys):
    outcomes = _run_cells(nbgrader_notebook(EXERCISES["layernorm"])["cells"], DROPPED_MEAN_TERM)
    assert outcomes["layernorm_dweight"] == outcomes["layernorm_dbias"] == "passed"
    assert HINT in outcomes["layernorm_dx"]


def test_nbgrader_course_keeps_an_existing_config(tmp_path):
    config = tmp_path / "nbgrader_config.py"
    config.write_text("c = get_config()  # the instructor's own\n")
    paths = write_nbgrader_course(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in paths][3] == "source/04_layernorm/04_layernorm.ipynb"
    assert config.read_text() == "c = get_config()  # the instructor's own\n"


# ---- the Otter master notebooks -------------------------------------------------------------------
BOUNDARIES = [
    "# BEGIN QUESTION",
    "# BEGIN SOLUTION",
    "# END SOLUTION",
    "# BEGIN TESTS",
    "# END TESTS",
    "# END QUESTION",
]


@pytest.mark.parametrize("name", EXERCISES)
def test_otter_master_is_in_otters_format(name):
    exercise = EXERCISES[name]
    cells = otter_notebook(exercise)["cells"]
    config = _source(cells[0]).splitlines()
    assert cells[0]["cell_type"] == "raw" and config[0] == "# ASSIGNMENT CONFIG"
    assert f"name: {assignment_name(exercise)}" in config and "  ok_format: false" in config
    raw = [_source(c).splitlines()[0] for c in cells[1:] if c["cell_type"] == "raw"]
    assert raw == BOUNDARIES
    first, last = (next(i for i, c in enumerate(cells) if _source(c) == b) for b in ("# BEGIN TESTS", "# END TESTS"))
    tests = cells[first + 1 : last]
    worth = []
    for c in tests:
        source = _source(c)
        worth.append(int(re.search(r"^points: (\d+)$", source, re.M).group(1)))
        body = ast.parse(source).body  # the config string, the test function, its call
        assert isinstance(body[1], ast.FunctionDef) and [a.arg for a in body[1].args.args] == [exercise.function]
        assert "strict=True" in source
    assert worth == list(points(exercise).values())


def test_otter_tests_grade_the_model_answer_and_credit_each_gradient(capsys):
    cells = otter_notebook(EXERCISES["layernorm"])["cells"]
    tests = [_source(c) for c in cells if c["cell_type"] == "code" and "BEGIN TEST CONFIG" in _source(c)]
    for answer, failing in ((solutions.layernorm_backward, set()), (_answer(DROPPED_MEAN_TERM), {"test_dx"})):
        failed = set()
        for source in tests:
            test = ast.parse(source).body[1]
            namespace = {"layernorm_backward": answer}
            exec(ast.unparse(test), namespace)
            try:
                namespace[test.name](answer)
            except AssertionError as err:
                assert HINT in str(err)
                failed.add(test.name)
        assert failed == failing


def test_cli_writes_the_nbgrader_course_and_the_otter_masters(tmp_path, capsys):
    assert main(["exercises", "--nbgrader", str(tmp_path / "course"), "--otter", str(tmp_path / "otter")]) == 0
    out = capsys.readouterr().out
    assert "wrote 8 nbgrader assignments" in out and "wrote 8 Otter master notebooks" in out
    for name in map(assignment_name, EXERCISES.values()):
        assert (tmp_path / "course" / "source" / name / f"{name}.ipynb").is_file()
        assert (tmp_path / "otter" / name / f"{name}.ipynb").is_file()
        assert (tmp_path / "otter" / name / "requirements.txt").read_text().splitlines()[-1] == "tinynorm"
    config = (tmp_path / "course" / "nbgrader_config.py").read_text()
    assert "c.CourseDirectory.course_id = 'course'" in config


# ---- end to end, with the real tools ----------------------------------------------------------------
def _installed(module: str, command: str) -> bool:
    return importlib.util.find_spec(module) is not None and (BIN / command).is_file()


def _bash_block(containing: str) -> list[str]:
    """The lines of the ```bash block of docs/instructors.md that contains ``containing``."""
    blocks = re.findall(r"```bash\n(.*?)```", INSTRUCTORS.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if containing in b]
    return [line for line in block.splitlines() if line.strip()]


def _environment() -> dict[str, str]:
    """The instructor's shell: this environment's commands first, this checkout's tinynorm."""
    env = {k: v for k, v in os.environ.items() if k != "TINYNORM_STRICT"}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _bash(lines: list[str], cwd: Path, timeout: int = 600) -> str:
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"{lines}\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run.stdout


def _hand_in(notebook: Path, answer_cell, code: str | None, destination: Path) -> None:
    """A student's submission: the handed-out notebook with ``code`` in its answer cell."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    if code is not None:
        (cell,) = [c for c in nb["cells"] if answer_cell(c)]
        cell["source"] = code.strip()
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_text(json.dumps(nb), encoding="utf-8")


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_the_instructors_nbgrader_loop_is_six_commands_from_pip_install():
    commands = [line for line in _bash_block("nbgrader generate_assignment") if not line.startswith("#")]
    assert len(commands) <= 6, commands
    assert commands[0] == 'pip install ".[classroom]"'
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {r.split("=")[0] for r in extras["classroom"]} >= {"nbgrader", "otter-grader"}


@pytest.mark.classroom
@pytest.mark.skipif(not _installed("nbgrader", "nbgrader"), reason="nbgrader not installed (the classroom extra)")
def test_nbgrader_grades_the_three_submissions_as_instructors_md_says(tmp_path):
    """instructors.md's commands, verbatim (but `pip install`, which CI runs): the comment
    line, where the instructor hands out and collects, is where the students' work lands."""
    lines = _bash_block("nbgrader generate_assignment")[1:]
    (handing_out,) = [i for i, line in enumerate(lines) if line.startswith("#")]
    clone, course = tmp_path / "clone", tmp_path / "course"  # `--nbgrader ../course`, run in the clone
    clone.mkdir()
    _bash(lines[:handing_out], clone)
    release = course / "release" / "04_layernorm" / "04_layernorm.ipynb"
    for student, code in STUDENTS.items():
        destination = course / "submitted" / student / "04_layernorm" / "04_layernorm.ipynb"
        _hand_in(release, lambda c: c["metadata"].get("nbgrader", {}).get("solution"), code, destination)
    _bash(lines[handing_out + 1 :], course)

    for student, score in EXPECTED.items():
        page = (course / "feedback" / student / "04_layernorm" / "04_layernorm.html").read_text(encoding="utf-8")
        total = re.search(r"<h4>04_layernorm \(Score: ([\d.]+) / ([\d.]+)\)</h4>", page)
        assert total and (float(total[1]), float(total[2])) == (score, 4.0), student
        text = _text(page)
        cells = {g: re.search(rf"Grade cell: layernorm_{g}\s+Score: ([\d.]+) / ([\d.]+)", text) for g in GRADIENTS}
        assert all(cells.values()), student
        if student == "bob":
            assert [float(cells[g][1]) for g in GRADIENTS] == [0.0, 1.0, 1.0]
            assert HINT in text and "ExerciseFailedError: [layernorm] FAILED: dx wrong." in text
        if student == "carol":
            assert text.count("[layernorm] not implemented yet") >= 3


@pytest.mark.classroom
@pytest.mark.skipif(not _installed("otter", "otter"), reason="otter-grader not installed (the classroom extra)")
def test_otter_grades_the_three_submissions_as_instructors_md_says(tmp_path):
    """instructors.md's Otter commands: `otter assign`, then `otter run` on each submission."""
    make, assign, run = _bash_block("otter assign")
    assert run.endswith(" alice.ipynb")
    clone = tmp_path / "clone"
    clone.mkdir()
    _bash([make, assign], clone)
    student_nb = tmp_path / "otter" / "04_layernorm" / "dist" / "student" / "04_layernorm.ipynb"
    for student, score in EXPECTED.items():
        submission = clone / f"{student}.ipynb"
        _hand_in(
            student_nb, lambda c: "otter_answer_cell" in c["metadata"].get("tags", []), STUDENTS[student], submission
        )
        _bash([run.replace(" alice.ipynb", f" {submission.name}")], clone)
        results = json.loads((clone / "results.json").read_text(encoding="utf-8"))
        (graded,) = [t for t in results["tests"] if t["name"] == "layernorm"]
        assert (graded["score"], graded["max_score"]) == (score, 4), (student, graded)
        if student == "bob":
            assert HINT in graded["output"] and "ExerciseFailedError: [layernorm] FAILED: dx wrong." in graded["output"]
        if student == "carol":
            assert "[layernorm] not implemented yet" in graded["output"]
