"""The fast paths compute what the plain formulas compute.

Row blocks, threads and in-place arithmetic (``norms/_shared.py``) may only change the
order of floating-point operations: blocked and unblocked results agree to 1e-12 in
float64. The fused CUDA kernels (``tinynorm/kernels/cupy_fused.py``) are chosen only on
CuPy; here their source is compile-checked with nvcc and their Python glue tested, and the
section at the end, which needs a GPU, gradchecks them. Nothing here times anything:
``python -m benchmarks`` does, and one test runs its ``--quick`` smoke mode.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.kernels import cupy_fused
from tinynorm.norms import _shared, layernorm, rmsnorm
from tinynorm.registry import NORMS

ROOT = Path(__file__).resolve().parent.parent
FAST_PATH_NORMS = ("layernorm", "rmsnorm", "rmsnorm_bias")


def _fwd_bwd(name: str, shape: tuple[int, ...], normalized_shape, dtype: str = "float64"):
    spec = NORMS[name]
    module, _ = spec.build("2d", dtype=dtype, normalized_shape=normalized_shape)
    rng = np.random.default_rng(3)
    x = tn.tensor(rng.standard_normal(shape), dtype=dtype, requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(rng.standard_normal(shape), dtype=dtype))
    grads = [tn.backend.to_numpy(x.grad)] + [tn.backend.to_numpy(p.grad) for p in module.parameters()]
    return [y.numpy()] + grads


def _unblocked(monkeypatch):
    monkeypatch.setattr(_shared, "ROW_BLOCK_BYTES", 2**62)
    monkeypatch.setattr(_shared, "THREADS", 1)


def _one_row_blocks_on_two_threads(monkeypatch):
    monkeypatch.setattr(_shared, "ROW_BLOCK_BYTES", 1)
    monkeypatch.setattr(_shared, "THREADS", 2)
    monkeypatch.setattr(_shared, "PARALLEL_MIN_BYTES", 0)


# ---- row blocks -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAST_PATH_NORMS)
@pytest.mark.parametrize(("shape", "normalized_shape"), [((37, 16), 16), ((5, 7, 3, 4), (3, 4))])
def test_blocked_equals_unblocked_to_1e12(name, shape, normalized_shape, backend, monkeypatch):
    _unblocked(monkeypatch)
    whole = _fwd_bwd(name, shape, normalized_shape)
    _one_row_blocks_on_two_threads(monkeypatch)
    blocked = _fwd_bwd(name, shape, normalized_shape)
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_row_blocks_cover_every_row_once():
    blocks = _shared.row_blocks(rows=10, row_bytes=100, block_bytes=300)
    assert blocks == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert _shared.row_blocks(rows=0, row_bytes=100) == []


def test_threads_run_the_blocks_when_the_input_is_big_enough(monkeypatch):
    _one_row_blocks_on_two_threads(monkeypatch)
    import threading

    seen = set()

    def work(start, stop):
        seen.add(threading.current_thread().name)
        return start

    assert _shared.for_each_row_block(work, np.zeros((8, 4))) == list(range(8))
    assert any(name.startswith("tinynorm-rows") for name in seen)


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_blocked_float16_is_normalized_in_float32(name, monkeypatch):
    _one_row_blocks_on_two_threads(monkeypatch)
    x = np.random.default_rng(0).standard_normal((6, 64)) * 300  # squares overflow float16
    y16 = _fwd_bwd_np(name, x, "float16")
    y64 = _fwd_bwd_np(name, x, "float64")
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16, y64, atol=3e-3 * max(1, np.abs(y64).max()))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_blocked_overflow_rescue_keeps_rows_of_1e25_finite(name, monkeypatch):
    _one_row_blocks_on_two_threads(monkeypatch)
    x = np.random.default_rng(0).standard_normal((4, 32))
    x[1] *= 1e25
    y32 = _fwd_bwd_np(name, x, "float32")
    y64 = _fwd_bwd_np(name, x, "float64")
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


def _fwd_bwd_np(name: str, x: np.ndarray, dtype: str) -> np.ndarray:
    fn = tn.nn.functional.layer_norm if name == "layernorm" else tn.nn.functional.rms_norm
    t = tn.tensor(x, dtype=dtype, requires_grad=True)
    y = fn(t, x.shape[-1])
    y.backward(tn.tensor(np.ones_like(x), dtype=dtype))
    assert np.isfinite(tn.backend.to_numpy(t.grad)).all()
    return y.numpy()


# ---- in-place helpers -----------------------------------------------------------------------------
def test_mul_writes_into_out_on_numpy():
    a, out = np.full((2, 3), 2.0), np.zeros((2, 3))
    result = _shared.mul_(a, np.full((1, 3), 3.0), out=out)
    assert result is out and np.all(out == 6.0)


def test_mul_falls_back_to_a_new_array_when_out_cannot_hold_the_result():
    a, out = np.full((2, 3), 2.0, dtype=np.float32), np.zeros((2, 3), dtype=np.float32)
    result = _shared.mul_(a, np.full(3, 3.0, dtype=np.float64), out=out)  # float64 result
    assert result is not out and result.dtype == np.float64 and np.all(out == 0)
    assert _shared.sub_(a, 1.0, out=None) is not a


def test_helpers_use_plain_operators_on_array_api_strict():
    xp = pytest.importorskip("array_api_strict")
    a, out = xp.ones((2, 3)), xp.zeros((2, 3))
    result = _shared.add_(a, a, out=out)
    assert result is not out and float(xp.sum(result)) == 12.0 and float(xp.sum(out)) == 0.0


# ---- fused CUDA kernels: the wiring, without a GPU (their glue: tests/test_cupy_kernels.py) -----
class _FakeFused:
    """Stands in for cupy_fused on NumPy, running the plain formulas, to test the wiring."""

    def __init__(self):
        self.calls = []

    def rms_norm_forward(self, x, w, b, eps):
        self.calls.append("rms_norm_forward")
        return rmsnorm.rms_norm_rows(x, w, b, eps)

    def rms_norm_backward(self, dy, x, w, rstd, with_bias):
        self.calls.append("rms_norm_backward")
        return rmsnorm.rms_norm_backward_rows(dy, x, w, rstd, with_bias)

    def layer_norm_forward(self, x, w, b, eps):
        self.calls.append("layer_norm_forward")
        return layernorm.layer_norm_rows(x, w, b, eps)

    def layer_norm_backward(self, dy, x, w, mean, rstd, with_bias):
        self.calls.append("layer_norm_backward")
        return layernorm.layer_norm_backward_rows(dy, x, w, mean, rstd, with_bias)


@pytest.mark.parametrize("name", FAST_PATH_NORMS)
def test_the_functions_hand_forward_and_backward_to_the_fused_module(name, monkeypatch):
    expected = _fwd_bwd(name, (3, 4, 6), 6)
    fake = _FakeFused()
    file = layernorm if name == "layernorm" else rmsnorm
    monkeypatch.setattr(file, "fused_kernels", lambda x, *params: fake)
    got = _fwd_bwd(name, (3, 4, 6), 6)
    prefix = "layer_norm" if name == "layernorm" else "rms_norm"
    assert fake.calls == [f"{prefix}_forward", f"{prefix}_backward"]
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
@pytest.mark.parametrize("dtype", sorted(cupy_fused.STORAGE_TYPES))
def test_kernel_source_compiles_with_nvcc(dtype, tmp_path):
    src = tmp_path / f"norms_{dtype}.cu"
    src.write_text(cupy_fused.source(dtype))
    cmd = ["nvcc", "-arch=sm_90", "--ptx", "-std=c++14", "-o", str(tmp_path / "out.ptx"), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert all(f".entry {name}(" in ptx for name in cupy_fused.KERNEL_NAMES)


# ---- the benchmark harness does not rot ------------------------------------------------------------
def test_benchmarks_quick_smoke_run(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {r["variant"] for r in report["variants"]} == set(NORMS)
    assert "(e) overflow-safe statistics" in done.stdout
    assert report["goals"] == [] and "none checked" in done.stdout  # --quick measures at other sizes


def _report(explicit_s, torch_s, fused_s, bound_s):
    """A full run's report, cut down to one row per goal kind, with these times."""
    variant = {"variant": "layernorm", "shape": [4096, 1024], "input_bytes": 100}
    variant |= {"explicit_s": explicit_s, "autograd_s": 1.0, "explicit_peak_bytes": 300, "autograd_peak_bytes": 900}
    torch_rows = [
        {"norm": norm, "shape": shape, "dtype": "float32", "thp": thp, "tinynorm_s": 1.0, "torch_s": torch_s}
        for norm in ("RMSNorm", "LayerNorm")
        for shape, thp in (([4096, 1024], False), ([8192, 4096], True))
    ]
    gpu = {"norm": "LayerNorm", "shape": [32768, 4096], "dtype": "float16", "bound_s": bound_s, "fused": fused_s}
    gpu["torch"] = 1.0
    return {"info": {"quick": False}, "variants": [variant], "torch_cpu": torch_rows, "gpu": {"rows": [gpu]}}


