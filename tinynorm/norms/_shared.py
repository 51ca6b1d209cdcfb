"""What every norm file needs: argument checks with clear errors, the per-row
statistics computed safely (float16 widened, two-pass variance, no overflow), and the
few tricks that make the explicit backwards fast without hiding their formulas:

* in-place arithmetic on temporaries (``mul_``, ``add_``, ``sub_``), which falls back to
  plain operators where the backend has no ``out=`` (array_api_strict);
* per-row dot products with ``vecdot`` (one pass, no ``a * b`` temporary), and sums
  over rows or columns as matrix-vector products (``column_sums``, ``row_sums``);
* rows processed in cache-sized blocks, on both cores for big inputs, with NumPy's ufunc
  buffer sized to a row and the C allocator kept from unmapping each block's temporaries
  (``for_each_row_block``; what each was worth: ``docs/performance.md``);
* on CuPy, the fused CUDA kernels of ``tinynorm.kernels.cupy_fused`` (``fused_kernels``).
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np

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


def in_compute_dtype(param: Any, x: Any) -> Any:
    """A parameter in the dtype ``x`` is computed in (``None`` stays ``None``).

    A float64 parameter, even a 0-d one, turns the float32 rows it multiplies into float64
    rows (NumPy's promotion rules): twice the memory traffic, for a result cast back anyway.
    """
    if param is None:
        return None
    xp = backend.namespace(backend.backend_of(param))
    return xp.astype(param, backend.compute_dtype(x.dtype, xp), copy=False)


def _overflow_is_handled(xp: Any) -> Any:
    """Huge rows overflow the first pass of the statistics; the callers detect that and redo
    those rows, so NumPy's RuntimeWarning would only alarm the reader. (Other backends do not warn.)"""
    return np.errstate(over="ignore") if xp is np else contextlib.nullcontext()


def _all_finite(xp: Any, stat: Any) -> bool:
    return bool(xp.all(xp.isfinite(stat)))


def _row_scale(xp: Any, x: Any, axes: tuple[int, ...], bad: Any) -> Any:
    """max |x| of the rows whose statistic overflowed, 1 elsewhere."""
    scale = xp.max(xp.abs(x), axis=axes, keepdims=True)
    return xp.where(bad, scale, xp.ones_like(scale))


def row_mean_of_product(xp: Any, a: Any, b: Any, axes: tuple[int, ...]) -> Any:
    """``mean(a * b)`` over ``axes`` (``keepdims``).

    Over the last axis alone this is ``vecdot``, a per-row dot product: one pass over
    ``a`` and ``b`` that never stores ``a * b``. It is in the Array API standard, and
    NumPy runs it about 3x faster than ``mean(a * b, axis=-1)``.
    """
    n = 1
    for ax in axes:
        n *= a.shape[ax]
    if tuple(axes) == (a.ndim - 1,) and hasattr(xp, "vecdot"):
        sums = xp.vecdot(a, b, axis=-1)
        return xp.reshape(sums, (*sums.shape, 1)) / n
    return xp.mean(a * b, axis=axes, keepdims=True)


def row_sums(xp: Any, a: Any, weights: Any = None) -> Any:
    """Per-row sums of the 2-D ``a`` ``(rows, N)``, each column first multiplied by
    ``weights`` ``(N,)`` if given, as a ``(rows, 1)`` column: ``sum(a * weights, axis=1)``.

    Computed as the matrix-vector product ``a @ weights``: BLAS reads ``a`` once and never
    stores ``a * weights`` (measured on a (64, 4096) float32 block: 15 us, against 38 us
    for the product alone).
    """
    weights = xp.ones(a.shape[1], dtype=a.dtype) if weights is None else weights
    return xp.reshape(a @ weights, (a.shape[0], 1))


def column_sums(xp: Any, a: Any, weights: Any = None) -> Any:
    """Per-column sums of the 2-D ``a`` ``(rows, N)``, each row first multiplied by
    ``weights`` (``(rows,)`` or ``(rows, 1)``) if given: ``sum(a * weights, axis=0)``, ``(N,)``.

    The parameter gradients are such sums over every row. Computed as the vector-matrix
    product ``weights @ a`` (measured: 14 us on a (64, 4096) float32 block, against 25 us
    for ``sum(a, axis=0)``; and no ``a * weights`` temporary).
    """
    weights = xp.ones(a.shape[0], dtype=a.dtype) if weights is None else xp.reshape(weights, (a.shape[0],))
    return weights @ a


def row_mean(xp: Any, a: Any, axes: tuple[int, ...]) -> Any:
    """``mean(a)`` over ``axes`` (``keepdims``): over the last axis, a dot product with ones."""
    if tuple(axes) == (a.ndim - 1,) and hasattr(xp, "vecdot"):
        return row_mean_of_product(xp, a, xp.ones(a.shape[-1], dtype=a.dtype), axes)
    return xp.mean(a, axis=axes, keepdims=True)


def rms_rstd(x: Any, axes: tuple[int, ...], eps: float) -> Any:
    """``1 / sqrt(mean(x**2) + eps)`` per row (``keepdims``).

    Overflow: ``x**2`` is inf for |x| > 1.8e19 in float32 (PyTorch 2.13 then returns 0).
    Rows whose mean square is not finite are recomputed from ``x / s`` with ``s = max|x|``:
    ``rstd = (1/s) / sqrt(mean((x/s)**2) + eps/s**2)``. The check costs one pass over the
    per-row statistics, not over ``x``, so the common case is not slowed down. Underflow
    needs nothing: a row so small that ``x**2`` underflows is dominated by ``eps``.
    """
    xp = backend.namespace(backend.backend_of(x))
    with _overflow_is_handled(xp):
        ms = row_mean_of_product(xp, x, x, axes)
    rstd = 1 / xp.sqrt(ms + eps)
    if _all_finite(xp, ms):
        return rstd
    bad = ~xp.isfinite(ms)
    scale = _row_scale(xp, x, axes, bad)
    xs = x / scale
    rstd_scaled = (1 / scale) / xp.sqrt(row_mean_of_product(xp, xs, xs, axes) + eps / scale / scale)
    return xp.where(bad, rstd_scaled, rstd)


def mean_rstd(x: Any, axes: tuple[int, ...], eps: float, correction: int = 0) -> tuple[Any, Any]:
    """Per-row ``mean`` and ``rstd = 1 / sqrt(var + eps)`` (``keepdims``).

    Two-pass variance, ``mean((x - mean)**2)``, never ``E[x**2] - E[x]**2``, which loses
    every digit when the mean is large against the spread (PyTorch issue 51102).
    ``correction=1`` divides by ``N - 1`` (unbiased) instead of ``N`` (biased, LayerNorm's).
    Rows whose statistics overflow are recomputed from ``x / max|x|``, as in ``rms_rstd``.
    """
    mean, rstd, _ = centered_mean_rstd(x, axes, eps, correction)
    return mean, rstd


def centered_mean_rstd(
    x: Any, axes: tuple[int, ...], eps: float, correction: int = 0, out: Any = None
) -> tuple[Any, Any, Any]:
    """``mean_rstd`` and ``x - mean``, which the two-pass variance computes anyway: a forward
    that reuses it saves one walk over ``x``. ``x - mean`` is a new array, or ``out`` (memory
    the caller owns, such as its output block) where the backend allows it."""
    xp = backend.namespace(backend.backend_of(x))
    n = 1
    for ax in axes:
        n *= x.shape[ax]

    def stats(values: Any) -> tuple[Any, Any, Any]:
        mean = row_mean(xp, values, axes)
        centered = sub_(values, mean, out=out)
        var = row_mean_of_product(xp, centered, centered, axes)
        return mean, var if correction == 0 else var * n / (n - correction), centered

    with _overflow_is_handled(xp):
        mean, var, centered = stats(x)
    rstd = 1 / xp.sqrt(var + eps)
    if _all_finite(xp, var):
        return mean, rstd, centered
    bad = ~xp.isfinite(var)
    scale = _row_scale(xp, x, axes, bad)
    mean_scaled, var_scaled, _ = stats(x / scale)
    rstd_scaled = (1 / scale) / xp.sqrt(var_scaled + eps / scale / scale)
    mean = xp.where(bad, mean_scaled * scale, mean)
    return mean, xp.where(bad, rstd_scaled, rstd), sub_(x, mean, out=out)


# ---- the fast path ------------------------------------------------------------------------
# In-place arithmetic. ``a * b`` allocates a new array and walks it once more; NumPy and
# CuPy can write the result into memory we already have (``out=``): a temporary of our
# own, or the caller's output block. The Array API has no ``out=``, so each helper falls
# back to the plain operator there: the formula reads the same either way.
_HAS_OUT = ("numpy", "cupy")


def _namespace_for_out(out: Any, a: Any, b: Any) -> Any:
    """The namespace to compute ``op(a, b, out=out)`` with, or ``None`` where that is not safe.

    ``out=`` is safe when ``out`` belongs to a backend with ``out=`` and already has the
    result's shape and dtype (otherwise NumPy would cast, or refuse).
    """
    name = backend.backend_of_or_none(out)
    if name not in _HAS_OUT:
        return None
    xp = backend.namespace(name)
    # The common case (out is a itself or the caller's block, b a per-row or per-feature array
    # of the same dtype), decided from attributes alone: this check runs for every operation
    # of every block, and the general one below cost 2 us, ~10% of a LayerNorm fwd+bwd at
    # 8192x4096 on 2 threads. (Were b the bigger operand, NumPy would raise, not cast.)
    if out.shape == a.shape and out.dtype == a.dtype and getattr(b, "dtype", None) == out.dtype:
        return xp
    shape = np.broadcast_shapes(tuple(a.shape), tuple(getattr(b, "shape", ())))
    return xp if xp.result_type(a, b) == out.dtype and shape == tuple(out.shape) else None


_OPERATORS = {"multiply": operator.mul, "add": operator.add, "subtract": operator.sub}


def _into(op: str, a: Any, b: Any, out: Any) -> Any:
    xp = None if out is None else _namespace_for_out(out, a, b)
    return _OPERATORS[op](a, b) if xp is None else getattr(xp, op)(a, b, out=out)


def mul_(a: Any, b: Any, out: Any) -> Any:
    """``a * b``, written into ``out`` where the backend allows it (else a new array).

    ``out`` must be memory the caller owns: a temporary of its own (often ``a`` itself)
    or its output block, never an input. ``out=None`` always gives a new array.
    """
    return _into("multiply", a, b, out)


def add_(a: Any, b: Any, out: Any) -> Any:
    """``a + b``, written into ``out`` where the backend allows it (see ``mul_``)."""
    return _into("add", a, b, out)


def sub_(a: Any, b: Any, out: Any) -> Any:
    """``a - b``, written into ``out`` where the backend allows it (see ``mul_``)."""
    return _into("subtract", a, b, out)


def tanh_(a: Any, out: Any) -> Any:
    """``tanh(a)``, written into ``out`` where the backend allows it (see ``mul_``)."""
    xp = None if out is None else _namespace_for_out(out, a, a)
    return backend.namespace(backend.backend_of(a)).tanh(a) if xp is None else xp.tanh(a, out=out)


def normalize_rows(values: Any, scale: Any, weight: Any, bias: Any, out: Any = None) -> Any:
    """``values * scale * weight + bias``: the last step of every row norm's forward, where
    ``values`` is ``x`` or ``x - mean``, ``scale`` the per-row ``rstd`` (or a power of it),
    and ``weight``/``bias`` act per feature (either may be ``None``). Written into ``out``,
    then into that same memory, where the backend allows it."""
    y = mul_(values, scale, out=out)
    if weight is not None:
        y = mul_(y, weight, out=y)
    if bias is not None:
        y = add_(y, bias, out=y)
    return y


# Row blocks. A fwd+bwd walks each row a dozen times (sum, centre, square, scale, ...).
# Done on the whole array, every walk streams it from main memory; done on a block of rows
# small enough to stay in a core's L2 cache, only the first walk does. The block's
# formula is the plain one; the loop only slices rows and writes results back.
ROW_BLOCK_BYTES = 1024 * 1024
"""Bytes of one array's slice of a block. Measured best on a 2-core EPYC (1 MiB L2 per core,
32 MiB L3): smaller blocks pay Python's per-call overhead too often, bigger temporaries
fall out of cache and, past glibc's mmap threshold, cost page faults on every block."""

THREADS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
"""Worker threads for the blocks on NumPy, whose ufuncs release the GIL while they run."""

PARALLEL_MIN_BYTES = 32 * 1024 * 1024
"""Below this size one thread is as fast: on the 2-core machine these numbers come from, a
second thread made a fwd+bwd at (4096, 1024) float32 (16 MiB) 0.75-1.4x as long as one
(median 1.1 over the catalog), and at (8192, 4096) (128 MiB) 0.75-0.88x as long."""

USE_FUSED_KERNELS = True
"""On CuPy, use the fused CUDA kernels (False: the Array API formulas, for comparison)."""

_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def row_blocks(rows: int, row_bytes: int, block_bytes: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive row blocks of about ``block_bytes`` each."""
    per_block = max(1, (ROW_BLOCK_BYTES if block_bytes is None else block_bytes) // max(1, row_bytes))
    return [(start, min(start + per_block, rows)) for start in range(0, rows, per_block)]


def for_each_row_block(work: Callable[[int, int], Any], x2: Any, row_length: int | None = None) -> list[Any]:
    """Call ``work(start, stop)`` on the row blocks of the 2-D array ``x2``; return the results in order.

    ``row_length`` (default ``x2.shape[1]``) is for an ``x2`` whose rows are spread over
    more axes, such as BatchNorm's channels: the blocks are sized by it.

    On NumPy, with ``THREADS > 1`` and a big enough input, the blocks are split into one
    contiguous run per thread, and every block runs with NumPy's ufunc buffer sized to one
    row (``_ufunc_buffer_of_one_row``). On CuPy the whole array is one block: a GPU wants
    one big launch, and its kernels have their own cache blocking.
    """
    rows, n = x2.shape[0], row_length or x2.shape[1]
    name = backend.backend_of(x2)
    row_bytes = n * max(4, _itemsize(x2))  # float16 is computed in float32
    if name == "cupy":
        return [work(0, rows)] if rows else []
    blocks = row_blocks(rows, row_bytes)
    threads = THREADS if name == "numpy" and rows * row_bytes >= PARALLEL_MIN_BYTES else 1
    if name == "numpy" and len(blocks) > 1:
        _keep_freed_blocks_mapped()

    def run(blocks: list[tuple[int, int]]) -> list[Any]:
        with _ufunc_buffer_of_one_row(name, n):
            return [work(start, stop) for start, stop in blocks]

    if threads <= 1 or len(blocks) < 2:
        return run(blocks)
    runs = [blocks[k * len(blocks) // threads : (k + 1) * len(blocks) // threads] for k in range(threads)]
    # Each thread runs in a copy of the caller's context, so np.errstate(...) applies there too.
    futures = [_executor(threads).submit(contextvars.copy_context().run, run, part) for part in runs]
    return [result for future in futures for result in future.result()]


_allocator_warmed = False


def _keep_freed_blocks_mapped() -> None:
    """Make the C allocator keep a few blocks' worth of freed memory, once per process.

    glibc's ``malloc`` hands freed memory back to the OS when more than ``2 * threshold``
    lies free at the top of its heap, and ``threshold`` grows to the largest block it has
    had to map and then freed (up to 32 MiB). A process that has only ever freed tiny or
    huge arrays keeps it near one block's size, so the few temporaries of each block were
    handed back and faulted in again, page by page: 136,000 page faults, and 3x the time,
    for a GroupNorm fwd+bwd at (256, 128, 1024) float32. Freeing one array of a few blocks,
    as any warm process has done already, raises the threshold for good. (With another
    allocator this is one allocation, and changes nothing.)
    """
    global _allocator_warmed
    if not _allocator_warmed:
        _allocator_warmed = True
        scratch = np.empty(4 * ROW_BLOCK_BYTES, dtype=np.uint8)  # never touched: mapped, then unmapped
        del scratch


@contextlib.contextmanager
def _ufunc_buffer_of_one_row(name: str, row_length: int) -> Any:
    """NumPy's ufuncs work through a buffer of ``np.getbufsize()`` (8192) elements. When one
    operand is broadcast (a per-row ``rstd``, a per-feature ``weight``) and the rows are
    shorter than the buffer, NumPy 2.4 copies the operands through that buffer instead of
    reading them in place: ``rows * rstd`` on a (64, 4096) float32 block ran at 210 ps per
    element, against 100 with a buffer of at most one row (NumPy issue 13307; NumPy pull
    request 32595 removes the copy in later versions). So blocks run with a buffer of one
    row; below 256 elements the default was faster. ``np.errstate()`` scopes the buffer
    size too, so the caller's setting comes back after.
    """
    if name != "numpy" or not 256 <= row_length < np.getbufsize():
        yield
        return
    with np.errstate():
        np.setbufsize(row_length - row_length % 16)  # NumPy wants a multiple of 16
        yield


def _itemsize(array: Any) -> int:
    dtype = array.dtype
    return getattr(dtype, "itemsize", None) or {"float16": 2, "float32": 4}.get(str(dtype).rsplit(".", 1)[-1], 8)


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    if _pool is None or _pool_size != threads:
        _pool, _pool_size = ThreadPoolExecutor(threads, thread_name_prefix="tinynorm-rows"), threads
    return _pool


def as_rows(array: Any, n: int) -> Any:
    """A view of ``array`` as ``(rows, n)``: the normalized features flattened into one axis."""
    xp = backend.namespace(backend.backend_of(array))
    return xp.reshape(array, (-1, n))


def as_vector(param: Any, n: int) -> Any:
    """A parameter of shape ``normalized_shape`` as a vector of its ``n`` values (``None`` stays)."""
    return None if param is None else backend.namespace(backend.backend_of(param)).reshape(param, (n,))


def sum_partials(partials: list[Any], n: int, like: Any) -> Any:
    """Sum per-block parameter-gradient partials (each of shape ``(n,)``); zeros for no rows."""
    xp = backend.namespace(backend.backend_of(like))
    if not partials:
        return xp.zeros(n, dtype=backend.compute_dtype(like.dtype, xp))
    return partials[0] if len(partials) == 1 else xp.sum(xp.stack(partials), axis=0)


def fused_kernels(x: Any, *params: Any) -> ModuleType | None:
    """The one place that picks hand-written CUDA kernels for a norm's forward and backward.

    Returns the module ``tinynorm.kernels.cupy_fused`` when ``x`` lives on CuPy and its
    kernels handle these arrays (``supports``), else ``None``. CuPy is imported only then.
    """
    if not USE_FUSED_KERNELS or backend.backend_of(x) != "cupy":
        return None
    from ..kernels import cupy_fused

    return cupy_fused if cupy_fused.supports(x, *params) else None
