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
from ..norms import layernorm, rmsnorm
from ..stats import centered_mean_rstd, rms_rstd, row_mean_of_product, widen
from . import Kernel, register
from .blocks import blocked_backward, blocked_forward, column_sums, mul_, normalize_rows, row_sums, sub_


def _cast(a: Any, like: Any) -> Any:
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
    return _cast(y, x), mean, rstd


def layer_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``layernorm.layer_norm_backward``, by row blocks."""
    return blocked_backward(_layer_norm_backward_block, dy, x, (mean, rstd), weight, with_bias)


def _layer_norm_backward_block(
    dy: Any, x: Any, mean: Any, rstd: Any, weight: Any, with_bias: bool, out: Any
) -> tuple[Any, Any, Any]:
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
    return _cast(dx, x), dweight, dbias


# ---- RMSNorm --------------------------------------------------------------------------------
def rms_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    """``rmsnorm.rms_norm_forward``, by row blocks."""
    return blocked_forward(_rms_norm_block, x, weight, bias, eps)


def _rms_norm_block(x: Any, weight: Any, bias: Any, eps: float, out: Any) -> tuple[Any, Any]:
    xw = widen(x)
    rstd = rms_rstd(xw, eps)
    y = normalize_rows(xw, rstd, weight, bias, out=out)  # x * rstd * weight + bias
    return _cast(y, x), rstd


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
    return _cast(rms_norm_dx_(g, xhat, rstd, out=out), x), dweight, dbias


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