def test_benchmark_goals_are_checked_against_their_limits():
    from benchmarks import goals

    met = {g["goal"]: g["met"] for g in goals.check(_report(0.4, 2.1, 0.7, 0.5))[1]}
    assert met["layernorm: explicit / autograd time"] is True  # 0.4 <= 0.5
    assert met["layernorm: explicit / autograd peak memory"] is True  # 300 / 900
    assert met["layernorm: peak extra memory / input"] is True  # (300 - 2 * 100) / 100 = 1 <= 1.5
    assert met["RMSNorm / PyTorch, 4096x1024 float32, THP off"] is True  # 1 / 2.1 <= 0.5
    assert met["LayerNorm / PyTorch, 8192x4096 float32, THP on"] is True  # 0.48 <= 2
    assert met["LayerNorm fused, 32768x4096 float16: / PyTorch"] is True  # 0.7 <= 0.8
    assert met["LayerNorm fused, 32768x4096 float16: share of copy bandwidth"] is True  # 0.5 / 0.7 >= 0.65

    text, rows = goals.check(_report(0.6, 0.9, 0.9, 0.5))
    met = {g["goal"]: g["met"] for g in rows}
    assert met["layernorm: explicit / autograd time"] is False
    assert met["RMSNorm / PyTorch, 4096x1024 float32, THP off"] is False  # 1 / 0.9
    assert met["LayerNorm / PyTorch, 4096x1024 float32, THP off"] is True  # 1.1 <= 4
    assert met["LayerNorm fused, 32768x4096 float16: / PyTorch"] is False
    assert met["LayerNorm fused, 32768x4096 float16: share of copy bandwidth"] is False  # 0.56
    assert f"missed: {sum(m is False for m in met.values())}" in text

    without_torch = goals.check(_report(0.4, None, 0.7, 0.5))[1]
    assert {g["met"] for g in without_torch if "PyTorch, " in g["goal"]} == {None}  # "not measured", not "met"


