"""Finite-difference gradient checking: the instrument every test in tinynorm relies on.

The central difference ``(f(x + eps e_j) - f(x - eps e_j)) / (2 eps)`` estimates column
``j`` of the Jacobian with a truncation error of order ``eps**2`` and a round-off
error of order ``u / eps`` (``u`` the unit round-off of the dtype). In float64
(``u ~ 1e-16``) both are about 1e-10 at the default ``eps = 1e-6``; in float32
(``u ~ 6e-8``) the round-off alone is about 0.06, which is why the tolerances
assume float64 and a warning is raised otherwise. ``docs/gradcheck.md`` has the
full error analysis.

Two modes, as in ``torch.autograd.gradcheck``:

* full (default): the whole Jacobian. The analytical one is assembled row by row
  from vector-Jacobian products (one ``backward`` per output element, with a one-hot
  upstream gradient); the numerical one column by column (two forwards per input
  element). Then, because a backward must be *linear* in its upstream gradient, the
  gradient for one random upstream ``v`` is compared with ``v^T J`` as well.
* fast: one random projection per input, ``v^T J u`` with random unit ``u`` and
  ``v`` (Chainer's ``check_backward``, PyTorch's ``fast_mode``): one backward and two
  forwards per input, whatever the size.

Both modes also check that a zero upstream gradient gives zero gradients. The loss
is never ``y.sum()``: LayerNorm's output rows sum to a constant, so that loss has
gradient exactly zero and would hide any bug in ``dx``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """Raised when analytical and numerical gradients disagree; ``.result`` has the numbers."""

    def __init__(self, result: GradcheckResult) -> None:
        super().__init__(result.report())
        self.result = result


class GradcheckWarning(UserWarning):
    """The tolerances assume float64; this warns when an input is not."""


@dataclass
class GradcheckFailure:
    """The worst disagreement found for one input in one check.

    ``index`` is the element of the input, in the input's own shape; a Jacobian entry
    is d output[``output_index``] / d input[``index``], ``output_index`` in the output's
    shape (``None`` for the checks that have no single output element)."""

    input: str  # "input 0", or a module parameter's name such as "weight"
    check: str  # "jacobian", "random upstream", "projection" or "zero upstream"
    index: tuple[int, ...]  # element of the input, in its shape (() for 0-d, or for "projection")
    analytical: float
    numerical: float
    abs_error: float
    rel_error: float
    output_index: tuple[int, ...] | None = None  # Jacobian only: the output element, in its shape

    def __str__(self) -> str:
        element = f"{self.input}{_brackets(self.index)}"
        if self.output_index is not None:
            where = f" at output{_brackets(self.output_index)} w.r.t. {element}"
        else:
            where = f" at {element}" if self.index else ""
        return (
            f"{self.input!r}, {self.check} check{where}: analytical {self.analytical:.6g} vs "
            f"numerical {self.numerical:.6g} (abs error {self.abs_error:.3g}, "
            f"rel error {self.rel_error:.3g})"
        )


def _brackets(index: tuple[int, ...]) -> str:
    """``(1, 0)`` -> ``"[1, 0]"``; a 0-d tensor's element has no index: ``""``."""
    return "[" + ", ".join(str(i) for i in index) + "]" if index else ""


@dataclass
class GradcheckResult:
    """Everything a gradcheck measured. Truthy when it passed."""

    passed: bool
    mode: str
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    max_error_ratio: float = 0.0  # the worst |a - n| / (atol + rtol * |n|): at most 1 when it passed
    failures: list[GradcheckFailure] = field(default_factory=list)
    atol: float = 1e-5
    rtol: float = 1e-3
    check: str = "gradcheck"  # or "gradgradcheck", "third-order check"

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        if self.passed:
            return (
                f"{self.check} passed ({self.mode} mode): max abs error {self.max_abs_error:.3g}, "
                f"max rel error {self.max_rel_error:.3g}"
            )
        lines = [f"{self.check} failed ({self.mode} mode); allowed |a - n| <= {self.atol} + {self.rtol} * |n|:"]
        lines += [f"  - {f}" for f in self.failures]
        return "\n".join(lines)


# ---- the pieces -----------------------------------------------------------------
def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def checked_tensors(fn: Callable[..., Tensor], inputs: Any) -> list[tuple[str, Tensor]]:
    """The tensors whose gradients are checked: inputs that require grad, then the
    parameters of ``fn`` when it is a module."""
    names = getattr(fn, "input_names", None) or [f"input {i}" for i in range(len(_as_tuple(inputs)))]
    targets = [(names[i], t) for i, t in enumerate(_as_tuple(inputs)) if isinstance(t, Tensor) and t.requires_grad]
    if hasattr(fn, "named_parameters"):
        targets += [(name, p) for name, p in fn.named_parameters() if p.requires_grad]
    return targets


