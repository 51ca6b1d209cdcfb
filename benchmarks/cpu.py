"""The CPU sections (a)-(e); see the package docstring for what each measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import tinynorm as tn
from tinynorm import stats
from tinynorm.registry import NORMS

from .harness import interleaved_medians, ms, per_call_median, ratio, table, traced_peak_bytes
from .variants import big_shape, build, fwd_bwd_step

ROOT = Path(__file__).resolve().parent.parent


def _nbytes(t: tn.Tensor) -> int:
    return int(np.prod(t.shape)) * t.numpy().dtype.itemsize


# ---- (a) explicit vs autograd reference, every registry variant ---------------------------
def variants(rows: int, features: int, repeats: int) -> tuple[str, list[dict[str, Any]]]:
    results = []
    for name, spec in NORMS.items():
        shape = big_shape(spec, rows, features)
        try:
            built = {impl: build(spec, shape, "float32", impl) for impl in ("explicit", "autograd")}
        except Exception as err:  # a variant whose kwargs could not be scaled: say so, go on
            results.append({"variant": name, "shape": list(shape), "error": f"{type(err).__name__}: {err}"})
            continue
        with tn.no_grad():  # dy has the output's shape: a weight-side layer (weight_norm) changes the width
            out_shape = built["explicit"][0](built["explicit"][1]).shape
        dy = np.random.default_rng(1).standard_normal(out_shape).astype(np.float32)
        steps = {impl: fwd_bwd_step(module, x, dy) for impl, (module, x) in built.items()}
        times = interleaved_medians(steps, repeats)
        peaks = {impl: traced_peak_bytes(step) for impl, step in steps.items()}
        x_bytes = _nbytes(built["explicit"][1])
        results.append(
            {
                "variant": name,
                "shape": list(shape),
                "explicit_s": times["explicit"],
                "autograd_s": times["autograd"],
                "explicit_peak_bytes": peaks["explicit"],
                "autograd_peak_bytes": peaks["autograd"],
                "input_bytes": x_bytes,
            }
        )
    rows_out = []
    for r in results:
        if "error" in r:
            rows_out.append([r["variant"], "x".join(map(str, r["shape"])), None, None, None, None, None, None, None])
            continue
        x_bytes = r["input_bytes"]
        rows_out.append(
            [
                r["variant"],
                "x".join(map(str, r["shape"])),
                ms(r["explicit_s"]),
                ms(r["autograd_s"]),
                ratio(r["explicit_s"], r["autograd_s"]),
                r["explicit_peak_bytes"] / x_bytes,
                r["autograd_peak_bytes"] / x_bytes,
                ratio(r["explicit_peak_bytes"], r["autograd_peak_bytes"]),
                (r["explicit_peak_bytes"] - 2 * x_bytes) / x_bytes,
            ]
        )
    header = ["variant", "shape", "explicit ms", "autograd ms", "time ratio", "expl peak/x", "auto peak/x"]
    header += ["peak ratio", "expl extra/x"]
    title = "(a) explicit backward vs autograd reference, fwd+bwd, float32"
    note = (
        "peak: tracemalloc's peak above the memory live before the step (x and dy), in units of x's size;\n"
        "extra: peak minus the output y and the gradient dx (2 x), which any fwd+bwd holds\n"
    )
    return table(title, header, rows_out) + note, results


# ---- (b) against PyTorch, in subprocesses per huge-page setting ---------------------------
def against_torch(shapes: list[tuple[int, int]], dtypes: list[str], repeats: int) -> tuple[str, list[dict[str, Any]]]:
    results: list[dict[str, Any]] = []
    for thp in (False, True):
        env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
        if thp:
            env["THP_MEM_ALLOC_ENABLE"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "benchmarks.torch_side", "--shapes", ",".join(f"{a}x{b}" for a, b in shapes)]
        cmd += ["--dtypes", ",".join(dtypes), "--repeats", str(repeats)]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"benchmarks.torch_side failed:\n{done.stderr}")
        results += json.loads(done.stdout.strip().splitlines()[-1])
    rows = []
    for r in results:
        rows.append(
            [
                r["norm"],
                "x".join(map(str, r["shape"])),
                r["dtype"],
                "on" if r["thp"] else "off",
                ms(r["tinynorm_s"]),
                ms(r["torch_s"]),
                ratio(r["tinynorm_s"], r["torch_s"]),
            ]
        )
    version = next((r["torch_version"] for r in results if r["torch_version"]), None)
    title = f"(b) tinynorm (explicit) vs PyTorch {version or '(not installed)'} CPU, fwd+bwd, 2 threads"
    header = ["norm", "shape", "dtype", "THP", "tinynorm ms", "torch ms", "tn/torch"]
    return table(title, header, rows), results


# ---- (c) fixed overhead per op ------------------------------------------------------------
def overhead(calls: int) -> tuple[str, list[dict[str, Any]]]:
    a = tn.tensor(np.ones(4), requires_grad=True)
    b = tn.tensor(np.ones(4), requires_grad=True)
    a0, b0 = tn.tensor(np.ones(4)), tn.tensor(np.ones(4))
    ln = tn.nn.LayerNorm(8)
    x = tn.tensor(np.random.default_rng(0).standard_normal((2, 8)), requires_grad=True)
    dy = np.ones((2, 8))
    cases: dict[str, dict[str, Any]] = {
        "add, no grad": {"tinynorm": lambda: a0 + b0},
        "add, recorded": {"tinynorm": lambda: a + b},
        "add fwd+bwd": {"tinynorm": lambda: (a + b).backward(np.ones(4))},
        "LayerNorm(8) fwd+bwd on (2, 8)": {"tinynorm": lambda: ln(x).backward(dy)},
    }
    try:
        import torch

        torch.set_num_threads(2)
        ta = torch.ones(4, dtype=torch.float64, requires_grad=True)
        tb = torch.ones(4, dtype=torch.float64, requires_grad=True)
        tln = torch.nn.LayerNorm(8, dtype=torch.float64)
        tx = torch.from_numpy(x.numpy()).requires_grad_(True)
        tdy = torch.ones(2, 8, dtype=torch.float64)
        t4 = torch.ones(4, dtype=torch.float64)
        cases["add, no grad"]["torch"] = lambda: t4 + t4
        cases["add, recorded"]["torch"] = lambda: ta + tb
        cases["add fwd+bwd"]["torch"] = lambda: (ta + tb).backward(t4)
        cases["LayerNorm(8) fwd+bwd on (2, 8)"]["torch"] = lambda: tln(tx).backward(tdy)
    except ImportError:
        pass
    results, rows = [], []
    for name, steps in cases.items():
        us = {side: per_call_median(step, calls) * 1e6 for side, step in steps.items()}
        results.append({"op": name, "tinynorm_us": us["tinynorm"], "torch_us": us.get("torch")})
        rows.append([name, us["tinynorm"], us.get("torch"), ratio(us["tinynorm"], us.get("torch"))])
    title = "(c) fixed overhead per op on tiny tensors (float64), microseconds"
    return table(title, ["op", "tinynorm us", "torch us", "tn/torch"], rows), results


# ---- (d) bandwidth lower bound ------------------------------------------------------------
def bandwidth(shapes: list[tuple[int, int]], repeats: int) -> tuple[str, dict[str, Any]]:
    """A fwd+bwd must at least read x, write y (forward), read x and dy, write dx (backward):
    5 arrays of x's size. tinynorm's engine copies dy once more (2 more: a read and a write)."""
    size = max(a * b for a, b in shapes) * 8
    src = np.ones(size // 8)
    dst = np.empty_like(src)
    seconds = interleaved_medians({"copy": lambda: np.copyto(dst, src)}, repeats)["copy"]
    gbps = 2 * src.nbytes / seconds / 1e9  # read + write
    rows, results = [], {"copy_GBps": gbps, "bounds": []}
    for shape in shapes:
        for dtype, itemsize in (("float32", 4), ("float64", 8)):
            nbytes = 5 * shape[0] * shape[1] * itemsize
            bound = nbytes / (gbps * 1e9)
            results["bounds"].append({"shape": list(shape), "dtype": dtype, "bytes": nbytes, "bound_s": bound})
            rows.append(["x".join(map(str, shape)), dtype, nbytes / 2**20, ms(bound)])
    title = f"(d) bandwidth lower bound of a fwd+bwd (NumPy copy: {gbps:.1f} GB/s counting read + write)"
    return table(title, ["shape", "dtype", "MiB moved", "lower bound ms"], rows), results


# ---- (e) cost of the overflow rescue when nothing overflows -------------------------------
def overflow_check_cost(shape: tuple[int, int], repeats: int) -> tuple[str, list[dict[str, Any]]]:
    """The statistics check ``isfinite`` on the per-row results and recompute only bad rows;
    timed against the same code with the check patched out (rows of normal magnitude)."""
    results, rows = [], []
    checked = stats._any
    for name in ("layernorm", "rmsnorm"):
        module, x = build(NORMS[name], shape, "float32", "explicit")
        dy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        step = fwd_bwd_step(module, x, dy)

        def unchecked(step: Any = step) -> None:
            stats._any = lambda xp, mask: False  # no row is ever recomputed
            try:
                step()
            finally:
                stats._any = checked

        med = interleaved_medians({"with rescue": step, "without": unchecked}, repeats)
        overhead_pct = 100 * (med["with rescue"] / med["without"] - 1)
        results.append({"norm": name, "with_s": med["with rescue"], "without_s": med["without"], "pct": overhead_pct})
        rows.append([name, "x".join(map(str, shape)), ms(med["with rescue"]), ms(med["without"]), overhead_pct])
    title = "(e) overflow-safe statistics: fwd+bwd with the rescue check vs without it (float32)"
    return table(title, ["norm", "shape", "with ms", "without ms", "cost %"], rows), results


# ---- (f) a module built with defaults, fed float32 --------------------------------------------
def default_dtype(shape: tuple[int, int], repeats: int) -> tuple[str, list[dict[str, Any]]]:
    """``tn.nn.LayerNorm(N)`` has float64 parameters; fed float32 input it computes in float32
    (parameters cast once per call). Timed against the same module after ``.to("float32")``."""
    results, rows = [], []
    rng = np.random.default_rng(0)
    x = tn.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
    dy = rng.standard_normal(shape).astype(np.float32)
    for name, make in (("LayerNorm", tn.nn.LayerNorm), ("RMSNorm", tn.nn.RMSNorm)):
        default, moved = make(shape[1]), make(shape[1]).to("float32")
        steps = {"default": fwd_bwd_step(default, x, dy), "float32": fwd_bwd_step(moved, x, dy)}
        med = interleaved_medians(steps, repeats)
        results.append({"norm": name, "shape": list(shape), "default_s": med["default"], "float32_s": med["float32"]})
        rows.append(
            [
                name,
                "x".join(map(str, shape)),
                ms(med["default"]),
                ms(med["float32"]),
                ratio(med["default"], med["float32"]),
            ]
        )
    title = "(f) a default-built module (float64 parameters) on float32 input vs the module in float32, fwd+bwd"
    return table(title, ["norm", "shape", "default ms", ".to(float32) ms", "ratio"], rows), results
