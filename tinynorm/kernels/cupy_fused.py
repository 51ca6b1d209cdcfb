r"""Fused CUDA kernels for LayerNorm and RMSNorm on CuPy: how production libraries do it.

**Not yet run on a GPU.** The kernels below compile without a warning under NVRTC with
the options CuPy passes (``tests/test_nvrtc_compile.py``), and the pure-Python launch
arithmetic is tested on any machine (``tests/test_cupy_kernels.py``); the tests that
launch them, and their timings, need a CUDA GPU (``scripts/gpu_check.sh``).

Why fuse. The Array API formulas in ``norms/layernorm.py`` run one GPU kernel per
operation (``x - mean``, ``* rstd``, ``* weight``, the reductions ...). Each kernel reads
its inputs from GPU memory and writes its result back, so a LayerNorm forward walks the
whole tensor about eight times and its backward about a dozen. The arithmetic is nothing:
a norm is limited by memory bandwidth. A fused kernel reads ``x`` once (a row is small
enough to be re-read from the L1/L2 cache), writes ``y`` once, and keeps everything else in
registers. This is what apex's ``fused_layer_norm``, PyTorch's own CUDA LayerNorm, llm.c's
``layernorm_forward_kernel`` and Liger-Kernel's Triton RMSNorm do, each in its own way.

The plan, shared by both norms:

* **a team of threads per row.** A row is read by a *team*: one warp (32 threads) for a
  short row in the forward (``N <= 1024``; a block of 8 warps then does 8 rows at once), the
  whole block otherwise. Thread ``t`` of a team takes packs ``t, t + team, ...`` of the row,
  so neighbouring threads read neighbouring addresses (coalesced loads). Each thread keeps a
  partial sum in a register; a warp adds its 32 partial sums with **warp shuffles**
  (``__shfl_xor_sync`` passes a register to another lane of the same warp without touching
  memory); a block team then passes one value per warp through shared memory.
* **packs: 16-byte loads.** Where every array is aligned to the pack and ``N`` is a multiple
  of it (8 float16, 4 float32 or 2 float64 values; 4 float16 in the backward, whose threads
  also hold gradient shares), a thread moves a whole pack with one load or store
  instruction; elsewhere the same source is compiled with packs of one.
* **the forward** saves two numbers per row at most (``rstd``, and ``mean`` for
  LayerNorm) instead of an ``xhat`` as big as ``x``; the backward recomputes ``xhat``.
* **the backward, one block per chunk of rows.** For each row, one reduction gives
  ``mean(g * xhat)`` (with ``mean(g)`` for LayerNorm, in the same reduction), then the same
  threads write ``dx`` for that row. The parameter gradients are sums over *all* rows; a
  thread always owns the same columns, so it adds up ``dy * xhat`` for them in registers
  and writes its share once, to its block's row of a ``(blocks, N)`` partial buffer: no
  atomics, no races, and the same result on every run. One small ``partials.sum(axis=0)``
  finishes. When there are fewer row chunks than multiprocessors, the columns are split
  between several blocks per chunk too (each still reduces the whole row).
* **storage type vs compute type.** float16 is stored as 16 raw bits (``half_bits``) and
  converted to float32 by one PTX instruction on load; every sum and every statistic is
  float32 (float64 for float64 input, which is what makes the kernels gradcheckable).
* **the same numerics as the NumPy path:** two-pass variance, and a row whose statistic
  overflowed is redone on ``x / max|x|``, with ``1/max|x|`` never formed. CuPy compiles with
  ``-ftz=true``: every float32 result below ``FLT_MIN = 1.2e-38`` becomes 0. Above
  ``|x| = 8.5e37`` both ``1/max|x|`` and ``rstd`` are below it, so the forward computes
  ``y = (x / s) * rstd_s`` and saves ``rstd`` through double precision and one PTX
  conversion that does not flush, and the backward recomputes such a row's statistics from
  ``x``. One thing stays different: a float32 ``dx`` below ``FLT_MIN`` of a row with a
  normal ``rstd`` is 0 on the GPU (the CPU keeps a subnormal).

What production kernels add on top, left out here for clarity: keeping the row in
registers between passes instead of re-reading it from cache, warp teams in the
backward, and tuning of the block sizes per GPU.

Python side: the source is compiled once per dtype and pack width with ``cupy.RawModule``
(NVRTC), after a short prelude that says what ``scalar_t`` (storage), ``acc_t`` (compute)
and the pack width are. This module imports CuPy only when a kernel runs.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .. import backend

STORAGE_TYPES = {"float16": ("half_bits", "float"), "float32": ("float", "float"), "float64": ("double", "double")}
"""dtype name -> (C storage type ``scalar_t``, C compute/accumulate type ``acc_t``)."""

KERNEL_NAMES = ("rms_norm_forward", "rms_norm_backward", "layer_norm_forward", "layer_norm_backward")

NVRTC_OPTIONS = ("--std=c++14",)
"""What ``RawModule`` is given; CuPy adds ``-ftz=true``, the GPU's ``-arch`` and its own options."""

