"""The RMSNorm variants: what each one adds to RMSNorm, checked against RMSNorm itself,
their bad-input errors, float32 at extreme magnitudes, and a gradcheck catching a
deliberately broken backward per file."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynorm as tn
from tinynorm import kernels
from tinynorm.kernels import blocks
from tinynorm.norms.partial_rmsnorm import partial_size
from tinynorm.registry import get_norm

F = tn.nn.functional


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _forward_backward(fn, x_host, dy_host, *params_host):
    """Output, dx and each parameter's gradient of ``fn(x, *params)`` for upstream ``dy``."""
    x = tn.tensor(x_host, requires_grad=True)
    params = [tn.tensor(p, requires_grad=True) for p in params_host]
    y = fn(x, *params)
    y.backward(tn.tensor(dy_host))
    return [y.numpy(), tn.tensor(x.grad).numpy()] + [tn.tensor(p.grad).numpy() for p in params]


def _rms_host(x, eps=1e-6):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


# ---- RMSNorm with a bias: the shift does not touch dx or dweight --------------------------------------------
def test_rmsnorm_bias_leaves_dx_and_dweight_unchanged_and_dbias_is_the_row_sum(backend):
    x, dy, w, b = _rand(0, 2, 3, 5), _rand(1, 2, 3, 5), _rand(2, 5), _rand(3, 5)
    y, dx, dw, db = _forward_backward(lambda t, wt, bt: F.rms_norm(t, 5, wt, bias=bt), x, dy, w, b)
    y0, dx0, dw0 = _forward_backward(lambda t, wt: F.rms_norm(t, 5, wt), x, dy, w)
    np.testing.assert_allclose(y, y0 + b, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(dx, dx0)
    np.testing.assert_array_equal(dw, dw0)
    np.testing.assert_allclose(db, dy.sum(axis=(0, 1)), rtol=1e-14)


# ---- Gemma: (1 + weight) -------------------------------------------------------------------------------------
def test_gemma_with_zero_weight_is_plain_rmsnorm(backend):
    x = _rand(0, 3, 7)
    y = tn.nn.GemmaRMSNorm(7)(tn.tensor(x))  # weight starts at zeros
    np.testing.assert_allclose(y.numpy(), _rms_host(x), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_gemma_weight_w_is_rmsnorm_weight_one_plus_w_with_the_same_weight_gradient(backend, impl):
    x, dy, w = _rand(0, 4, 6), _rand(1, 4, 6), 0.5 * _rand(2, 6)
    gemma = _forward_backward(lambda t, wt: F.gemma_rms_norm(t, 6, wt, impl=impl), x, dy, w)
    rms = _forward_backward(lambda t, wt: F.rms_norm(t, 6, wt, impl=impl), x, dy, 1 + w)
    for ours, theirs in zip(gemma, rms):  # y, dx and dweight: d(1 + w)/dw = 1
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_gemma_float16_input_is_normalized_in_float32():
    x = (_rand(0, 2, 64) * 300).astype(np.float16)  # x**2 overflows float16 (max 65504)
    w = 0.5 * _rand(1, 64)
    y = F.gemma_rms_norm(tn.tensor(x), 64, tn.tensor(w.astype(np.float16)))
    assert y.dtype == np.float16
    expected = _rms_host(x.astype(np.float64)) * (1 + w.astype(np.float16).astype(np.float64))
    np.testing.assert_allclose(y.numpy().astype(np.float64), expected, rtol=2e-3, atol=4e-3)


# ---- partial RMSNorm: the statistic sees the first k features --------------------------------------------------
@pytest.mark.parametrize(
    "n, p, k", [(8, 0.25, 2), (5, 0.5, 3), (30, 0.1, 3), (16, 0.0625, 1), (1, 0.0625, 1), (7, 1.0, 7)]
)
def test_partial_size_is_the_ceiling_of_p_times_n(n, p, k):
    assert partial_size(n, p) == k


def test_partial_rmsnorm_with_p_one_is_rmsnorm(backend):
    x, dy, w = _rand(0, 3, 5), _rand(1, 3, 5), 1 + 0.5 * _rand(2, 5)
    partial = _forward_backward(lambda t, wt: F.partial_rms_norm(t, 5, wt, p=1.0), x, dy, w)
    full = _forward_backward(lambda t, wt: F.rms_norm(t, 5, wt), x, dy, w)
    for ours, theirs in zip(partial, full):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_partial_rmsnorm_divides_every_feature_by_the_rms_of_the_first_k(backend):
    x = _rand(0, 3, 8)
    y = F.partial_rms_norm(tn.tensor(x), 8, p=0.25).numpy()  # k = 2
    rstd = 1 / np.sqrt(np.mean(x[:, :2] ** 2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, x * rstd, rtol=1e-13)


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_partial_rmsnorm_dx_beyond_k_has_no_projection_term(backend, impl):
    x, dy, w = _rand(0, 3, 8), _rand(1, 3, 8), 1 + 0.5 * _rand(2, 8)
    _, dx, _ = _forward_backward(lambda t, wt: F.partial_rms_norm(t, 8, wt, p=0.25, impl=impl), x, dy, w)
    rstd = 1 / np.sqrt(np.mean(x[:, :2] ** 2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(dx[:, 2:], rstd * dy[:, 2:] * w[2:], rtol=1e-13)  # the direct term, exactly
    assert np.abs(dx[:, :2] - rstd * dy[:, :2] * w[:2]).min() > 1e-3  # the first k do get a projection


@given(st.integers(1, 4), st.integers(2, 9), st.floats(0.05, 1.0), st.integers(0, 2**31 - 1))
def test_partial_rmsnorm_dx_rows_are_orthogonal_to_x(rows, n, p, seed):
    # Still scale-invariant as a whole (eps -> 0): moving x along itself changes nothing.
    x, dy, w = _rand(seed, rows, n), _rand(seed + 1, rows, n), _rand(seed + 2, n)
    _, dx, _ = _forward_backward(lambda t, wt: F.partial_rms_norm(t, n, wt, eps=1e-300, p=p), x, dy, w)
    scale = np.abs(dx).max() * np.abs(x).max() * n
    np.testing.assert_allclose(np.sum(dx * x, axis=-1), 0.0, atol=1e-12 * scale)


def test_partial_rmsnorm_output_of_the_first_k_ignores_the_rest():
    x = _rand(0, 2, 8)
    changed = x.copy()
    changed[:, 2:] *= 100.0
    y, y_changed = (F.partial_rms_norm(tn.tensor(a), 8, p=0.25).numpy() for a in (x, changed))
    np.testing.assert_allclose(y_changed[:, :2], y[:, :2], rtol=1e-14)
    np.testing.assert_allclose(y_changed[:, 2:], 100.0 * y[:, 2:], rtol=1e-13)


@pytest.mark.parametrize("p", [0, 0.0, -0.1, 1.5])
def test_partial_rmsnorm_rejects_p_outside_zero_one(p):
    with pytest.raises(ValueError, match=r"p: expected the fraction .* in \(0, 1\], got "):
        tn.nn.PartialRMSNorm(8, p=p)
    with pytest.raises(ValueError, match=r"p: expected the fraction"):
        F.partial_rms_norm(tn.tensor(_rand(0, 2, 8)), 8, p=p)


@pytest.mark.parametrize("p", [float("nan"), "0.5", True, None])
def test_partial_rmsnorm_rejects_a_p_that_is_not_a_finite_number(p):
    with pytest.raises(TypeError, match=r"p: expected a finite real number, got "):
        tn.nn.PartialRMSNorm(8, p=p)
    with pytest.raises(TypeError, match=r"p: expected a finite real number"):
        F.partial_rms_norm(tn.tensor(_rand(0, 2, 8)), 8, p=p)


def test_partial_rmsnorm_needs_a_single_feature_axis():
    with pytest.raises(ValueError, match=r"normalized_shape: .*one feature axis.*got \(2, 4\)"):
        tn.nn.PartialRMSNorm((2, 4))


# ---- RMSNormMatrix: a (dim, dim) map after the normalization ----------------------------------------------------
def test_rmsnorm_matrix_with_identity_is_rmsnorm_without_weight(backend):
    x = _rand(0, 2, 3, 5)
    y = tn.nn.RMSNormMatrix(5)(tn.tensor(x))  # weight starts at the identity
    np.testing.assert_allclose(y.numpy(), F.rms_norm(tn.tensor(x), 5).numpy(), rtol=1e-14, atol=1e-15)


def test_rmsnorm_matrix_with_a_diagonal_is_rmsnorm_with_that_weight(backend):
    x, dy, w = _rand(0, 3, 4), _rand(1, 3, 4), _rand(2, 4)
    y, dx, dmatrix = _forward_backward(lambda t, m: F.rms_norm_matrix(t, m), x, dy, np.diag(w))
    y_ref, dx_ref, dw_ref = _forward_backward(lambda t, wt: F.rms_norm(t, 4, wt), x, dy, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)
    # The diagonal of the matrix gradient is the per-dimension weight gradient; the rest is the mixing.
    np.testing.assert_allclose(np.diag(dmatrix), dw_ref, rtol=1e-12)


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_rmsnorm_matrix_is_rmsnorm_then_linear_without_bias(impl):
    x, dy, m = _rand(0, 2, 3, 4), _rand(1, 2, 3, 4), _rand(2, 4, 4)
    y, dx, dm = _forward_backward(lambda t, mt: F.rms_norm_matrix(t, mt, impl=impl), x, dy, m)
    xhat = _rms_host(x)
    np.testing.assert_allclose(y, xhat @ m.T, rtol=1e-12)
    # dW = sum over all 6 rows of outer(dy_row, xhat_row).
    np.testing.assert_allclose(dm, np.einsum("bti,btj->ij", dy, xhat), rtol=1e-12)
    linear = _forward_backward(lambda t, mt: F.rms_norm(t, 4) @ mt.T, x, dy, m)
    np.testing.assert_allclose(dx, linear[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((4,), r"weight: expected shape \(4, 4\), got \(4,\)"),
        ((4, 1), r"weight: expected shape \(4, 4\), got \(4, 1\)"),
        ((3, 3), r"weight: expected shape \(4, 4\), got \(3, 3\)"),
    ],
)
def test_rmsnorm_matrix_rejects_a_weight_that_is_not_dim_by_dim(shape, message):
    with pytest.raises(ValueError, match=message):
        F.rms_norm_matrix(tn.tensor(_rand(0, 4, 4)), tn.tensor(np.ones(shape)))


@pytest.mark.parametrize("dim", [0, -3, 2.5, (4,), True])
def test_rmsnorm_matrix_rejects_a_bad_dim(dim):
    with pytest.raises(ValueError, match=r"dim: expected a positive int"):
        tn.nn.RMSNormMatrix(dim)


def test_rmsnorm_matrix_has_dim_squared_parameters():
    assert [p.shape for p in tn.nn.RMSNormMatrix(6).parameters()] == [(6, 6)]


# ---- RMSNormTanh: weight * tanh(alpha * rmsnorm(x)) ------------------------------------------------------------
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_rmsnorm_tanh_per_dim_alpha_all_equal_agrees_with_scalar_alpha(backend, impl):
    x, dy, w = _rand(0, 3, 5), _rand(1, 3, 5), 1 + 0.5 * _rand(2, 5)
    scalar = _forward_backward(lambda t, a, wt: F.rms_norm_tanh(t, 5, a, wt, impl=impl), x, dy, np.array(0.7), w)
    per_dim = _forward_backward(lambda t, a, wt: F.rms_norm_tanh(t, 5, a, wt, impl=impl), x, dy, np.full(5, 0.7), w)
    y, dx, dalpha, dweight = scalar
    np.testing.assert_allclose(per_dim[0], y, rtol=1e-14)
    np.testing.assert_allclose(per_dim[1], dx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(per_dim[3], dweight, rtol=1e-12)
    assert dalpha.shape == () and per_dim[2].shape == (5,)
    np.testing.assert_allclose(per_dim[2].sum(), dalpha, rtol=1e-12)  # one slope gets every feature's share


def test_rmsnorm_tanh_is_weight_times_tanh_of_alpha_times_rmsnorm(backend):
    x, alpha, w = _rand(0, 3, 5), 1.3, _rand(1, 5)
    y = F.rms_norm_tanh(tn.tensor(x), 5, tn.tensor(alpha), tn.tensor(w)).numpy()
    np.testing.assert_allclose(y, w * np.tanh(alpha * _rms_host(x)), rtol=1e-13)


def test_rmsnorm_tanh_small_alpha_is_linear_and_large_alpha_clips():
    x = _rand(0, 4, 16)
    w = 1 + 0.5 * _rand(1, 16)
    small = F.rms_norm_tanh(tn.tensor(x), 16, tn.tensor(1e-4), tn.tensor(w)).numpy()
    np.testing.assert_allclose(small / 1e-4, w * _rms_host(x), rtol=1e-7)
    large = F.rms_norm_tanh(tn.tensor(x), 16, tn.tensor(1e4), tn.tensor(w)).numpy()
    np.testing.assert_allclose(np.abs(large), np.abs(w) * np.ones((4, 1)), rtol=1e-10)


def test_rmsnorm_tanh_module_alpha_shapes():
    assert tn.nn.RMSNormTanh(5).alpha.shape == ()
    assert tn.nn.RMSNormTanh(5, alpha_shape="per_dim").alpha.shape == (5,)
    assert tn.nn.RMSNormTanh(5).alpha.item() == 1.0
    assert tn.nn.RMSNormTanh(5, elementwise_affine=False).weight is None


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1,), r"alpha: expected shape \(\) or \(5,\), got \(1,\)\. For one slope.* shape \(\), not \(1,\)"),
        ((3,), r"alpha: expected shape \(\) or \(5,\), got \(3,\)$"),
        ((5, 1), r"alpha: expected shape \(\) or \(5,\), got \(5, 1\)"),
    ],
)
def test_rmsnorm_tanh_rejects_a_wrong_alpha_shape(shape, message):
    with pytest.raises(ValueError, match=message):
        F.rms_norm_tanh(tn.tensor(_rand(0, 2, 5)), 5, tn.tensor(np.ones(shape)))


def test_rmsnorm_tanh_rejects_a_python_float_alpha_and_a_bad_alpha_shape_name():
    with pytest.raises(TypeError, match=r"alpha: expected a tn.Tensor of shape \(\) or \(5,\), got float"):
        F.rms_norm_tanh(tn.tensor(_rand(0, 2, 5)), 5, 1.0)
    with pytest.raises(ValueError, match=r"alpha_shape: expected one of \('scalar', 'per_dim'\), got 'vector'"):
        tn.nn.RMSNormTanh(5, alpha_shape="vector")


def test_rmsnorm_tanh_rejects_a_column_weight():
    with pytest.raises(ValueError, match=r"weight: expected shape \(5,\), got \(5, 1\)"):
        F.rms_norm_tanh(tn.tensor(_rand(0, 5, 5)), 5, tn.tensor(1.0), tn.tensor(np.ones((5, 1))))


def test_gemma_and_partial_reject_a_column_weight():
    x = tn.tensor(_rand(0, 4, 4))  # batch == dim: broadcasting would silently give (4, 4) rows
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(4, 1\)"):
        F.gemma_rms_norm(x, 4, tn.tensor(np.zeros((4, 1))))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(4, 1\)"):
        F.partial_rms_norm(x, 4, tn.tensor(np.ones((4, 1))), p=0.5)


# ---- the kernels compute what the lessons compute, over many row blocks on two threads ---------------------
def _registry_step(name):
    """Output and every gradient of the registry's "3d" case of ``name`` on 9 leading rows."""
    module, x = get_norm(name).build("3d", seed=3)
    shape = (9,) + tuple(x.shape[1:])
    x = tn.tensor(_rand(0, *shape), requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(_rand(1, *shape)))
    return [y.numpy(), tn.backend.to_numpy(x.grad)] + [tn.backend.to_numpy(p.grad) for p in module.parameters()]


@pytest.mark.parametrize("name", ["gemma_rmsnorm", "partial_rmsnorm", "rmsnorm_tanh", "rmsnorm_matrix"])
def test_kernel_in_one_row_blocks_equals_the_lesson_to_1e12(name, monkeypatch):
    monkeypatch.setattr(blocks, "ROW_BLOCK_BYTES", 1)
    monkeypatch.setattr(blocks, "THREADS", 2)
    monkeypatch.setattr(blocks, "PARALLEL_MIN_BYTES", 0)
    fast = _registry_step(name)
    with kernels.disabled():
        plain = _registry_step(name)
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---- a broken backward is caught ---------------------------------------------------------------------------------
# Each is the lesson's backward (on rows (rows, N)) with one classic mistake; the test plants it in
# the lesson and runs with kernels off.
def _matrix_transpose_forgotten(dy, x, weight, rstd):
    xhat = x * rstd
    g = dy @ weight.T  # should be dy @ weight
    return rstd * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True)), dy.T @ xhat


