"""The classroom exercises: grading, the checker's diagnoses, and the generated notebooks.

Grading (one marker per exercise, as MiniTorch's tasks): ``pytest -m ex_layernorm``
grades what ``TINYNORM_STUDENT`` points to (a .py file, a notebook or a folder), or the
model answers when it is unset, so that these tests pass in CI; the run ends by saying
which (``conftest.py``). Everything else here checks the checker: each common mistake,
planted in a model answer, is named.
"""

from __future__ import annotations
import __future__

import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinynorm.cli import main
from tinynorm.exercises import EXERCISES, MISTAKES, ExerciseFailedError, check, grading, register, solutions, unregister
from tinynorm.exercises.grading import answers, load_answers
from tinynorm.exercises.notebooks import BEGIN, END, filename, write_notebooks
from tinynorm.norms import batchnorm, layernorm, rmsnorm, rmsnorm_tanh
from tinynorm.registry import NORMS

ROOT = Path(__file__).resolve().parents[1]
STUDENT_NOTEBOOKS = ROOT / "notebooks" / "exercises"


# ---- grading: one marker per exercise -------------------------------------------------------
@pytest.fixture(scope="module")
def graded_answers():
    """TINYNORM_STUDENT's answers, loaded once (a folder of notebooks runs every notebook)."""
    return answers()


@pytest.mark.parametrize("name", [pytest.param(n, marks=getattr(pytest.mark, e.marker)) for n, e in EXERCISES.items()])
def test_grade(name, graded_answers):
    """Grades TINYNORM_STUDENT's answer (the model answer by default); the message is the verdict."""
    answer = graded_answers.get(EXERCISES[name].function)
    assert answer is not None, f"no function named {EXERCISES[name].function!r}; {grading.whose_answers()}"
    check(name, answer, strict=True, quiet=True)


def test_whose_answers_are_graded_is_said_for_unset_empty_and_set():
    assert grading.whose_answers({}) == "tinynorm exercises: grading the model answers (TINYNORM_STUDENT is not set)"
    assert grading.whose_answers({"TINYNORM_STUDENT": ""}) == (
        "tinynorm exercises: grading the model answers (TINYNORM_STUDENT is empty)"
    )
    assert grading.whose_answers({"TINYNORM_STUDENT": "alice/work.ipynb"}) == (
        "tinynorm exercises: grading alice/work.ipynb"
    )


@pytest.mark.parametrize("misspelt", ["TINYNORM_STUDENTS", "TINYNORM_STUDNET", "tinynorm_student", "TINYNORMSTUDENT"])
def test_a_misspelt_student_variable_is_warned_about(misspelt):
    environ = {misspelt: "alice/", "TINYNORM_STRICT": "1", "TINYNORM_TEST_BACKENDS": "numpy", "HOME": "/home/a"}
    assert grading.report(environ) == [
        "tinynorm exercises: grading the model answers (TINYNORM_STUDENT is not set)",
        f"warning: {misspelt} is set, but the grader reads TINYNORM_STUDENT; did you mean TINYNORM_STUDENT='alice/'?",
    ]


def test_tinynorms_other_variables_are_not_taken_for_misspellings():
    environ = {"TINYNORM_STUDENT": "bob.py", "TINYNORM_STRICT": "1", "TINYNORM_TEST_BACKENDS": "numpy,cupy"}
    environ |= {"TINYNORM_FAST": "1", "TINYNORM_HYPOTHESIS_EXAMPLES": "5", "STUDENT": "bob"}
    assert grading.report(environ) == ["tinynorm exercises: grading bob.py"]


@pytest.mark.parametrize("name", EXERCISES)
def test_every_model_answer_passes_its_check(name):
    result = check(name, getattr(solutions, EXERCISES[name].function), quiet=True)
    assert result, result.message
    assert result.status == "passed" and "PASSED" in result.message


def test_every_exercise_marker_is_registered_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    registered = {m.split(":")[0] for m in config["tool"]["pytest"]["ini_options"]["markers"]}
    assert {e.marker for e in EXERCISES.values()} <= registered