def _output(fn: Callable[..., Tensor], inputs: Any) -> Tensor:
    out = fn(*_as_tuple(inputs))
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a tn.Tensor, got {type(out).__name__}")
    return out


def _host(array: Any) -> np.ndarray:
    return backend.to_numpy(array).astype(np.float64)


def _forward_host(fn: Callable[..., Tensor], inputs: Any) -> np.ndarray:
    from .autograd import no_grad

    with no_grad():
        return _host(_output(fn, inputs).data)


def _directional(fn: Callable[..., Tensor], inputs: Any, t: Tensor, direction: np.ndarray, eps: float) -> np.ndarray:
    """Central difference of ``fn``'s output along ``direction`` in ``t``'s space.

    Each shifted point is a fresh array, never an in-place edit of ``t.data`` (which
    may be a broadcast view whose elements share memory)."""
    original = t.data
    xp, base = t.xp, _host(original)
    try:
        t.data = xp.astype(xp.asarray(base + eps * direction), original.dtype)
        plus = _forward_host(fn, inputs)
        t.data = xp.astype(xp.asarray(base - eps * direction), original.dtype)
        minus = _forward_host(fn, inputs)
    finally:
        t.data = original
    return (plus - minus) / (2 * eps)


def numerical_jacobian(fn: Callable[..., Tensor], inputs: Any, eps: float = 1e-6) -> list[np.ndarray]:
    """Jacobians d out / d t by central differences, one ``(out.size, t.size)`` matrix per
    checked tensor, built column by column."""
    eps = _check_step("eps", eps, zero_allowed=False)
    out_size = _forward_host(fn, inputs).size
    jacobians = []
    for _, t in checked_tensors(fn, inputs):
        jac = np.zeros((out_size, t.size))
        for j in range(t.size):
            e_j = np.zeros(t.size)
            e_j[j] = 1.0
            jac[:, j] = _directional(fn, inputs, t, e_j.reshape(t.shape), eps).ravel()
        jacobians.append(jac)
    return jacobians


def _vjp(fn: Callable[..., Tensor], inputs: Any, upstream: list[np.ndarray] | np.ndarray) -> list[list[np.ndarray]]:
    """Gradients of every checked tensor for each upstream gradient, from one forward."""
    targets = checked_tensors(fn, inputs)
    saved = [t.grad for _, t in targets]
    out = _output(fn, inputs)
    results = []
    try:
        for k, v in enumerate(upstream):
            for _, t in targets:
                t.grad = None
            out.backward(out.xp.astype(out.xp.asarray(v), out.dtype), retain_graph=k < len(upstream) - 1)
            results.append([np.zeros(t.shape) if t.grad is None else _host(t.grad) for _, t in targets])
    finally:
        for (_, t), g in zip(targets, saved):
            t.grad = g
    return results


def analytical_jacobian(fn: Callable[..., Tensor], inputs: Any) -> list[np.ndarray]:
    """Jacobians from the backward pass, row by row: row ``i`` is the gradient for a
    one-hot upstream gradient at output element ``i``."""
    out_shape = _forward_host(fn, inputs).shape
    n_out = int(np.prod(out_shape))
    rows = _vjp(fn, inputs, [np.eye(1, n_out, i).reshape(out_shape) for i in range(n_out)])
    n_targets = len(checked_tensors(fn, inputs))
    return [np.stack([row[k].ravel() for row in rows]) if rows else np.zeros((0, 0)) for k in range(n_targets)]


# ---- the check --------------------------------------------------------------------
def _error_ratio(analytical: np.ndarray, numerical: np.ndarray, atol: float, rtol: float) -> float:
    """The largest error as a fraction of the error allowed at that element (NaN counts as infinite)."""
    err = np.abs(analytical - numerical)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / (atol + rtol * np.abs(numerical)))
    return float(np.max(np.where(np.isnan(ratio), np.inf, ratio))) if ratio.size else 0.0