PACK_BYTES = 16
"""One load or store instruction moves this much (``float4``'s size)."""
BACKWARD_PACK_VALUES = 4

ELEMENTS_PER_THREAD = 8
"""What a thread of a block team handles per row; its parameter-gradient shares for that
many columns live in registers (more columns, for ``N > 8 * 1024``, stay in global memory)."""

MAX_THREADS = 1024
WARP_ROW_MAX = 1024
"""Forward rows up to this length are done by one warp each."""
WARPS_PER_BLOCK = 8
"""Warp teams per block in the forward of short rows (256 threads)."""

MAX_ROW_LENGTH = 2**30
"""Longest row the kernels take: their ``int`` column indices stay below ``2**31``."""

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

// CuPy compiles with -ftz=true: compiled float32 arithmetic turns every result below
// FLT_MIN = 1.2e-38 into 0. Inline PTX is exempt, so a value computed in double keeps its
// float value here, subnormal or not (the rstd of a row near FLT_MAX is about 3e-39).
__device__ __forceinline__ float narrow(double v) {
    float f;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(f) : "d"(v));
    return f;
}

// set(out, v): v rounded to out's type. A double v is rounded without flushing.
__device__ __forceinline__ void set(half_bits& out, float v) {
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(out.bits) : "f"(v));  // round to nearest even
}
__device__ __forceinline__ void set(half_bits& out, double v) { set(out, narrow(v)); }
__device__ __forceinline__ void set(float& out, float v) { out = v; }
__device__ __forceinline__ void set(float& out, double v) { out = narrow(v); }
__device__ __forceinline__ void set(double& out, double v) { out = v; }

// ---- packs: VEC neighbouring values, moved by one load or store instruction ---------------
// The host compiles VEC = 16 bytes' worth only when every array is 16-byte aligned and N is
// a multiple of VEC; otherwise VEC = 1 and a pack is one value.
struct alignas(sizeof(scalar_t) * VEC) pack_t { scalar_t v[VEC]; };

__device__ __forceinline__ pack_t load(const scalar_t* row, int p) {
    return reinterpret_cast<const pack_t*>(row)[p];
}
__device__ __forceinline__ void store(scalar_t* row, int p, const pack_t& pack) {
    reinterpret_cast<pack_t*>(row)[p] = pack;
}
// A parameter's pack (nothing is read where the norm has no such parameter), and its value i.
__device__ __forceinline__ pack_t load_param(const scalar_t* param, int has, int p) {
    return has ? load(param, p) : pack_t();
}
__device__ __forceinline__ acc_t param(const pack_t& pack, int has, int i, acc_t otherwise) {
    return has ? to_acc(pack.v[i]) : otherwise;
}

// ---- teams and their reductions -----------------------------------------------------------
// A team is the threads that share one row: one warp (short rows in the forward: each warp
// of the block has its own row) or the whole block. A warp team never uses shared memory
// or __syncthreads, so a warp without a row may leave early.
struct team_t {
    int lane;       // this thread's place in the team
    int size;       // threads in the team
    bool is_warp;
    long long row;  // the forward's row (the backward walks a chunk of rows)
};

__device__ __forceinline__ team_t forward_team(int warp_team) {
    if (!warp_team) return {int(threadIdx.x), int(blockDim.x), false, (long long)blockIdx.x};
    const long long warps = blockDim.x / 32;
    return {int(threadIdx.x % 32), 32, true, blockIdx.x * warps + threadIdx.x / 32};
}

__device__ __forceinline__ acc_t combine(acc_t a, acc_t b, bool take_max) {
    return take_max ? fmax(a, b) : a + b;
}

// Butterfly: at each step a lane combines its value with the lane `offset` away. After five
// steps every lane holds the reduction of the warp's 32 values, the same bits in each
// (a + b == b + a), so a branch on the result is taken by the whole warp.
__device__ __forceinline__ acc_t warp_reduce(acc_t v, bool take_max) {
    for (int offset = 16; offset > 0; offset /= 2) {
        v = combine(v, __shfl_xor_sync(0xffffffffu, v, offset), take_max);
    }
    return v;
}

// Reduce K values at once over the team (LayerNorm's backward: sum(g) and sum(g * xhat)
// share one trip through shared memory). scratch is __shared__ acc_t[K * 32]; blockDim.x is
// a multiple of 32 and at most 1024, so at most 32 warps. Every warp reduces the warps'
// values itself: every thread gets the result, without a broadcast slot.
template <int K>
__device__ void team_reduce(acc_t (&v)[K], bool take_max, const team_t& team, acc_t* scratch) {
    for (int k = 0; k < K; ++k) v[k] = warp_reduce(v[k], take_max);
    if (team.is_warp) return;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    if (lane == 0) {
        for (int k = 0; k < K; ++k) scratch[k * 32 + warp] = v[k];  // one value per warp
    }
    __syncthreads();
    for (int k = 0; k < K; ++k) {
        const acc_t w = lane < warps ? scratch[k * 32 + lane] : (take_max ? scratch[k * 32] : acc_t(0));
        v[k] = warp_reduce(w, take_max);
    }
    __syncthreads();  // before scratch is reused
}

