"""CPU kernels for the row norms: the lessons' formulas on cache-sized row blocks.

Each ``*_block`` function below is the lesson's formula for one block of rows, with
three savings that change no result beyond rounding:

* temporaries are written into memory already owned (``out=``, ``mul_``, ``sub_``), often
  the caller's output block, instead of a fresh array per operation;
* sums over a row or a column are matrix-vector products (``row_sums``,
  ``column_sums``): BLAS reads the array once and never stores the product;
* per-row factors (``rstd``) are taken out of the sums and applied to the few per-row
  results instead of to whole arrays.

``blocks.blocked_forward`` / ``blocked_backward`` run them over the row blocks, on both
cores for big inputs. Each kernel is registered against its lesson, and
``tests/test_kernels.py`` checks that they agree. These run on NumPy only: the
Array API has no ``out=``, and CuPy has its fused kernels (``cupy_fused``).
"""

from __future__ import annotations

from typing import Any

from ..backend import namespace_of
from ..norms import custom_norm, dyt, layernorm, partial_rmsnorm, rmsnorm, rmsnorm_matrix, rmsnorm_tanh, scalenorm
from ..stats import centered_mean_rstd, rms_rstd, row_mean, row_mean_of_product, row_norm, row_sum_of_product, widen
from . import Kernel, register
from .blocks import add_, blocked_backward, blocked_forward, column_sums, mul_, normalize_rows, row_sums, sub_, tanh_


def cast_like(a: Any, like: Any) -> Any:
    """``a`` in ``like``'s dtype (the result back in the input's dtype; no copy if it is already)."""
    return namespace_of(a).astype(a, like.dtype, copy=False)


# ---- LayerNorm ------------------------------------------------------------------------------
def layer_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """``layernorm.layer_norm_forward``, by row blocks."""
    return blocked_forward(_layer_norm_block, x, weight, bias, eps)


def _layer_norm_block(x: Any, weight: Any, bias: Any, eps: float, out: Any) -> tuple[Any, Any, Any]:
    xw = widen(x)
    # x - mean goes straight into y's memory: the two-pass variance computes it anyway.
    mean, rstd, centered = centered_mean_rstd(xw, eps, subtract=lambda a, b: sub_(a, b, out=out))
    y = normalize_rows(centered, rstd, weight, bias, out=centered)  # (x - mean) * rstd * weight + bias
    return cast_like(y, x), mean, rstd


def layer_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``layernorm.layer_norm_backward``, by row blocks."""
    return blocked_backward(layer_norm_backward_block, dy, x, (mean, rstd), weight, with_bias)


def layer_norm_backward_block(
    dy: Any, x: Any, mean: Any, rstd: Any, weight: Any, with_bias: bool, out: Any
) -> tuple[Any, Any, Any]:
    """LayerNorm's backward on one block of rows (the channel kernels run it on group and
    channel rows too); ``out`` is memory ``dx`` may be written into."""
    # xhat = centered * rstd is never stored: rstd is one number per row, so it comes out
    # of every sum and is applied to the per-row results instead of to a whole array.
    n = x.shape[1]
    dy = widen(dy)
    centered = widen(x) - mean
    dy_centered = dy * centered  # dy * xhat / rstd
    dweight = column_sums(dy_centered, rstd) if weight is not None else None  # sum of dy * xhat
    dbias = column_sums(dy) if with_bias else None
    mean_g = row_sums(dy, weight) / n
    mean_g_xhat = row_sums(dy_centered, weight) * (rstd / n)
    # dx = rstd * (g - mean(g) - centered * (rstd * mean(g * xhat))), in dx's and centered's memory.
    g = mul_(dy, weight, out=out) if weight is not None else dy
    dx = sub_(g, mean_g, out=out)
    dx = sub_(dx, mul_(centered, rstd * mean_g_xhat, out=centered), out=dx)
    dx = mul_(dx, rstd, out=dx)
    return cast_like(dx, x), dweight, dbias


# ---- RMSNorm --------------------------------------------------------------------------------
def rms_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    """``rmsnorm.rms_norm_forward``, by row blocks."""
    return blocked_forward(_rms_norm_block, x, weight, bias, eps)


def _rms_norm_block(x: Any, weight: Any, bias: Any, eps: float, out: Any) -> tuple[Any, Any]:
    xw = widen(x)
    rstd = rms_rstd(xw, eps)
    y = normalize_rows(xw, rstd, weight, bias, out=out)  # x * rstd * weight + bias
    return cast_like(y, x), rstd


def rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``rmsnorm.rms_norm_backward``, by row blocks."""
    return blocked_backward(_rms_norm_backward_block, dy, x, (rstd,), weight, with_bias)


