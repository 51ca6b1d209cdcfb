r"""``check(name, student_fn)``: grade one exercise and explain the verdict.

For exercises 1 to 6, ``student_fn`` is a NumPy backward, ``fn(dy, *inputs, *consts)``
returning a tuple of gradients (``Exercise.signature`` spells it out). For every case
of the exercise (several shapes, a batch of one, broadcasting, a large ``eps``):

1. the student's function is called on fresh copies of the inputs. A
   ``NotImplementedError`` ends the check with "not implemented yet"; any other
   exception is reported with the line of the student's code that raised it;
2. each gradient's shape is compared with its input's: a wrong shape is reported,
   not raised, and the remaining gradients are still checked;
3. each gradient is compared with the central finite differences of the exercise's
   forward, ``dy`` times tinynorm's ``numerical_jacobian``, under the same rule as
   ``tn.gradcheck`` (``|analytical - numerical| <= atol + rtol * |numerical|``);
4. a wrong gradient is compared with the same gradient of every mutant
   (``mutants.py``): the mistakes whose numbers it reproduces are named.

Exercise 7's ``student_fn`` is a ``NormSpec`` (or the function returning it): every
case of the spec is gradchecked with ``tn.gradcheck``, explicit and autograd, and the
two implementations are compared.

Exercise 8's ``student_fn`` is RMSNorm's backward written with ``namespace_of``: it
becomes the backward of a ``Function`` and is checked by ``gradcheck``, ``gradgradcheck``
and the third-order check; which check fails (or the graph refusing a NumPy step)
names the mistake.

The result is a ``CheckResult``, truthy when the exercise passed. In strict mode
(``strict=True``, or the environment variable ``TINYNORM_STRICT=1``) a failure raises
``ExerciseFailedError``, an ``AssertionError``, so that pytest and autograders see it.
``gradient="dweight"`` grades one gradient alone: the autograders (``classroom.py``)
give each gradient its own points, so a right ``dweight`` earns its points even when
``dx`` is wrong.
"""

from __future__ import annotations

import os
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Context, Function
from ..backend import namespace_of
from ..gradcheck import GradcheckFailure, _compare, gradcheck, higher_order_gradcheck, numerical_jacobian
from ..registry import NORMS, NormSpec, register_norm
from ..tensor import Tensor, tensor
from .catalog import MISTAKES, Exercise, Mistake, get_exercise
from .mutants import mutants_of

ATOL, RTOL = 1e-5, 1e-3  # tn.gradcheck's defaults
SAME = {"rtol": 1e-6, "atol": 1e-8}  # "the student's numbers are the mutant's numbers"