def _gemma_one_forgotten(dy, x, weight, rstd):
    xhat = x * rstd
    g = dy * weight  # should be dy * (1 + weight)
    return rstd * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True)), np.sum(dy * xhat, axis=0)


def _partial_projection_on_every_feature(dy, x, weight, rstd, k, with_bias):
    xhat = x * rstd
    g = dy * weight
    dx = rstd * (g - xhat * np.sum(g * xhat, axis=-1, keepdims=True) / k)  # no mask: features beyond k too
    return dx, np.sum(dy * xhat, axis=0), None


def _partial_mean_over_n(dy, x, weight, rstd, k, with_bias):
    xhat = x * rstd
    g = dy * weight
    projection = np.mean(g * xhat, axis=-1, keepdims=True)  # divides by N, the statistic divided by k
    dx = rstd * (g - np.where(np.arange(x.shape[-1]) < k, xhat * projection, 0.0))
    return dx, np.sum(dy * xhat, axis=0), None


def _tanh_backward_with(dy, x, alpha, weight, rstd, *, derivative, slope_in_dn):
    n = x * rstd
    u = np.tanh(alpha * n)
    t = (1 - u * u if derivative else 1.0) * dy * weight
    dn = alpha * t if slope_in_dn else t
    dx = rstd * (dn - n * np.mean(dn * n, axis=-1, keepdims=True))
    dalpha = np.sum(n * t, axis=0)
    return dx, np.sum(dalpha) if np.ndim(alpha) == 0 else dalpha, np.sum(dy * u, axis=0)


