"""The GPU section (``--gpu``): tinynorm on CuPy (autograd reference, explicit Array API
formulas, fused CUDA kernels) against PyTorch eager on the same GPU, fwd+bwd, plus a
measured device copy bandwidth. Not yet run on a GPU.

How it times. A CUDA event pair around one call would time Python launching the kernels
as much as the GPU running them. So each measurement is an event pair around ``calls``
back-to-back fwd+bwd calls (enough for about 50 ms of work): while the GPU works through
one call the host queues the next, and per call only the slower of the two remains. The
host's own time for the same loop is kept too: where it is as long as the GPU's, the call
is bound by host overhead (``host_bound``), not by the GPU. Medians over ``repeats`` such
loops, the contenders interleaved.

How it checks. Before timing, the fused outputs (``y``, ``dx``, ``dweight``, ``dbias``) are
compared with PyTorch's for the same inputs: the worst error relative to the largest
value of each output is kept (``err_vs_torch``) and is one of the goals. PyTorch's version
and the CUDA kernels it ran (from its profiler) are recorded beside the times.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import tinynorm as tn
from tinynorm.kernels import cupy_fused

from .harness import ms, ratio, table

NORMS = {"LayerNorm": "layer_norm", "RMSNorm": "rms_norm"}
IMPLS = ("autograd", "explicit", "fused")
TORCH_TOLERANCE = {"float32": 1e-4, "float16": 1e-2}
"""Worst error of a fused output against PyTorch's, relative to that output's largest value."""
TARGET_S = 0.05
"""About this much GPU work inside one pair of events."""


def _plain_formulas() -> Any:
    """The lessons' plain formulas on CuPy: every kernel switched off."""
    return tn.kernels.disabled()


def _loop_time(cupy: Any, step: Callable[[], Any], calls: int) -> tuple[float, float]:
    """``(gpu, host)`` seconds per call over ``calls`` back-to-back calls."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    began = time.perf_counter()
    for _ in range(calls):
        step()
    host = time.perf_counter() - began
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3 / calls, host / calls


def _calls_for(cupy: Any, step: Callable[[], Any]) -> int:
    """How many calls make about ``TARGET_S`` of work (from one warm call), 3 to 1000."""
    gpu, host = _loop_time(cupy, step, 1)
    return max(3, min(1000, math.ceil(TARGET_S / max(gpu, host, 1e-6))))


def _copy_bandwidth(cupy: Any, repeats: int) -> float:
    src = cupy.ones(256 * 2**20 // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)

    def copy() -> None:
        cupy.copyto(dst, src)

    copy()
    calls = _calls_for(cupy, copy)
    times = [_loop_time(cupy, copy, calls)[0] for _ in range(repeats)]
    return 2 * src.nbytes / statistics.median(times) / 1e9


def _tn_step(name: str, impl: str, x: Any, dy: Any, w: Any, b: Any) -> Callable[[], Any]:
    F = tn.nn.functional
    n = x.shape[-1]
    kind = "autograd" if impl == "autograd" else "explicit"

    def call() -> None:
        x.grad = w.grad = b.grad = None
        if name == "LayerNorm":
            y = F.layer_norm(x, n, w, b, 1e-5, impl=kind)
        else:
            y = F.rms_norm(x, n, w, 1e-6, impl=kind)
        y.backward(dy)

    if impl != "explicit":
        return call

    def plain() -> None:
        with _plain_formulas():
            call()

    return plain


def _torch_step(torch: Any, name: str, host_x: Any, host_dy: Any, w: Any, b: Any) -> tuple[Callable[[], Any], Any]:
    """PyTorch's fwd+bwd, and its tensors ``(x, weight, bias, out)`` (``out[0]`` is the last y)."""
    F = torch.nn.functional
    x = torch.tensor(host_x, device="cuda", requires_grad=True)
    dy = torch.tensor(host_dy, device="cuda")
    tw = torch.tensor(w.numpy(), device="cuda", requires_grad=True)
    tb = torch.tensor(b.numpy(), device="cuda", requires_grad=True)
    n = (host_x.shape[-1],)
    out: list[Any] = [None]

    def step() -> None:
        x.grad = tw.grad = tb.grad = None
        y = F.layer_norm(x, n, tw, tb, 1e-5) if name == "LayerNorm" else F.rms_norm(x, n, tw, 1e-6)
        y.backward(dy)
        out[0] = y

    return step, (x, tw, tb, out)


def _torch_kernels(torch: Any, step: Callable[[], Any]) -> list[str]:
    """The CUDA kernels PyTorch launched for one fwd+bwd, by name, from its profiler."""
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        return sorted({e.key for e in prof.key_averages() if str(getattr(e, "device_type", "")).endswith("CUDA")})
    except Exception as err:  # noqa: BLE001 (a profiler that fails must not stop the benchmark)
        return [f"profiler unavailable: {err}"]


def _relative_error(cupy: Any, got: Any, want: Any) -> float:
    """max |got - want| / max |want|, on the GPU, both in float64."""
    got, want = cupy.asarray(got, dtype=cupy.float64), cupy.asarray(want, dtype=cupy.float64)
    return float(cupy.abs(got - want).max() / cupy.maximum(cupy.abs(want).max(), 1e-30))