__device__ __forceinline__ acc_t team_sum(acc_t v, const team_t& team, acc_t* scratch) {
    acc_t one[1] = {v};
    team_reduce<1>(one, false, team, scratch);
    return one[0];
}

// max |x| over the row: the scale of a row whose statistic overflowed.
__device__ acc_t row_abs_max(const scalar_t* xr, int packs, const team_t& team, acc_t* scratch) {
    acc_t m[1] = {0};
    for (int p = team.lane; p < packs; p += team.size) {
        const pack_t xp = load(xr, p);
        for (int i = 0; i < VEC; ++i) m[0] = fmax(m[0], fabs(to_acc(xp.v[i])));
    }
    team_reduce<1>(m, true, team, scratch);
    return m[0];
}

// ---- the backward's columns ---------------------------------------------------------------
// Blocks (blockIdx.x, c) for c < gridDim.y share a chunk of rows and split its packs:
// block c writes dx and the parameter-gradient shares of packs [begin, end) only. Thread t
// owns packs begin + t + k * blockDim.x in every row of the chunk: it adds up their shares
// of dweight and dbias in registers for k < OWN, in the partial buffer beyond (N > 8192).
struct columns_t { int begin, end; };

__device__ __forceinline__ columns_t block_columns(int packs) {
    const int per_block = (packs + gridDim.y - 1) / gridDim.y;
    const int begin = min(packs, int(blockIdx.y) * per_block);
    return {begin, min(packs, begin + per_block)};
}

// ---- RMSNorm ------------------------------------------------------------------------------
// Forward, one team per row: rstd = 1 / sqrt(mean(x^2) + eps); y = x * rstd * w + b.
// A row whose mean(x^2) overflowed (|x| above about 1.8e19) is redone on x / s, s = max|x|:
// y = (x / s) * rstd_s * w + b, rstd_s = 1 / sqrt(mean((x / s)^2) + eps / s^2).
extern "C" __global__ void __launch_bounds__(1024) rms_norm_forward(
    const scalar_t* x, const scalar_t* weight, const scalar_t* bias, scalar_t* y, acc_t* rstd_out,
    long long rows, int n, acc_t eps, int has_weight, int has_bias, int warp_team)
{
    __shared__ acc_t scratch[32];
    const team_t team = forward_team(warp_team);
    if (team.row >= rows) return;               // only a warp team is ever left without a row
    const scalar_t* xr = x + team.row * n;      // this team's row
    scalar_t* yr = y + team.row * n;
    const int packs = n / VEC;

    acc_t sum_sq = 0;                           // pass 1: each thread's share of sum(x^2)
    for (int p = team.lane; p < packs; p += team.size) {
        const pack_t xp = load(xr, p);
        for (int i = 0; i < VEC; ++i) sum_sq += to_acc(xp.v[i]) * to_acc(xp.v[i]);
    }
    const acc_t mean_sq = team_sum(sum_sq, team, scratch) / n;
    acc_t rstd = acc_t(1) / sqrt(mean_sq + eps);
    acc_t scale = 1;
    const bool rescued = !isfinite(mean_sq);    // the same on every thread of the team
    if (rescued) {
        scale = row_abs_max(xr, packs, team, scratch);
        acc_t sum_sq_scaled = 0;
        for (int p = team.lane; p < packs; p += team.size) {
            const pack_t xp = load(xr, p);
            for (int i = 0; i < VEC; ++i) {
                const acc_t v = to_acc(xp.v[i]) / scale;
                sum_sq_scaled += v * v;
            }
        }
        rstd = acc_t(1) / sqrt(team_sum(sum_sq_scaled, team, scratch) / n + eps / scale / scale);
    }
    // Saved for the backward, one number per row: rstd_s / s, in double, rounded once.
    if (team.lane == 0) set(rstd_out[team.row], double(rstd) / double(scale));

    for (int p = team.lane; p < packs; p += team.size) {  // pass 2 (x is in cache now): write y
        const pack_t xp = load(xr, p), wp = load_param(weight, has_weight, p), bp = load_param(bias, has_bias, p);
        pack_t out;
        for (int i = 0; i < VEC; ++i) {
            const acc_t v = rescued ? to_acc(xp.v[i]) / scale : to_acc(xp.v[i]);
            set(out.v[i], v * rstd * param(wp, has_weight, i, acc_t(1)) + param(bp, has_bias, i, acc_t(0)));
        }
        store(yr, p, out);
    }
}