def _rms_norm_backward_block(
    dy: Any, x: Any, rstd: Any, weight: Any, with_bias: bool, out: Any
) -> tuple[Any, Any, Any]:
    dy = widen(dy)
    xhat = widen(x) * rstd
    g = dy * weight if weight is not None else dy
    dweight = column_sums(dy * xhat) if weight is not None else None
    dbias = column_sums(dy) if with_bias else None
    return cast_like(rms_norm_dx_(g, xhat, rstd, out=out), x), dweight, dbias


def rms_norm_dx_(g: Any, xhat: Any, rstd: Any, out: Any = None) -> Any:
    """``rmsnorm.rms_norm_dx``, built in ``xhat``'s memory (the caller is done with it) and
    then ``out``'s: ``rstd * (g - xhat * mean(g * xhat))``."""
    dx = mul_(xhat, row_mean_of_product(g, xhat), out=xhat)
    dx = sub_(g, dx, out=dx)
    return mul_(dx, rstd, out=out)


register(
    Kernel(
        "layer_norm",
        "numpy",
        layer_norm_forward,
        layer_norm_backward,
        lesson=(layernorm.layer_norm_forward, layernorm.layer_norm_backward),
    )
)
register(
    Kernel(
        "rms_norm",
        "numpy",
        rms_norm_forward,
        rms_norm_backward,
        lesson=(rmsnorm.rms_norm_forward, rmsnorm.rms_norm_backward),
    )
)


# ---- ScaleNorm ------------------------------------------------------------------------------
def scale_norm_forward(x: Any, g: Any, eps: float) -> tuple[Any, Any]:
    """``scalenorm.scale_norm_forward``, by row blocks."""
    return blocked_forward(_scale_norm_block, x, g, eps)


def _scale_norm_block(x: Any, g: Any, eps: float, out: Any) -> tuple[Any, Any]:
    xw = widen(x)
    norm = row_norm(xw)
    denom, _ = scalenorm.clamp(norm, eps)
    y = mul_(xw, g / denom, out=out)  # g * x / denom: one number per row multiplies x
    return cast_like(y, x), norm


def scale_norm_backward(dy: Any, x: Any, g: Any, norm: Any, eps: float) -> tuple[Any, Any]:
    """``scalenorm.scale_norm_backward``, by row blocks."""
    return blocked_backward(_scale_norm_backward_block, dy, x, (norm,), g, eps)


def _scale_norm_backward_block(dy: Any, x: Any, norm: Any, g: Any, eps: float, out: Any) -> tuple[Any, Any]:
    xp = namespace_of(x)
    dy = widen(dy)
    denom, unclamped = scalenorm.clamp(norm, eps)
    u = widen(x) / denom  # a new array: dx is built in its memory
    along = row_sum_of_product(dy, u)  # sum(dy * u), per row
    dg = xp.sum(along)  # this block's share of the one scalar
    projection = xp.where(unclamped, along, xp.zeros_like(along))
    # dx = (g / denom) * (dy - u * projection), in u's memory and then out's.
    dx = mul_(u, projection, out=u)
    dx = sub_(dy, dx, out=dx)
    dx = mul_(dx, g / denom, out=out)
    return cast_like(dx, x), dg


register(
    Kernel(
        "scale_norm",
        "numpy",
        scale_norm_forward,
        scale_norm_backward,
        lesson=(scalenorm.scale_norm_forward, scalenorm.scale_norm_backward),
    )
)


