"""The GPU section (``--gpu``): tinynorm on CuPy (autograd reference, explicit Array API
formulas, fused CUDA kernels) against PyTorch eager on the same GPU, fwd+bwd, timed with
CUDA events (medians of interleaved runs), plus a measured device copy bandwidth."""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

import tinynorm as tn
from tinynorm.norms import _shared

from .harness import ms, ratio, table

NORMS = {"LayerNorm": "layer_norm", "RMSNorm": "rms_norm"}


def _event_timer(cupy: Any, step: Any) -> float:
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    step()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3


def _copy_bandwidth(cupy: Any, repeats: int) -> float:
    src = cupy.ones(256 * 2**20 // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    times = [_event_timer(cupy, lambda: cupy.copyto(dst, src)) for _ in range(repeats + 1)][1:]
    return 2 * src.nbytes / statistics.median(times) / 1e9


def _tn_step(name: str, impl: str, x: Any, dy: Any, w: Any, b: Any) -> Any:
    F = tn.nn.functional
    n = x.shape[-1]

    def step() -> None:
        _shared.USE_FUSED_KERNELS = impl == "fused"
        x.grad = w.grad = b.grad = None
        kind = "autograd" if impl == "autograd" else "explicit"
        if name == "LayerNorm":
            y = F.layer_norm(x, n, w, b, 1e-5, impl=kind)
        else:
            y = F.rms_norm(x, n, w, 1e-6, impl=kind)
        y.backward(dy)

    return step


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
    results["copy_GBps"] = gbps
    rows = []
    rng = np.random.default_rng(0)
    try:
        for shape in shapes:
            for dtype in dtypes:
                host_x = rng.standard_normal(shape).astype(dtype)
                host_dy = rng.standard_normal(shape).astype(dtype)
                x = tn.Tensor(cupy.asarray(host_x), requires_grad=True)
                dy = tn.Tensor(cupy.asarray(host_dy))
                w = tn.Tensor(cupy.asarray(1 + 0.1 * rng.standard_normal(shape[-1]), dtype=dtype), requires_grad=True)
                b = tn.Tensor(cupy.asarray(0.1 * rng.standard_normal(shape[-1]), dtype=dtype), requires_grad=True)
                for name in NORMS:
                    steps = {impl: _tn_step(name, impl, x, dy, w, b) for impl in ("autograd", "explicit", "fused")}
                    if torch_ok:
                        steps["torch"] = _torch_step(torch, name, host_x, host_dy, w, b)
                    times: dict[str, list[float]] = {k: [] for k in steps}
                    for step in steps.values():  # warm-up (compiles the kernels)
                        step()
                    for _ in range(repeats):
                        for k, step in steps.items():
                            times[k].append(_event_timer(cupy, step) if k != "torch" else _torch_time(torch, step))
                    med = {k: statistics.median(v) for k, v in times.items()}
                    bound = 5 * host_x.nbytes / (gbps * 1e9)
                    results["rows"].append({"norm": name, "shape": list(shape), "dtype": dtype, "bound_s": bound} | med)
                    rows.append(
                        [name, "x".join(map(str, shape)), dtype]
                        + [ms(med.get(k)) for k in ("autograd", "explicit", "fused", "torch")]
                        + [ratio(med["fused"], med.get("torch")), ms(bound)]
                    )
                del x, dy, w, b
                cupy.get_default_memory_pool().free_all_blocks()
    finally:
        _shared.USE_FUSED_KERNELS = True
    title = f"(gpu) {results['device']}: fwd+bwd, copy bandwidth {gbps:.0f} GB/s (read + write)"
    header = ["norm", "shape", "dtype", "autograd ms", "explicit ms", "fused ms", "torch ms", "fused/torch", "bound ms"]
    return table(title, header, rows), results


def _torch_step(torch: Any, name: str, host_x: Any, host_dy: Any, w: Any, b: Any) -> Any:
    F = torch.nn.functional
    x = torch.tensor(host_x, device="cuda", requires_grad=True)
    dy = torch.tensor(host_dy, device="cuda")
    tw = torch.tensor(w.numpy(), device="cuda", requires_grad=True)
    tb = torch.tensor(b.numpy(), device="cuda", requires_grad=True)
    n = (host_x.shape[-1],)

    def step() -> None:
        x.grad = tw.grad = tb.grad = None
        y = F.layer_norm(x, n, tw, tb, 1e-5) if name == "LayerNorm" else F.rms_norm(x, n, tw, 1e-6)
        y.backward(dy)

    return step


def _torch_time(torch: Any, step: Any) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3