# ---- planting each common mistake in a model answer ------------------------------------------
# The model answers of exercises 2 to 6 call the lessons' plain backwards: a mistake is
# planted in the lesson's own source, executed in a copy of its module's namespace.
LESSONS = {
    "rmsnorm": (rmsnorm.rms_norm_backward, rmsnorm.rms_norm_dx),
    "rmsnorm_affine": (rmsnorm.rms_norm_backward, rmsnorm.rms_norm_dx),
    "layernorm": (layernorm.layer_norm_backward,),
    "tanh_alpha": (rmsnorm.rms_norm_dx, rmsnorm_tanh.rms_norm_tanh_backward),
    "batchnorm": (layernorm.layer_norm_backward, batchnorm.batch_norm_backward),
}
# The answers import the lessons inside their bodies, where students do not see it. Run,
# that import would fetch the unplanted lessons: ``plant`` drops it, and the names resolve
# to the copies in the namespace, planted or not.
LESSON_IMPORT = re.compile(r"^ *from tinynorm\.norms\.\w+ import .*\n", re.MULTILINE)


def plant(name: str, *edits: tuple[str, str]):
    """The model answer of exercise ``name`` (and the lesson functions it calls) with each
    ``(old, new)`` edit applied once."""
    exercise = EXERCISES[name]
    lessons = LESSONS.get(name, ())
    sources = [inspect.getsource(getattr(solutions, o)) for o in exercise.objects + exercise.spec_objects]
    sources = [LESSON_IMPORT.sub("", s) for s in sources]
    sources = [inspect.getsource(f) for f in lessons] + sources
    for old, new in edits:
        assert sum(s.count(old) for s in sources) == 1, f"{old!r} should occur once in the answer of {name}"
        sources = [s.replace(old, new) for s in sources]
    namespace = {k: v for f in lessons for k, v in vars(sys.modules[f.__module__]).items()} | dict(vars(solutions))
    for source in sources:
        exec(compile(source, f"planted {name}", "exec", flags=__future__.annotations.compiler_flag), namespace)
    return namespace[exercise.function]


