"""Every kernel computes what its lesson computes.

The lesson (the plain forward and backward in a norm's file) is the source of truth; a
kernel (``tinynorm/kernels/``) may only change the order of floating-point operations.
Driven by the registry: every norm whose Function picks a kernel on this backend is run
with kernels on and off, on inputs that span many row blocks on two threads (the driver's
block sizes are shrunk so that small inputs do), with an odd feature size, in 2-D and
3-D, in float16, float32 and float64. ``y`` and every gradient must agree: to 1e-12 in
float64, and to the dtype's rounding otherwise.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import current_backend_or_skip

import tinynorm as tn
from tinynorm import kernels
from tinynorm.kernels import blocks
from tinynorm.registry import NORMS

TOLERANCE = {"float64": 1e-12, "float32": 2e-5, "float16": 2e-3}

kernels.load_all()
KERNEL_BACKENDS = sorted({backend_name for _, backend_name in kernels.KERNELS})


@pytest.fixture(params=KERNEL_BACKENDS)
def kernel_backend(request):
    """Each backend some kernel is written for (NumPy; CuPy where it runs)."""
    with current_backend_or_skip(request.param):
        yield request.param


@pytest.fixture
def many_blocks_on_two_threads(monkeypatch):
    """Blocks of a few rows each, split over two threads, whatever the input's size."""
    monkeypatch.setattr(blocks, "ROW_BLOCK_BYTES", 4096)
    monkeypatch.setattr(blocks, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(blocks, "THREADS", 2)


def _run(spec, case, dtype, backend_name):
    """y and every gradient of one fwd+bwd, as NumPy arrays, and the kernels that ran."""
    module, x = spec.build(case, dtype=dtype)
    with kernels.record() as chosen:
        y = module(x)
        # The output's shape, not the input's: a weight-side layer (weight_norm) changes the width.
        y.backward(tn.tensor(np.random.default_rng(7).standard_normal(y.shape), dtype=dtype))
    grads = [x.grad] + [p.grad for p in module.parameters()]
    return [y.numpy()] + [tn.backend.to_numpy(g) for g in grads], chosen


def _has_kernel(spec, backend_name) -> bool:
    _, chosen = _run(spec, "2d", "float64", backend_name)
    return bool(chosen)


def _assert_close(fast, plain, dtype, what):
    tol = TOLERANCE[dtype]
    for i, (a, b) in enumerate(zip(fast, plain)):
        assert a.dtype == b.dtype, f"{what}: result {i} is {a.dtype} with kernels, {b.dtype} without"
        a, b = a.astype(np.float64), b.astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=f"{what}: result {i}")


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
@pytest.mark.parametrize("case", ["large", "3d"])
@pytest.mark.parametrize("name", sorted(NORMS))
def test_kernel_matches_its_lesson(name, case, dtype, kernel_backend, many_blocks_on_two_threads):
    spec, backend = NORMS[name], kernel_backend
    if not _has_kernel(spec, backend):
        pytest.skip(f"{name} runs its lesson on {backend}: no kernel to hold to it")
    fast, chosen = _run(spec, case, dtype, backend)
    assert chosen, f"{name}: no kernel ran on {backend} with kernels enabled"
    with kernels.disabled():
        plain, none = _run(spec, case, dtype, backend)
    assert none == [], "kernels.disabled() must turn every kernel off"
    _assert_close(fast, plain, dtype, f"{name} {case} {dtype}")


def test_every_registered_kernel_names_its_lesson():
    assert kernels.KERNELS, "no kernel is registered"
    for (name, backend_name), kernel in kernels.KERNELS.items():
        forward, backward = kernel.lesson
        assert forward.__module__.startswith("tinynorm.norms."), f"{name} on {backend_name}: lesson not in a norm file"
        assert forward.__name__ == f"{name}_forward" and backward.__name__ == f"{name}_backward"


def test_the_norms_on_numpy_run_kernels_unless_disabled():
    module, x = NORMS["layernorm"].build("large")
    with kernels.record() as chosen:
        module(x).backward(tn.randn(*x.shape))
    assert chosen == [("layer_norm", "numpy"), ("layer_norm", "numpy")]  # forward, backward
    with kernels.disabled(), kernels.record() as chosen:
        module(x)
        assert not kernels.enabled()
    assert chosen == [] and kernels.enabled()


def test_array_api_strict_runs_the_lessons():
    pytest.importorskip("array_api_strict")
    module, x = NORMS["rmsnorm"].build("2d")
    with tn.use_backend("array_api_strict"):
        module.to("array_api_strict")
        x = x.to("array_api_strict")
        with kernels.record() as chosen:
            module(x)
    assert chosen == []


# ---- the driver ---------------------------------------------------------------------------------
def test_row_blocks_cover_every_row_once():
    assert blocks.row_blocks(rows=10, row_bytes=100, block_bytes=300) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert blocks.row_blocks(rows=0, row_bytes=100) == []


def test_threads_run_the_blocks_when_the_input_is_big_enough(many_blocks_on_two_threads):
    seen = set()

    def work(start, stop):
        seen.add(threading.current_thread().name)
        return start

    starts = blocks.for_each_row_block(work, np.zeros((4096, 4)))
    assert starts == sorted(starts) and starts[0] == 0 and len(starts) > 2
    assert any(name.startswith("tinynorm-rows") for name in seen)


def test_kernels_handle_an_input_with_no_rows():
    x = tn.tensor(np.zeros((0, 5)), requires_grad=True)
    norm = tn.nn.LayerNorm(5)
    y = norm(x)
    y.backward(tn.tensor(np.zeros((0, 5))))
    assert y.shape == (0, 5) and x.grad.shape == (0, 5)
    np.testing.assert_array_equal(norm.weight.grad, np.zeros(5))


# ---- in-place helpers ---------------------------------------------------------------------------
def test_mul_writes_into_out_on_numpy():
    a, out = np.full((2, 3), 2.0), np.zeros((2, 3))
    result = blocks.mul_(a, np.full((1, 3), 3.0), out=out)
    assert result is out and np.all(out == 6.0)


def test_mul_falls_back_to_a_new_array_when_out_cannot_hold_the_result():
    a, out = np.full((2, 3), 2.0, dtype=np.float32), np.zeros((2, 3), dtype=np.float32)
    result = blocks.mul_(a, np.full(3, 3.0, dtype=np.float64), out=out)  # float64 result
    assert result is not out and result.dtype == np.float64 and np.all(out == 0)
    assert blocks.sub_(a, 1.0, out=None) is not a


def test_helpers_use_plain_operators_on_array_api_strict():
    xp = pytest.importorskip("array_api_strict")
    a, out = xp.ones((2, 3)), xp.zeros((2, 3))
    result = blocks.add_(a, a, out=out)
    assert result is not out and float(xp.sum(result)) == 12.0 and float(xp.sum(out)) == 0.0
