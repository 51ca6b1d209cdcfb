r"""Fused CUDA kernels for LayerNorm and RMSNorm on CuPy: how production libraries do it.

Why fuse. The Array API formulas in ``norms/layernorm.py`` run one GPU kernel per
operation (``x - mean``, ``* rstd``, ``* weight``, the reductions ...). Each kernel reads
its inputs from GPU memory and writes its result back, so a LayerNorm forward walks the
whole tensor about eight times and its backward about a dozen. The arithmetic is nothing:
a norm is limited by memory bandwidth. A fused kernel reads ``x`` once (a row is small
enough to be re-read from the L1/L2 cache), writes ``y`` once, and keeps everything else in
registers. This is what apex's ``fused_layer_norm``, PyTorch's own CUDA LayerNorm, llm.c's
``layernorm_forward_kernel`` and Liger-Kernel's Triton RMSNorm do, each in its own way.

The plan, shared by both norms:

* **forward, one thread block per row.** The block's threads stride over the row
  (thread ``t`` takes columns ``t, t + blockDim, ...``, so neighbouring threads read
  neighbouring addresses: coalesced loads). Each thread keeps a partial sum in a register;
  the block adds the partial sums with **warp shuffles** (``__shfl_down_sync`` passes a
  register to another lane of the same 32-thread warp without touching memory), then one
  value per warp goes through shared memory to the first warp, which shuffles once more.
  Statistics are **saved per row** (``rstd``, and ``mean`` for LayerNorm): 2 numbers per
  row instead of an ``xhat`` as big as ``x``; the backward recomputes ``xhat``.
* **backward, one thread block per chunk of rows.** For each row, one reduction gives
  ``mean(g * xhat)`` (and ``mean(g)``), then the same threads write ``dx`` for that row. The
  parameter gradients are sums over *all* rows; a thread always owns the same columns,
  so it adds ``dy * xhat`` into its block's own row of a ``(blocks, N)`` partial buffer
  without atomics or races; one small ``partials.sum(axis=0)`` on the host side finishes.
* **storage type vs compute type.** float16 is stored as 16 raw bits (``half_bits``) and
  converted to float32 by one PTX instruction on load; every sum and every statistic is
  float32 (float64 for float64 input, which is what makes the kernels gradcheckable).
* **the same numerics as the NumPy path:** two-pass variance, and a row whose statistic
  overflowed is redone on ``x / max|x|`` (the branch is uniform across the block, so its
  ``__syncthreads`` are safe).

What production kernels add on top, left out here for clarity: vectorised 128-bit loads
(``float4``), keeping the row in registers between passes instead of re-reading it from
cache, several rows per block for small ``N``, and tuning of the block size per GPU.

Python side: the source is compiled once per dtype with ``cupy.RawModule`` (NVRTC), after
a two-line prelude that says what ``scalar_t`` (storage) and ``acc_t`` (compute) are. This
module is imported only when an array lives on CuPy (``norms._shared.fused_kernels``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import backend

STORAGE_TYPES = {"float16": ("half_bits", "float"), "float32": ("float", "float"), "float64": ("double", "double")}
"""dtype name -> (C storage type ``scalar_t``, C compute/accumulate type ``acc_t``)."""

KERNEL_NAMES = ("rms_norm_forward", "rms_norm_backward", "layer_norm_forward", "layer_norm_backward")

KERNEL_SOURCE = r"""
// ---- storage type vs compute type ---------------------------------------------------------
// float16 arrives as 16 raw bits; one PTX instruction widens it to float32 on load and
// another rounds back on store, so no header (cuda_fp16.h) is needed.
struct half_bits { unsigned short bits; };

__device__ __forceinline__ float to_acc(half_bits h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

__device__ __forceinline__ void store(half_bits* p, float v) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(v));  // round to nearest even
    p->bits = bits;
}
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(double* p, double v) { *p = v; }

// ---- block-wide reductions --------------------------------------------------------------
// blockDim.x is a multiple of 32 and at most 1024: at most 32 warps, so one warp can
// finish the job. scratch is __shared__ acc_t[33]; slot 32 broadcasts the result.
__device__ __forceinline__ acc_t combine(acc_t a, acc_t b, bool take_max) {
    return take_max ? fmax(a, b) : a + b;
}

