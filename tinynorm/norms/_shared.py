"""What every norm file needs besides its formulas: argument checks with clear errors
(each names the argument, what was expected and what it got), the module base class,
and the views of an input as 2-D rows that the plain formulas are written for.

The statistics themselves (two-pass variance, float16 widening, the overflow rescue)
are in ``tinynorm/stats.py``; everything that exists only for speed is in
``tinynorm/kernels/``.
"""

from __future__ import annotations

import math
import numbers
import operator
from typing import Any

from .. import backend
from ..backend import namespace_of
from ..nn.module import Module
from ..tensor import Tensor, tensor

IMPLS = ("explicit", "autograd")


def as_shape(normalized_shape: Any, name: str = "normalized_shape") -> tuple[int, ...]:
    """``8`` -> ``(8,)``; a tuple or list of positive ints stays as it is (NumPy ints count)."""
    items = normalized_shape if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    shape = tuple(_positive_int(n) for n in items)
    if not shape or None in shape:
        raise ValueError(
            f"{name}: expected a positive int or a tuple of them, got {normalized_shape!r}"
            f" ({type(normalized_shape).__name__})"
        )
    return shape


def check_positive_int(name: str, value: Any) -> int:
    """A positive integer (Python or NumPy int; not a bool, not a float such as 8.0)."""
    n = _positive_int(value)
    if n is None:
        raise ValueError(f"{name}: expected a positive int, got {value!r} ({type(value).__name__})")
    return n


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        n = operator.index(value)
    except TypeError:
        return None
    return n if n >= 1 else None


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (not a string, None or bool) within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name}: expected a finite real number, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def feature_axes(ndim: int, normalized_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The trailing axes a norm normalizes over."""
    return tuple(range(ndim - len(normalized_shape), ndim))


def check_input(name: str, x: Any, normalized_shape: tuple[int, ...] | None = None, like: Any = None) -> None:
    """A floating-point Tensor whose trailing shape is ``normalized_shape``.

    ``like`` (a Tensor, e.g. a module's buffer) must live on the same backend as ``x``:
    a module without parameters is checked up front as well.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a tn.Tensor, got {type(x).__name__}")
    if not backend.is_floating(x.dtype, x.xp):
        raise TypeError(f"{name}: input must have a floating dtype, got {x.dtype}; convert with x.to('float64')")
    if normalized_shape is not None and x.shape[x.ndim - len(normalized_shape) :] != normalized_shape:
        raise ValueError(
            f"{name}: input's trailing shape must equal normalized_shape {normalized_shape}, "
            f"got input of shape {x.shape}"
        )
    if like is not None and like.backend != x.backend:
        raise TypeError(
            f"{name}: input is on backend {x.backend!r} but the module's state is on {like.backend!r}; "
            f"move one with .to({x.backend!r}) or .to({like.backend!r})"
        )


def check_param(name: str, param: Any, expected: tuple[int, ...], x: Tensor | None = None) -> None:
    """A parameter must be a floating tn.Tensor of exactly its documented shape (or None),
    on ``x``'s backend; broadcasting is not a licence."""
    if param is None:
        return
    if not isinstance(param, Tensor):
        raise TypeError(
            f"{name}: expected a tn.Tensor of shape {expected} or None, got {type(param).__name__}; "
            f"wrap it with tn.tensor(...)"
        )
    if not backend.is_floating(param.dtype, param.xp):
        raise TypeError(f"{name}: expected a floating dtype, got {param.dtype}")
    if x is not None and param.backend != x.backend:
        raise TypeError(f"{name}: is on backend {param.backend!r}, the input on {x.backend!r}")
    if param.shape == expected:
        return
    hint = ""
    if len(expected) == 1 and param.shape == (expected[0], 1):
        hint = (
            f". A ({expected[0]}, 1) column does not scale each feature: against input of shape "
            f"(batch, {expected[0]}) it broadcasts to ({expected[0]}, {expected[0]}) when batch is "
            f"{expected[0]} or 1 (a silently wrong result) and fails otherwise. A per-dimension "
            f"scale is a vector of shape ({expected[0]},); a learnable ({expected[0]}, {expected[0]}) "
            "matrix that mixes features is RMSNormMatrix"
        )
    elif param.size == 1 and expected != ():
        hint = ". A single value would be broadcast as one scalar for every feature"
    raise ValueError(f"{name}: expected shape {expected}, got {param.shape}{hint}")


def check_eps(eps: Any) -> float:
    """A positive, finite number: it keeps ``1/sqrt(var + eps)`` finite."""
    eps = check_real("eps", eps)
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number (it keeps 1/sqrt(var + eps) finite), got {eps}")
    return eps


def eps_for(eps: float, x: Tensor) -> float:
    """``eps`` as the statistics of ``x`` will see it, refused if it rounds to 0 there.

    A positive eps below the compute dtype's smallest subnormal (``eps=1e-50`` for
    float32 input) becomes 0 when added, and a constant row then gives 0/0 = NaN.
    tinynorm refuses such an eps rather than compute with a different one.
    """
    xp = x.xp
    dtype = backend.compute_dtype(x.dtype, xp)
    if float(xp.asarray(eps, dtype=dtype)) == 0.0:
        raise ValueError(
            f"eps: {eps!r} rounds to 0 in {dtype} (the dtype statistics of this input are computed in), "
            f"so a constant row would give NaN; use an eps of at least {float(xp.finfo(dtype).smallest_normal)!r}"
        )
    return eps


def machine_eps(x: Tensor) -> float:
    """``eps=None`` (PyTorch's RMSNorm default): the machine epsilon of the input's dtype."""
    return float(x.xp.finfo(x.dtype).eps)


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    return impl


class NormModule(Module):
    """Base of the norm modules: ``impl="explicit"`` (hand-derived backward, the default)
    or ``impl="autograd"`` (the same forward from primitive ops)."""

    def __init__(self, impl: str = "explicit") -> None:
        super().__init__()
        self.impl = check_impl(impl)


def as_rows(array: Any, n: int) -> Any:
    """A view of ``array`` as ``(rows, n)``: the normalized features flattened into one axis."""
    xp = namespace_of(array)
    return xp.reshape(array, (-1, n))


def as_vector(param: Any, n: int) -> Any:
    """A parameter of shape ``normalized_shape`` as a vector of its ``n`` values (``None`` stays)."""
    return None if param is None else namespace_of(param).reshape(param, (n,))


def param_grad(grad: Any, param: Any) -> Any:
    """A parameter's gradient in the parameter's own shape and dtype (``None`` stays ``None``).

    The formulas compute it as a vector in the input's compute dtype; ``.grad`` must match
    the parameter, as in PyTorch.
    """
    if grad is None or param is None:
        return None
    xp = namespace_of(param)
    return xp.reshape(xp.astype(grad, param.dtype), param.shape)


def scalar_param(name: str, value: Tensor | float, x: Tensor) -> Tensor:
    """A scalar parameter given to a functional: a 0-d Tensor (learnable), or a real number
    (fixed), made into a constant 0-d Tensor in ``x``'s dtype. Anything else is refused."""
    if isinstance(value, Tensor):
        check_param(name, value, (), x)
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return tensor(check_real(name, value), dtype=x.dtype, backend_name=x.backend)
    raise TypeError(
        f"{name}: expected a real number (fixed) or a 0-d tn.Tensor (learnable), got {type(value).__name__}"
    )


# ---- the channel norms' views (GroupNorm, InstanceNorm, BatchNorm) ----------------------------
def as_ncl(x: Any) -> Any:
    """``(N, C, *)`` as ``(N, C, L)`` with ``L = prod(*)`` (1 for ``(N, C)``): a view."""
    return namespace_of(x).reshape(x, (x.shape[0], x.shape[1], math.prod(x.shape[2:])))


def per_channel(param: Any) -> Any:
    """A ``(C,)`` parameter as a ``(C, 1)`` column, to act per channel on ``(N, C, L)`` (``None`` stays)."""
    return None if param is None else namespace_of(param).reshape(param, (param.shape[0], 1))


def channel_shape(x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(C, 1, ...)``: a per-channel vector reshaped to broadcast against ``(N, C, *)``."""
    return (x_shape[1],) + (1,) * (len(x_shape) - 2)


def empty_norm(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """A channel norm of an input with no values at all (``N = 0``, or no positions).

    Then ``xhat`` is as empty as ``x``, and so is ``y = xhat * weight + bias``: an empty
    output, as PyTorch returns, whose input gradient is empty and whose parameter
    gradients, sums over nothing, are 0. Composed from primitive ops, so autograd gives
    exactly that.
    """
    shape = channel_shape(x.shape)
    y = x * 0.0  # xhat: empty, and still connected to x
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def scalar_value(a: Any) -> Any:
    """A 0-d array as a Python float; a 0-d Tensor (a backward being differentiated) as itself."""
    return a if isinstance(a, Tensor) else float(a)
