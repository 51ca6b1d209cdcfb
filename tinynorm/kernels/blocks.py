"""The one row-blocked driver, and the in-place helpers the CPU kernels are built from.

A fwd+bwd walks each row a dozen times (sum, centre, square, scale, ...). Done on the
whole array, every walk streams it from main memory; done on a block of rows small
enough to stay in a core's L2 cache, only the first walk does. A kernel's formula for
one block is the lesson's plain formula; the driver here only slices rows, writes
results back, runs the blocks on both cores for big inputs, and adds up the blocks'
shares of the parameter gradients (``blocked_forward``, ``blocked_backward``).

What each trick here was worth, as measured: ``docs/performance.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
import operator
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .. import backend
from ..backend import namespace_of


# ---- the driver ----------------------------------------------------------------------------
def blocked_forward(formula: Callable[..., tuple[Any, ...]], x2: Any, *args: Any) -> tuple[Any, ...]:
    """Run ``formula(x_block, *args, out=y_block)`` on each row block of ``x2`` ``(rows, N)``.

    ``formula`` returns ``(y_block, *per_row_statistics)``, each statistic a ``(block, 1)``
    column; the result is ``(y2, *statistics)`` for all rows, as the lesson's forward returns.
    """
    xp = namespace_of(x2)
    y2 = xp.empty(x2.shape, dtype=x2.dtype)

    def block(start: int, stop: int) -> tuple[Any, ...]:
        y_block, *stats = formula(x2[start:stop, ...], *args, out=y2[start:stop, ...])
        y2[start:stop, ...] = y_block  # copies nothing when y landed in y2's own memory
        return tuple(stats)

    per_block = for_each_row_block(block, x2)
    if not per_block:  # no rows: the formula's own empty results
        return formula(x2, *args, out=None)
    return (y2, *(xp.concat(list(stat)) for stat in zip(*per_block)))


def blocked_backward(
    formula: Callable[..., tuple[Any, ...]], dy2: Any, x2: Any, row_args: tuple[Any, ...], *args: Any
) -> tuple[Any, ...]:
    """Run ``formula(dy_block, x_block, *row_args_blocks, *args, out=dx_block)`` on each row block.

    ``row_args`` are per-row arrays (the saved statistics), sliced like ``x2``; ``args`` are
    passed whole. ``formula`` returns ``(dx_block, *parameter_gradient_shares)``, each share
    a vector or ``None``; the result is ``(dx2, *parameter_gradients)``, the shares summed.
    """
    xp = namespace_of(x2)
    dx2 = xp.empty(x2.shape, dtype=x2.dtype)

    def block(start: int, stop: int) -> tuple[Any, ...]:
        rows = slice(start, stop)
        dx_block, *shares = formula(
            dy2[rows, ...], x2[rows, ...], *(a[rows, ...] for a in row_args), *args, out=dx2[rows, ...]
        )
        dx2[rows, ...] = dx_block
        return tuple(shares)

    per_block = for_each_row_block(block, x2)
    if not per_block:  # no rows: the formula's shape of result, with zero gradients
        _, *shares = formula(dy2, x2, *row_args, *args, out=None)
        return (dx2, *shares)
    return (dx2, *(sum_partials(list(shares)) for shares in zip(*per_block)))


def sum_partials(partials: list[Any]) -> Any:
    """Add up the blocks' shares of one parameter gradient (``None`` when it has none)."""
    if partials[0] is None:
        return None
    if len(partials) == 1:
        return partials[0]
    xp = namespace_of(partials[0])
    return xp.sum(xp.stack(partials), axis=0)


ROW_BLOCK_BYTES = 1024 * 1024
"""Bytes of one array's slice of a block. Measured best on a 2-core EPYC (1 MiB L2 per core,
32 MiB L3): smaller blocks pay Python's per-call overhead too often, bigger temporaries
fall out of cache and, past glibc's mmap threshold, cost page faults on every block."""

THREADS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
"""Worker threads for the blocks on NumPy, whose ufuncs release the GIL while they run."""

PARALLEL_MIN_BYTES = 32 * 1024 * 1024
"""Below this size one thread is as fast (see docs/performance.md)."""

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
    row (``_ufunc_buffer_of_one_row``).
    """
    rows, n = x2.shape[0], row_length or x2.shape[1]
    name = backend.backend_of(x2)
    row_bytes = n * max(4, _itemsize(x2))  # float16 is computed in float32
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
    huge arrays keeps it near one block's size, so each block's temporaries were handed
    back and faulted in again, page by page. Freeing one array of a few blocks, as any
    warm process has done already, raises the threshold for good. (With another
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
    reading them in place (NumPy issue 13307; fixed in later versions). So blocks run with
    a buffer of one row; below 256 elements the default was faster. ``np.errstate()``
    scopes the buffer size too, so the caller's setting comes back after.
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


# ---- in-place arithmetic --------------------------------------------------------------------
# ``a * b`` allocates a new array and walks it once more; NumPy and CuPy can write the
# result into memory we already have (``out=``): a temporary of our own, or the caller's
# output block. The Array API has no ``out=``, so each helper falls back to the plain
# operator there: the formula reads the same either way.
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
    # of every block. (Were b the bigger operand, NumPy would raise, not cast.)
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
    return namespace_of(a).tanh(a) if xp is None else xp.tanh(a, out=out)


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


# ---- sums as matrix-vector products ----------------------------------------------------------
def row_sums(a: Any, weights: Any = None) -> Any:
    """Per-row sums of the 2-D ``a`` ``(rows, N)``, each column first multiplied by
    ``weights`` ``(N,)`` if given, as a ``(rows, 1)`` column: ``sum(a * weights, axis=1)``.

    Computed as the matrix-vector product ``a @ weights``: BLAS reads ``a`` once and never
    stores ``a * weights``.
    """
    xp = namespace_of(a)
    weights = xp.ones(a.shape[1], dtype=a.dtype) if weights is None else weights
    return xp.reshape(a @ weights, (a.shape[0], 1))


def column_sums(a: Any, weights: Any = None) -> Any:
    """Per-column sums of the 2-D ``a`` ``(rows, N)``, each row first multiplied by
    ``weights`` (``(rows,)`` or ``(rows, 1)``) if given: ``sum(a * weights, axis=0)``, ``(N,)``.

    The parameter gradients are such sums over every row. Computed as the vector-matrix
    product ``weights @ a``: no ``a * weights`` temporary, and faster than ``sum(axis=0)``.
    """
    xp = namespace_of(a)
    weights = xp.ones(a.shape[0], dtype=a.dtype) if weights is None else xp.reshape(weights, (a.shape[0],))
    return weights @ a
