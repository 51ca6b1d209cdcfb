"""The primitive operations, each a ``Function`` whose backward sits right under its forward.

Every norm's autograd reference is composed from these, so autograd derives the
norm's gradient independently of its hand-written backward. The rule that makes
broadcasting work: when a forward broadcast an input to a bigger shape, the
input's gradient is the output's gradient summed back to the input's shape, by
``sum_to``, the one unbroadcast every op here uses.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from . import backend
from .autograd import Context, Function
from .tensor import Tensor

Axis = int | tuple[int, ...] | None


def namespace_of(array: Any) -> Any:
    return backend.namespace(backend.backend_of(array))


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
    """Turn a Python number into a 0-d tensor of ``like``'s dtype and backend."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)):
        return Tensor(like.xp.asarray(value, dtype=like.dtype))
    raise TypeError(f"expected a tn.Tensor or a Python number, got {type(value).__name__}")


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
    """Elementwise ``max(a, b)``; where they tie, each side gets half the gradient (as PyTorch)."""

    @staticmethod
    def forward(ctx: Context, a: Any, b: Any) -> Any:
        ctx.save_for_backward(a, b)
        return namespace_of(a).maximum(a, b)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> tuple[Any, Any]:
        a, b = ctx.saved_tensors
        xp = namespace_of(a)
        share_a = xp.astype(a > b, grad.dtype) + 0.5 * xp.astype(a == b, grad.dtype)
        return sum_to(grad * share_a, a.shape), sum_to(grad * (1 - share_a), b.shape)


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
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
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
        is_max = xp.astype(a == out, grad.dtype)
        count = xp.sum(is_max, axis=axes, keepdims=True)
        return _expand_reduced(grad, tuple(a.shape), axes, keepdims) * is_max / count


def _reduced_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(n for i, n in enumerate(shape) if i not in axes)


# ---- shape operations -----------------------------------------------------------------
class Reshape(Function):
    @staticmethod
    def forward(ctx: Context, a: Any, shape: tuple[int, ...]) -> Any:
        ctx.save_for_backward(tuple(a.shape))
        return namespace_of(a).reshape(a, shape)

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        (shape,) = ctx.saved_tensors
        return namespace_of(grad).reshape(grad, shape)


class Permute(Function):
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

    @staticmethod
    def forward(ctx: Context, a: Any, index: Any) -> Any:
        ctx.save_for_backward(tuple(a.shape), a.dtype, index)
        return a[index]

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        shape, dtype, index = ctx.saved_tensors
        full = namespace_of(grad).zeros(shape, dtype=dtype)
        full[index] = grad  # basic slicing never selects an element twice
        return full


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


def matmul(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match for a @ b")
    return MatMul.apply(a, b)


def exp(a: Tensor) -> Tensor:
    return Exp.apply(a)


def log(a: Tensor) -> Tensor:
    return Log.apply(a)


def sqrt(a: Tensor) -> Tensor:
    return Sqrt.apply(a)


def tanh(a: Tensor) -> Tensor:
    return Tanh.apply(a)


def abs(a: Tensor) -> Tensor:  # noqa: A001
    return Abs.apply(a)


def maximum(a: Any, b: Any) -> Tensor:
    a, b = _pair(a, b)
    _check_broadcast("maximum", a, b)
    return Maximum.apply(a, b)


def relu(a: Tensor) -> Tensor:
    return maximum(a, 0.0)


def where(condition: Any, a: Any, b: Any) -> Tensor:
    """``a`` where ``condition`` is true, else ``b`` (condition: boolean array or tensor)."""
    a, b = _pair(a, b)
    condition = condition.data if isinstance(condition, Tensor) else condition
    shape = np.broadcast_shapes(tuple(condition.shape), a.shape, b.shape)
    return Where.apply(broadcast_to(a, shape), broadcast_to(b, shape), condition=condition)


def cast(a: Tensor, dtype: Any) -> Tensor:
    return Cast.apply(a, dtype=backend.resolve_dtype(dtype, a.xp))


def sum(a: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def max(a: Tensor, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max.apply(a, axis=axis, keepdims=keepdims)


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
