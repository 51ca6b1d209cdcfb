"""The fused CUDA kernels of ``tinynorm/kernels/cupy_fused.py``.

The first part runs anywhere: the launch arithmetic, the alignment guard, the copies and
casts made before a launch, and that nothing on the CPU chooses or even imports them.

The second part needs CuPy and a CUDA GPU, and skips without them. **These tests have not
yet run on a GPU**: they were written before one was available, for ``scripts/gpu_check.sh``
to run. Each compares the fused kernels on CuPy with tinynorm on NumPy in float64, and
each counts the kernels launched, so that a pass cannot come from the plain formulas.
"""

from __future__ import annotations

import collections
import sys

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.kernels import cupy_fused

F = tn.nn.functional
NORMS = ("layer_norm", "rms_norm")
WEIGHT_BIAS = [(True, True), (True, False), (False, True), (False, False)]


# ---- without a GPU: the launch arithmetic ----------------------------------------------------------
def test_supports_only_2d_float_inputs_with_matching_parameters():
    x = np.ones((4, 8), dtype=np.float32)
    assert cupy_fused.supports(x, None, np.ones(8, np.float32))
    assert cupy_fused.supports(x.astype(np.float16), np.ones(8, np.float16), None)
    assert cupy_fused.supports(x.T.copy().T, np.ones(8, np.float32)[::1])  # any layout: copied before a launch
    assert not cupy_fused.supports(x, np.ones(8, np.float64), None)  # mixed dtypes: the plain formulas
    assert not cupy_fused.supports(x, np.ones(4, np.float32), None)
    assert not cupy_fused.supports(np.ones((2, 4, 8), np.float32))
    assert not cupy_fused.supports(np.ones((0, 8), np.float32))
    assert not cupy_fused.supports(np.ones((4, 8), np.int32))


def test_supports_caps_the_row_length_so_int_column_indices_cannot_overflow():
    longest = np.broadcast_to(np.float32(0), (1, cupy_fused.MAX_ROW_LENGTH))  # no memory behind it
    assert cupy_fused.supports(longest)
    assert not cupy_fused.supports(np.broadcast_to(np.float32(0), (1, cupy_fused.MAX_ROW_LENGTH + 1)))
    # the loops step an int by at most 1024 past a column below 2**30: below 2**31
    assert cupy_fused.MAX_ROW_LENGTH + cupy_fused.ELEMENTS_PER_THREAD * cupy_fused.MAX_THREADS < 2**31


@pytest.mark.parametrize("n", [1, 5, 32, 768, 1024, 4096, 8192, 10**6])
def test_threads_per_block_is_whole_warps_up_to_1024(n):
    threads = cupy_fused.threads_per_block(n)
    assert threads % 32 == 0 and 32 <= threads <= 1024
    assert threads == 1024 or threads * cupy_fused.ELEMENTS_PER_THREAD >= n


@pytest.mark.parametrize(("rows", "n"), [(1, 1), (7, 5), (9, 1024), (3001, 257), (5, 1025), (2, 65537)])
def test_forward_launch_gives_every_row_one_team(rows, n):
    blocks, threads, warp_team = cupy_fused.forward_launch(rows, n)
    assert threads % 32 == 0 and threads <= 1024
    teams_per_block = threads // 32 if warp_team else 1
    assert blocks * teams_per_block >= rows > (blocks - 1) * teams_per_block
    assert warp_team == (n <= cupy_fused.WARP_ROW_MAX)


@pytest.mark.parametrize(
    ("rows", "n", "sms"), [(1, 8, 132), (7, 4096, 1), (1057, 257, 132), (32768, 4096, 132), (5, 3, 2), (3001, 257, 132)]
)
def test_backward_grid_covers_every_row_with_no_empty_block(rows, n, sms):
    row_blocks, per_block, column_blocks = cupy_fused.backward_grid(rows, n, sms)
    assert row_blocks * per_block >= rows > (row_blocks - 1) * per_block
    assert column_blocks == 1  # rows enough, or rows too short to split