PLANTS = {
    "mul_broadcast": [
        ("unsummed_param_grad", [("db = unbroadcast(dy * a, b.shape)", "db = dy * a")]),
        ("wrong_sign", [("db = unbroadcast(dy * a, b.shape)", "db = -unbroadcast(dy * a, b.shape)")]),
        ("transposed", [("return da, db", "return da.T, db")]),
        ("swapped_factors", [("da = unbroadcast(dy * b, a.shape)", "da = unbroadcast(dy * a, a.shape)")]),
        ("reshaped", [("grad.sum(axis=axis, keepdims=True)", "grad.sum(axis=axis)")]),
    ],
    "rmsnorm": [
        ("dropped_projection_term", [("rstd * (g - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))", "rstd * g")]),
        (
            "eps_outside_sqrt",
            [
                (
                    "_, rstd = rms_norm_forward(x_rows, weight, None, eps)",
                    "rstd = 1 / (np.sqrt(np.mean(x_rows ** 2, axis=-1, keepdims=True)) + eps)",
                )
            ],
        ),
        ("unsummed_param_grad", [("else xp.sum(dy * xhat, axis=0)", "else dy * xhat")]),
        ("wrong_sign", [("(g - xhat * xp.mean", "(g + xhat * xp.mean")]),
    ],
    "rmsnorm_affine": [
        ("dropped_projection_term", [(" - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))", ")")]),
        ("unsummed_param_grad", [("dbias = xp.sum(dy, axis=0) if with_bias", "dbias = dy if with_bias")]),
        (
            "wrong_sign",
            [("return np.reshape(dx, x.shape), dweight, dbias", "return -np.reshape(dx, x.shape), dweight, dbias")],
        ),
    ],
    "layernorm": [
        ("dropped_mean_term", [("(g - mean_g - xhat", "(g - xhat")]),
        ("dropped_projection_term", [("(g - mean_g - xhat * mean_g_xhat)", "(g - mean_g)")]),
        (
            "n_minus_1",
            [
                (
                    "_, mean, rstd = layer_norm_forward(x_rows, weight, bias, eps)",
                    "mean = np.mean(x_rows, axis=-1, keepdims=True); "
                    "rstd = 1 / np.sqrt(np.var(x_rows, axis=-1, ddof=1, keepdims=True) + eps)",
                )
            ],
        ),
        (
            "eps_outside_sqrt",
            [
                (
                    "_, mean, rstd = layer_norm_forward(x_rows, weight, bias, eps)",
                    "mean = np.mean(x_rows, axis=-1, keepdims=True); "
                    "rstd = 1 / (np.std(x_rows, axis=-1, keepdims=True) + eps)",
                )
            ],
        ),
        ("unsummed_param_grad", [("else xp.sum(dy * xhat, axis=0)", "else dy * xhat")]),
        ("wrong_sign", [("(g - mean_g", "(g + mean_g")]),
        (
            "transposed",
            [("return np.reshape(dx, x.shape), dweight, dbias", "return np.reshape(dx, x.shape).T, dweight, dbias")],
        ),
    ],
    "tanh_alpha": [
        ("dropped_projection_term", [("rstd * (g - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))", "rstd * g")]),
        (
            "eps_outside_sqrt",
            [
                (
                    "_, rstd = rms_norm_tanh_forward(x_rows, alpha, None, eps)",
                    "rstd = 1 / (np.sqrt(np.mean(x_rows**2, axis=-1, keepdims=True)) + eps)",
                )
            ],
        ),
        # dalpha summed over the rows only, as for a per-feature alpha
        ("unsummed_param_grad", [("xp.sum(dalpha) if alpha.ndim == 0 else dalpha", "dalpha")]),
        ("wrong_sign", [("(g - xhat * xp.mean", "(g + xhat * xp.mean")]),
        ("forgot_alpha", [("rms_norm_dx(alpha * t, n, rstd)", "rms_norm_dx(t, n, rstd)")]),
        ("tanh_derivative", [("t = (1 - u * u) *", "t = (1 - u) *")]),
    ],
    "batchnorm": [
        ("dropped_mean_term", [("(g - mean_g - xhat", "(g - xhat")]),
        ("dropped_projection_term", [("(g - mean_g - xhat * mean_g_xhat)", "(g - mean_g)")]),
        (
            "n_minus_1",
            [
                (
                    "_, mean, rstd = batch_norm_forward(x3, w, b, eps)",
                    "mean = np.mean(x3, axis=(0, 2))[:, None]; "
                    "rstd = 1 / np.sqrt(np.var(x3, axis=(0, 2), ddof=1)[:, None] + eps)",
                )
            ],
        ),
        (
            "eps_outside_sqrt",
            [
                (
                    "_, mean, rstd = batch_norm_forward(x3, w, b, eps)",
                    "mean = np.mean(x3, axis=(0, 2))[:, None]; rstd = 1 / (np.std(x3, axis=(0, 2))[:, None] + eps)",
                )
            ],
        ),
        # dbias summed over the batch but not along the length
        (
            "unsummed_param_grad",
            [("return np.reshape(dx, x.shape), dweight, dbias", "return np.reshape(dx, x.shape), dweight, dy.sum(0)")],
        ),
        ("wrong_sign", [("(g - mean_g", "(g + mean_g")]),
        (
            "transposed",
            [("return np.reshape(dx, x.shape), dweight, dbias", "return np.reshape(dx, x.shape).T, dweight, dbias")],
        ),
        (
            "wrong_axis",  # LayerNorm's statistics, over the C channels of each sample and position
            [
                (
                    "_, mean, rstd = batch_norm_forward(x3, w, b, eps)\n"
                    "    dx, dweight, dbias = batch_norm_backward(dy3, x3, w, mean, rstd, True)",
                    "rows = lambda a: np.reshape(np.moveaxis(a, 1, -1), (-1, a.shape[1]))  # (B * L, C)\n"
                    "    _, mean, rstd = layer_norm_forward(rows(x3), weight, bias, eps)\n"
                    "    dx, dweight, dbias = layer_norm_backward(rows(dy3), rows(x3), weight, mean, rstd, True)\n"
                    "    dx = np.moveaxis(np.reshape(dx, (x3.shape[0], x3.shape[2], x3.shape[1])), -1, 1)",
                )
            ],
        ),
    ],
    "rmsnorm_double": [
        (
            "statistics_without_history",  # rstd from a copy of x without its history
            [("xp.mean(x * x, axis=-1", "xp.mean((x.data if isinstance(x, Tensor) else x) ** 2, axis=-1")],
        ),
        ("numpy_escapes_graph", [("rstd = 1 / xp.sqrt(", "rstd = 1 / np.sqrt(")]),
    ],
}
# A NumPy call on a Tensor cannot run at all: the check reports an error, with the hint.
ERROR_MISTAKES = {"numpy_escapes_graph"}
PLANTED = [(name, key, edits) for name, plants in PLANTS.items() for key, edits in plants]