__device__ __forceinline__ acc_t warp_reduce(acc_t v, bool take_max) {
    // After the loop, lane 0 holds the reduction of the warp's 32 values: each step
    // folds the upper half of the lanes onto the lower half, register to register.
    for (int offset = 16; offset > 0; offset /= 2) {
        v = combine(v, __shfl_down_sync(0xffffffffu, v, offset), take_max);
    }
    return v;
}

__device__ acc_t block_reduce(acc_t v, acc_t* scratch, bool take_max) {
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    v = warp_reduce(v, take_max);
    if (lane == 0) scratch[warp] = v;           // one value per warp
    __syncthreads();
    if (warp == 0) {
        v = (lane < blockDim.x / 32) ? scratch[lane] : (take_max ? scratch[0] : acc_t(0));
        v = warp_reduce(v, take_max);           // the first warp reduces the warps' values
        if (lane == 0) scratch[32] = v;
    }
    __syncthreads();
    v = scratch[32];                            // every thread gets the result
    __syncthreads();                            // before scratch is reused
    return v;
}

__device__ __forceinline__ acc_t param(const scalar_t* p, int has, int j, acc_t otherwise) {
    return has ? to_acc(p[j]) : otherwise;
}

// ---- RMSNorm ----------------------------------------------------------------------------
// Forward: one block per row. rstd = 1 / sqrt(mean(x^2) + eps); y = x * rstd * w + b.
extern "C" __global__ void rms_norm_forward(
    const scalar_t* x, const scalar_t* weight, const scalar_t* bias, scalar_t* y, acc_t* rstd_out,
    int n, acc_t eps, int has_weight, int has_bias)
{
    __shared__ acc_t scratch[33];
    const long long row = blockIdx.x;
    const scalar_t* xr = x + row * n;           // this block's row
    scalar_t* yr = y + row * n;

    acc_t sum_sq = 0;                           // pass 1: each thread's share of sum(x^2)
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const acc_t v = to_acc(xr[j]);
        sum_sq += v * v;
    }
    const acc_t mean_sq = block_reduce(sum_sq, scratch, false) / n;
    acc_t rstd = acc_t(1) / sqrt(mean_sq + eps);
    if (!isfinite(mean_sq)) {                   // x^2 overflowed: redo on x / max|x|
        acc_t scale = 0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) scale = fmax(scale, fabs(to_acc(xr[j])));
        scale = block_reduce(scale, scratch, true);
        acc_t sum_sq_scaled = 0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const acc_t v = to_acc(xr[j]) / scale;
            sum_sq_scaled += v * v;
        }
        const acc_t mean_sq_scaled = block_reduce(sum_sq_scaled, scratch, false) / n;
        rstd = (acc_t(1) / scale) / sqrt(mean_sq_scaled + eps / (scale * scale));
    }
    if (threadIdx.x == 0) rstd_out[row] = rstd; // saved for the backward: one number per row

    for (int j = threadIdx.x; j < n; j += blockDim.x) {  // pass 2 (x is in cache now): write y
        const acc_t v = to_acc(xr[j]) * rstd * param(weight, has_weight, j, acc_t(1))
                        + param(bias, has_bias, j, acc_t(0));
        store(yr + j, v);
    }
}