def _compare(
    name: str,
    check: str,
    analytical: np.ndarray,
    numerical: np.ndarray,
    atol: float,
    rtol: float,
    shape: tuple[int, ...],
    out_shape: tuple[int, ...] | None = None,
) -> tuple[float, float, GradcheckFailure | None]:
    """Compare elementwise. ``shape`` is the input's; a Jacobian (``out.size``, ``t.size``) also
    gives ``out_shape``, so that its worst entry is named by an output and an input element."""
    err = np.abs(analytical - numerical)
    # Relative to |numerical|, floored at atol so that entries that should be 0 do not
    # report astronomic relative errors from round-off (and at the smallest float when atol is 0).
    rel = err / np.maximum(np.abs(numerical), atol or np.finfo(np.float64).tiny)
    bad = ~(err <= atol + rtol * np.abs(numerical))  # NaN counts as bad
    max_abs = float(np.nanmax(err)) if err.size else 0.0
    max_rel = float(np.nanmax(rel)) if err.size else 0.0
    if not bad.any():
        return max_abs, max_rel, None
    worst = int(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1.0)))
    output_index = None
    element = worst
    if out_shape is not None:  # row: flat output element; column: flat input element
        row, element = divmod(worst, analytical.shape[1])
        output_index = _unravel(row, out_shape)
    failure = GradcheckFailure(
        name,
        check,
        _unravel(element, shape),
        float(analytical.ravel()[worst]),
        float(numerical.ravel()[worst]),
        float(err.ravel()[worst]),
        float(rel.ravel()[worst]),
        output_index,
    )
    return max_abs, max_rel, failure


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _check_step(name: str, value: Any, *, zero_allowed: bool) -> float:
    """eps must be a positive finite number; atol and rtol finite and >= 0."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"gradcheck: {name} must be a real number, got {type(value).__name__} {value!r}")
    bound = ">= 0" if zero_allowed else "> 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_allowed):
        why = " (the finite-difference step)" if name == "eps" else ""
        raise ValueError(f"gradcheck: {name} must be a finite number {bound}{why}, got {value!r}")
    return float(value)


def gradcheck(
    fn: Callable[..., Tensor],
    inputs: Any,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    fast: bool = False,
    seed: int = 0,
    raise_exception: bool = True,
    _check: str = "gradcheck",
) -> bool | GradcheckResult:
    """Compare ``fn``'s backward with central finite differences.

    Parameters
    ----------
    fn
        A callable (or ``tn.nn.Module``) returning one Tensor. A module's parameters
        that require grad are checked too.
    inputs
        A Tensor or a tuple of arguments; Tensors with ``requires_grad`` are checked.
    eps
        Finite-difference step: a finite number > 0.
    atol, rtol
        An element passes when ``|analytical - numerical| <= atol + rtol * |numerical|``;
        finite numbers >= 0.
    fast
        Check one random projection ``v^T J u`` per input instead of the whole Jacobian.
    seed
        Seed of the random upstream gradient and projection directions.
    raise_exception
        Raise ``GradcheckError`` on failure (default); otherwise return the result.

    Returns
    -------
    ``True`` when it passes and ``raise_exception`` is set; otherwise a
    ``GradcheckResult`` (truthy when it passed) carrying the errors measured.
    """
    eps = _check_step("eps", eps, zero_allowed=False)
    atol = _check_step("atol", atol, zero_allowed=True)
    rtol = _check_step("rtol", rtol, zero_allowed=True)
    targets = checked_tensors(fn, inputs)
    if not targets:
        raise ValueError("gradcheck: no input or parameter requires grad, so there is nothing to check")
    low = sorted({str(t.dtype) for _, t in targets if t.dtype != t.xp.float64})
    if low:
        warnings.warn(
            f"{_check}: inputs of dtype {low}; the tolerances assume float64 (finite "
            "differences in float32 have round-off errors near 1e-2)",
            GradcheckWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    out_shape = _forward_host(fn, inputs).shape
    v = rng.standard_normal(out_shape)
    comparisons: list[tuple[str, str, np.ndarray, np.ndarray, tuple[int, ...], tuple[int, ...] | None]] = []

    # A zero upstream gradient must give zero gradients.
    for (name, t), g in zip(targets, _vjp(fn, inputs, [np.zeros(out_shape)])[0]):
        comparisons.append((name, "zero upstream", g, np.zeros(t.shape), t.shape, None))

    (grads_v,) = _vjp(fn, inputs, [v])
    if fast:
        for (name, t), g in zip(targets, grads_v):
            u = rng.standard_normal(t.shape)
            u /= np.linalg.norm(u) or 1.0
            numerical = np.sum(v * _directional(fn, inputs, t, u, eps))
            comparisons.append((name, "projection", np.array(np.sum(g * u)), np.array(numerical), (), None))
    else:
        numerical_jacs = numerical_jacobian(fn, inputs, eps)
        analytical_jacs = analytical_jacobian(fn, inputs)
        for (name, t), g, num, ana in zip(targets, grads_v, numerical_jacs, analytical_jacs):
            comparisons.append((name, "jacobian", ana, num, t.shape, out_shape))
            comparisons.append((name, "random upstream", g, (v.ravel() @ num).reshape(t.shape), t.shape, None))

    result = GradcheckResult(passed=True, mode="fast" if fast else "full", atol=atol, rtol=rtol, check=_check)
    for name, check, analytical, numerical, shape, jacobian_out_shape in comparisons:
        max_abs, max_rel, failure = _compare(name, check, analytical, numerical, atol, rtol, shape, jacobian_out_shape)
        result.max_abs_error = max(result.max_abs_error, max_abs)
        result.max_rel_error = max(result.max_rel_error, max_rel)
        result.max_error_ratio = max(result.max_error_ratio, _error_ratio(analytical, numerical, atol, rtol))
        if failure is not None:
            result.passed = False
            result.failures.append(failure)
    if raise_exception:
        if not result.passed:
            raise GradcheckError(result)
        return True
    return result


# ---- higher orders: the same check, on the gradient as a function ------------------------------
ORDER_NAMES = {2: "gradgradcheck", 3: "third-order check"}


class GradientOf:
    """``fn``'s gradient as a function of ``fn``'s inputs and of an upstream gradient ``v``:

        (*inputs, v) -> the gradients of ``v . fn(*inputs)`` w.r.t. every checked tensor, flattened

    computed with ``create_graph=True``, so it has a backward of its own. ``gradcheck`` of this
    function is ``gradgradcheck`` of ``fn``: finite differences of the first-order gradient
    against its analytical derivative. ``GradientOf(GradientOf(fn))`` is one order higher.
    A module's parameters stay parameters (``named_parameters``), so they are checked too.
    """

    def __init__(self, fn: Callable[..., Tensor], inputs: Any, upstream_name: str) -> None:
        self.fn = fn
        n = len(_as_tuple(inputs))
        self.input_names = [*(getattr(fn, "input_names", None) or [f"input {i}" for i in range(n)]), upstream_name]

    def named_parameters(self) -> Any:
        return self.fn.named_parameters() if hasattr(self.fn, "named_parameters") else iter(())

    def __call__(self, *args: Any) -> Tensor:
        from . import ops
        from .autograd import grad, set_grad_enabled

        inputs, v = args[:-1], args[-1]
        targets = [t for _, t in checked_tensors(self.fn, inputs)]
        with set_grad_enabled(True):  # a gradient is needed even where the caller records none
            out = _output(self.fn, inputs)
            grads = grad(out, targets, v, create_graph=True, allow_unused=True)
        flat = [ops.reshape(g if g is not None else t * 0.0, (-1,)) for g, t in zip(grads, targets)]
        return ops.cat(flat, axis=0)


def higher_order_gradcheck(
    fn: Callable[..., Tensor],
    inputs: Any,
    order: int = 2,
    grad_outputs: Any = None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    fast: bool = False,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool | GradcheckResult:
    """Check the derivative of order ``order`` (2 or 3) of ``fn`` against finite differences of
    the derivative one order lower, with random upstream gradients at every order (never sums).

    Order 2 is ``gradgradcheck``. Order 3 differentiates the second-order gradient once more;
    with ``fast=True`` it compares a directional third derivative ``w^T D^3 u`` with the central
    difference of the second-order gradient along ``u``. The upstream gradients are inputs of the
    checked function, so the derivatives with respect to them are checked too; they are named
    ``grad_outputs`` (order 1) and ``grad_outputs_2`` (order 2) in the report.
    """
    if order not in ORDER_NAMES:
        raise ValueError(f"higher_order_gradcheck: order must be 2 or 3, got {order!r}")
    rng = np.random.default_rng(seed + 1)  # not the upstream gradcheck itself draws from `seed`
    wrapped, args = fn, tuple(_as_tuple(inputs))
    for k in range(1, order):
        out_shape = _forward_host(wrapped, args).shape
        given = grad_outputs if k == 1 and grad_outputs is not None else None
        v_host = rng.standard_normal(out_shape) if given is None else np.asarray(given, dtype=np.float64)
        out = _output(wrapped, args)
        v = Tensor(out.xp.astype(out.xp.asarray(v_host), out.dtype), requires_grad=True)
        wrapped = GradientOf(wrapped, args, "grad_outputs" if k == 1 else f"grad_outputs_{k}")
        args = (*args, v)
    return gradcheck(
        wrapped,
        args,
        eps=eps,
        atol=atol,
        rtol=rtol,
        fast=fast,
        seed=seed,
        raise_exception=raise_exception,
        _check=ORDER_NAMES[order],
    )


def gradgradcheck(
    fn: Callable[..., Tensor],
    inputs: Any,
    grad_outputs: Any = None,
    *,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
    fast: bool = False,
    seed: int = 0,
    raise_exception: bool = True,
) -> bool | GradcheckResult:
    """Check second derivatives, as ``torch.autograd.gradgradcheck``: ``gradcheck`` of the
    first-order gradient ``(*inputs, v) -> d(v . fn)/d(inputs)``, built with
    ``create_graph=True``. ``grad_outputs`` is that ``v`` (random normal by default, never
    ones). The arguments and the report are ``gradcheck``'s (``higher_order_gradcheck``)."""
    return higher_order_gradcheck(
        fn,
        inputs,
        2,
        grad_outputs,
        eps=eps,
        atol=atol,
        rtol=rtol,
        fast=fast,
        seed=seed,
        raise_exception=raise_exception,
    )