def test_benchmarks_gpu_mode_skips_cleanly_without_cupy(tmp_path):
    pytest.importorskip("numpy")
    try:
        tn.backend.namespace("cupy")
        pytest.skip("CuPy works here: the GPU benchmark would really run")
    except tn.BackendUnavailableError:
        pass
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--gpu", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "(gpu) skipped" in done.stdout


# ---- on a GPU only: the fused kernels themselves ---------------------------------------------------
def _cupy_or_skip():
    try:
        return tn.backend.namespace("cupy")
    except tn.BackendUnavailableError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize("case", ["2d", "3d", "batch1", "smallest"])
@pytest.mark.parametrize("name", FAST_PATH_NORMS)
def test_fused_kernels_pass_gradcheck_in_float64(name, case):
    _cupy_or_skip()
    with tn.use_backend("cupy"):
        module, x = NORMS[name].build(case)
        module.to("cupy")
        x = x.to("cupy")
        assert _shared.fused_kernels(tn.backend.namespace("cupy").ones((2, 3)), None) is not None
        assert tn.gradcheck(module, x)


@pytest.mark.parametrize("name", FAST_PATH_NORMS)
def test_fused_kernels_match_the_explicit_formulas_in_float64(name, monkeypatch):
    _cupy_or_skip()
    shape, n = (300, 257), 257  # rows not a multiple of the backward's chunk, N not of a warp
    with tn.use_backend("cupy"):
        fused = _fwd_bwd(name, shape, n)
        monkeypatch.setattr(_shared, "USE_FUSED_KERNELS", False)
        plain = _fwd_bwd(name, shape, n)
    for a, b in zip(plain, fused):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_fused_float16_forward_matches_a_float64_reference(name):
    cupy = _cupy_or_skip()
    x = np.random.default_rng(0).standard_normal((64, 1024)) * 300
    fn = tn.nn.functional.layer_norm if name == "layernorm" else tn.nn.functional.rms_norm
    y16 = fn(tn.Tensor(cupy.asarray(x, dtype=cupy.float16)), 1024).numpy()
    y64 = fn(tn.tensor(x), 1024).numpy()
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16.astype(np.float64), y64, atol=4e-3 * np.abs(y64).max())


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_fused_overflow_rescue_on_the_gpu(name):
    cupy = _cupy_or_skip()
    x = np.random.default_rng(0).standard_normal((4, 512))
    x[2] *= 1e25
    fn = tn.nn.functional.layer_norm if name == "layernorm" else tn.nn.functional.rms_norm
    y32 = fn(tn.Tensor(cupy.asarray(x, dtype=cupy.float32)), 512).numpy()
    y64 = fn(tn.tensor(x), 512).numpy()
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