// Backward: one block per chunk of rows_per_block rows. With xhat = x * rstd, g = dy * w:
//   dx = rstd * (g - xhat * mean(g * xhat)),  dweight = sum_rows dy * xhat,  dbias = sum_rows dy.
extern "C" __global__ void rms_norm_backward(
    const scalar_t* dy, const scalar_t* x, const scalar_t* weight, const acc_t* rstd,
    scalar_t* dx, acc_t* dweight_partial, acc_t* dbias_partial,
    long long rows, int n, int rows_per_block, int has_weight, int has_bias)
{
    __shared__ acc_t scratch[33];
    // This block's row of the partial buffers. Thread t always handles the columns
    // t, t + blockDim.x, ...: it is the only one to touch them, so += needs no atomics.
    acc_t* dw = dweight_partial + (long long)blockIdx.x * n;
    acc_t* db = dbias_partial + (long long)blockIdx.x * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        if (has_weight) dw[j] = 0;
        if (has_bias) db[j] = 0;
    }
    const long long first = (long long)blockIdx.x * rows_per_block;
    const long long last = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < last; ++row) {
        const scalar_t* xr = x + row * n;
        const scalar_t* dyr = dy + row * n;
        scalar_t* dxr = dx + row * n;
        const acc_t r = rstd[row];

        acc_t sum_gx = 0;                       // pass 1: sum(g * xhat) for this row
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const acc_t xhat = to_acc(xr[j]) * r;
            const acc_t g = to_acc(dyr[j]) * param(weight, has_weight, j, acc_t(1));
            sum_gx += g * xhat;
        }
        const acc_t mean_gx = block_reduce(sum_gx, scratch, false) / n;

        for (int j = threadIdx.x; j < n; j += blockDim.x) {  // pass 2: dx, and the partials
            const acc_t xhat = to_acc(xr[j]) * r;
            const acc_t d = to_acc(dyr[j]);
            const acc_t g = d * param(weight, has_weight, j, acc_t(1));
            store(dxr + j, r * (g - xhat * mean_gx));
            if (has_weight) dw[j] += d * xhat;
            if (has_bias) db[j] += d;
        }
    }
}

// ---- LayerNorm ----------------------------------------------------------------------------
// Forward: one block per row. Two-pass variance: mean first, then mean((x - mean)^2).
extern "C" __global__ void layer_norm_forward(
    const scalar_t* x, const scalar_t* weight, const scalar_t* bias, scalar_t* y,
    acc_t* mean_out, acc_t* rstd_out, int n, acc_t eps, int has_weight, int has_bias)
{
    __shared__ acc_t scratch[33];
    const long long row = blockIdx.x;
    const scalar_t* xr = x + row * n;
    scalar_t* yr = y + row * n;

    acc_t sum = 0;                              // pass 1: the mean
    for (int j = threadIdx.x; j < n; j += blockDim.x) sum += to_acc(xr[j]);
    acc_t mean = block_reduce(sum, scratch, false) / n;
    acc_t sum_sq = 0;                           // pass 2: the variance around it
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const acc_t c = to_acc(xr[j]) - mean;
        sum_sq += c * c;
    }
    const acc_t var = block_reduce(sum_sq, scratch, false) / n;
    acc_t rstd = acc_t(1) / sqrt(var + eps);
    if (!isfinite(var)) {                       // overflow: redo both statistics on x / max|x|
        acc_t scale = 0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) scale = fmax(scale, fabs(to_acc(xr[j])));
        scale = block_reduce(scale, scratch, true);
        acc_t sum_scaled = 0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) sum_scaled += to_acc(xr[j]) / scale;
        const acc_t mean_scaled = block_reduce(sum_scaled, scratch, false) / n;
        acc_t sum_sq_scaled = 0;
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const acc_t c = to_acc(xr[j]) / scale - mean_scaled;
            sum_sq_scaled += c * c;
        }
        const acc_t var_scaled = block_reduce(sum_sq_scaled, scratch, false) / n;
        mean = mean_scaled * scale;
        rstd = (acc_t(1) / scale) / sqrt(var_scaled + eps / (scale * scale));
    }
    if (threadIdx.x == 0) {                     // saved for the backward: two numbers per row
        mean_out[row] = mean;
        rstd_out[row] = rstd;
    }
    for (int j = threadIdx.x; j < n; j += blockDim.x) {  // pass 3: write y
        const acc_t v = (to_acc(xr[j]) - mean) * rstd * param(weight, has_weight, j, acc_t(1))
                        + param(bias, has_bias, j, acc_t(0));
        store(yr + j, v);
    }
}

