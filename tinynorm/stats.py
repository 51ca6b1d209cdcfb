"""The per-row statistics every norm needs, computed safely: one module, used by the
lessons in ``tinynorm/norms/`` and the fast kernels in ``tinynorm/kernels/`` alike, so
both give the same numbers for rows from 1e-30 to 1e30.

Three hazards, and what is done about each:

* **float16 input.** Its squares overflow at ``|x| > 256`` and its sums lose digits
  (the fp16 RMSNorm failures of meta-llama issue 1048), so statistics are computed in
  float32 (``widen``); float32 and float64 stay as they are.
* **Cancellation.** ``E[x**2] - E[x]**2`` loses every digit when the mean is large
  against the spread (PyTorch issue 51102). The variance here is two-pass:
  ``mean((x - mean)**2)``.
* **Overflow and underflow.** ``x**2`` is inf for ``|x| > 1.8e19`` in float32, and 0 for
  ``|x| < 1e-23``. Rows whose sums are not finite (or, for ``row_norm``, underflow) are
  recomputed from ``x / s``, ``s = max|x|``, and the scale is put back analytically:
  ``rstd = (1/s) / sqrt(mean((x/s)**2) + eps/s**2)``. The check looks at one number per
  row, so the common case costs nothing extra.

Every function takes 2-D rows ``(rows, N)`` and reduces over the last axis, keeping it
(results are ``(rows, 1)`` columns that broadcast against the rows).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import backend
from .backend import namespace_of


def widen(x: Any) -> Any:
    """``x`` in the dtype its statistics are computed in: float32 for float16, else itself."""
    xp = namespace_of(x)
    return xp.astype(x, backend.compute_dtype(x.dtype, xp), copy=False)


def in_compute_dtype(param: Any, x: Any) -> Any:
    """A parameter in the dtype ``x`` is computed in (``None`` stays ``None``).

    A float64 weight would otherwise turn float32 rows into float64 rows (NumPy's
    promotion rules): twice the memory traffic, for a result cast back to float32 anyway.
    """
    if param is None:
        return None
    xp = namespace_of(param)
    return xp.astype(param, backend.compute_dtype(x.dtype, xp), copy=False)


def row_mean(x: Any) -> Any:
    """``mean(x)`` of each row, as a ``(rows, 1)`` column: a dot product with ones, which
    NumPy runs faster than ``mean(x, axis=-1)`` (one BLAS pass instead of a reduction loop)."""
    xp = namespace_of(x)
    return row_mean_of_product(x, xp.ones(x.shape[-1], dtype=x.dtype))


def row_mean_of_product(a: Any, b: Any) -> Any:
    """``mean(a * b)`` of each row, as a ``(rows, 1)`` column.

    Computed with ``vecdot``, a per-row dot product in the Array API standard: one pass
    over ``a`` and ``b`` that never stores ``a * b``.
    """
    return row_sum_of_product(a, b) / a.shape[-1]


def row_sum_of_product(a: Any, b: Any) -> Any:
    """``sum(a * b)`` of each row, as a ``(rows, 1)`` column (``vecdot``; see above)."""
    xp = namespace_of(a)
    if not hasattr(xp, "vecdot"):  # CuPy before 14
        return xp.sum(a * b, axis=-1, keepdims=True)
    sums = xp.vecdot(a, b, axis=-1)
    return xp.reshape(sums, (sums.shape[0], 1))


def rms_rstd(x: Any, eps: float) -> Any:
    """``1 / sqrt(mean(x**2) + eps)`` of each row.

    Underflow needs nothing here: a row so small that ``x**2`` underflows is dominated
    by ``eps`` (which ``check_eps`` keeps representable).
    """
    xp = namespace_of(x)
    with _overflow_is_handled():
        ms = row_mean_of_product(x, x)
    rstd = 1 / xp.sqrt(ms + eps)
    bad = ~xp.isfinite(ms)
    if not _any(xp, bad):
        return rstd
    scale = _row_scale(xp, x, bad)
    xs = x / scale
    rstd_scaled = (1 / scale) / xp.sqrt(row_mean_of_product(xs, xs) + eps / scale / scale)
    return xp.where(bad, rstd_scaled, rstd)


def mean_rstd(x: Any, eps: float, correction: int = 0) -> tuple[Any, Any]:
    """Each row's ``mean`` and ``rstd = 1 / sqrt(var + eps)``, with a two-pass variance.

    ``correction=0`` divides the squared deviations by ``N`` (biased, LayerNorm's);
    ``correction=1`` by ``N - 1`` (unbiased).
    """
    mean, rstd, _ = centered_mean_rstd(x, eps, correction)
    return mean, rstd


def centered_mean_rstd(
    x: Any, eps: float, correction: int = 0, subtract: Callable[[Any, Any], Any] | None = None
) -> tuple[Any, Any, Any]:
    """``mean_rstd`` and ``x - mean``, which the two-pass variance computes anyway.

    ``subtract(a, b)`` computes ``a - b``; a kernel passes one that writes into memory it
    owns (its output block), which saves it one allocation. The lessons leave it out.
    """
    xp = namespace_of(x)
    subtract = subtract or (lambda a, b: a - b)
    n = x.shape[-1]

    def stats(values: Any) -> tuple[Any, Any, Any]:
        mean = row_mean(values)
        centered = subtract(values, mean)
        var = row_mean_of_product(centered, centered)
        return mean, var if correction == 0 else var * (n / (n - correction)), centered

    with _overflow_is_handled():
        mean, var, centered = stats(x)
    rstd = 1 / xp.sqrt(var + eps)
    bad = ~xp.isfinite(var)
    if not _any(xp, bad):
        return mean, rstd, centered
    scale = _row_scale(xp, x, bad)
    mean_scaled, var_scaled, _ = stats(x / scale)
    rstd_scaled = (1 / scale) / xp.sqrt(var_scaled + eps / scale / scale)
    mean = xp.where(bad, mean_scaled * scale, mean)
    return mean, xp.where(bad, rstd_scaled, rstd), subtract(x, mean)


def row_norm(x: Any) -> Any:
    """The Euclidean norm ``sqrt(sum(x**2))`` of each row, right from 1e-30 to 1e30.

    Unlike ``rms_rstd`` there is no ``eps`` inside the square root to dominate a tiny
    row, so underflow matters as much as overflow: a float32 row of 1e-30 has
    ``sum(x**2) = 0``, and ScaleNorm would then divide it by its clamp instead of its norm.
    Rows whose sum of squares is not finite, or below the smallest normal number (where
    subnormals have lost digits), are recomputed from ``x / max|x|``. Zero rows stay 0.
    """
    xp = namespace_of(x)
    with _overflow_is_handled(), _underflow_is_handled():
        ss = row_sum_of_product(x, x)
    tiny = xp.finfo(x.dtype).smallest_normal
    bad = ~xp.isfinite(ss) | (ss < tiny)
    norm = xp.sqrt(ss)
    if not _any(xp, bad):
        return norm
    scale = _row_scale(xp, x, bad)
    scale = xp.where(scale > 0, scale, xp.ones_like(scale))  # an all-zero row: its norm is 0 anyway
    with np.errstate(invalid="ignore"):  # a row holding an inf: inf / inf is NaN, not used below
        xs = x / scale
        norm_scaled = scale * xp.sqrt(row_sum_of_product(xs, xs))
    # NaN and inf entries keep their IEEE meaning: NaN in, NaN out.
    return xp.where(bad & xp.isfinite(scale), norm_scaled, norm)


def _row_scale(xp: Any, x: Any, bad: Any) -> Any:
    """max |x| of the rows marked ``bad``, 1 elsewhere."""
    scale = xp.max(xp.abs(x), axis=-1, keepdims=True)
    return xp.where(bad, scale, xp.ones_like(scale))


def _any(xp: Any, mask: Any) -> bool:
    return bool(xp.any(mask))


def _overflow_is_handled() -> Any:
    """Huge rows overflow the first pass of the statistics; the callers detect that and redo
    those rows, so NumPy's RuntimeWarning would only alarm the reader. ``array_api_strict``
    computes with NumPy too, so it is silenced for every backend (CuPy does not warn)."""
    return np.errstate(over="ignore")


def _underflow_is_handled() -> Any:
    return np.errstate(under="ignore")