# ---- partial RMSNorm ------------------------------------------------------------------------
def partial_rms_norm_forward(x: Any, weight: Any, bias: Any, k: int, eps: float) -> tuple[Any, Any]:
    """``partial_rmsnorm.partial_rms_norm_forward``, by row blocks."""
    return blocked_forward(_partial_rms_norm_block, x, weight, bias, k, eps)


def _partial_rms_norm_block(x: Any, weight: Any, bias: Any, k: int, eps: float, out: Any) -> tuple[Any, Any]:
    xw = widen(x)
    rstd = rms_rstd(xw[:, :k], eps)  # the statistic sees the first k features
    y = normalize_rows(xw, rstd, weight, bias, out=out)  # ... and divides all of them
    return cast_like(y, x), rstd


def partial_rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any, k: int, with_bias: bool) -> tuple[Any, Any, Any]:
    """``partial_rmsnorm.partial_rms_norm_backward``, by row blocks."""
    return blocked_backward(_partial_rms_norm_backward_block, dy, x, (rstd,), weight, k, with_bias)


def _partial_rms_norm_backward_block(
    dy: Any, x: Any, rstd: Any, weight: Any, k: int, with_bias: bool, out: Any
) -> tuple[Any, Any, Any]:
    dy = widen(dy)
    xhat = widen(x) * rstd
    g = dy * weight if weight is not None else dy
    dweight = column_sums(dy * xhat) if weight is not None else None
    dbias = column_sums(dy) if with_bias else None
    # dx = rstd * (g - in_stat * xhat * sum(g * xhat) / k), built in xhat's memory; the mask
    # in_stat is a slice assignment here: features k..N-1 get no projection term.
    term = mul_(xhat, row_sum_of_product(g, xhat) / k, out=xhat)
    term[:, k:] = 0
    dx = sub_(g, term, out=term)
    dx = mul_(dx, rstd, out=out)
    return cast_like(dx, x), dweight, dbias


register(
    Kernel(
        "partial_rms_norm",
        "numpy",
        partial_rms_norm_forward,
        partial_rms_norm_backward,
        lesson=(partial_rmsnorm.partial_rms_norm_forward, partial_rmsnorm.partial_rms_norm_backward),
    )
)


# ---- RMSNorm with a learnable tanh ----------------------------------------------------------
def rms_norm_tanh_forward(x: Any, alpha: Any, weight: Any, eps: float) -> tuple[Any, Any]:
    """``rmsnorm_tanh.rms_norm_tanh_forward``, by row blocks."""
    return blocked_forward(_rms_norm_tanh_block, x, alpha, weight, eps)


def _rms_norm_tanh_block(x: Any, alpha: Any, weight: Any, eps: float, out: Any) -> tuple[Any, Any]:
    xw = widen(x)
    rstd = rms_rstd(xw, eps)
    n = mul_(xw, rstd, out=out)  # n = x * rstd, in y's memory
    y = mul_(n, alpha, out=n)
    y = tanh_(y, out=y)  # tanh(alpha * n)
    if weight is not None:
        y = mul_(y, weight, out=y)
    return cast_like(y, x), rstd


def rms_norm_tanh_backward(dy: Any, x: Any, alpha: Any, weight: Any, rstd: Any) -> tuple[Any, Any, Any]:
    """``rmsnorm_tanh.rms_norm_tanh_backward``, by row blocks."""
    return blocked_backward(_rms_norm_tanh_backward_block, dy, x, (rstd,), alpha, weight)