// Backward: one block per chunk of rows. With xhat = (x - mean) * rstd, g = dy * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
extern "C" __global__ void layer_norm_backward(
    const scalar_t* dy, const scalar_t* x, const scalar_t* weight, const acc_t* mean, const acc_t* rstd,
    scalar_t* dx, acc_t* dweight_partial, acc_t* dbias_partial,
    long long rows, int n, int rows_per_block, int has_weight, int has_bias)
{
    __shared__ acc_t scratch[33];
    acc_t* dw = dweight_partial + (long long)blockIdx.x * n;
    acc_t* db = dbias_partial + (long long)blockIdx.x * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        if (has_weight) dw[j] = 0;
        if (has_bias) db[j] = 0;
    }
    const long long first = (long long)blockIdx.x * rows_per_block;
    const long long last = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < last; ++row) {
        const scalar_t* xr = x + row * n;
        const scalar_t* dyr = dy + row * n;
        scalar_t* dxr = dx + row * n;
        const acc_t m = mean[row];
        const acc_t r = rstd[row];

        acc_t sum_g = 0, sum_gx = 0;            // pass 1: sum(g) and sum(g * xhat)
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            const acc_t xhat = (to_acc(xr[j]) - m) * r;
            const acc_t g = to_acc(dyr[j]) * param(weight, has_weight, j, acc_t(1));
            sum_g += g;
            sum_gx += g * xhat;
        }
        const acc_t mean_g = block_reduce(sum_g, scratch, false) / n;
        const acc_t mean_gx = block_reduce(sum_gx, scratch, false) / n;

        for (int j = threadIdx.x; j < n; j += blockDim.x) {  // pass 2: dx, and the partials
            const acc_t xhat = (to_acc(xr[j]) - m) * r;
            const acc_t d = to_acc(dyr[j]);
            const acc_t g = d * param(weight, has_weight, j, acc_t(1));
            store(dxr + j, r * (g - mean_g - xhat * mean_gx));
            if (has_weight) dw[j] += d * xhat;
            if (has_bias) db[j] += d;
        }
    }
}
"""


def source(dtype_name: str) -> str:
    """The CUDA source for one dtype: the prelude naming ``scalar_t``/``acc_t``, then the kernels."""
    storage, acc = STORAGE_TYPES[dtype_name]
    prelude = "struct half_bits;\n" if storage == "half_bits" else ""
    return f"{prelude}typedef {storage} scalar_t;\ntypedef {acc} acc_t;\n{KERNEL_SOURCE}"


def supports(x: Any, *params: Any) -> bool:
    """Whether the kernels handle these arrays: ``x`` 2-D ``(rows, N)`` with at least one row, a
    float dtype, and every parameter ``None`` or a vector of length ``N`` of ``x``'s dtype."""
    dtype_name = getattr(x.dtype, "name", None)
    if x.ndim != 2 or dtype_name not in STORAGE_TYPES:
        return False
    rows, n = x.shape
    if not 0 < rows < 2**31 or not 0 < n < 2**31:  # one block per row: gridDim.x is an int
        return False
    return all(p is None or (p.dtype == x.dtype and tuple(p.shape) == (n,)) for p in params)