class ExerciseFailedError(AssertionError):
    """Raised in strict mode when an exercise does not pass; ``.result`` has the details."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.message)
        self.result = result


@dataclass
class GradientVerdict:
    """What was found wrong with one gradient (``dx``, ``dweight``, ...)."""

    name: str
    problem: str  # one line: the shape, or the worst element and its relative error
    case: str  # the first case where it is wrong
    mistakes: list[Mistake] = field(default_factory=list)


@dataclass
class CheckResult:
    """The outcome of ``check``: truthy when the exercise passed.

    ``status`` is ``"passed"``, ``"failed"``, ``"not implemented"`` or ``"error"``
    (the function raised, or returned something that is not a tuple of arrays).
    """

    exercise: str
    status: str
    message: str
    wrong: list[GradientVerdict] = field(default_factory=list)
    max_rel_error: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def mistakes(self) -> set[str]:
        """Keys of the common mistakes recognized (see ``MISTAKES``)."""
        return {m.key for v in self.wrong for m in v.mistakes}

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"<check {self.exercise!r}: {self.status}>"

    def only(self, gradient: str) -> CheckResult:
        """The verdict on one gradient alone: passed when ``gradient`` is right, whatever
        the others; when it is wrong, the whole verdict (every wrong gradient and its
        hints), restricted to it in ``wrong``. A check that could not run (not
        implemented, an error) fails every gradient: it is returned unchanged."""
        if self.status != "failed":
            return self
        mine = [v for v in self.wrong if v.name == gradient]
        if mine:
            return CheckResult(self.exercise, "failed", self.message, mine, self.max_rel_error)
        others = ", ".join(v.name for v in self.wrong)
        message = f"[{self.exercise}] {gradient} PASSED: it agrees with finite differences in every case"
        message += f" (wrong: {others})."
        return CheckResult(self.exercise, "passed", message, max_rel_error=self.max_rel_error)


def strict_mode(strict: bool | None = None) -> bool:
    """``strict`` if given, otherwise whether ``TINYNORM_STRICT`` is set to a true value."""
    if strict is not None:
        return strict
    return os.environ.get("TINYNORM_STRICT", "").strip().lower() not in ("", "0", "false", "no")


def check(
    name: str, student_fn: Any, *, strict: bool | None = None, quiet: bool = False, gradient: str | None = None
) -> CheckResult:
    """Check a student's answer to exercise ``name`` and print a short verdict.

    Parameters
    ----------
    name
        The exercise: ``"mul_broadcast"``, ``"rmsnorm"``, ``"rmsnorm_affine"``,
        ``"layernorm"``, ``"tanh_alpha"``, ``"batchnorm"``, ``"own_norm"`` or ``"rmsnorm_double"``.
    student_fn
        Exercises 1-6: the backward, e.g. ``layernorm_backward(dy, x, weight, bias, eps)
        -> (dx, dweight, dbias)`` on NumPy arrays. Exercise 7: a ``NormSpec``, or a
        function of no arguments returning one. Exercise 8: ``rmsnorm_double_backward``,
        written with ``xp = namespace_of(x)``.
    strict
        Raise ``ExerciseFailedError`` unless the exercise passed; its message is the
        verdict, which is then not printed a second time. ``None`` (default) reads the
        environment variable ``TINYNORM_STRICT``.
    quiet
        Do not print the verdict (it is in ``result.message``).
    gradient
        Grade this gradient alone (exercises 1-6: ``"dx"``, ``"dweight"``, ... as in
        ``Exercise.gradients``): the result is truthy when it is right, whatever the
        others (see ``CheckResult.only``). The autograders' cells, one per gradient.
    """
    __tracebackhide__ = True  # pytest shows the verdict, not the checker's insides
    exercise = get_exercise(name)
    if gradient is not None and (exercise.kind != "backward" or gradient not in exercise.gradients):
        whole = f"None (exercise {exercise.number} is graded whole)"
        expected = whole if exercise.kind != "backward" else f"one of {exercise.gradients}"
        raise ValueError(f"check: gradient for {name!r} must be {expected}, got {gradient!r}")
    with backend.use_backend("numpy"), np.errstate(all="ignore"):
        if exercise.kind == "norm":
            result = _check_norm(exercise, student_fn)
        elif exercise.kind == "double":
            result = _check_double(exercise, student_fn)
        else:
            result = _check_backward(exercise, student_fn)
    if gradient is not None:
        result = result.only(gradient)
    raising = strict_mode(strict) and not result
    if not quiet and not raising:
        print(result.message)
    if raising:
        raise ExerciseFailedError(result)
    return result


# ---- exercises 1 to 6: a NumPy backward --------------------------------------------------
_numerical_cache: dict[tuple[str, int], list[np.ndarray]] = {}


def numerical_gradients(exercise: Exercise, index: int) -> list[np.ndarray]:
    """``dy`` times the finite-difference Jacobian of the forward, for each input of case
    ``index`` (cached: the cases are always the same)."""
    key = (exercise.name, index)
    if key not in _numerical_cache:
        inputs, consts, dy = exercise.sample(index)
        tensors = tuple(tensor(a, requires_grad=True) for a in inputs)
        jacobians = numerical_jacobian(lambda *ts: exercise.forward(*ts, *consts), tensors)
        _numerical_cache[key] = [(dy.ravel() @ j).reshape(a.shape) for j, a in zip(jacobians, inputs)]
    return _numerical_cache[key]


def _call(fn: Callable[..., Any], dy: np.ndarray, inputs: list[np.ndarray], consts: list[float]) -> Any:
    """Call with copies, so a function that edits its arguments in place harms nothing."""
    return fn(dy.copy(), *(a.copy() for a in inputs), *consts)


def _as_gradients(exercise: Exercise, returned: Any) -> tuple[list[np.ndarray | None], str | None]:
    """The returned gradients as float64 arrays, or a message saying why they are not."""
    expected = f"a tuple ({', '.join(exercise.gradients)})"
    if not isinstance(returned, (tuple, list)):
        return [], f"returned {type(returned).__name__}; expected {expected}"
    if len(returned) != len(exercise.inputs):
        return [], f"returned {len(returned)} values; expected {expected}"
    grads: list[np.ndarray | None] = []
    for value in returned:
        try:
            grads.append(None if value is None else np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            return [], f"returned a {type(value).__name__}, which is not an array of numbers; expected {expected}"
    return grads, None


def _recognize(student: np.ndarray, k: int, right: np.ndarray, mutant_grads: list[tuple[str, Any]]) -> list[str]:
    """Keys of the mistakes whose gradient ``k`` is the student's, number for number."""
    found = []
    if student.shape != right.shape and student.size == right.size:
        if np.allclose(np.reshape(student, right.shape), right, **SAME):
            found.append("reshaped")
    for key, grads in mutant_grads:
        candidate = np.asarray(grads[k], dtype=np.float64)
        if candidate.shape != student.shape or key in found:
            continue
        if candidate.shape == right.shape and np.allclose(candidate, right, **SAME):
            continue  # this mutant is right here: it says nothing
        if np.allclose(student, candidate, **SAME):
            found.append(key)
    return found