def test_backward_grid_splits_few_long_rows_between_blocks():
    row_blocks, per_block, column_blocks = cupy_fused.backward_grid(4, 65536, 132)
    assert (row_blocks, per_block) == (4, 1)
    assert column_blocks == 8  # 65536 / 8192: no block narrower than its registers hold
    assert cupy_fused.backward_grid(4, 2**20, 132)[2] == 33  # ceil(132 / 4): one block per multiprocessor
    assert cupy_fused.backward_grid(4, 8192, 132)[2] == 1


def test_pack_width_needs_alignment_and_a_multiple_of_the_pack():
    assert cupy_fused.pack_width("float32", 4096, [0, 256, 4096]) == 4
    assert cupy_fused.pack_width("float16", 4096, [0, 256]) == 8
    assert cupy_fused.pack_width("float16", 4096, [0, 8], backward=True) == 4  # 8-byte packs there
    assert cupy_fused.pack_width("float64", 4096, [0, 16]) == 2
    assert cupy_fused.pack_width("float32", 4096, [0, 4]) == 1  # an offset view: one value at a time
    assert cupy_fused.pack_width("float32", 4098, [0, 256]) == 1  # rows would start misaligned


def test_source_names_its_types_and_widths():
    src = cupy_fused.source("float16", 8)
    assert "typedef half_bits scalar_t;" in src and "typedef float acc_t;" in src
    assert "constexpr int VEC = 8;" in src and "constexpr int OWN = 1;" in src
    assert "constexpr acc_t ACC_MIN = 1.1754943508222875e-38;" in src  # FLT_MIN
    assert "constexpr int OWN = 8;" in cupy_fused.source("float64")
    with pytest.raises(ValueError, match="vec must be one of"):
        cupy_fused.source("float32", 8)


# ---- without a GPU: what is done to the arrays before a launch ------------------------------------
def test_strided_and_broadcast_parameters_are_copied_to_contiguous_memory():
    strided = np.arange(16, dtype=np.float32)[::2]
    broadcast = np.broadcast_to(np.float32(1.5), (8,))  # stride 0: one value in memory
    a, b, none = cupy_fused._contiguous(np, strided, broadcast, None)
    assert a.flags.c_contiguous and b.flags.c_contiguous and none is None
    np.testing.assert_array_equal(a, strided)
    np.testing.assert_array_equal(b, np.full(8, 1.5, np.float32))


def test_upstream_gradient_is_read_in_the_dtype_of_x():
    x = np.ones((3, 4), dtype=np.float16)
    dy = np.arange(12, dtype=np.float32).reshape(4, 3).T / 7  # float32, transposed
    got = cupy_fused._upstream(np, dy, x)
    assert got.dtype == np.float16 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, dy.astype(np.float16))
    with pytest.raises(ValueError, match=r"dy must have x's shape \(3, 4\), got \(4, 3\)"):
        cupy_fused._upstream(np, dy.T, x)


# ---- without a GPU: nothing chooses the kernels off CuPy ------------------------------------------
@pytest.fixture
def launches(monkeypatch):
    """Counts the fused kernels launched, by name: wraps the compiled module's kernels."""
    counts: collections.Counter[str] = collections.Counter()
    compiled = cupy_fused._kernels

    def counting(dtype_name, vec):
        kernels = compiled(dtype_name, vec)

        def wrap(name):
            def launch(*args):
                counts[name] += 1
                return kernels[name](*args)

            return launch

        return {name: wrap(name) for name in kernels}

    monkeypatch.setattr(cupy_fused, "_kernels", counting)
    return counts


@pytest.mark.parametrize("name", ["numpy", "array_api_strict"])
def test_fused_kernels_are_never_chosen_or_imported_off_cupy(name, launches):
    if name == "array_api_strict":
        pytest.importorskip("array_api_strict")
    before = "cupy" in sys.modules
    with tn.use_backend(name):
        for norm in NORMS:
            x = tn.randn(4, 8, requires_grad=True)
            weight = tn.ones(8, requires_grad=True)
            y = F.layer_norm(x, 8, weight) if norm == "layer_norm" else F.rms_norm(x, 8, weight)
            y.backward(tn.randn(4, 8))
    assert not launches
    assert ("cupy" in sys.modules) == before


