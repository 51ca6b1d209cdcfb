"""What every norm file needs: argument checks with clear errors, and the per-row
statistics computed safely (float16 widened, two-pass variance, no overflow)."""

from __future__ import annotations

from typing import Any

from .. import backend
from ..nn.module import Module
from ..tensor import Tensor

IMPLS = ("explicit", "autograd")


def as_shape(normalized_shape: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``8`` -> ``(8,)``; a tuple of trailing dimensions stays as it is."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or any(not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"normalized_shape: expected a positive int or a tuple of them, got {normalized_shape!r}")
    return shape


def feature_axes(ndim: int, normalized_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The trailing axes a norm normalizes over."""
    return tuple(range(ndim - len(normalized_shape), ndim))


def check_input(name: str, x: Any, normalized_shape: tuple[int, ...] | None = None) -> None:
    """A floating-point Tensor whose trailing shape is ``normalized_shape``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a tn.Tensor, got {type(x).__name__}")
    if not backend.is_floating(x.dtype, x.xp):
        raise TypeError(f"{name}: input must have a floating dtype, got {x.dtype}; convert with x.to('float64')")
    if normalized_shape is not None and x.shape[x.ndim - len(normalized_shape) :] != normalized_shape:
        raise ValueError(
            f"{name}: input's trailing shape must equal normalized_shape {normalized_shape}, "
            f"got input of shape {x.shape}"
        )


def check_param(name: str, param: Tensor | None, expected: tuple[int, ...]) -> None:
    """A parameter must have exactly its documented shape; broadcasting is not a licence."""
    if param is None or param.shape == expected:
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


def check_eps(eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number (it keeps 1/sqrt(var + eps) finite), got {eps}")
    return float(eps)


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


# ---- statistics -------------------------------------------------------------------------
def widen(x: Any) -> Any:
    """float16 input is normalized in float32: its squares overflow at |x| > 256 and its
    sums lose digits (the fp16 RMSNorm failures of meta-llama issue 1048)."""
    xp = backend.namespace(backend.backend_of(x))
    return xp.astype(x, backend.compute_dtype(x.dtype, xp), copy=False)


def _all_finite(xp: Any, stat: Any) -> bool:
    return bool(xp.all(xp.isfinite(stat)))


def _row_scale(xp: Any, x: Any, axes: tuple[int, ...], bad: Any) -> Any:
    """max |x| of the rows whose statistic overflowed, 1 elsewhere."""
    scale = xp.max(xp.abs(x), axis=axes, keepdims=True)
    return xp.where(bad, scale, xp.ones_like(scale))


def rms_rstd(x: Any, axes: tuple[int, ...], eps: float) -> Any:
    """``1 / sqrt(mean(x**2) + eps)`` per row (``keepdims``).

    Overflow: ``x**2`` is inf for |x| > 1.8e19 in float32 (PyTorch 2.13 then returns 0).
    Rows whose mean square is not finite are recomputed from ``x / s`` with ``s = max|x|``:
    ``rstd = (1/s) / sqrt(mean((x/s)**2) + eps/s**2)``. The check costs one pass over the
    per-row statistics, not over ``x``, so the common case is not slowed down. Underflow
    needs nothing: a row so small that ``x**2`` underflows is dominated by ``eps``.
    """
    xp = backend.namespace(backend.backend_of(x))
    ms = xp.mean(x * x, axis=axes, keepdims=True)
    rstd = 1 / xp.sqrt(ms + eps)
    if _all_finite(xp, ms):
        return rstd
    bad = ~xp.isfinite(ms)
    scale = _row_scale(xp, x, axes, bad)
    xs = x / scale
    rstd_scaled = (1 / scale) / xp.sqrt(xp.mean(xs * xs, axis=axes, keepdims=True) + eps / (scale * scale))
    return xp.where(bad, rstd_scaled, rstd)


def mean_rstd(x: Any, axes: tuple[int, ...], eps: float, correction: int = 0) -> tuple[Any, Any]:
    """Per-row ``mean`` and ``rstd = 1 / sqrt(var + eps)`` (``keepdims``).

    Two-pass variance, ``mean((x - mean)**2)``, never ``E[x**2] - E[x]**2``, which loses
    every digit when the mean is large against the spread (PyTorch issue 51102).
    ``correction=1`` divides by ``N - 1`` (unbiased) instead of ``N`` (biased, LayerNorm's).
    Rows whose statistics overflow are recomputed from ``x / max|x|``, as in ``rms_rstd``.
    """
    xp = backend.namespace(backend.backend_of(x))
    n = 1
    for ax in axes:
        n *= x.shape[ax]

    def stats(values: Any) -> tuple[Any, Any]:
        mean = xp.mean(values, axis=axes, keepdims=True)
        centered = values - mean
        return mean, xp.sum(centered * centered, axis=axes, keepdims=True) / (n - correction)

    mean, var = stats(x)
    rstd = 1 / xp.sqrt(var + eps)
    if _all_finite(xp, var):
        return mean, rstd
    bad = ~xp.isfinite(var)
    scale = _row_scale(xp, x, axes, bad)
    mean_scaled, var_scaled = stats(x / scale)
    rstd_scaled = (1 / scale) / xp.sqrt(var_scaled + eps / (scale * scale))
    return xp.where(bad, mean_scaled * scale, mean), xp.where(bad, rstd_scaled, rstd)
