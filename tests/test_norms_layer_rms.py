"""LayerNorm and RMSNorm: properties of their gradients, numerics, bad input, and PyTorch as an oracle."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynorm as tn
from tinynorm.norms import layernorm, rmsnorm

F = tn.nn.functional

rows = st.integers(1, 4)
features = st.integers(2, 9)
seeds = st.integers(0, 2**31 - 1)


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _dx(fn, x_host, dy_host):
    x = tn.tensor(x_host, requires_grad=True)
    fn(x).backward(tn.tensor(dy_host))
    return x.grad


# ---- properties of the gradients -----------------------------------------------------------------
@given(rows, features, seeds)
def test_rmsnorm_dx_rows_are_orthogonal_to_x(n, d, seed):
    # Without eps, RMSNorm is scale-invariant, so moving x along itself changes nothing: <dx, x> = 0.
    x, dy = _rand(seed, n, d), _rand(seed + 1, n, d)
    dx = _dx(lambda t: F.rms_norm(t, d, tn.tensor(_rand(seed + 2, d)), eps=1e-300), x, dy)
    np.testing.assert_allclose(np.sum(dx * x, axis=-1), 0.0, atol=1e-10 * np.abs(dx).max() * np.abs(x).max() * d)


@given(rows, features, seeds)
def test_layernorm_dx_rows_sum_to_zero(n, d, seed):
    # Adding a constant to a row changes nothing after centering, so each row of dx sums to 0.
    x, dy = _rand(seed, n, d), _rand(seed + 1, n, d)
    dx = _dx(lambda t: F.layer_norm(t, d, tn.tensor(_rand(seed + 2, d))), x, dy)
    scale = np.abs(dy).max() / x.std(-1).min()  # the size dx would have without cancellation
    np.testing.assert_allclose(np.sum(dx, axis=-1), 0.0, atol=1e-12 * d * scale)


@given(rows, features, seeds)
def test_layernorm_dx_rows_are_orthogonal_to_xhat(n, d, seed):
    x, dy = _rand(seed, n, d), _rand(seed + 1, n, d)
    dx = _dx(lambda t: F.layer_norm(t, d, eps=1e-300), x, dy)
    xhat = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
    scale = np.abs(dy).max() / x.std(-1).min()  # the size dx would have without cancellation
    np.testing.assert_allclose(np.sum(dx * xhat, axis=-1), 0.0, atol=1e-12 * d * scale)


@given(rows, features, seeds, st.floats(1e-3, 1e3))
def test_normalized_output_is_scale_invariant(n, d, seed, scale):
    x = tn.tensor(_rand(seed, n, d))
    for fn in (lambda t: F.rms_norm(t, d, eps=1e-300), lambda t: F.layer_norm(t, d, eps=1e-300)):
        np.testing.assert_allclose(fn(x * scale).numpy(), fn(x).numpy(), rtol=1e-10, atol=1e-12)


def test_sum_loss_gives_layernorm_a_zero_gradient():
    # Why the gradcheck never uses y.sum(): with weight ones, each output row sums to 0 whatever x is.
    x = tn.tensor(_rand(0, 3, 5), requires_grad=True)
    F.layer_norm(x, 5).sum().backward()
    assert np.abs(x.grad).max() < 1e-14


# ---- a broken backward is caught ----------------------------------------------------------------------
# Each is the lesson's backward (tinynorm/norms/layernorm.py, rmsnorm.py) with one classic
# mistake; the test plants it in the lesson and runs with kernels off.
def _layernorm_without_mean_term(dy, x, weight, mean, rstd, with_bias):
    xhat = (x - mean) * rstd
    g = dy * weight
    dx = rstd * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))  # "- mean(g)" dropped
    return dx, np.sum(dy * xhat, axis=0), np.sum(dy, axis=0)


def _layernorm_unbiased(dy, x, weight, mean, rstd, with_bias):
    n = x.shape[-1]
    xhat = (x - mean) * rstd
    g = dy * weight
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * np.sum(g * xhat, axis=-1, keepdims=True) / (n - 1))
    return dx, np.sum(dy * xhat, axis=0), np.sum(dy, axis=0)


def _rmsnorm_without_projection(dy, x, weight, rstd, with_bias):
    return rstd * dy * weight, np.sum(dy * x * rstd, axis=0), None


def _rmsnorm_unbroadcast_forgotten(dy, x, weight, rstd, with_bias):
    xhat = x * rstd
    g = dy * weight
    dx = rstd * (g - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    return dx, (dy * xhat)[0], None  # the weight gradient of the first row only


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "lesson, name, broken, make",
    [
        (layernorm, "layer_norm_backward", _layernorm_without_mean_term, lambda: tn.nn.LayerNorm(5)),
        (layernorm, "layer_norm_backward", _layernorm_unbiased, lambda: tn.nn.LayerNorm(5)),
        (rmsnorm, "rms_norm_backward", _rmsnorm_without_projection, lambda: tn.nn.RMSNorm(5)),
        (rmsnorm, "rms_norm_backward", _rmsnorm_unbroadcast_forgotten, lambda: tn.nn.RMSNorm(5)),
    ],
    ids=["layernorm-no-mean-term", "layernorm-N-1", "rmsnorm-no-projection", "rmsnorm-no-sum-over-rows"],
)
def test_gradcheck_catches_a_broken_backward(lesson, name, broken, make, fast, monkeypatch):
    module = make()
    module.weight.data = 1 + 0.5 * _rand(3, 5)
    x = tn.tensor(_rand(4, 3, 5), requires_grad=True)
    with tn.kernels.disabled():
        assert tn.gradcheck(module, x, fast=fast)
        monkeypatch.setattr(lesson, name, broken)
        with pytest.raises(tn.GradcheckError):
            tn.gradcheck(module, x, fast=fast)


# ---- bad input -------------------------------------------------------------------------------------------
def test_a_column_weight_is_rejected_with_the_broadcast_explained():
    dim = 4
    x = tn.tensor(_rand(0, dim, dim))  # batch == dim: NumPy would silently give (dim, dim)
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(4, 1\).*\(4, 4\)"):
        F.rms_norm(x, dim, tn.tensor(np.ones((dim, 1))))


def test_a_one_element_weight_is_not_broadcast_as_a_scalar():
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(1,\).*one scalar"):
        F.layer_norm(tn.tensor(_rand(0, 2, 4)), 4, tn.tensor(np.ones(1)))


@pytest.mark.parametrize("fn", [F.layer_norm, F.rms_norm])
def test_trailing_shape_must_match_normalized_shape(fn):
    with pytest.raises(ValueError, match=r"normalized_shape \(5,\).*\(2, 4\)"):
        fn(tn.tensor(_rand(0, 2, 4)), 5)


@pytest.mark.parametrize("module", [tn.nn.LayerNorm, tn.nn.RMSNorm])
@pytest.mark.parametrize("eps", [0.0, -1e-5])
def test_eps_must_be_positive(module, eps):
    with pytest.raises(ValueError, match="eps: expected a positive number"):
        module(4, eps=eps)


def test_bias_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"bias: expected shape \(3,\), got \(4,\)"):
        F.layer_norm(tn.tensor(_rand(0, 2, 3)), 3, bias=tn.tensor(np.zeros(4)))


# ---- numerics ------------------------------------------------------------------------------------------------
def _float64_reference(x, kind):
    x = x.astype(np.float64)
    if kind == "rms":
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6)
    centered = x - x.mean(-1, keepdims=True)
    return centered / np.sqrt(np.mean(centered**2, -1, keepdims=True) + 1e-6)


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_float32_rows_from_1e_minus30_to_1e30_are_right(kind):
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** np.arange(-30, 31, 5)
    x = (rng.standard_normal((magnitudes.size, 64)) * magnitudes[:, None]).astype(np.float32)
    fn = F.rms_norm if kind == "rms" else F.layer_norm
    y = fn(tn.tensor(x), 64, eps=1e-6).numpy()
    expected = _float64_reference(x, kind)
    scale = np.abs(expected).max(-1, keepdims=True)
    assert np.all(np.isfinite(y))
    np.testing.assert_array_less(np.abs(y - expected) / scale, 1e-5)


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_gradients_of_huge_rows_are_finite_and_right(kind):
    x_host = (np.random.default_rng(1).standard_normal((2, 16)) * 1e25).astype(np.float32)
    fn = F.rms_norm if kind == "rms" else F.layer_norm
    x = tn.tensor(x_host, requires_grad=True)
    dy = np.random.default_rng(2).standard_normal((2, 16)).astype(np.float32)
    fn(x, 16, eps=1e-6).backward(tn.tensor(dy))
    x64 = tn.tensor(x_host.astype(np.float64), requires_grad=True)
    fn(x64, 16, eps=1e-6).backward(tn.tensor(dy.astype(np.float64)))
    np.testing.assert_allclose(x.grad, x64.grad, rtol=1e-4, atol=1e-4 * np.abs(x64.grad).max())


@pytest.mark.parametrize("module", [tn.nn.LayerNorm, tn.nn.RMSNorm])
def test_float16_input_is_normalized_in_float32(module):
    x = (np.random.default_rng(0).standard_normal((4, 256)) * 300).astype(np.float16)  # x**2 overflows float16
    norm = module(256)
    y = norm(tn.tensor(x))
    assert y.dtype == np.float16
    kind = "layer" if module is tn.nn.LayerNorm else "rms"
    np.testing.assert_allclose(y.numpy().astype(np.float64), _float64_reference(x, kind), atol=4e-3, rtol=2e-3)


@pytest.mark.parametrize("fn", [F.layer_norm, F.rms_norm])
def test_constant_rows_give_finite_outputs_and_gradients(fn):
    x = tn.tensor(np.full((2, 8), 3.0, dtype=np.float32), requires_grad=True)
    y = fn(x, 8)
    y.backward(tn.tensor(np.random.default_rng(0).standard_normal((2, 8))))
    assert np.all(np.isfinite(y.numpy())) and np.all(np.isfinite(x.grad))


def test_layernorm_variance_is_two_pass():
    # A large mean against a tiny spread: E[x^2] - E[x]^2 would lose every digit in float32.
    x = (1e4 + np.random.default_rng(0).standard_normal((3, 32))).astype(np.float32)
    y = F.layer_norm(tn.tensor(x), 32, eps=1e-6).numpy()
    np.testing.assert_allclose(y, _float64_reference(x, "layer"), atol=2e-3)


# ---- PyTorch as an independent oracle ----------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("shape, normalized_shape", [((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((1, 6), (6,))])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_matches_pytorch_in_float64(kind, shape, normalized_shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x_host, dy_host = rng.standard_normal(shape), rng.standard_normal(shape)
    w_host, b_host = rng.standard_normal(normalized_shape), rng.standard_normal(normalized_shape)

    x, w, b = (tn.tensor(a, requires_grad=True) for a in (x_host, w_host, b_host))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x_host, w_host, b_host))
    if kind == "layer":
        y = F.layer_norm(x, normalized_shape, w, b, eps=1e-5)
        ty = torch.nn.functional.layer_norm(tx, normalized_shape, tw, tb, eps=1e-5)
        pairs = [(x, tx), (w, tw), (b, tb)]
    else:
        y = F.rms_norm(x, normalized_shape, w, eps=1e-6)
        ty = torch.nn.functional.rms_norm(tx, normalized_shape, tw, eps=1e-6)
        pairs = [(x, tx), (w, tw)]
    y.backward(tn.tensor(dy_host))
    ty.backward(torch.tensor(dy_host))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)