# ---- on a GPU: the kernels themselves --------------------------------------------------------------
@pytest.fixture
def cupy():
    try:
        return tn.backend.namespace("cupy")
    except tn.BackendUnavailableError as err:
        pytest.skip(str(err))


def _random(rng, shape, dtype, scale=1.0, shift=0.0):
    return (shift + scale * rng.standard_normal(shape)).astype(dtype)


def _fwd_bwd(norm, x, dy, weight, bias, eps):
    """``(y, dx, dweight, dbias)`` as host float64 arrays, through tinynorm's public functions
    on whatever backend the arrays live on (``None`` for a parameter left out)."""
    n = x.shape[-1]
    tx = tn.Tensor(x, requires_grad=True)
    tw = None if weight is None else tn.Tensor(weight, requires_grad=True)
    tb = None if bias is None else tn.Tensor(bias, requires_grad=True)
    y = F.layer_norm(tx, n, tw, tb, eps) if norm == "layer_norm" else F.rms_norm(tx, n, tw, eps, bias=tb)
    y.backward(tn.Tensor(dy))

    def host(t):
        return None if t is None else tn.backend.to_numpy(t).astype(np.float64)

    return host(y.data), host(tx.grad), host(None if tw is None else tw.grad), host(None if tb is None else tb.grad)


def _reference(norm, x, dy, weight, bias, eps):
    """The same on NumPy, in float64, from the same (host) values."""
    wide = [None if a is None else tn.backend.to_numpy(a).astype(np.float64) for a in (x, dy, weight, bias)]
    with tn.use_backend("numpy"):
        return _fwd_bwd(norm, *wide, eps)


def _assert_close_per_row(got, want, rtol, what):
    """Each row within ``rtol`` of its largest reference value (or each column sum, for 1-D)."""
    assert got is not None and np.all(np.isfinite(got)), f"{what}: missing or not finite"
    size = np.abs(want).max(axis=-1, keepdims=True) if want.ndim == 2 else np.abs(want).max()
    err = np.abs(got - want)
    assert np.all(err <= rtol * size), f"{what}: worst error {np.max(err / np.maximum(size, 1e-300)):.3g} of the row"


def _check(norm, x, dy, weight, bias, eps, rtol, launches):
    got = _fwd_bwd(norm, x, dy, weight, bias, eps)
    want = _reference(norm, x, dy, weight, bias, eps)
    for what, g, w in zip(("y", "dx", "dweight", "dbias"), got, want):
        if w is None:
            assert g is None
        else:
            _assert_close_per_row(g, w, rtol, what)
    assert launches == {f"{norm}_forward": 1, f"{norm}_backward": 1}, "the fused kernels did not run"


TOL = {"float32": 2e-5, "float16": 4e-3}


@pytest.mark.parametrize(("with_weight", "with_bias"), WEIGHT_BIAS)
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("norm", NORMS)
def test_backward_in_float32_and_float16_matches_float64(cupy, launches, norm, dtype, with_weight, with_bias):
    """3001 x 257: more rows than the backward's chunks (about 8 per multiprocessor), not a multiple of them."""
    rng = np.random.default_rng(0)
    rows, n = 3001, 257
    x, dy = _random(rng, (rows, n), dtype, 2.0, 0.5), _random(rng, (rows, n), dtype)
    weight = cupy.asarray(_random(rng, n, dtype, 0.3, 1.0)) if with_weight else None
    bias = cupy.asarray(_random(rng, n, dtype, 0.3)) if with_bias else None
    _check(norm, cupy.asarray(x), cupy.asarray(dy), weight, bias, 1e-5, TOL[dtype], launches)


@pytest.mark.parametrize(("rows", "n"), [(7, 1), (9, 5), (33, 1024), (5, 4099), (3, 8200), (2, 65537), (4, 65536)])
@pytest.mark.parametrize("norm", NORMS)
def test_row_lengths_from_one_to_65537(cupy, launches, norm, rows, n):
    """Warp teams (N <= 1024), block teams, odd N (packs of one), register shares and the
    in-memory ones beyond 8192 columns, and a few long rows split between blocks."""
    rng = np.random.default_rng(1)
    x, dy = cupy.asarray(_random(rng, (rows, n), "float32", 3.0, 1.0)), cupy.asarray(_random(rng, (rows, n), "float32"))
    weight, bias = cupy.asarray(_random(rng, n, "float32", 0.3, 1.0)), cupy.asarray(_random(rng, n, "float32"))
    eps = 1.0 if n == 1 else 1e-5  # N = 1: a small eps leaves dx = rstd * g * eps / (x**2 + eps), all cancellation
    _check(norm, x, dy, weight, bias, eps, 1e-4, launches)