def threads_per_block(n: int) -> int:
    """About 8 elements per thread, a multiple of the 32-thread warp, from 32 to 1024."""
    threads = -(-n // 8)  # ceil(n / 8)
    threads = -(-threads // 32) * 32  # up to a whole number of warps
    return min(1024, max(32, threads))


def backward_grid(rows: int, multiprocessors: int) -> tuple[int, int]:
    """``(blocks, rows_per_block)`` for a backward: about 8 blocks per multiprocessor keep
    the GPU busy, and every block but the last gets the same number of rows."""
    target = max(1, min(rows, 8 * multiprocessors))
    rows_per_block = -(-rows // target)
    return -(-rows // rows_per_block), rows_per_block


@functools.cache
def _kernels(dtype_name: str) -> dict[str, Any]:
    """Compile the module for one dtype (once: NVRTC takes a second) and fetch its kernels."""
    cupy = backend.namespace("cupy")
    module = cupy.RawModule(code=source(dtype_name), options=("--std=c++14",))
    return {name: module.get_function(name) for name in KERNEL_NAMES}


def _acc_dtype(x: Any) -> Any:
    return np.float64 if x.dtype.name == "float64" else np.float32


def _flags(*params: Any) -> tuple[np.int32, ...]:
    return tuple(np.int32(p is not None) for p in params)


def _or(p: Any, x: Any) -> Any:
    """A kernel argument must be a pointer even when its flag says it is unused."""
    return x if p is None else p


def _multiprocessors() -> int:
    cupy = backend.namespace("cupy")
    return cupy.cuda.Device().attributes["MultiProcessorCount"]


def rms_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    """``y`` and the per-row ``rstd`` ``(rows, 1)``, as ``norms.rmsnorm.rms_norm_rows`` returns them."""
    cupy = backend.namespace("cupy")
    x = cupy.ascontiguousarray(x)
    rows, n = x.shape
    acc = _acc_dtype(x)
    y = cupy.empty_like(x)
    rstd = cupy.empty((rows, 1), dtype=acc)
    kernel = _kernels(x.dtype.name)["rms_norm_forward"]
    args = (x, _or(weight, x), _or(bias, x), y, rstd, np.int32(n), acc(eps), *_flags(weight, bias))
    kernel((rows,), (threads_per_block(n),), args)
    return y, rstd


def rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` and the summed ``dweight``/``dbias`` (compute dtype; the caller casts them)."""
    cupy = backend.namespace("cupy")
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    rows, n = x.shape
    blocks, rows_per_block = backward_grid(rows, _multiprocessors())
    acc = _acc_dtype(x)
    dx = cupy.empty_like(x)
    dweight_partial = cupy.empty((blocks, n), dtype=acc) if weight is not None else None
    dbias_partial = cupy.empty((blocks, n), dtype=acc) if with_bias else None
    kernel = _kernels(x.dtype.name)["rms_norm_backward"]
    args = (dy, x, _or(weight, x), rstd, dx, _or(dweight_partial, rstd), _or(dbias_partial, rstd))
    args += (np.int64(rows), np.int32(n), np.int32(rows_per_block), *_flags(weight, dbias_partial))
    kernel((blocks,), (threads_per_block(n),), args)
    return dx, _sum(dweight_partial), _sum(dbias_partial)


def layer_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """``y`` and the per-row ``mean``, ``rstd`` ``(rows, 1)``, as ``layer_norm_rows`` returns them."""
    cupy = backend.namespace("cupy")
    x = cupy.ascontiguousarray(x)
    rows, n = x.shape
    acc = _acc_dtype(x)
    y = cupy.empty_like(x)
    mean = cupy.empty((rows, 1), dtype=acc)
    rstd = cupy.empty((rows, 1), dtype=acc)
    kernel = _kernels(x.dtype.name)["layer_norm_forward"]
    args = (x, _or(weight, x), _or(bias, x), y, mean, rstd, np.int32(n), acc(eps), *_flags(weight, bias))
    kernel((rows,), (threads_per_block(n),), args)
    return y, mean, rstd


def layer_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` and the summed ``dweight``/``dbias`` (compute dtype; the caller casts them)."""
    cupy = backend.namespace("cupy")
    dy, x = cupy.ascontiguousarray(dy), cupy.ascontiguousarray(x)
    rows, n = x.shape
    blocks, rows_per_block = backward_grid(rows, _multiprocessors())
    acc = _acc_dtype(x)
    dx = cupy.empty_like(x)
    dweight_partial = cupy.empty((blocks, n), dtype=acc) if weight is not None else None
    dbias_partial = cupy.empty((blocks, n), dtype=acc) if with_bias else None
    kernel = _kernels(x.dtype.name)["layer_norm_backward"]
    args = (dy, x, _or(weight, x), mean, rstd, dx, _or(dweight_partial, rstd), _or(dbias_partial, rstd))
    args += (np.int64(rows), np.int32(n), np.int32(rows_per_block), *_flags(weight, dbias_partial))
    kernel((blocks,), (threads_per_block(n),), args)
    return dx, _sum(dweight_partial), _sum(dbias_partial)


def _sum(partial: Any) -> Any:
    """The one small reduction after a backward: add up the blocks' partial rows."""
    return None if partial is None else partial.sum(axis=0)