def _mutant_gradients(exercise: Exercise, dy: np.ndarray, inputs: list[np.ndarray], consts: list[float]):
    out = []
    for key, mutant in mutants_of(exercise):
        try:
            out.append((key, _call(mutant, dy, inputs, consts)))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            continue  # a mutant that cannot run on this case's shapes
    return out


def _check_backward(exercise: Exercise, fn: Any) -> CheckResult:
    name = exercise.name
    if not callable(fn):
        return _verdict(exercise, "error", f"expected a function {exercise.signature}, got {type(fn).__name__}")
    failures: dict[int, list[tuple[str, str, list[str]]]] = {k: [] for k in range(len(exercise.inputs))}
    max_rel = 0.0
    for index, case in enumerate(exercise.cases):
        inputs, consts, dy = exercise.sample(index)
        try:
            returned = _call(fn, dy, inputs, consts)
        except NotImplementedError:
            return _not_implemented(exercise, getattr(fn, "__name__", "your function"))
        except Exception as err:  # the student's bug, reported instead of raised
            return _verdict(exercise, "error", f"{_describe_exception(err)}\n  in case: {case.label}")
        grads, problem = _as_gradients(exercise, returned)
        if problem:
            return _verdict(exercise, "error", f"{getattr(fn, '__name__', 'your function')} {problem}.")
        right = [np.asarray(g, dtype=np.float64) for g in _call(exercise.solution, dy, inputs, consts)]
        mutant_grads = None
        numerical = numerical_gradients(exercise, index)
        for k, (grad, target) in enumerate(zip(grads, inputs)):
            gname = exercise.gradients[k]
            if grad is None:
                failures[k].append((case.label, f"{gname} is None; return an array of shape {target.shape}", []))
                continue
            if grad.shape != target.shape:
                issue = f"wrong shape: yours is {grad.shape}, {gname} must have the shape of {exercise.inputs[k]}, "
                issue += f"{target.shape}"
            else:
                _, rel, failure = _compare(gname, "finite differences", grad, numerical[k], ATOL, RTOL, grad.shape)
                max_rel = max(max_rel, rel)
                if failure is None:
                    continue
                issue = _describe_failure(failure)
            if mutant_grads is None:
                mutant_grads = _mutant_gradients(exercise, dy, inputs, consts)
            failures[k].append((case.label, issue, _recognize(grad, k, right[k], mutant_grads)))
    n_cases = len(exercise.cases)
    wrong = [_summarize(exercise.gradients[k], found, n_cases) for k, found in failures.items() if found]
    if not wrong:
        message = (
            f"[{name}] PASSED: {', '.join(exercise.gradients)} agree with finite differences in all "
            f"{len(exercise.cases)} cases (max relative error {max_rel:.1e})."
        )
        return CheckResult(name, "passed", message, max_rel_error=max_rel)
    return _failed(exercise, wrong, exercise.gradients)