@pytest.mark.parametrize("norm", NORMS)
def test_transposed_and_offset_inputs(cupy, launches, norm):
    """A transposed x (copied before the launch) and an x and dy one element off a 16-byte
    boundary (packs of one) give the aligned results."""
    rng = np.random.default_rng(2)
    rows, n = 64, 1024
    x = cupy.asarray(_random(rng, (n, rows), "float32")).T
    flat = cupy.asarray(_random(rng, rows * n + 1, "float32"))
    dy = flat[1:].reshape(rows, n)
    assert not x.flags.c_contiguous and cupy_fused._address(dy) % 16 != 0
    weight = cupy.asarray(_random(rng, n, "float32", 0.3, 1.0))
    _check(norm, x, dy, weight, None, 1e-5, 1e-5, launches)


@pytest.mark.parametrize("norm", NORMS)
def test_strided_and_broadcast_weights_give_the_results_of_contiguous_ones(cupy, launches, norm):
    rng = np.random.default_rng(3)
    rows, n = 16, 512
    x, dy = cupy.asarray(_random(rng, (rows, n), "float32")), cupy.asarray(_random(rng, (rows, n), "float32"))
    strided = cupy.asarray(_random(rng, 2 * n, "float32", 0.3, 1.0))[::2]
    broadcast = cupy.broadcast_to(cupy.asarray(1.5, dtype=cupy.float32), (n,))
    forward, backward = getattr(cupy_fused, f"{norm}_forward"), getattr(cupy_fused, f"{norm}_backward")
    for weight in (strided, broadcast):
        results = []
        for w in (weight, cupy.ascontiguousarray(weight)):
            y, *stats = forward(x, w, w, 1e-5)
            dx, dweight, dbias = backward(dy, x, w, *stats, True)
            results.append([cupy.asnumpy(a) for a in (y, dx, dweight, dbias)])
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)
    assert launches[f"{norm}_forward"] == 4 and launches[f"{norm}_backward"] == 4


@pytest.mark.parametrize("norm", NORMS)
def test_upstream_gradient_wider_than_x(cupy, launches, norm):
    """``norm(x16) * s32`` hands a float32 dy to the float16 backward: it is read as float32
    values (rounded to float16), never as raw float16 bits."""
    rng = np.random.default_rng(4)
    rows, n = 32, 256
    x = cupy.asarray(_random(rng, (rows, n), "float16"))
    weight = cupy.asarray(_random(rng, n, "float16", 0.3, 1.0))
    dy32 = cupy.asarray(_random(rng, (rows, n), "float32"))
    y, *stats = getattr(cupy_fused, f"{norm}_forward")(x, weight, None, 1e-5)
    dx, dweight, _ = getattr(cupy_fused, f"{norm}_backward")(dy32, x, weight, *stats, False)
    want = _reference(norm, x, dy32.astype(cupy.float16), weight, None, 1e-5)
    _assert_close_per_row(cupy.asnumpy(dx).astype(np.float64), want[1], 4e-3, "dx")
    _assert_close_per_row(cupy.asnumpy(dweight).astype(np.float64), want[2], 4e-3, "dweight")

    # and through the public functions, as a user meets it
    tx, tw = tn.Tensor(x, requires_grad=True), tn.Tensor(weight, requires_grad=True)
    scale = tn.Tensor(cupy.asarray(2.0, dtype=cupy.float32))
    out = (F.layer_norm(tx, n, tw) if norm == "layer_norm" else F.rms_norm(tx, n, tw)) * scale
    out.backward(tn.Tensor(cupy.ones((rows, n), dtype=out.data.dtype)))
    want = _reference(norm, x, cupy.full((rows, n), 2.0, cupy.float16), weight, None, 1e-5)
    _assert_close_per_row(tn.backend.to_numpy(tx.grad).astype(np.float64), want[1], 4e-3, "dx, public")