def _tanh_derivative_forgotten(dy, x, alpha, weight, rstd):
    return _tanh_backward_with(dy, x, alpha, weight, rstd, derivative=False, slope_in_dn=True)  # t = dy * weight


def _tanh_alpha_forgotten_in_dn(dy, x, alpha, weight, rstd):
    return _tanh_backward_with(dy, x, alpha, weight, rstd, derivative=True, slope_in_dn=False)  # dn = t


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "name, case, lesson, broken",
    [
        ("rmsnorm_matrix", "3d", "rms_norm_matrix_backward", _matrix_transpose_forgotten),
        ("gemma_rmsnorm", "2d", "gemma_rms_norm_backward", _gemma_one_forgotten),
        ("partial_rmsnorm", "2d", "partial_rms_norm_backward", _partial_projection_on_every_feature),
        ("partial_rmsnorm", "2d", "partial_rms_norm_backward", _partial_mean_over_n),
        ("rmsnorm_tanh", "2d", "rms_norm_tanh_backward", _tanh_derivative_forgotten),
        ("rmsnorm_tanh", "3d", "rms_norm_tanh_backward", _tanh_alpha_forgotten_in_dn),
    ],
    ids=[
        "matrix-transpose-forgotten",
        "gemma-one-forgotten",
        "partial-projection-on-every-feature",
        "partial-mean-over-N",
        "tanh-derivative-forgotten",
        "tanh-alpha-forgotten",
    ],
)
def test_gradcheck_catches_a_broken_backward(name, case, lesson, broken, fast, monkeypatch):
    spec = get_norm(name)
    module, x = spec.build(case, seed=3)
    with kernels.disabled():
        assert tn.gradcheck(module, x, fast=fast)
        monkeypatch.setattr(sys.modules[spec.module.__module__], lesson, broken)
        with pytest.raises(tn.GradcheckError):
            tn.gradcheck(module, x, fast=fast)