def _summarize(gname: str, found: list[tuple[str, str, list[str]]], n_cases: int) -> GradientVerdict:
    """One gradient's failures over the cases: the first case's details, and the mistakes
    recognized in every failing case where any was recognized (a mistake that explains
    all of them beats one that explains a single case by coincidence)."""
    case, problem, _ = found[0]
    recognized = [set(keys) for _, _, keys in found if keys]
    keys = set.intersection(*recognized) if recognized else set()
    keys = keys or (recognized[0] if recognized else set())
    ordered = [MISTAKES[k] for k in MISTAKES if k in keys]
    return GradientVerdict(gname, problem, f"wrong in {len(found)} of {n_cases} cases; first in: {case}", ordered)


def _describe_failure(failure: GradcheckFailure) -> str:
    where = "[" + ", ".join(str(i) for i in failure.index) + "]" if failure.index else ""
    return (
        f"worst element {failure.input}{where}: yours {failure.analytical:.6g}, finite differences "
        f"{failure.numerical:.6g} (relative error {failure.rel_error:.2g})"
    )


def _describe_exception(err: BaseException) -> str:
    """The exception and the deepest line of the student's own code that it went through."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not _library_frame(f.filename)]
    text = f"your function raised {type(err).__name__}: {err}"
    if frames:
        frame = frames[-1]
        text += f"\n  at line {frame.lineno} of {frame.name}: {(frame.line or '').strip()}"
    return text


def _library_frame(filename: str) -> bool:
    """Frames of tinynorm (but for the model answers), NumPy and installed packages."""
    path = Path(filename).resolve()
    package = Path(__file__).resolve().parents[1]
    ours = package in path.parents and path.name != "solutions.py"
    return ours or "site-packages" in path.parts or "numpy" in path.parts


# ---- the verdict ---------------------------------------------------------------------------
def _verdict(exercise: Exercise, status: str, detail: str) -> CheckResult:
    return CheckResult(exercise.name, status, f"[{exercise.name}] {status.upper()}: {detail}")


def _not_implemented(exercise: Exercise, fn_name: str) -> CheckResult:
    message = (
        f"[{exercise.name}] not implemented yet: {fn_name} still raises NotImplementedError. "
        "Replace the `raise NotImplementedError(...)` line with your code and run this cell again."
    )
    return CheckResult(exercise.name, "not implemented", message)


def _failed(exercise: Exercise, wrong: list[GradientVerdict], names: tuple[str, ...] = ()) -> CheckResult:
    lines = [f"[{exercise.name}] FAILED: {', '.join(v.name for v in wrong)} wrong."]
    for v in wrong:
        lines.append(f"  {v.name}, {v.case}")
        lines.append(f"    {v.problem}")
        for mistake in v.mistakes:
            lines.append(_hint_line(mistake))
    right = [g for g in names if g not in {v.name for v in wrong}]
    if right:
        lines.append(f"  right: {', '.join(right)}")
    return CheckResult(exercise.name, "failed", "\n".join(lines), wrong)


# ---- exercise 7: a whole norm, through its NormSpec ----------------------------------------
def _check_norm(exercise: Exercise, answer: Any) -> CheckResult:
    try:
        spec = answer() if callable(answer) and not isinstance(answer, NormSpec) else answer
        if isinstance(spec, str):
            spec = NORMS[spec]
    except NotImplementedError:
        return _not_implemented(exercise, getattr(answer, "__name__", "your code"))
    except Exception as err:
        return _verdict(exercise, "error", _describe_exception(err))
    if not isinstance(spec, NormSpec):
        return _verdict(exercise, "error", f"expected a NormSpec (or a function returning one), got {spec!r}")
    wrong: list[GradientVerdict] = []
    max_rel = 0.0
    for case in spec.cases:
        for impl in ("explicit", "autograd"):
            try:
                module, x = spec.build(case, impl=impl)
                result = gradcheck(module, x, raise_exception=False)
            except NotImplementedError:
                return _not_implemented(exercise, f"the {impl} implementation of {spec.name!r}")
            except Exception as err:
                detail = f"{_describe_exception(err)}\n  in case {case!r} ({impl})"
                if "returned a gradient of shape" in str(err):  # autograd's shape check
                    mistake = MISTAKES["unsummed_param_grad"]
                    detail += f"\n  hint, if it is a parameter's gradient ({mistake.name}): {mistake.hint}"
                return _verdict(exercise, "error", detail)
            max_rel = max(max_rel, result.max_rel_error)
            for failure in result.failures:
                gname = "dx" if failure.input == "input 0" else "d" + failure.input
                if any(v.name == gname for v in wrong):
                    continue
                hints = [MISTAKES["wrong_sign"]] if impl == "explicit" and _negated(spec, case, failure.input) else []
                problem = f"{impl} backward, {failure.check} check: " + _describe_failure(failure)
                wrong.append(GradientVerdict(gname, problem, f"first wrong in case {case!r}", hints))
        if not wrong and _outputs_differ(spec, case):
            problem = "the explicit forward and the autograd reference compute different outputs"
            wrong.append(GradientVerdict("output", problem, f"first wrong in case {case!r}"))
    if wrong:
        return _failed(exercise, wrong)
    message = (
        f"[{exercise.name}] PASSED: {spec.name!r} passes the gradcheck in all {len(spec.cases)} cases, "
        f"explicit and autograd, and the two agree (max relative error {max_rel:.1e})."
    )
    return CheckResult(exercise.name, "passed", message, max_rel_error=max_rel)


def _gradients(spec: NormSpec, case: str, impl: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    module, x = spec.build(case, impl=impl)
    y = module(x)
    y.backward(tensor(np.random.default_rng(1).standard_normal(y.shape)))
    grads = {"input 0": x.grad} | {name: p.grad for name, p in module.named_parameters()}
    return y.numpy(), {k: np.zeros(1) if g is None else backend.to_numpy(g) for k, g in grads.items()}


def _negated(spec: NormSpec, case: str, which: str) -> bool:
    """Is the explicit gradient ``which`` minus the autograd reference's?"""
    try:
        explicit = _gradients(spec, case, "explicit")[1][which]
        reference = _gradients(spec, case, "autograd")[1][which]
    except Exception:
        return False
    return explicit.shape == reference.shape and np.allclose(explicit, -reference, **SAME)