@pytest.mark.parametrize(
    ("magnitudes", "dy_scale"),
    [(10.0 ** np.arange(-30, 31, 6), 1.0), (np.array([1e37, 8e37, 8.6e37, 1e38, 2e38, 3.3e38]), 1e20)],
    ids=["1e-30..1e30", "1e37..3.3e38"],
)
@pytest.mark.parametrize("norm", NORMS)
def test_float32_rows_of_every_magnitude_forward_and_backward(cupy, launches, norm, magnitudes, dy_scale):
    """Above 8.5e37 both 1/max|x| and rstd are below FLT_MIN, which -ftz=true turns into 0
    (then y was 0, or the bias, and dx was 0)."""
    rng = np.random.default_rng(5)
    rows, n = len(magnitudes), 512
    x = (rng.uniform(-1, 1, (rows, n)) * magnitudes[:, None]).astype(np.float32)
    dy = _random(rng, (rows, n), "float32", dy_scale)
    weight, bias = _random(rng, n, "float32", 0.3, 1.0), _random(rng, n, "float32", 0.3)
    args = [cupy.asarray(a) for a in (x, dy, weight, bias)]
    _check(norm, *args, 1e-5, 1e-4, launches)


@pytest.mark.parametrize("norm", NORMS)
def test_backward_recomputes_statistics_flushed_to_zero(cupy, norm):
    """A plain CuPy forward (also compiled with -ftz=true) may save rstd = 0 for a row whose
    rms is above 8.5e37: the fused backward recomputes it from x and gives the right dx."""
    rng = np.random.default_rng(6)
    x = cupy.asarray((rng.uniform(-1, 1, (3, 256)) * np.array([[1.0], [2e38], [3e38]])).astype(np.float32))
    dy = cupy.asarray(_random(rng, (3, 256), "float32", 1e20))
    y, *stats = getattr(cupy_fused, f"{norm}_forward")(x, None, None, 1e-5)
    rstd = stats[-1]
    flushed = stats[:-1] + [cupy.where(rstd < np.finfo(np.float32).tiny, 0, rstd).astype(rstd.dtype)]
    assert int((flushed[-1] == 0).sum()) == 2
    dx = getattr(cupy_fused, f"{norm}_backward")(dy, x, None, *flushed, False)[0]
    want = _reference(norm, x, dy, None, None, 1e-5)[1]
    _assert_close_per_row(cupy.asnumpy(dx).astype(np.float64), want, 1e-4, "dx")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("norm", NORMS)
def test_dweight_is_bit_identical_across_runs(cupy, norm, dtype):
    rng = np.random.default_rng(7)
    x, dy = cupy.asarray(_random(rng, (4096, 1024), dtype)), cupy.asarray(_random(rng, (4096, 1024), dtype))
    weight = cupy.asarray(_random(rng, 1024, dtype, 0.3, 1.0))
    forward, backward = getattr(cupy_fused, f"{norm}_forward"), getattr(cupy_fused, f"{norm}_backward")
    _, *stats = forward(x, weight, weight, 1e-5)
    first = backward(dy, x, weight, *stats, True)
    second = backward(dy, x, weight, *stats, True)
    for a, b in zip(first, second):
        assert cupy.array_equal(a, b)


@pytest.mark.parametrize("module", ["LayerNorm", "RMSNorm"])
def test_the_nn_modules_run_the_fused_kernels_on_cupy(cupy, launches, module):
    layer = getattr(tn.nn, module)(64).to("cupy")
    data = cupy.asarray(np.random.default_rng(8).standard_normal((2, 3, 64)), dtype=cupy.float32)
    x = tn.Tensor(data, requires_grad=True)
    layer(x).backward(tn.Tensor(cupy.ones((2, 3, 64), dtype=cupy.float32)))
    norm = "layer_norm" if module == "LayerNorm" else "rms_norm"
    assert launches == {f"{norm}_forward": 1, f"{norm}_backward": 1}
    assert x.grad is not None and layer.weight.grad is not None