@pytest.mark.parametrize(("name", "key", "edits"), PLANTED, ids=[f"{n}-{k}" for n, k, _ in PLANTED])
def test_planted_mistake_fails_and_is_named(name, key, edits):
    result = check(name, plant(name, *edits), quiet=True)
    assert result.status == ("error" if key in ERROR_MISTAKES else "failed"), result.message
    assert key in result.mistakes, result.message
    assert MISTAKES[key].name in " ".join(result.message.split())


def test_every_common_mistake_is_planted_somewhere():
    assert {key for _, key, _ in PLANTED} == set(MISTAKES)


def test_the_planted_edits_leave_the_model_answers_intact():
    """``plant`` with no edit rebuilds each model answer, and it passes."""
    for name in PLANTS:
        assert check(name, plant(name), quiet=True)


def test_a_gradient_of_the_wrong_shape_is_reported_not_raised():
    result = check(
        "rmsnorm",
        plant(
            "rmsnorm", ("return np.reshape(dx, x.shape), dweight", "return np.reshape(dx, x.shape), dweight[None, :]")
        ),
        quiet=True,
    )
    assert result.status == "failed"
    assert "wrong shape: yours is (1, 5), dweight must have the shape of weight, (5,)" in result.message
    assert "reshaped" in result.mistakes
    assert [v.name for v in result.wrong] == ["dweight"] and "right: dx" in result.message


def test_the_verdict_names_the_worst_element_and_its_relative_error():
    result = check(
        "layernorm",
        plant("layernorm", *dict(PLANTS["layernorm"])["eps_outside_sqrt"]),
        quiet=True,
    )
    (dx, *_) = result.wrong
    assert dx.name == "dx"
    assert "first in: eps = 0.5" in dx.case  # invisible at eps = 1e-5: only the large-eps case fails
    assert "worst element dx[" in dx.problem and "relative error" in dx.problem


def test_rmsnorm_double_mutants_are_named_by_the_check_that_fails():
    """Statistics without history pass gradcheck and fail gradgradcheck; NumPy on a Tensor stops."""
    from tinynorm.exercises.mutants import mutants_of

    for key, mutant in mutants_of(EXERCISES["rmsnorm_double"]):
        result = check("rmsnorm_double", mutant, quiet=True)
        assert result.mistakes == {key}, result.message
        if key == "statistics_without_history":
            assert "FAILED: gradgradcheck wrong" in result.message
        else:
            assert "in the gradgradcheck" in result.message and "TypeError" in result.message


def test_exercise_2s_numpy_backward_passes_first_order_but_not_exercise_8():
    """Exercise 2's model answer is right to first order; on Tensors its NumPy calls stop it."""
    result = check("rmsnorm_double", solutions.rmsnorm_backward, quiet=True)
    assert result.status == "error" and "in the gradgradcheck" in result.message, result.message


def test_a_wrong_first_derivative_in_exercise_8_gets_no_second_order_hint():
    planted = plant("rmsnorm_double", ("return dx, dweight", "return -dx, dweight"))
    result = check("rmsnorm_double", planted, quiet=True)
    assert result.status == "failed" and "FAILED: gradcheck wrong" in result.message
    assert not result.mistakes


# ---- stubs, errors, strict mode ----------------------------------------------------------------
def _stub(*args):
    raise NotImplementedError("exercise: your code here")