# ---- arguments are checked up front; float32 is right at any magnitude -------------------------------------
FAMILY = ["gemma_rmsnorm", "partial_rmsnorm", "rmsnorm_tanh", "rmsnorm_matrix"]


def _call(name, x, **given):
    """The functional form of ``name`` on rows of 4 features, every parameter a valid Tensor unless given."""
    if name == "gemma_rmsnorm":
        return F.gemma_rms_norm(x, 4, **({"weight": tn.zeros(4)} | given))
    if name == "partial_rmsnorm":
        return F.partial_rms_norm(x, 4, **({"weight": tn.ones(4), "bias": tn.zeros(4), "p": 0.5} | given))
    if name == "rmsnorm_tanh":
        return F.rms_norm_tanh(x, 4, **({"alpha": tn.tensor(0.7), "weight": tn.ones(4)} | given))
    return F.rms_norm_matrix(x, **({"weight": tn.tensor(np.eye(4))} | given))


@pytest.mark.parametrize("eps", ["1e-5", None])
@pytest.mark.parametrize("name", FAMILY)
def test_a_functional_eps_that_is_not_a_number_is_refused_naming_eps(name, eps):
    # The modules' eps: tests/test_norm_arguments.py, for every norm.
    with pytest.raises(TypeError, match=r"eps: expected a finite real number, got "):
        _call(name, tn.tensor(_rand(0, 3, 4)), eps=eps)


