"""The primitive operations, each a ``Function`` whose backward sits right under its forward.

Every norm's autograd reference is composed from these, so autograd derives the
norm's gradient independently of its hand-written backward. The rule that makes
broadcasting work: when a forward broadcast an input to a bigger shape, the
input's gradient is the output's gradient summed back to the input's shape, by
``sum_to``, the one unbroadcast every op here uses.

Where tinynorm's names differ from PyTorch's: reductions take NumPy's ``axis=`` and
``keepdims=`` and PyTorch's ``dim=`` and ``keepdim=`` alike (one spelling per call);
``max`` and ``min`` over an axis return the values only (``torch.amax``), not
``torch.max``'s (values, indices) pair; and a tensor's ``.grad`` is a backend array
(NumPy, CuPy...), not a Tensor.
"""

from __future__ import annotations

import builtins
import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backend
from .autograd import Context, Function
from .backend import namespace_of
from .tensor import Tensor, tensor

Axis = int | tuple[int, ...] | None


def sum_to(grad: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting.

    Broadcasting (1) prepends axes and (2) stretches axes of size 1. The
    gradient of a stretched value is the sum of the gradients of its copies, so
    we sum over the prepended axes and over the axes that were stretched.
    """
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    xp = namespace_of(grad)
    lead = grad.ndim - len(shape)
    stretched = tuple(lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    axes = tuple(range(lead)) + stretched
    return xp.reshape(xp.sum(grad, axis=axes, keepdims=True), shape)


def _lift(value: Any, like: Tensor) -> Tensor:
    """Turn a Python number into a 0-d tensor of ``like``'s dtype and backend, and an array of
    ``like``'s backend (``ndarray + t``) into a constant tensor of its own dtype."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)):
        return Tensor(like.xp.asarray(value, dtype=like.dtype))
    if backend.backend_of_or_none(value) == like.backend:
        return tensor(value, backend_name=like.backend)  # a copy: the caller may change the array before backward
    other = backend.backend_of_or_none(value)
    raise TypeError(
        f"expected a tn.Tensor or a Python number, got {type(value).__name__}"
        + (f" of backend {other!r}" if other else "")
        + f" (an array of the tensor's own backend, {like.backend}, works too)"
    )


def _pair(a: Any, b: Any) -> tuple[Tensor, Tensor]:
    if isinstance(a, Tensor):
        return a, _lift(b, a)
    return _lift(a, b), b


def _check_broadcast(op: str, a: Tensor, b: Tensor) -> None:
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


# ---- arithmetic ----------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a_shape, b_shape = ctx.saved_tensors
        return sum_to(grad, a_shape), sum_to(grad, b_shape)


class Sub(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a_shape, b_shape = ctx.saved_tensors
        return sum_to(grad, a_shape), sum_to(-grad, b_shape)


class Mul(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        da = sum_to(grad * b, a.shape) if ctx.needs_input_grad[0] else None
        db = sum_to(grad * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        da = sum_to(grad / b, a.shape) if ctx.needs_input_grad[0] else None
        db = sum_to(-grad * a / (b * b), b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Pow(Function):
    """``a ** b``. d/da = b a^(b-1); d/db = a^b log a (defined for a > 0)."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        out = namespace_of(a).pow(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b, out = ctx.saved_tensors
        xp = namespace_of(a)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = sum_to(grad * b * xp.pow(a, b - 1), a.shape)
        if ctx.needs_input_grad[1]:
            positive = a > 0
            log_a = xp.log(xp.where(positive, a, xp.ones_like(a)))
            db = sum_to(grad * xp.where(positive, out * log_a, xp.zeros_like(out)), b.shape)
        return da, db


class Neg(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        return -a

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        return -grad


class MatMul(Function):
    """``a @ b`` for 2-D (or batched) operands; 1-D operands are promoted as in NumPy."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return namespace_of(a).matmul(a, b)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        xp = namespace_of(a)
        # Promote 1-D operands the way matmul did, so one formula serves every case.
        a2 = xp.reshape(a, (1,) + tuple(a.shape)) if a.ndim == 1 else a
        b2 = xp.reshape(b, tuple(b.shape) + (1,)) if b.ndim == 1 else b
        g2 = grad
        # Restore b's axis (the output's last) before a's (the one before it): () -> (1,) -> (1, 1).
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-2)
        da = db = None
        if ctx.needs_input_grad[0]:
            da = sum_to(xp.matmul(g2, xp.matrix_transpose(b2)), a2.shape)
            da = xp.reshape(da, a.shape)
        if ctx.needs_input_grad[1]:
            db = sum_to(xp.matmul(xp.matrix_transpose(a2), g2), b2.shape)
            db = xp.reshape(db, b.shape)
        return da, db


# ---- elementwise functions --------------------------------------------------------
class Exp(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        out = namespace_of(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (out,) = ctx.saved_tensors
        return grad * out


class Log(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return namespace_of(a).log(a)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        return grad / a


class Log1p(Function):
    """``log(1 + a)``, accurate for tiny ``a`` (where ``1 + a`` would round to 1)."""

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return namespace_of(a).log1p(a)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        return grad / (1 + a)


class Sqrt(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        out = namespace_of(a).sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (out,) = ctx.saved_tensors
        return grad / (2 * out)


class Tanh(Function):
    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        out = namespace_of(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (out,) = ctx.saved_tensors
        return grad * (1 - out * out)


# W. J. Cody, "Rational Chebyshev approximations for the error function", Mathematics of
# Computation 23 (1969) 631-637; the coefficients as published in his SPECFUN routine CALERF.
# Three regions of |a|: erf itself up to 0.46875, then erfc(y) * exp(y**2) up to 4, then an
# expansion in 1/y**2 beyond.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03)
_ERF_A4 = 1.85777706184603153e-1
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_ERF_C = (
    5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
    8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
)  # fmt: skip
_ERF_C8 = 2.15311535474403846e-8
_ERF_D = (
    1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
    3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03,
)  # fmt: skip
_ERF_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
)
_ERF_P5 = 1.63153871373020978e-2
_ERF_Q = (
    2.56852019228982242e00,
    1.87295284992346047e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_INV_SQRT_PI = 5.6418958354775628695e-1


def _rational(z: Any, top: float, num: tuple[float, ...], den: tuple[float, ...]) -> Any:
    """Cody's ``(((top*z + num0)*z + num1)...) / ((((z + den0)*z + den1)...)``, Horner's rule."""
    xnum, xden = top * z, z
    for n, d in zip(num[:-1], den[:-1]):
        xnum, xden = (xnum + n) * z, (xden + d) * z
    return (xnum + num[-1]) / (xden + den[-1])


def erf_values(a: Any) -> Any:
    """``erf`` of a raw array, with Array-API functions only (NumPy has no erf).

    Within 2 units in the last place of float64 over the whole real line (measured in
    ``tests/test_norms_derf_layerscale.py``); ``erf(+-inf) = +-1``, ``erf(nan) = nan``. Every
    region is evaluated on every element (on ``|a|`` clipped into that region, so nothing
    overflows) and ``where`` picks the right one: no Python branch on values.
    """
    xp = namespace_of(a)
    y = xp.abs(a)
    small = a * _rational(xp.minimum(y, 0.46875) ** 2, _ERF_A4, _ERF_A, _ERF_B)
    # erfc(y) = exp(-y**2) * R(y); y**2 is split as ys**2 + (y - ys)(y + ys) with ys = y rounded
    # down to 1/16, so that exp(-y**2) loses no digits to the rounding of y**2 (Cody's trick).
    mid = xp.minimum(xp.maximum(y, 0.46875), 4.0)
    big = xp.minimum(xp.maximum(y, 4.0), 6.0)  # erf(6) is 1 in float64 already
    inv2 = 1 / (big * big)
    ratio_mid = _rational(mid, _ERF_C8, _ERF_C, _ERF_D)
    ratio_big = (_INV_SQRT_PI - inv2 * _rational(inv2, _ERF_P5, _ERF_P, _ERF_Q)) / big
    yr = xp.where(y <= 4.0, mid, big)
    ys = xp.trunc(yr * 16) / 16
    erfc = xp.exp(-ys * ys) * xp.exp(-(yr - ys) * (yr + ys)) * xp.where(y <= 4.0, ratio_mid, ratio_big)
    tail = (0.5 - erfc) + 0.5
    tail = xp.where(y > 6.0, xp.ones_like(tail), tail)
    tail = xp.where(a < 0, -tail, tail)
    return xp.where(y <= 0.46875, small, xp.where(xp.isnan(a), a, tail))


def erf_of(a: Any) -> Any:
    """``erf(a)`` in ``a``'s namespace: its own ``erf`` where it has one, ``erf_values`` otherwise.

    Tensors have one (``tinynorm/graph_xp.py``): the recorded ``Erf`` op, whose derivative is
    the exact ``2/sqrt(pi) * exp(-a**2)``, not the derivative of Cody's approximation. So a
    formula that calls ``erf_of`` is differentiated to any order through ``Erf``'s backward."""
    xp = namespace_of(a)
    return xp.erf(a) if hasattr(xp, "erf") else erf_values(a)


class Erf(Function):
    """``erf(a)``; backward ``grad * 2/sqrt(pi) * exp(-a**2)``.

    A namespace with its own ``erf`` uses it (``erf_of``); NumPy and the Array API have
    none, and get ``erf_values``.
    """

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        out = erf_of(a)
        ctx.save_for_backward(a)  # ``a``, not ``exp(-a**2)``: backward stays a formula in ``a``
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        return grad * (2 / math.sqrt(math.pi)) * namespace_of(a).exp(-a * a)


class Abs(Function):
    """``|a|``; at 0 the gradient is taken as 0 (PyTorch's choice: sign(0) = 0)."""

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        ctx.save_for_backward(a)
        return namespace_of(a).abs(a)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (a,) = ctx.saved_tensors
        return grad * namespace_of(a).sign(a)


class Maximum(Function):
    """Elementwise ``max(a, b)``. The gradient goes to the larger side; where ``a == b`` each side
    gets half of it (PyTorch's rule for ``torch.maximum``), so that the two shares still add up to
    the whole. ``relu`` has its own primitive, ``ReLU``, whose gradient at 0 is 0, not one half."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return namespace_of(a).maximum(a, b)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        xp = namespace_of(a)
        share_a = xp.astype(xp.greater(a, b), grad.dtype) + 0.5 * xp.astype(xp.equal(a, b), grad.dtype)
        return sum_to(grad * share_a, a.shape), sum_to(grad * (1 - share_a), b.shape)


class ReLU(Function):
    """``max(a, 0)``. Its derivative is 1 for ``a > 0`` and 0 for ``a < 0``; at exactly 0 it is
    taken as 0, as PyTorch, micrograd and MiniTorch take it (``maximum(a, 0)`` would give 1/2)."""

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        xp = namespace_of(a)
        out = xp.maximum(a, xp.zeros_like(a))  # maximum, not where(a > 0, ...): NaN stays NaN
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (out,) = ctx.saved_tensors
        xp = namespace_of(out)
        return xp.where(out > 0, grad, xp.zeros_like(grad))


class Sigmoid(Function):
    """``1 / (1 + exp(-a))``; d/da = out (1 - out).

    Computed from ``e = exp(-|a|)``, never above 1: ``1 / (1 + e)`` for ``a >= 0`` and
    ``e / (1 + e)`` for ``a < 0``, so no exp overflows, whatever the sign of ``a``."""

    @staticmethod
    def forward(ctx: Context, a: Any) -> Any:
        xp = namespace_of(a)
        e = xp.exp(-xp.abs(a))
        out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (out,) = ctx.saved_tensors
        return grad * out * (1 - out)


class Clamp(Function):
    """``min(max(a, low), high)``, either bound ``None`` for none. The gradient passes where
    ``low <= a <= high`` (bounds included, as ``torch.clamp``) and is 0 elsewhere."""

    @staticmethod
    def forward(ctx: Context, a: Any, low: float | None, high: float | None) -> Any:
        ctx.save_for_backward(a, low, high)
        return namespace_of(a).clip(a, low, high)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        a, low, high = ctx.saved_tensors
        xp = namespace_of(a)
        inside = xp.ones_like(a, dtype=xp.bool)
        if low is not None:
            inside = inside & (a >= low)
        if high is not None:
            inside = inside & (a <= high)
        return xp.where(inside, grad, xp.zeros_like(grad))


class Softmax(Function):
    """``exp(a) / sum(exp(a))`` along one axis, computed as ``exp(a - max)`` over its sum: the
    shift cancels in the ratio and keeps every exp at most 1, so large inputs do not overflow.

    Backward: with ``out`` the softmax and ``g`` the upstream gradient,
    ``da = out * (g - sum(g * out))``, the sum along the same axis."""

    @staticmethod
    def forward(ctx: Context, a: Any, axis: tuple[int, ...]) -> Any:
        xp = namespace_of(a)
        e = xp.exp(a - xp.max(a, axis=axis, keepdims=True))
        out = e / xp.sum(e, axis=axis, keepdims=True)
        ctx.save_for_backward(out, axis)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        out, axis = ctx.saved_tensors
        return out * (grad - namespace_of(out).sum(grad * out, axis=axis, keepdims=True))


class LogSoftmax(Function):
    """``a - log(sum(exp(a)))`` along one axis, as ``(a - max) - log(sum(exp(a - max)))``: stable,
    and more accurate than ``log(softmax(a))``, which gives -inf once a softmax underflows to 0.

    Backward: ``da = g - softmax(a) * sum(g)``, with ``softmax(a) = exp(out)``."""

    @staticmethod
    def forward(ctx: Context, a: Any, axis: tuple[int, ...]) -> Any:
        xp = namespace_of(a)
        shifted = a - xp.max(a, axis=axis, keepdims=True)
        out = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        ctx.save_for_backward(out, axis)
        return out

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        out, axis = ctx.saved_tensors
        xp = namespace_of(out)
        return grad - xp.exp(out) * xp.sum(grad, axis=axis, keepdims=True)


class Where(Function):
    """``where(condition, a, b)``; ``condition`` is a boolean array, not differentiated."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any, condition: Any) -> Any:
        ctx.save_for_backward(a.shape, b.shape, condition)
        return namespace_of(a).where(condition, a, b)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a_shape, b_shape, condition = ctx.saved_tensors
        xp = namespace_of(grad)
        zero = xp.zeros_like(grad)
        return (
            sum_to(xp.where(condition, grad, zero), a_shape),
            sum_to(xp.where(condition, zero, grad), b_shape),
        )


class Cast(Function):
    """Change the dtype; the gradient is cast back to the input's dtype."""

    @staticmethod
    def forward(ctx: Context, a: Any, dtype: Any) -> Any:
        ctx.save_for_backward(a.dtype)
        return namespace_of(a).astype(a, dtype)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (dtype,) = ctx.saved_tensors
        return namespace_of(grad).astype(grad, dtype)


# ---- reductions ---------------------------------------------------------------------
def _normalize_axis(axis: Axis, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis) if isinstance(axis, (tuple, list)) else None
    if axes is None or not builtins.all(isinstance(ax, (int, np.integer)) for ax in axes):
        hint = " (the elementwise maximum of two tensors is tn.maximum)" if isinstance(axis, Tensor) else ""
        raise TypeError(f"axis: expected an int, a tuple of ints or None, got {type(axis).__name__}{hint}")
    for ax in axes:
        if not -builtins.max(ndim, 1) <= ax < builtins.max(ndim, 1):
            raise ValueError(f"axis: expected values in [-{ndim}, {ndim}), got {axis}")
    return tuple(sorted(ax % ndim for ax in axes)) if ndim else ()


def _expand_reduced(grad: Any, shape: tuple[int, ...], axes: tuple[int, ...], keepdims: bool) -> Any:
    """Put back the reduced axes (as size 1) so ``grad`` broadcasts against the input."""
    xp = namespace_of(grad)
    if not keepdims:
        kept = tuple(1 if i in axes else n for i, n in enumerate(shape))
        grad = xp.reshape(grad, kept)
    return grad


class Sum(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, axis: Axis = None, keepdims: bool = False) -> Any:
        axes = _normalize_axis(axis, a.ndim)
        ctx.save_for_backward(tuple(a.shape), axes, keepdims)
        return namespace_of(a).sum(a, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, axes, keepdims = ctx.saved_tensors
        grad = _expand_reduced(grad, shape, axes, keepdims)
        return namespace_of(grad).broadcast_to(grad, shape)


class Mean(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, axis: Axis = None, keepdims: bool = False) -> Any:
        axes = _normalize_axis(axis, a.ndim)
        ctx.save_for_backward(tuple(a.shape), axes, keepdims)
        return namespace_of(a).mean(a, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, axes, keepdims = ctx.saved_tensors
        count = int(np.prod([shape[ax] for ax in axes]))
        grad = _expand_reduced(grad, shape, axes, keepdims) / count
        return namespace_of(grad).broadcast_to(grad, shape)


class Max(Function):
    """Maximum over axes; ties share the gradient equally (PyTorch's ``amax`` rule)."""

    @staticmethod
    def forward(ctx: Context, a: Any, axis: Axis = None, keepdims: bool = False) -> Any:
        axes = _normalize_axis(axis, a.ndim)
        out = namespace_of(a).max(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, out, axes, keepdims)
        return out if keepdims else namespace_of(a).reshape(out, _reduced_shape(a.shape, axes))

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        a, out, axes, keepdims = ctx.saved_tensors
        xp = namespace_of(a)
        is_max = xp.astype(xp.equal(a, out), grad.dtype)
        count = xp.sum(is_max, axis=axes, keepdims=True)
        return _expand_reduced(grad, tuple(a.shape), axes, keepdims) * is_max / count


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for i, n in enumerate(shape) if i not in axes)


# ---- shape operations -----------------------------------------------------------------
class Reshape(Function):
    returns_view = True

    @staticmethod
    def forward(ctx: Context, a: Any, shape: tuple[int, ...]) -> Any:
        ctx.save_for_backward(tuple(a.shape))
        return namespace_of(a).reshape(a, shape)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (shape,) = ctx.saved_tensors
        return namespace_of(grad).reshape(grad, shape)


class Permute(Function):
    returns_view = True

    @staticmethod
    def forward(ctx: Context, a: Any, axes: tuple[int, ...]) -> Any:
        ctx.save_for_backward(axes)
        return namespace_of(a).permute_dims(a, axes)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (axes,) = ctx.saved_tensors
        inverse = tuple(int(i) for i in np.argsort(axes))
        return namespace_of(grad).permute_dims(grad, inverse)


class BroadcastTo(Function):
    returns_view = True

    @staticmethod
    def forward(ctx: Context, a: Any, shape: tuple[int, ...]) -> Any:
        ctx.save_for_backward(tuple(a.shape))
        return namespace_of(a).broadcast_to(a, shape)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (shape,) = ctx.saved_tensors
        return sum_to(grad, shape)


class GetItem(Function):
    """Basic slicing (ints, slices, ``...``, ``None``); the gradient is scattered back."""

    returns_view = True

    @staticmethod
    def forward(ctx: Context, a: Any, index: Any) -> Any:
        ctx.save_for_backward(tuple(a.shape), index)
        return a[index]

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, index = ctx.saved_tensors
        if isinstance(grad, Tensor):  # differentiating a backward: the scatter is recorded too
            return ScatterSlice.apply(grad, shape=shape, index=index)
        return ScatterSlice.forward(None, grad, shape, index)


class ScatterSlice(Function):
    """Zeros of ``shape`` with ``grad`` written at ``index``: GetItem's backward, as an op of its own
    so that it can be differentiated (its backward is the slicing again)."""

    @staticmethod
    def forward(ctx: Context | None, grad: Any, shape: tuple[int, ...], index: Any) -> Any:
        if ctx is not None:
            ctx.save_for_backward(index)
            if ctx.recomputing:  # only the saved index is needed to differentiate the backward
                return None
        full = namespace_of(grad).zeros(shape, dtype=grad.dtype)
        full[index] = grad  # basic slicing never selects an element twice
        return full

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (index,) = ctx.saved_tensors
        return grad[index]


class Cat(Function):
    """Join arrays along an existing axis; each input's gradient is its own slice of the output's,
    cast back to its dtype (the output has the promoted one)."""

    @staticmethod
    def forward(ctx: Context, *arrays: Any, axis: int) -> Any:
        ctx.save_for_backward(tuple(a.shape[axis] for a in arrays), tuple(a.dtype for a in arrays), axis)
        xp = namespace_of(arrays[0])
        join = getattr(xp, "concat", None) or xp.concatenate  # CuPy has only NumPy's older name
        return join(arrays, axis=axis)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, ...]:
        lengths, dtypes, axis = ctx.saved_tensors
        xp = namespace_of(grad)
        grads, start = [], 0
        for length, dtype in zip(lengths, dtypes):
            part = grad[(slice(None),) * axis + (slice(start, start + length), ...)]
            grads.append(xp.astype(part, dtype, copy=False))
            start += length
        return tuple(grads)


# ---- the functional API -------------------------------------------------------------------
def add(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    _check_broadcast("add", a, b)
    return Add.apply(a, b)


def sub(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    _check_broadcast("sub", a, b)
    return Sub.apply(a, b)


def mul(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    _check_broadcast("mul", a, b)
    return Mul.apply(a, b)


def div(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    _check_broadcast("div", a, b)
    return Div.apply(a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001 (the operator's name)
    a, b = _pair(a, b)
    _check_broadcast("pow", a, b)
    return Pow.apply(a, b)


def neg(a: Tensor) -> Tensor:
    return Neg.apply(a)


def matmul(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match for a @ b")
    return MatMul.apply(a, b)


def exp(a: Tensor) -> Tensor:
    return Exp.apply(a)


def log(a: Tensor) -> Tensor:
    return Log.apply(a)


def log1p(a: Tensor) -> Tensor:
    """``log(1 + a)``, accurate for tiny ``a``."""
    return Log1p.apply(a)


def sqrt(a: Tensor) -> Tensor:
    return Sqrt.apply(a)


def tanh(a: Tensor) -> Tensor:
    return Tanh.apply(a)


def erf(a: Tensor) -> Tensor:
    """The error function ``2/sqrt(pi) * integral from 0 to a of exp(-t**2) dt``, as ``torch.erf``."""
    return Erf.apply(a)


def abs(a: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(a)


def maximum(a: Any, b: Any) -> Tensor:
    """Elementwise maximum, broadcasting. Ties (``a == b``) give each side half the gradient, as
    ``torch.maximum``; see ``Maximum``."""
    a, b = _pair(a, b)
    _check_broadcast("maximum", a, b)
    return Maximum.apply(a, b)


def relu(a: Tensor) -> Tensor:
    """``max(a, 0)``, with gradient 0 at exactly 0 (PyTorch's choice; see ``ReLU``)."""
    return ReLU.apply(a)


def sigmoid(a: Tensor) -> Tensor:
    """The logistic function ``1 / (1 + exp(-a))``, computed without overflow (see ``Sigmoid``)."""
    return Sigmoid.apply(a)


def clamp(a: Tensor, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002 (torch's names)
    """Limit ``a`` to ``[min, max]`` (``torch.clamp``; either bound may be ``None``). The bounds are
    Python numbers; PyTorch's tensor bounds are not supported (use ``tn.maximum`` or ``tn.where``).
    ``min > max`` gives ``max`` everywhere, as in PyTorch."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be a number, got both None")
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and (not isinstance(bound, numbers.Real) or isinstance(bound, bool)):
            raise TypeError(f"clamp: {name} must be a Python number or None, got {type(bound).__name__}")
    low = None if min is None else float(min)
    high = None if max is None else float(max)
    return Clamp.apply(a, low=low, high=high)


def _one_axis(op: str, axis: int | None, dim: int | None, ndim: int, default: int = -1) -> tuple[int, ...]:
    """A single axis, given as NumPy's ``axis=`` or PyTorch's ``dim=``, normalized."""
    axis = _either(op, "axis", axis, "dim", dim, default=default)
    if not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{op}: axis (dim) must be one int, got {type(axis).__name__}")
    return _normalize_axis(int(axis), ndim)


def softmax(a: Tensor, axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Softmax along ``axis`` (or ``dim``; the last axis by default), stable for large inputs
    (see ``Softmax``). PyTorch requires ``dim``; here it defaults to -1."""
    return Softmax.apply(a, axis=_one_axis("softmax", axis, dim, a.ndim))


def log_softmax(a: Tensor, axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """``log(softmax(a))`` along ``axis`` (or ``dim``; the last by default), computed stably (see
    ``LogSoftmax``)."""
    return LogSoftmax.apply(a, axis=_one_axis("log_softmax", axis, dim, a.ndim))


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` is true, else ``b`` (condition: boolean array or tensor)."""
    a, b = _pair(a, b)
    condition = condition.data if isinstance(condition, Tensor) else condition
    shape = np.broadcast_shapes(tuple(condition.shape), a.shape, b.shape)
    return Where.apply(broadcast_to(a, shape), broadcast_to(b, shape), condition=condition)


def cast(a: Tensor, dtype: Any) -> Tensor:
    return Cast.apply(a, dtype=backend.resolve_dtype(dtype, a.xp))


def _either(op: str, name: str, value: Any, torch_name: str, torch_value: Any, default: Any) -> Any:
    """One argument under its NumPy name or its PyTorch name (``axis``/``dim``), not both."""
    if torch_value is None:
        return default if value is None else value
    if value is not None:
        raise TypeError(f"{op}: got both {name}={value!r} and {torch_name}={torch_value!r}; pass one of them")
    return torch_value


def _reduction_args(op: str, axis: Axis, keepdims: bool | None, dim: Axis, keepdim: bool | None) -> tuple[Axis, bool]:
    axis = _either(op, "axis", axis, "dim", dim, default=None)
    keepdims = _either(op, "keepdims", keepdims or None, "keepdim", keepdim, default=False)
    return axis, bool(keepdims)


def sum(  # noqa: A001
    a: Tensor, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None, keepdim: bool | None = None
) -> Tensor:
    """Sum over ``axis`` (every axis by default). ``dim``/``keepdim`` are PyTorch's names for
    ``axis``/``keepdims``."""
    axis, keepdims = _reduction_args("sum", axis, keepdims, dim, keepdim)
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(
    a: Tensor, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None, keepdim: bool | None = None
) -> Tensor:
    """Mean over ``axis`` (every axis by default); ``dim``/``keepdim`` as PyTorch spells them."""
    axis, keepdims = _reduction_args("mean", axis, keepdims, dim, keepdim)
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def max(  # noqa: A001
    a: Tensor, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None, keepdim: bool | None = None
) -> Tensor:
    """Maximum over ``axis`` (every axis by default); ties share the gradient equally.

    Returns the values only, as ``torch.amax``: ``torch.max(x, dim)`` also returns the
    indices. The elementwise maximum of two tensors is ``maximum``."""
    axis, keepdims = _reduction_args("max", axis, keepdims, dim, keepdim)
    return Max.apply(a, axis=axis, keepdims=keepdims)


def min(  # noqa: A001
    a: Tensor, axis: Axis = None, keepdims: bool = False, *, dim: Axis = None, keepdim: bool | None = None
) -> Tensor:
    """Minimum over ``axis``, composed as ``-max(-a)`` (so ties share the gradient as in ``max``);
    values only, as ``torch.amin``."""
    axis, keepdims = _reduction_args("min", axis, keepdims, dim, keepdim)
    return neg(Max.apply(neg(a), axis=axis, keepdims=keepdims))


def _correction(op: str, correction: float | None, unbiased: bool | None) -> float:
    if unbiased is not None:
        if correction is not None:
            raise TypeError(f"{op}: got both correction={correction!r} and unbiased={unbiased!r}; pass one of them")
        if not isinstance(unbiased, bool):
            raise TypeError(f"{op}: unbiased must be True or False, got {unbiased!r}")
        return 1.0 if unbiased else 0.0
    if correction is None:
        return 1.0
    if not isinstance(correction, numbers.Real) or isinstance(correction, bool) or not math.isfinite(correction):
        raise TypeError(f"{op}: correction must be a finite number (1 for unbiased, 0 for biased), got {correction!r}")
    return float(correction)


def var(
    a: Tensor,
    axis: Axis = None,
    keepdims: bool = False,
    *,
    correction: float | None = None,
    unbiased: bool | None = None,
    dim: Axis = None,
    keepdim: bool | None = None,
) -> Tensor:
    """Variance over ``axis``: ``sum((a - mean)**2) / (N - correction)``, ``N`` values per result.

    ``correction=1`` (the default, as ``torch.var``) is the unbiased estimate; ``correction=0``
    the biased one that LayerNorm and BatchNorm normalize with, and NumPy's default (its
    ``ddof``). ``unbiased=True``/``False`` is PyTorch's older spelling of 1/0. Two-pass
    (the mean first), composed from primitives. Where ``N - correction <= 0`` the result is
    inf or NaN, with a warning, as PyTorch does."""
    return _variance("var", a, axis, keepdims, correction, unbiased, dim, keepdim)


def std(
    a: Tensor,
    axis: Axis = None,
    keepdims: bool = False,
    *,
    correction: float | None = None,
    unbiased: bool | None = None,
    dim: Axis = None,
    keepdim: bool | None = None,
) -> Tensor:
    """Standard deviation, ``sqrt(var(...))``, with ``var``'s arguments and defaults (``correction=1``,
    as ``torch.std``; NumPy's default is 0)."""
    return sqrt(_variance("std", a, axis, keepdims, correction, unbiased, dim, keepdim))


def _variance(
    op: str,
    a: Tensor,
    axis: Axis,
    keepdims: bool,
    correction: float | None,
    unbiased: bool | None,
    dim: Axis,
    keepdim: bool | None,
) -> Tensor:
    axis, keepdims = _reduction_args(op, axis, keepdims, dim, keepdim)
    correction = _correction(op, correction, unbiased)
    axes = _normalize_axis(axis, a.ndim)
    count = math.prod(a.shape[ax] for ax in axes)
    if count - correction <= 0:
        warnings.warn(
            f"{op}: {count} value(s) per result and correction={correction} leave no degrees of freedom; "
            "the result is inf or NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    centered = a - mean(a, axis=axes, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):  # the warning above says it
        return sum(centered * centered, axis=axes, keepdims=keepdims) / builtins.max(count - correction, 0.0)


def reshape(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    shape = tuple(int(n) for n in shape)
    known = int(np.prod([n for n in shape if n != -1]))
    if shape.count(-1) > 1 or (-1 not in shape and known != a.size) or (-1 in shape and (known == 0 or a.size % known)):
        raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} into {shape}")
    return Reshape.apply(a, shape=shape)


def permute(a: Tensor, axes: tuple[int, ...]) -> Tensor:
    axes = tuple(int(i) % builtins.max(a.ndim, 1) for i in axes)
    if sorted(axes) != list(range(a.ndim)):
        raise ValueError(f"permute: expected a permutation of {tuple(range(a.ndim))}, got {axes}")
    return Permute.apply(a, axes=axes)


def transpose(a: Tensor, dim0: int = -2, dim1: int = -1) -> Tensor:
    axes = list(range(a.ndim))
    axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
    return permute(a, tuple(axes))


def broadcast_to(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    shape = tuple(shape)
    if a.shape == shape:
        return a
    try:
        if np.broadcast_shapes(a.shape, shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"broadcast_to: cannot broadcast shape {a.shape} to {shape}") from None
    return BroadcastTo.apply(a, shape=shape)


def getitem(a: Tensor, index: Any) -> Tensor:
    parts = index if isinstance(index, tuple) else (index,)
    for part in parts:
        if not (part is None or part is Ellipsis or isinstance(part, (int, slice))):
            raise TypeError(
                f"indexing: only basic slicing (ints, slices, ..., None) is supported, got {type(part).__name__}"
            )
    return GetItem.apply(a, index=index)


def unsqueeze(a: Tensor, dim: int) -> Tensor:
    """A new axis of size 1 at position ``dim``, ``-a.ndim - 1 <= dim <= a.ndim`` (``torch.unsqueeze``)."""
    if not isinstance(dim, (int, np.integer)) or not -a.ndim - 1 <= dim <= a.ndim:
        raise ValueError(f"unsqueeze: dim must be an int in [{-a.ndim - 1}, {a.ndim}], got {dim!r}")
    at = int(dim) % (a.ndim + 1)
    return reshape(a, a.shape[:at] + (1,) + a.shape[at:])


def squeeze(a: Tensor, dim: Axis = None) -> Tensor:
    """Remove axes of size 1: all of them, or those of ``dim`` (an int or a tuple) that have size 1;
    an axis in ``dim`` of another size is kept, as ``torch.squeeze`` keeps it."""
    axes = _normalize_axis(dim, a.ndim)
    return reshape(a, tuple(n for i, n in enumerate(a.shape) if not (i in axes and n == 1)))


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge the axes ``start_dim`` to ``end_dim`` (both included) into one (``torch.flatten``); a
    0-d tensor becomes shape ``(1,)``."""
    shape = a.shape or (1,)
    (start,), (end,) = _normalize_axis(start_dim, len(shape)), _normalize_axis(end_dim, len(shape))
    if start > end:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for shape {a.shape}")
    return reshape(a, shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :])


def _tensor_list(op: str, tensors: Sequence[Tensor]) -> list[Tensor]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError(f"{op}: tensors must be a non-empty list or tuple of tn.Tensors, got {type(tensors).__name__}")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: tensors[{i}] must be a tn.Tensor, got {type(t).__name__}")
    return list(tensors)


def cat(tensors: Sequence[Tensor], axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Join tensors along an existing axis (``axis`` or ``dim``, default 0), as ``torch.cat``: every
    other axis must match."""
    tensors = _tensor_list("cat", tensors)
    first = tensors[0]
    if first.ndim == 0:
        raise ValueError("cat: 0-d tensors have no axis to join along; use tn.stack")
    (at,) = _one_axis("cat", axis, dim, first.ndim, default=0)
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or t.shape[:at] + t.shape[at + 1 :] != first.shape[:at] + first.shape[at + 1 :]:
            raise ValueError(
                f"cat: tensors[{i}] has shape {t.shape}; along axis {at} it must match tensors[0], "
                f"of shape {first.shape}, on every other axis"
            )
    return Cat.apply(*tensors, axis=at)


def stack(tensors: Sequence[Tensor], axis: int | None = None, *, dim: int | None = None) -> Tensor:
    """Join tensors of one shape along a new axis (``axis`` or ``dim``, default 0), as ``torch.stack``."""
    tensors = _tensor_list("stack", tensors)
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensors[{i}] has shape {t.shape}, tensors[0] {tensors[0].shape}; they must match")
    at = _either("stack", "axis", axis, "dim", dim, default=0)
    return cat([unsqueeze(t, at) for t in tensors], axis=int(at) % (tensors[0].ndim + 1))


# ---- the same functions as Tensor methods ----------------------------------------------------------
# ``t.var(dim=0)`` is ``var(t, dim=0)``: each function here takes the tensor first, so the function
# itself serves as the method, with its one signature and docstring (tensor.py has the other methods).
for _name in (
    "exp log log1p sqrt tanh erf abs relu sigmoid softmax log_softmax clamp "
    "sum mean max min var std unsqueeze squeeze flatten"
).split():
    setattr(Tensor, _name, globals()[_name])