def _outputs_differ(spec: NormSpec, case: str) -> bool:
    """The gradients were each checked against finite differences; the outputs are compared here."""
    y_explicit, _ = _gradients(spec, case, "explicit")
    y_reference, _ = _gradients(spec, case, "autograd")
    return not np.allclose(y_explicit, y_reference, rtol=1e-8, atol=1e-10)


# ---- exercise 8: a backward that runs on Tensors, differentiated again -------------------------
class _RMSNormOf(Function):
    """RMSNorm whose backward is the student's: the forward saves ``x`` and ``weight`` only, so the
    backward recomputes rstd from ``x``; under ``create_graph=True`` it gets Tensors."""

    student: Callable[..., Any] = staticmethod(lambda *args: None)

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, eps: float) -> Any:
        xp = namespace_of(x)
        ctx.save_for_backward(x, weight, eps)
        return x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps) * weight

    @classmethod
    def backward(cls, ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, eps = ctx.saved_tensors
        return tuple(cls.student(dy, x, weight, eps))


_DOUBLE_CHECKS = (("gradcheck", 1), ("gradgradcheck", 2), ("third-order check", 3))


def _check_double(exercise: Exercise, fn: Any) -> CheckResult:
    """First, second and third derivatives of RMSNorm through the student's backward."""
    if not callable(fn):
        return _verdict(exercise, "error", f"expected a function {exercise.signature}, got {type(fn).__name__}")
    function = type("StudentRMSNorm", (_RMSNormOf,), {"student": staticmethod(fn)})
    passed_first = True
    max_rel = 0.0
    for index, case in enumerate(exercise.cases):
        inputs, consts, _ = exercise.sample(index)
        tensors = tuple(tensor(a, requires_grad=True) for a in inputs)

        def rmsnorm(x: Tensor, weight: Tensor, eps: float = consts[0]) -> Tensor:
            return function.apply(x, weight, eps=eps)

        for check_name, order in _DOUBLE_CHECKS:
            try:
                if order == 1:
                    result = gradcheck(rmsnorm, tensors, raise_exception=False)
                else:
                    result = higher_order_gradcheck(rmsnorm, tensors, order, fast=order == 3, raise_exception=False)
            except NotImplementedError:
                return _not_implemented(exercise, getattr(fn, "__name__", "your function"))
            except Exception as err:  # the student's bug, reported instead of raised
                detail = f"{_describe_exception(err)}\n  in the {check_name}, case: {case.label}"
                if order > 1 and isinstance(err, (TypeError, AttributeError)):
                    mistake = MISTAKES["numpy_escapes_graph"]
                    detail += "\n" + _hint_line(mistake)
                    return CheckResult(
                        exercise.name,
                        "error",
                        f"[{exercise.name}] ERROR: {detail}",
                        [GradientVerdict("dx", str(err), case.label, [mistake])],
                    )
                return _verdict(exercise, "error", detail)
            max_rel = max(max_rel, result.max_rel_error)
            if result.passed:
                continue
            passed_first = passed_first and order > 1
            failure = result.failures[0]
            hints = [MISTAKES["statistics_without_history"]] if passed_first else []
            problem = f"{check_name}: " + _describe_failure(failure)
            verdict = GradientVerdict(check_name, problem, f"first wrong in case: {case.label}", hints)
            return _failed(exercise, [verdict])
    message = (
        f"[{exercise.name}] PASSED: gradcheck, gradgradcheck and the third-order check, in all "
        f"{len(exercise.cases)} cases (max relative error {max_rel:.1e})."
    )
    return CheckResult(exercise.name, "passed", message, max_rel_error=max_rel)


def _hint_line(mistake: Mistake) -> str:
    text = f"hint ({mistake.name}): {mistake.hint}"
    return textwrap.fill(text, 110, initial_indent="    ", subsequent_indent="      ", break_on_hyphens=False)


# ---- registering a student's norm ------------------------------------------------------------
_registered_here: set[str] = set()


def register(spec: NormSpec) -> NormSpec:
    """``register_norm(spec)``, except that a norm registered earlier by this function (the
    same notebook cell, run again) is replaced instead of refused."""
    if spec.name in _registered_here:
        NORMS.pop(spec.name, None)
    register_norm(spec)
    _registered_here.add(spec.name)
    return spec


def unregister(name: str) -> None:
    """Remove a norm that ``register`` added (the package's own norms stay)."""
    if name in _registered_here:
        NORMS.pop(name, None)
        _registered_here.discard(name)