def _rms_norm_tanh_backward_block(
    dy: Any, x: Any, rstd: Any, alpha: Any, weight: Any, out: Any
) -> tuple[Any, Any, Any]:
    xp = namespace_of(x)
    dy = widen(dy)
    n = widen(x) * rstd
    u = mul_(n, alpha, out=out)
    u = tanh_(u, out=u)  # tanh(alpha * n); dx's memory is free until the end
    dweight = column_sums(dy * u) if weight is not None else None
    t = 1 - mul_(u, u, out=u)  # tanh' = 1 - u**2, a new array
    t = mul_(t, dy, out=t)
    if weight is not None:
        t = mul_(t, weight, out=t)  # t = (1 - u**2) * dy * weight
    dalpha = column_sums(n * t)
    dalpha = xp.sum(dalpha) if alpha.ndim == 0 else dalpha
    dn = mul_(t, alpha, out=t)
    return cast_like(rms_norm_dx_(dn, n, rstd, out=out), x), dalpha, dweight


register(
    Kernel(
        "rms_norm_tanh",
        "numpy",
        rms_norm_tanh_forward,
        rms_norm_tanh_backward,
        lesson=(rmsnorm_tanh.rms_norm_tanh_forward, rmsnorm_tanh.rms_norm_tanh_backward),
    )
)


# ---- RMSNorm with a feature-mixing matrix ---------------------------------------------------
# The three (rows, dim) x (dim, dim) matrix products are the cost, the same as the lesson's;
# they run whole, on the BLAS's own threads, not by row blocks. What is left to save is
# memory: no xhat in the forward, one in the backward, and dx built in g's memory.
def rms_norm_matrix_forward(x: Any, weight: Any, eps: float) -> tuple[Any, Any]:
    """``rmsnorm_matrix.rms_norm_matrix_forward`` without an ``xhat`` array."""
    xp = namespace_of(x)
    xw = widen(x)
    rstd = rms_rstd(xw, eps)
    # xhat @ W.T = (x @ W.T) * rstd: rstd is one number per row, and a row's linear map
    # commutes with scaling it, so the product is taken on x.
    y = xp.matmul(xw, xp.matrix_transpose(weight))
    y = mul_(y, rstd, out=y)
    return cast_like(y, x), rstd


def rms_norm_matrix_backward(dy: Any, x: Any, weight: Any, rstd: Any) -> tuple[Any, Any]:
    """``rmsnorm_matrix.rms_norm_matrix_backward``, with ``dx`` written over ``xhat`` and then ``g``."""
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = widen(x) * rstd
    dweight = xp.matmul(xp.matrix_transpose(dy), xhat)
    g = xp.matmul(dy, weight)
    return cast_like(rms_norm_dx_(g, xhat, rstd, out=g), x), dweight


register(
    Kernel(
        "rms_norm_matrix",
        "numpy",
        rms_norm_matrix_forward,
        rms_norm_matrix_backward,
        lesson=(rmsnorm_matrix.rms_norm_matrix_forward, rmsnorm_matrix.rms_norm_matrix_backward),
    )
)


# ---- DyT ------------------------------------------------------------------------------------
# Element-wise: a block's chain of operations makes one trip to main memory, not one per operation.
def dyt_forward(x: Any, alpha: Any, weight: Any, bias: Any) -> Any:
    """``dyt.dyt_forward``, by row blocks."""
    (y,) = blocked_forward(_dyt_block, x, alpha, weight, bias)
    return y


def _dyt_block(x: Any, alpha: Any, weight: Any, bias: Any, out: Any) -> tuple[Any]:
    y = mul_(widen(x), alpha, out=out)
    y = tanh_(y, out=y)  # t = tanh(alpha * x)
    if weight is not None:
        y = mul_(y, weight, out=y)
    if bias is not None:
        y = add_(y, bias, out=y)
    return (cast_like(y, x),)


def dyt_backward(dy: Any, x: Any, alpha: Any, weight: Any, with_bias: bool) -> tuple[Any, Any, Any, Any]:
    """``dyt.dyt_backward``, by row blocks."""
    return blocked_backward(_dyt_backward_block, dy, x, (), alpha, weight, with_bias)