@pytest.mark.parametrize("name", FAMILY)
def test_a_functional_eps_that_rounds_to_0_in_float32_is_refused(name):
    zero_rows = np.zeros((3, 4))  # only eps keeps a zero row away from 0/0
    with pytest.raises(ValueError, match=r"eps: 1e-50 rounds to 0 in float32"):
        _call(name, tn.tensor(zero_rows, dtype="float32"), eps=1e-50)
    assert np.isfinite(_call(name, tn.tensor(zero_rows), eps=1e-50).numpy()).all()  # fine in float64


@pytest.mark.parametrize("given", [lambda a: np.atleast_1d(a).tolist(), lambda a: a], ids=["list", "ndarray"])
@pytest.mark.parametrize(
    "name, param, shape",
    [
        ("gemma_rmsnorm", "weight", (4,)),
        ("partial_rmsnorm", "weight", (4,)),
        ("partial_rmsnorm", "bias", (4,)),
        ("rmsnorm_tanh", "alpha", ()),
        ("rmsnorm_tanh", "weight", (4,)),
        ("rmsnorm_matrix", "weight", (4, 4)),
    ],
)
def test_a_parameter_that_is_not_a_tensor_is_refused_naming_it(name, param, shape, given):
    value = given(np.ones(shape))
    with pytest.raises(TypeError, match=rf"^{param}: expected a tn.Tensor .*got {type(value).__name__}"):
        _call(name, tn.tensor(_rand(0, 3, 4)), **{param: value})