// Backward, one block per chunk of rows_per_block rows. With xhat = x * rstd, g = dy * w:
//   dx = rstd * (g - xhat * mean(g * xhat)),  dweight = sum_rows dy * xhat,  dbias = sum_rows dy.
// A saved rstd below FLT_MIN (a row above 8.5e37, or one that -ftz=true flushed to 0) is
// recomputed from x / s as in the forward; eps is below rounding there and is left out.
extern "C" __global__ void __launch_bounds__(1024) rms_norm_backward(
    const scalar_t* dy, const scalar_t* x, const scalar_t* weight, const acc_t* rstd,
    scalar_t* dx, acc_t* dweight_partial, acc_t* dbias_partial,
    long long rows, int n, int rows_per_block, int has_weight, int has_bias)
{
    __shared__ acc_t scratch[32];
    const team_t team = {int(threadIdx.x), int(blockDim.x), false, 0};
    const int packs = n / VEC;
    const columns_t cols = block_columns(packs);
    acc_t* dw_row = dweight_partial + (long long)blockIdx.x * n;  // this block's row of the partials
    acc_t* db_row = dbias_partial + (long long)blockIdx.x * n;
    acc_t dw_own[OWN][VEC] = {}, db_own[OWN][VEC] = {};
    for (int p = cols.begin + team.lane + OWN * team.size; p < cols.end; p += team.size) {
        for (int i = 0; i < VEC; ++i) {
            if (has_weight) dw_row[p * VEC + i] = 0;
            if (has_bias) db_row[p * VEC + i] = 0;
        }
    }
    const long long first = (long long)blockIdx.x * rows_per_block;
    const long long last = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < last; ++row) {
        const scalar_t* xr = x + row * n;
        const scalar_t* dyr = dy + row * n;
        scalar_t* dxr = dx + row * n;
        acc_t r = rstd[row], scale = 1;         // xhat = (x / scale) * r
        const bool rescued = !(r >= ACC_MIN);
        if (rescued) {
            scale = row_abs_max(xr, packs, team, scratch);
            acc_t sum_sq = 0;
            for (int p = team.lane; p < packs; p += team.size) {
                const pack_t xp = load(xr, p);
                for (int i = 0; i < VEC; ++i) {
                    const acc_t v = to_acc(xp.v[i]) / scale;
                    sum_sq += v * v;
                }
            }
            r = acc_t(1) / sqrt(team_sum(sum_sq, team, scratch) / n);
        }
        const double rstd_wide = double(r) / double(scale);  // dx's factor where it is tiny
        auto xhat_of = [&](const pack_t& xp, int i) {
            return (rescued ? to_acc(xp.v[i]) / scale : to_acc(xp.v[i])) * r;
        };

        acc_t sum_gx = 0;                       // pass 1, over the whole row: sum(g * xhat)
        for (int p = team.lane; p < packs; p += team.size) {
            const pack_t xp = load(xr, p), dp = load(dyr, p), wp = load_param(weight, has_weight, p);
            for (int i = 0; i < VEC; ++i) {
                sum_gx += to_acc(dp.v[i]) * param(wp, has_weight, i, acc_t(1)) * xhat_of(xp, i);
            }
        }
        const acc_t mean_gx = team_sum(sum_gx, team, scratch) / n;

        // pass 2, over this block's columns: dx, and this thread's shares of dweight and dbias
        auto columns = [&](int p, acc_t (&dw)[VEC], acc_t (&db)[VEC]) {
            const pack_t xp = load(xr, p), dp = load(dyr, p), wp = load_param(weight, has_weight, p);
            pack_t out;
            for (int i = 0; i < VEC; ++i) {
                const acc_t xhat = xhat_of(xp, i), d = to_acc(dp.v[i]);
                const acc_t inner = d * param(wp, has_weight, i, acc_t(1)) - xhat * mean_gx;
                if (rescued) set(out.v[i], double(inner) * rstd_wide);
                else set(out.v[i], r * inner);
                dw[i] += d * xhat;
                db[i] += d;
            }
            store(dxr, p, out);
        };
#pragma unroll
        for (int k = 0; k < OWN; ++k) {
            const int p = cols.begin + team.lane + k * team.size;
            if (p < cols.end) columns(p, dw_own[k], db_own[k]);
        }
        for (int p = cols.begin + team.lane + OWN * team.size; p < cols.end; p += team.size) {
            acc_t dw[VEC], db[VEC];
            for (int i = 0; i < VEC; ++i) {
                dw[i] = has_weight ? dw_row[p * VEC + i] : acc_t(0);
                db[i] = has_bias ? db_row[p * VEC + i] : acc_t(0);
            }
            columns(p, dw, db);
            for (int i = 0; i < VEC; ++i) {
                if (has_weight) dw_row[p * VEC + i] = dw[i];
                if (has_bias) db_row[p * VEC + i] = db[i];
            }
        }
    }
#pragma unroll
    for (int k = 0; k < OWN; ++k) {             // the register shares, written once
        const int p = cols.begin + team.lane + k * team.size;
        if (p >= cols.end) continue;
        for (int i = 0; i < VEC; ++i) {
            if (has_weight) dw_row[p * VEC + i] = dw_own[k][i];
            if (has_bias) db_row[p * VEC + i] = db_own[k][i];
        }
    }
}