@pytest.mark.parametrize("name", EXERCISES)
def test_a_stub_reports_not_implemented_yet(name, capsys, monkeypatch):
    monkeypatch.delenv("TINYNORM_STRICT", raising=False)
    result = check(name, _stub)
    assert result.status == "not implemented" and not result
    assert "not implemented yet" in capsys.readouterr().out


def test_strict_mode_raises_an_assertion_error_with_the_verdict(monkeypatch):
    with pytest.raises(ExerciseFailedError, match="not implemented yet"):
        check("layernorm", _stub, strict=True, quiet=True)
    monkeypatch.setenv("TINYNORM_STRICT", "1")
    with pytest.raises(AssertionError, match="wrong sign"):
        check("mul_broadcast", plant("mul_broadcast", ("return da, db", "return -da, db")), quiet=True)
    assert check("mul_broadcast", solutions.mul_backward, quiet=True)  # a pass never raises
    monkeypatch.setenv("TINYNORM_STRICT", "0")
    assert not check("layernorm", _stub, quiet=True)


def test_an_exception_in_student_code_is_reported_with_its_line():
    def rmsnorm_backward(dy, x, weight, eps):
        rstd = 1 / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)
        return dy @ rstd, weight  # a matmul where a product was meant

    result = check("rmsnorm", rmsnorm_backward, quiet=True)
    assert result.status == "error"
    assert "ValueError" in result.message and "return dy @ rstd, weight" in result.message
    assert "in case: 2-D input of shape (3, 5)" in result.message


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (lambda dy, a, b: dy, "returned ndarray; expected a tuple (da, db)"),
        (lambda dy, a, b: (dy,), "returned 1 values; expected a tuple (da, db)"),
        (lambda dy, a, b: (dy * b, None), "db is None"),
    ],
)
def test_a_malformed_return_value_is_explained(returned, expected):
    result = check("mul_broadcast", returned, quiet=True)
    assert not result and expected in result.message


def test_the_student_cannot_spoil_the_inputs_by_editing_them_in_place():
    def mul_backward(dy, a, b):
        da, db = solutions.mul_backward(dy, a, b)
        a *= 0
        b *= 0
        return da, db

    assert check("mul_broadcast", mul_backward, quiet=True)
    assert check("mul_broadcast", solutions.mul_backward, quiet=True)


# ---- exercise 7: a norm of one's own ---------------------------------------------------------------
def test_own_norm_wrong_sign_is_named_by_the_generic_gradcheck():
    planted = plant("own_norm", ("return dx, dweight", "return -dx, dweight"))
    result = check("own_norm", planted, quiet=True)
    assert result.status == "failed" and "dx" in result.message and "wrong_sign" in result.mistakes


def test_register_replaces_only_its_own_earlier_registration():
    spec = solutions.my_norm_spec()
    try:
        register(spec)
        register(solutions.my_norm_spec())  # the notebook cell, run again
        assert NORMS[spec.name].title == spec.title
    finally:
        unregister(spec.name)
    assert spec.name not in NORMS
    with pytest.raises(ValueError, match="registered twice"):
        register(NORMS["layernorm"])


# ---- the notebooks --------------------------------------------------------------------------------
def test_committed_student_notebooks_are_the_generated_ones(tmp_path):
    """Regenerate with `python -m tinynorm exercises --student notebooks/exercises` if this fails."""
    write_notebooks(tmp_path)
    assert sorted(p.name for p in STUDENT_NOTEBOOKS.glob("*.ipynb")) == sorted(p.name for p in tmp_path.iterdir())
    for path in tmp_path.iterdir():
        assert (STUDENT_NOTEBOOKS / path.name).read_bytes() == path.read_bytes(), path.name


def _solution_lines(exercise) -> set[str]:
    """Lines that occur only inside the exercise's solution regions."""
    inside, outside = set(), set()
    for name in exercise.objects:
        region = False
        for line in inspect.getsource(getattr(solutions, name)).splitlines():
            if line.strip() in (BEGIN, END):
                region = line.strip() == BEGIN
            elif line.strip():
                (inside if region else outside).add(line.strip())
    return inside - outside