def _dyt_backward_block(
    dy: Any, x: Any, alpha: Any, weight: Any, with_bias: bool, out: Any
) -> tuple[Any, Any, Any, Any]:
    xp = namespace_of(x)
    dy, xw = widen(dy), widen(x)
    t = mul_(xw, alpha, out=out)
    t = tanh_(t, out=t)  # recomputed (dx's memory is free until the end)
    dweight = column_sums(dy * t) if weight is not None else None
    dbias = column_sums(dy) if with_bias else None
    dt = 1 - mul_(t, t, out=t)  # tanh' = 1 - tanh**2, a new array
    dt = mul_(dt, dy, out=dt)
    if weight is not None:
        dt = mul_(dt, weight, out=dt)  # dt = dy * weight * (1 - t**2), the gradient reaching alpha * x
    # dalpha = sum of x * dt over every element, taken as per-row dot products (no x * dt array).
    dalpha = xp.sum(row_sum_of_product(xw, dt))
    dx = mul_(dt, alpha, out=out)
    return cast_like(dx, x), dalpha, dweight, dbias


register(Kernel("dyt", "numpy", dyt_forward, dyt_backward, lesson=(dyt.dyt_forward, dyt.dyt_backward)))


# ---- DynamicRangeNorm -----------------------------------------------------------------------
def dynamic_range_norm_forward(
    x: Any, weight: Any, bias: Any, p: float, eps: float, correction: int
) -> tuple[Any, Any, Any]:
    """``custom_norm.dynamic_range_norm_forward``, by row blocks."""
    return blocked_forward(_dynamic_range_norm_block, x, weight, bias, p, eps, correction)


def _dynamic_range_norm_block(
    x: Any, weight: Any, bias: Any, p: float, eps: float, correction: int, out: Any
) -> tuple[Any, Any, Any]:
    # x - mean goes straight into y's memory: the two-pass variance computes it anyway.
    mean, rstd, centered = centered_mean_rstd(widen(x), eps, correction, subtract=lambda a, b: sub_(a, b, out=out))
    xhat = mul_(centered, rstd, out=centered)
    y = normalize_rows(xhat, rstd ** (p - 1), weight, bias, out=xhat)  # xhat * rstd**(p - 1) * weight + bias
    return cast_like(y, x), mean, rstd


def dynamic_range_norm_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, p: float, correction: int, with_bias: bool
) -> tuple[Any, Any, Any, Any, Any]:
    """``custom_norm.dynamic_range_norm_backward``, by row blocks."""
    args = (weight, p, correction, with_bias)
    return blocked_backward(_dynamic_range_norm_backward_block, dy, x, (mean, rstd), *args)


def _dynamic_range_norm_backward_block(
    dy: Any, x: Any, mean: Any, rstd: Any, weight: Any, p: float, correction: int, with_bias: bool, out: Any
) -> tuple[Any, Any, Any, Any, Any]:
    xp = namespace_of(x)
    dy = widen(dy)
    gain, to_yhat = rstd**p, rstd ** (p - 1)
    xhat = widen(x) - mean  # a new array
    xhat = mul_(xhat, rstd, out=xhat)
    g = dy * weight if weight is not None else dy
    # dweight sums dy * yhat, yhat = xhat * to_yhat: a per-row factor, so a weighted column sum.
    dweight = column_sums(dy * xhat, to_yhat) if weight is not None else None
    dbias = column_sums(dy) if with_bias else None
    proj = row_sum_of_product(g, xhat)  # sum(g * xhat), per row
    dp = xp.sum(xp.log(rstd) * (proj * to_yhat))
    deps = xp.sum(-(p / 2) * (proj * rstd) * gain)
    # dx = gain * (g - mean(g) - (p / D) * xhat * proj), built in xhat's memory (not needed after).
    dx = mul_(xhat, (p / (x.shape[1] - correction)) * proj, out=xhat)
    dx = add_(dx, row_mean(g), out=dx)
    dx = sub_(g, dx, out=dx)
    dx = mul_(dx, gain, out=out)
    return cast_like(dx, x), dweight, dbias, dp, deps


register(
    Kernel(
        "dynamic_range_norm",
        "numpy",
        dynamic_range_norm_forward,
        dynamic_range_norm_backward,
        lesson=(custom_norm.dynamic_range_norm_forward, custom_norm.dynamic_range_norm_backward),
    )
)