// ---- LayerNorm ----------------------------------------------------------------------------
// Forward, one team per row. Two-pass variance: mean first, then mean((x - mean)^2).
// Overflow (|x| above about 1.8e19): both statistics are redone on x / s, s = max|x|.
extern "C" __global__ void __launch_bounds__(1024) layer_norm_forward(
    const scalar_t* x, const scalar_t* weight, const scalar_t* bias, scalar_t* y,
    acc_t* mean_out, acc_t* rstd_out, long long rows, int n, acc_t eps, int has_weight, int has_bias,
    int warp_team)
{
    __shared__ acc_t scratch[32];
    const team_t team = forward_team(warp_team);
    if (team.row >= rows) return;
    const scalar_t* xr = x + team.row * n;
    scalar_t* yr = y + team.row * n;
    const int packs = n / VEC;

    acc_t sum = 0;                              // pass 1: the mean
    for (int p = team.lane; p < packs; p += team.size) {
        const pack_t xp = load(xr, p);
        for (int i = 0; i < VEC; ++i) sum += to_acc(xp.v[i]);
    }
    acc_t mean = team_sum(sum, team, scratch) / n;
    acc_t sum_sq = 0;                           // pass 2: the variance around it
    for (int p = team.lane; p < packs; p += team.size) {
        const pack_t xp = load(xr, p);
        for (int i = 0; i < VEC; ++i) sum_sq += (to_acc(xp.v[i]) - mean) * (to_acc(xp.v[i]) - mean);
    }
    const acc_t var = team_sum(sum_sq, team, scratch) / n;
    acc_t rstd = acc_t(1) / sqrt(var + eps);
    acc_t scale = 1, center = mean;             // y = (x / scale - center) * rstd * w + b
    const bool rescued = !isfinite(var);
    if (rescued) {
        scale = row_abs_max(xr, packs, team, scratch);
        acc_t sum_scaled = 0;
        for (int p = team.lane; p < packs; p += team.size) {
            const pack_t xp = load(xr, p);
            for (int i = 0; i < VEC; ++i) sum_scaled += to_acc(xp.v[i]) / scale;
        }
        center = team_sum(sum_scaled, team, scratch) / n;
        acc_t sum_sq_scaled = 0;
        for (int p = team.lane; p < packs; p += team.size) {
            const pack_t xp = load(xr, p);
            for (int i = 0; i < VEC; ++i) {
                const acc_t c = to_acc(xp.v[i]) / scale - center;
                sum_sq_scaled += c * c;
            }
        }
        rstd = acc_t(1) / sqrt(team_sum(sum_sq_scaled, team, scratch) / n + eps / scale / scale);
        mean = center * scale;                  // |mean| <= max|x|: no overflow
    }
    if (team.lane == 0) {                       // saved for the backward: two numbers per row
        mean_out[team.row] = mean;
        set(rstd_out[team.row], double(rstd) / double(scale));
    }
    for (int p = team.lane; p < packs; p += team.size) {  // pass 3: write y
        const pack_t xp = load(xr, p), wp = load_param(weight, has_weight, p), bp = load_param(bias, has_bias, p);
        pack_t out;
        for (int i = 0; i < VEC; ++i) {
            const acc_t c = (rescued ? to_acc(xp.v[i]) / scale : to_acc(xp.v[i])) - center;
            set(out.v[i], c * rstd * param(wp, has_weight, i, acc_t(1)) + param(bp, has_bias, i, acc_t(0)));
        }
        store(yr, p, out);
    }
}