@pytest.mark.parametrize("name", EXERCISES)
def test_student_notebooks_do_not_contain_the_solutions(name):
    cells = json.loads((STUDENT_NOTEBOOKS / filename(EXERCISES[name])).read_text())["cells"]
    code = {line.strip() for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()}
    assert f"raise NotImplementedError('exercise {EXERCISES[name].number}: your code here')" in code
    assert not code & _solution_lines(EXERCISES[name])
    assert BEGIN not in json.dumps(cells)


@pytest.mark.notebook
@pytest.mark.parametrize("name", EXERCISES)
def test_student_notebook_runs_top_to_bottom_with_its_stubs(name, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.delenv("TINYNORM_STRICT", raising=False)
    nb = nbformat.read(STUDENT_NOTEBOOKS / filename(EXERCISES[name]), as_version=4)
    nbclient.NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(ROOT)}}).execute()
    (check_cell,) = [c for c in nb.cells if "check" in c.metadata.get("tags", [])]
    printed = "".join(o.get("text", "") for o in check_cell.outputs)
    assert f"[{name}] not implemented yet" in printed


def test_solution_notebooks_pass_when_graded(tmp_path):
    write_notebooks(tmp_path, with_solutions=True)
    graded = load_answers(tmp_path)
    for name, exercise in EXERCISES.items():
        assert check(name, graded[exercise.function], strict=True, quiet=True)


def test_cli_writes_student_and_solution_notebooks(tmp_path, capsys):
    assert main(["exercises", "--student", str(tmp_path / "s"), "--solutions", str(tmp_path / "t")]) == 0
    assert "wrote 8 student notebooks" in capsys.readouterr().out
    student = (tmp_path / "s" / "04_layernorm.ipynb").read_text()
    solved = (tmp_path / "t" / "04_layernorm.ipynb").read_text()
    assert "your code here')" in student and "your code here')" not in solved
    assert BEGIN not in solved
    assert main(["exercises"]) == 2


def _pytest_grading(environ: dict[str, str], marker: str) -> subprocess.CompletedProcess:
    """``pytest tests/test_exercises.py -m marker -q`` in a fresh process with this environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("TINYNORM_STRICT", "TINYNORM_STUDENT")} | environ
    command = [sys.executable, "-m", "pytest", str(Path(__file__)), "-m", marker, "-q", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("folder", "code", "says"), [("student", 1, "not implemented yet"), ("solutions", 0, "1 passed")]
)
def test_grading_a_folder_of_notebooks_with_one_pytest_command(tmp_path, folder, code, says):
    write_notebooks(tmp_path, with_solutions=folder == "solutions")
    run = _pytest_grading({"TINYNORM_STUDENT": str(tmp_path)}, "ex_layernorm")
    assert run.returncode == code, run.stdout + run.stderr
    assert says in run.stdout
    assert f"tinynorm exercises: grading {tmp_path}\n" in run.stdout


def test_a_run_with_the_variable_misspelt_says_it_graded_the_model_answers_and_warns(tmp_path):
    write_notebooks(tmp_path)  # the stubs: graded, they would fail
    run = _pytest_grading({"TINYNORM_STUDNET": str(tmp_path)}, "ex_layernorm")
    assert run.returncode == 0, run.stdout + run.stderr
    last = run.stdout.strip().splitlines()[-3:]
    assert last[0] == "tinynorm exercises: grading the model answers (TINYNORM_STUDENT is not set)"
    assert last[1] == (
        f"warning: TINYNORM_STUDNET is set, but the grader reads TINYNORM_STUDENT; did you mean "
        f"TINYNORM_STUDENT={str(tmp_path)!r}?"
    )
    assert last[2].startswith("1 passed, ")


def test_a_run_that_grades_nothing_does_not_mention_grading():
    run = _pytest_grading({}, "ex_layernorm and not ex_layernorm")
    assert "tinynorm exercises" not in run.stdout, run.stdout


def test_own_norm_unsummed_parameter_gradient_is_explained_not_raised():
    planted = plant("own_norm", ("sum_to(dy * xhat, tuple(weight.shape))", "dy * xhat"))
    result = check("own_norm", planted, quiet=True)
    assert result.status == "error"
    assert "returned a gradient of shape (3, 5) for an input of shape (5,)" in result.message
    assert MISTAKES["unsummed_param_grad"].name in result.message