def _against_torch(cupy: Any, name: str, x: Any, dy: Any, w: Any, b: Any, torch_tensors: Any) -> float:
    """Worst relative error of the fused outputs (after one fused fwd+bwd) against PyTorch's."""
    tx, tw, tb, out = torch_tensors
    F = tn.nn.functional
    x.grad = w.grad = b.grad = None
    n = x.shape[-1]
    y = F.layer_norm(x, n, w, b, 1e-5) if name == "LayerNorm" else F.rms_norm(x, n, w, 1e-6)
    y.backward(dy)
    pairs = [(y.data, out[0].detach()), (x.grad, tx.grad), (w.grad, tw.grad)]
    if name == "LayerNorm":
        pairs.append((b.grad, tb.grad))
    return max(_relative_error(cupy, mine, cupy.from_dlpack(theirs)) for mine, theirs in pairs)


def run(shapes: list[tuple[int, int]], dtypes: list[str], repeats: int) -> tuple[str, dict[str, Any]]:
    try:
        cupy = tn.backend.namespace("cupy")
    except tn.BackendUnavailableError as err:
        return f"(gpu) skipped: {err}\n", {"skipped": str(err)}
    try:
        import torch

        torch_ok = torch.cuda.is_available()
    except ImportError:
        torch, torch_ok = None, False
    gbps = _copy_bandwidth(cupy, repeats)
    results: dict[str, Any] = {"device": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "rows": []}
    results |= {"copy_GBps": gbps, "cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}
    results["torch"] = torch.__version__ if torch is not None else None
    rows = []
    rng = np.random.default_rng(0)
    for shape in shapes:
        for dtype in dtypes:
            host_x = rng.standard_normal(shape).astype(dtype)
            host_dy = rng.standard_normal(shape).astype(dtype)
            x = tn.Tensor(cupy.asarray(host_x), requires_grad=True)
            dy = tn.Tensor(cupy.asarray(host_dy))
            w = tn.Tensor(cupy.asarray(1 + 0.1 * rng.standard_normal(shape[-1]), dtype=dtype), requires_grad=True)
            b = tn.Tensor(cupy.asarray(0.1 * rng.standard_normal(shape[-1]), dtype=dtype), requires_grad=True)
            for name in NORMS:
                steps = {impl: _tn_step(name, impl, x, dy, w, b) for impl in IMPLS}
                row: dict[str, Any] = {"norm": name, "shape": list(shape), "dtype": dtype}
                if torch_ok:
                    steps["torch"], torch_tensors = _torch_step(torch, name, host_x, host_dy, w, b)
                    steps["torch"]()
                    row["err_vs_torch"] = _against_torch(cupy, name, x, dy, w, b, torch_tensors)
                    row["err_limit"] = TORCH_TOLERANCE[dtype]
                    row["torch_kernels"] = _torch_kernels(torch, steps["torch"])
                row |= _timed(cupy, steps, repeats)
                row["fused_kernel_used"] = _fused_kernel_used(steps["fused"])
                row["bound_s"] = 5 * host_x.nbytes / (gbps * 1e9)  # read x, write y; read x, dy, write dx
                results["rows"].append(row)
                rows.append(
                    [name, "x".join(map(str, shape)), dtype]
                    + [ms(row.get(k)) for k in (*IMPLS, "torch")]
                    + [ratio(row["fused"], row.get("torch")), ms(row["bound_s"]), row.get("err_vs_torch")]
                    + [", ".join(k for k in steps if row[f"{k}_host_bound"]) or "-"]
                )
            del x, dy, w, b
            cupy.get_default_memory_pool().free_all_blocks()
    title = f"(gpu) {results['device']}: fwd+bwd, copy bandwidth {gbps:.0f} GB/s (read + write)"
    title += f"; CuPy {results['cupy']}, PyTorch {results['torch']}"
    header = ["norm", "shape", "dtype", *(f"{k} ms" for k in (*IMPLS, "torch"))]
    header += ["fused/torch", "bound ms", "err vs torch", "host-bound"]
    return table(title, header, rows), results


def _timed(cupy: Any, steps: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """Median seconds per call of each step (``name``), and whether the host was the bottleneck."""
    for step in steps.values():  # warm-up: compiles the kernels, fills the memory pool
        step()
    calls = {k: _calls_for(cupy, step) for k, step in steps.items()}
    gpu: dict[str, list[float]] = {k: [] for k in steps}
    host: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, step in steps.items():
            g, h = _loop_time(cupy, step, calls[k])
            gpu[k].append(g)
            host[k].append(h)
    out: dict[str, Any] = {}
    for k in steps:
        out[k] = statistics.median(gpu[k])
        out[f"{k}_calls"] = calls[k]
        out[f"{k}_host_bound"] = statistics.median(host[k]) >= 0.9 * out[k]
    return out


def _fused_kernel_used(step: Callable[[], Any]) -> bool:
    """Whether one fused fwd+bwd launched the fused kernels (rather than the plain formulas)."""
    launched = []
    compiled = cupy_fused._kernels

    def counting(dtype_name: str, vec: int) -> dict[str, Any]:
        launched.append(dtype_name)
        return compiled(dtype_name, vec)

    cupy_fused._kernels = counting
    try:
        step()
    finally:
        cupy_fused._kernels = compiled
    return len(launched) == 2