// Backward, one block per chunk of rows. With xhat = (x - mean) * rstd, g = dy * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
// A saved rstd below FLT_MIN is recomputed from x / s, centred on mean / s.
extern "C" __global__ void __launch_bounds__(1024) layer_norm_backward(
    const scalar_t* dy, const scalar_t* x, const scalar_t* weight, const acc_t* mean, const acc_t* rstd,
    scalar_t* dx, acc_t* dweight_partial, acc_t* dbias_partial,
    long long rows, int n, int rows_per_block, int has_weight, int has_bias)
{
    __shared__ acc_t scratch[2 * 32];
    const team_t team = {int(threadIdx.x), int(blockDim.x), false, 0};
    const int packs = n / VEC;
    const columns_t cols = block_columns(packs);
    acc_t* dw_row = dweight_partial + (long long)blockIdx.x * n;
    acc_t* db_row = dbias_partial + (long long)blockIdx.x * n;
    acc_t dw_own[OWN][VEC] = {}, db_own[OWN][VEC] = {};
    for (int p = cols.begin + team.lane + OWN * team.size; p < cols.end; p += team.size) {
        for (int i = 0; i < VEC; ++i) {
            if (has_weight) dw_row[p * VEC + i] = 0;
            if (has_bias) db_row[p * VEC + i] = 0;
        }
    }
    const long long first = (long long)blockIdx.x * rows_per_block;
    const long long last = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < last; ++row) {
        const scalar_t* xr = x + row * n;
        const scalar_t* dyr = dy + row * n;
        scalar_t* dxr = dx + row * n;
        acc_t r = rstd[row], scale = 1, center = mean[row];  // xhat = (x / scale - center) * r
        const bool rescued = !(r >= ACC_MIN);
        if (rescued) {
            scale = row_abs_max(xr, packs, team, scratch);
            center = center / scale;
            acc_t sum_sq = 0;
            for (int p = team.lane; p < packs; p += team.size) {
                const pack_t xp = load(xr, p);
                for (int i = 0; i < VEC; ++i) {
                    const acc_t c = to_acc(xp.v[i]) / scale - center;
                    sum_sq += c * c;
                }
            }
            r = acc_t(1) / sqrt(team_sum(sum_sq, team, scratch) / n);
        }
        const double rstd_wide = double(r) / double(scale);
        auto xhat_of = [&](const pack_t& xp, int i) {
            return ((rescued ? to_acc(xp.v[i]) / scale : to_acc(xp.v[i])) - center) * r;
        };

        acc_t sums[2] = {0, 0};                 // pass 1: sum(g) and sum(g * xhat), one reduction
        for (int p = team.lane; p < packs; p += team.size) {
            const pack_t xp = load(xr, p), dp = load(dyr, p), wp = load_param(weight, has_weight, p);
            for (int i = 0; i < VEC; ++i) {
                const acc_t g = to_acc(dp.v[i]) * param(wp, has_weight, i, acc_t(1));
                sums[0] += g;
                sums[1] += g * xhat_of(xp, i);
            }
        }
        team_reduce<2>(sums, false, team, scratch);
        const acc_t mean_g = sums[0] / n, mean_gx = sums[1] / n;

        auto columns = [&](int p, acc_t (&dw)[VEC], acc_t (&db)[VEC]) {  // pass 2, as in RMSNorm's
            const pack_t xp = load(xr, p), dp = load(dyr, p), wp = load_param(weight, has_weight, p);
            pack_t out;
            for (int i = 0; i < VEC; ++i) {
                const acc_t xhat = xhat_of(xp, i), d = to_acc(dp.v[i]);
                const acc_t inner = d * param(wp, has_weight, i, acc_t(1)) - mean_g - xhat * mean_gx;
                if (rescued) set(out.v[i], double(inner) * rstd_wide);
                else set(out.v[i], r * inner);
                dw[i] += d * xhat;
                db[i] += d;
            }
            store(dxr, p, out);
        };
#pragma unroll
        for (int k = 0; k < OWN; ++k) {
            const int p = cols.begin + team.lane + k * team.size;
            if (p < cols.end) columns(p, dw_own[k], db_own[k]);
        }
        for (int p = cols.begin + team.lane + OWN * team.size; p < cols.end; p += team.size) {
            acc_t dw[VEC], db[VEC];
            for (int i = 0; i < VEC; ++i) {
                dw[i] = has_weight ? dw_row[p * VEC + i] : acc_t(0);
                db[i] = has_bias ? db_row[p * VEC + i] : acc_t(0);
            }
            columns(p, dw, db);
            for (int i = 0; i < VEC; ++i) {
                if (has_weight) dw_row[p * VEC + i] = dw[i];
                if (has_bias) db_row[p * VEC + i] = db[i];
            }
        }
    }
#pragma unroll
    for (int k = 0; k < OWN; ++k) {
        const int p = cols.begin + team.lane + k * team.size;
        if (p >= cols.end) continue;
        for (int i = 0; i < VEC; ++i) {
            if (has_weight) dw_row[p * VEC + i] = dw_own[k][i];
            if (has_bias) db_row[p * VEC + i] = db_own[k][i];
        }
    }
}
"""


def vector_width(dtype_name: str, backward: bool = False) -> int:
    """Values of this dtype in one pack: 16 bytes' worth (8 float16, 4 float32, 2 float64),
    at most 4 in a backward (whose threads also hold 16 parameter-gradient shares: with
    8 float16 packs they would not fit in the 64 registers of a 1024-thread block)."""
    values = PACK_BYTES // np.dtype(dtype_name).itemsize
    return min(values, BACKWARD_PACK_VALUES) if backward else values


def source(dtype_name: str, vec: int = 1) -> str:
    """The CUDA source for one dtype and pack width ``vec``: a prelude naming ``scalar_t``,
    ``acc_t``, ``VEC``, ``OWN`` (packs per thread whose gradient shares stay in registers)
    and ``ACC_MIN`` (the smallest normal ``acc_t``), then the kernels."""
    storage, acc = STORAGE_TYPES[dtype_name]
    widths = [2**k for k in range(5) if 2**k <= vector_width(dtype_name)]
    if vec not in widths:
        raise ValueError(f"source: vec must be one of {widths} for {dtype_name}, got {vec}")
    acc_min = float(np.finfo(np.float64 if acc == "double" else np.float32).tiny)
    prelude = [
        "struct half_bits;" if storage == "half_bits" else "",
        f"typedef {storage} scalar_t;",
        f"typedef {acc} acc_t;",
        f"constexpr int VEC = {vec};",
        f"constexpr int OWN = {max(1, ELEMENTS_PER_THREAD // vec)};",
        f"constexpr acc_t ACC_MIN = {acc_min!r};",
    ]
    return "\n".join(line for line in prelude if line) + "\n" + KERNEL_SOURCE


def supports(x: Any, *params: Any) -> bool:
    """Whether the kernels handle these arrays: ``x`` 2-D ``(rows, N)`` with at least one row,
    ``N <= 2**30``, a float dtype, and every parameter ``None`` or a vector of length ``N`` of
    ``x``'s dtype. Any memory layout is accepted: the launchers copy what is not contiguous."""
    dtype_name = getattr(x.dtype, "name", None)
    if x.ndim != 2 or dtype_name not in STORAGE_TYPES:
        return False
    rows, n = x.shape
    if not 0 < rows < 2**31 or not 0 < n <= MAX_ROW_LENGTH:  # gridDim.x is below 2**31
        return False
    return all(p is None or (p.dtype == x.dtype and tuple(p.shape) == (n,)) for p in params)