@pytest.mark.parametrize("size", [8.0, None, "8"])
@pytest.mark.parametrize("name", FAMILY)
def test_a_size_that_is_not_a_positive_int_is_refused(name, size):
    with pytest.raises(ValueError, match=r"^(normalized_shape|dim): expected a positive int"):
        get_norm(name).module(size)


@pytest.mark.parametrize("name", FAMILY)
def test_a_numpy_int_size_is_accepted_as_pytorch_accepts_it(name):
    module = get_norm(name).module(np.int64(8))
    assert module(tn.tensor(_rand(0, 3, 8))).shape == (3, 8)


def _float_results(module, x_host, dy_host):
    x = tn.tensor(x_host, requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(dy_host))
    return [y.numpy(), tn.backend.to_numpy(x.grad)] + [tn.backend.to_numpy(p.grad) for p in module.parameters()]


@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
@pytest.mark.parametrize("name", FAMILY)
def test_float32_rows_of_extreme_magnitude_match_float64_forward_and_backward(name, magnitude):
    module, x = get_norm(name).build("3d", dtype="float32")
    x_host = magnitude * _rand(0, *x.shape)
    dy_host = _rand(1, *x.shape)
    got = _float_results(module, x_host.astype(np.float32), dy_host.astype(np.float32))
    want = _float_results(module.to("float64"), x_host, dy_host)
    for i, (a, b) in enumerate(zip(got, want)):
        # Right to float32 rounding wherever float32 can hold the result (not below its smallest normal).
        atol = 1e-5 * np.abs(b).max() + np.finfo(np.float32).smallest_normal
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"{name}: result {i}")