def threads_per_block(n: int) -> int:
    """About 8 elements per thread, a multiple of the 32-thread warp, from 32 to 1024."""
    threads = -(-n // ELEMENTS_PER_THREAD)
    threads = -(-threads // 32) * 32  # up to a whole number of warps
    return min(MAX_THREADS, max(32, threads))


def forward_launch(rows: int, n: int) -> tuple[int, int, bool]:
    """``(blocks, threads, warp_team)`` for a forward: blocks of 8 warps, one short row per
    warp (``N <= 1024``), or one block per longer row."""
    if n <= WARP_ROW_MAX:
        return -(-rows // WARPS_PER_BLOCK), 32 * WARPS_PER_BLOCK, True
    return rows, threads_per_block(n), False


def backward_grid(rows: int, n: int, multiprocessors: int) -> tuple[int, int, int]:
    """``(row_blocks, rows_per_block, column_blocks)`` for a backward.

    About 8 chunks of rows per multiprocessor keep the GPU busy, every chunk but the last
    with the same number of rows. With fewer chunks than multiprocessors (a few long rows),
    each chunk's columns are split between ``column_blocks`` blocks, none narrower than
    what one block's registers hold (8 * 1024 values), to reach about one block per
    multiprocessor.
    """
    target = max(1, min(rows, 8 * multiprocessors))
    rows_per_block = -(-rows // target)
    row_blocks = -(-rows // rows_per_block)
    column_blocks = 1
    if row_blocks < multiprocessors:
        column_blocks = max(1, min(-(-multiprocessors // row_blocks), n // (ELEMENTS_PER_THREAD * MAX_THREADS)))
    return row_blocks, rows_per_block, column_blocks


def pack_width(dtype_name: str, n: int, addresses: list[int], backward: bool = False) -> int:
    """The pack width to compile for: ``vector_width`` where ``N`` is a multiple of it and
    every array starts on a boundary of the pack's size (then so does every row), else 1."""
    vec = vector_width(dtype_name, backward)
    pack_bytes = vec * np.dtype(dtype_name).itemsize
    aligned = all(address % pack_bytes == 0 for address in addresses)
    return vec if n % vec == 0 and aligned else 1


@functools.cache
def _module(dtype_name: str, vec: int, device: int) -> Any:
    """Compile the module for one dtype and pack width (once per device: NVRTC takes a second)."""
    cupy = backend.namespace("cupy")
    return cupy.RawModule(code=source(dtype_name, vec), options=NVRTC_OPTIONS)


def _kernels(dtype_name: str, vec: int) -> dict[str, Any]:
    """The compiled kernels for one dtype and pack width, on the current device."""
    cupy = backend.namespace("cupy")
    module = _module(dtype_name, vec, cupy.cuda.runtime.getDevice())
    return {name: module.get_function(name) for name in KERNEL_NAMES}


@functools.cache
def _multiprocessors_of(device: int) -> int:
    return backend.namespace("cupy").cuda.Device(device).attributes["MultiProcessorCount"]


def _multiprocessors() -> int:
    """The current GPU's multiprocessor count (CuPy builds a dict of every attribute to say
    it, hence the cache)."""
    return _multiprocessors_of(backend.namespace("cupy").cuda.runtime.getDevice())


def _address(array: Any) -> int:
    return array.data.ptr


def _acc_dtype(x: Any) -> Any:
    return np.float64 if x.dtype.name == "float64" else np.float32


def _flags(*params: Any) -> tuple[np.int32, ...]:
    return tuple(np.int32(p is not None) for p in params)


def _or(p: Any, x: Any) -> Any:
    """A kernel argument must be a pointer even when its flag says it is unused."""
    return x if p is None else p


def _contiguous(cupy: Any, *arrays: Any) -> list[Any]:
    """The kernels take raw pointers: a strided view or a stride-0 broadcast (a weight from
    ``broadcast_to``) would be read wrongly, so those are copied (``None`` stays)."""
    return [None if a is None else cupy.ascontiguousarray(a) for a in arrays]


def _upstream(cupy: Any, dy: Any, x: Any) -> Any:
    """``dy`` as the kernel reads it: ``x``'s dtype (a float32 ``dy`` of a float16 ``x`` is
    rounded to float16, the precision ``dx`` is stored in), C-contiguous."""
    if tuple(dy.shape) != tuple(x.shape):
        raise ValueError(f"fused backward: dy must have x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    return cupy.ascontiguousarray(dy.astype(x.dtype, copy=False))


def rms_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    """``y`` and the per-row ``rstd`` ``(rows, 1)``, as the lesson's RMSNorm forward returns them."""
    cupy = backend.namespace("cupy")
    x, weight, bias = _contiguous(cupy, x, weight, bias)
    rows, n = x.shape
    acc = _acc_dtype(x)
    y = cupy.empty_like(x)
    rstd = cupy.empty((rows, 1), dtype=acc)
    vec = pack_width(x.dtype.name, n, [_address(a) for a in (x, y, weight, bias) if a is not None])
    blocks, threads, warp_team = forward_launch(rows, n)
    args = (x, _or(weight, x), _or(bias, x), y, rstd, np.int64(rows), np.int32(n), acc(eps))
    args += (*_flags(weight, bias), np.int32(warp_team))
    _kernels(x.dtype.name, vec)["rms_norm_forward"]((blocks,), (threads,), args)
    return y, rstd


def rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` and the summed ``dweight``/``dbias`` (compute dtype; the caller casts them)."""
    cupy = backend.namespace("cupy")
    x, weight = _contiguous(cupy, x, weight)
    dy = _upstream(cupy, dy, x)
    acc = _acc_dtype(x)
    rstd = cupy.ascontiguousarray(rstd, dtype=acc)
    rows, n = x.shape
    row_blocks, rows_per_block, column_blocks = backward_grid(rows, n, _multiprocessors())
    dx = cupy.empty_like(x)
    dweight_partial = cupy.empty((row_blocks, n), dtype=acc) if weight is not None else None
    dbias_partial = cupy.empty((row_blocks, n), dtype=acc) if with_bias else None
    vec = pack_width(x.dtype.name, n, [_address(a) for a in (x, dy, dx, weight) if a is not None], backward=True)
    args = (dy, x, _or(weight, x), rstd, dx, _or(dweight_partial, rstd), _or(dbias_partial, rstd))
    args += (np.int64(rows), np.int32(n), np.int32(rows_per_block), *_flags(weight, dbias_partial))
    kernel = _kernels(x.dtype.name, vec)["rms_norm_backward"]
    kernel((row_blocks, column_blocks), (threads_per_block(n),), args)
    return dx, _sum(dweight_partial), _sum(dbias_partial)


def layer_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """``y`` and the per-row ``mean``, ``rstd`` ``(rows, 1)``, as the lesson's LayerNorm forward returns them."""
    cupy = backend.namespace("cupy")
    x, weight, bias = _contiguous(cupy, x, weight, bias)
    rows, n = x.shape
    acc = _acc_dtype(x)
    y = cupy.empty_like(x)
    mean = cupy.empty((rows, 1), dtype=acc)
    rstd = cupy.empty((rows, 1), dtype=acc)
    vec = pack_width(x.dtype.name, n, [_address(a) for a in (x, y, weight, bias) if a is not None])
    blocks, threads, warp_team = forward_launch(rows, n)
    args = (x, _or(weight, x), _or(bias, x), y, mean, rstd, np.int64(rows), np.int32(n), acc(eps))
    args += (*_flags(weight, bias), np.int32(warp_team))
    _kernels(x.dtype.name, vec)["layer_norm_forward"]((blocks,), (threads,), args)
    return y, mean, rstd


def layer_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` and the summed ``dweight``/``dbias`` (compute dtype; the caller casts them)."""
    cupy = backend.namespace("cupy")
    x, weight = _contiguous(cupy, x, weight)
    dy = _upstream(cupy, dy, x)
    acc = _acc_dtype(x)
    mean, rstd = cupy.ascontiguousarray(mean, dtype=acc), cupy.ascontiguousarray(rstd, dtype=acc)
    rows, n = x.shape
    row_blocks, rows_per_block, column_blocks = backward_grid(rows, n, _multiprocessors())
    dx = cupy.empty_like(x)
    dweight_partial = cupy.empty((row_blocks, n), dtype=acc) if weight is not None else None
    dbias_partial = cupy.empty((row_blocks, n), dtype=acc) if with_bias else None
    vec = pack_width(x.dtype.name, n, [_address(a) for a in (x, dy, dx, weight) if a is not None], backward=True)
    args = (dy, x, _or(weight, x), mean, rstd, dx, _or(dweight_partial, rstd), _or(dbias_partial, rstd))
    args += (np.int64(rows), np.int32(n), np.int32(rows_per_block), *_flags(weight, dbias_partial))
    kernel = _kernels(x.dtype.name, vec)["layer_norm_backward"]
    kernel((row_blocks, column_blocks), (threads_per_block(n),), args)
    return dx, _sum(dweight_partial), _sum(dbias_partial)


def _sum(partial: Any) -> Any:
    """The one small reduction after a backward: add up the blocks' partial rows."""
    return None if partial is None else partial.sum(axis=0)
