"""The hypersphere norm of nGPT (``l2norm``): what makes it itself.

The registry-driven tests gradcheck every case; these pin down the torch oracle
(``F.normalize(x, dim=-1, eps=eps) * s`` in float64 to 1e-10: forward, dx and the stored
scale's gradient), the tangent projection (every row of dx orthogonal to x), nGPT's stored
scale (``scale * scale_init / scale_scaling``) and what it does to an optimizer's steps,
extreme magnitudes, bad input, and that a broken backward is caught by tn.gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as torch_f

import tinynorm as tn
from tinynorm import kernels
from tinynorm.norms import l2norm
from tinynorm.registry import NORMS

F = tn.nn.functional


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _set(param, value):
    param.data = param.xp.astype(param.xp.asarray(np.asarray(value, dtype=np.float64)), param.dtype)


def _forward_backward(module, x_host, dy_host):
    """Output, dx and the stored scale's gradient, as host arrays."""
    x = tn.tensor(x_host, requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(dy_host))
    return y.numpy(), tn.backend.to_numpy(x.grad), tn.backend.to_numpy(module.scale.grad)


def _torch(x, dy, stored, factor, eps, n):
    """``F.normalize`` of the rows (the trailing axes flattened) times ``stored * factor``."""
    tx, ts = torch.tensor(x, requires_grad=True), torch.tensor(stored, requires_grad=True)
    rows = tx.reshape(-1, n)
    ty = (torch_f.normalize(rows, dim=-1, eps=eps) * (ts.reshape(n) * factor)).reshape(x.shape)
    ty.backward(torch.tensor(dy))
    return ty.detach().numpy(), tx.grad.numpy(), ts.grad.numpy()


def _assert_all_close(mine, theirs, atol=1e-10):
    for what, a, b in zip(("y", "dx", "dscale"), mine, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol, err_msg=what)


# ---- the torch oracle ------------------------------------------------------------------------
@pytest.mark.parametrize(("normalized_shape", "shape"), [(6, (4, 6)), ((3, 4), (2, 3, 4)), (1, (3, 1))])
@pytest.mark.parametrize(("scale_init", "scale_scaling"), [(1.0, None), (2.5, 0.1), (0.5, 0.5)])
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_l2norm_matches_torch_normalize_times_the_effective_scale(
    backend, normalized_shape, shape, scale_init, scale_scaling, impl
):
    module = tn.nn.L2Norm(normalized_shape, scale_init=scale_init, scale_scaling=scale_scaling, impl=impl)
    n = math.prod(module.normalized_shape)
    stored = module.scale.numpy() + 0.3 * _rand(2, *module.normalized_shape)
    _set(module.scale, stored)
    x, dy = _rand(0, *shape), _rand(1, *shape)
    mine = _forward_backward(module, x, dy)
    _assert_all_close(mine, _torch(x, dy, stored, module.scale_factor, 1e-12, n))
    assert np.abs(mine[1]).max() > 0.1 or n == 1  # a real comparison, not of zeros


def test_l2norm_matches_torch_where_the_clamp_is_active_and_on_a_zero_row(backend):
    # Rows of norm ~1e-3 against eps = 1e-2 are divided by eps; torch's clamp has gradient 0 there too.
    eps = 1e-2
    x = np.concatenate([1e-3 * _rand(0, 2, 5), np.zeros((1, 5)), _rand(1, 2, 5)])
    dy = _rand(2, 5, 5)
    module = tn.nn.L2Norm(5, scale_init=1.5, eps=eps)
    stored = module.scale.numpy() * (1 + 0.3 * _rand(3, 5))
    _set(module.scale, stored)
    mine = _forward_backward(module, x, dy)
    _assert_all_close(mine, _torch(x, dy, stored, module.scale_factor, eps, 5))
    s = stored * module.scale_factor
    np.testing.assert_allclose(mine[1][:3], dy[:3] * s / eps, rtol=1e-12)  # no projection below eps


def test_without_a_scale_it_is_torch_normalize():
    x = _rand(0, 4, 7)
    y = F.l2_norm(tn.tensor(x), 7).numpy()
    np.testing.assert_allclose(y, torch_f.normalize(torch.tensor(x), dim=-1).numpy(), rtol=0, atol=1e-15)


# ---- the tangent projection -----------------------------------------------------------------
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize(("normalized_shape", "shape"), [(6, (5, 6)), ((3, 4), (2, 3, 4))])
def test_every_row_of_dx_is_orthogonal_to_x(backend, impl, normalized_shape, shape):
    module = tn.nn.L2Norm(normalized_shape, impl=impl)
    _set(module.scale, module.scale.numpy() * (1 + 0.5 * _rand(2, *module.normalized_shape)))
    x, dy = 10 * _rand(0, *shape), _rand(1, *shape)
    _, dx, _ = _forward_backward(module, x, dy)
    n = math.prod(module.normalized_shape)
    rows, dx_rows = x.reshape(-1, n), dx.reshape(-1, n)
    cosines = np.sum(rows * dx_rows, axis=-1) / np.linalg.norm(rows, axis=-1) / np.linalg.norm(dx_rows, axis=-1)
    np.testing.assert_allclose(cosines, 0.0, atol=1e-14)
    assert np.abs(dx).max() > 0.01


def test_dx_is_the_projected_gradient_divided_by_the_norm(backend):
    # dx = (I - u u^T) g / ||x||, with the projector built as a matrix, row by row.
    x, dy = _rand(0, 3, 4), _rand(1, 3, 4)
    module = tn.nn.L2Norm(4, scale_init=2.0)
    _, dx, _ = _forward_backward(module, x, dy)
    for row, dy_row, dx_row in zip(x, dy, dx):
        norm = np.linalg.norm(row)
        u = row / norm
        projector = np.eye(4) - np.outer(u, u)
        np.testing.assert_allclose(dx_row, projector @ (dy_row * 2.0) / norm, rtol=1e-12, atol=1e-15)


# ---- nGPT's stored scale ---------------------------------------------------------------------
def test_the_stored_scale_starts_at_scale_scaling_and_the_effective_one_at_scale_init():
    module = tn.nn.L2Norm(16, scale_init=3.0)
    np.testing.assert_array_equal(module.scale.numpy(), np.full(16, 0.25))  # nGPT: 1/sqrt(d)
    assert module.scale_factor == 12.0
    np.testing.assert_allclose(module.effective_scale().numpy(), np.full(16, 3.0), rtol=1e-15)
    y = module(tn.tensor(_rand(0, 5, 16))).numpy()
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), 3.0, rtol=1e-14)  # every row at norm scale_init
    assert tn.nn.L2Norm(16, scale_init=3.0, scale_scaling=3.0).scale_factor == 1.0  # the trick off


def test_the_stored_scales_gradient_is_the_factor_times_the_effective_scales():
    x, dy = _rand(0, 6, 5), _rand(1, 6, 5)
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    for scale_scaling in (None, 0.01, 1.0):
        module = tn.nn.L2Norm(5, scale_init=2.0, scale_scaling=scale_scaling)
        y, _, dscale = _forward_backward(module, x, dy)
        np.testing.assert_allclose(dscale, module.scale_factor * np.sum(dy * u, axis=0), rtol=1e-13)
        np.testing.assert_allclose(y, 2.0 * u, rtol=1e-14)  # the same output whatever scale_scaling is


@pytest.mark.parametrize("scale_scaling", [1 / math.sqrt(5), 0.05, 2.0])
def test_adam_moves_the_effective_scale_by_the_factor_times_lr_and_sgd_by_its_square(scale_scaling):
    x, dy = tn.tensor(_rand(0, 6, 5)), tn.tensor(_rand(1, 6, 5))
    lr, scale_init = 1e-3, 1.0
    steps = {}
    for name, optimizer in (("adam", tn.optim.Adam), ("sgd", tn.optim.SGD)):
        module = tn.nn.L2Norm(5, scale_init=scale_init, scale_scaling=scale_scaling)
        before = module.effective_scale().numpy()
        (module(x) * dy).sum().backward()
        grad_effective = np.asarray(module.scale.grad) / module.scale_factor  # d loss / d s
        optimizer([module.scale], lr=lr).step()
        steps[name] = (module.effective_scale().numpy() - before, grad_effective)
    factor = scale_init / scale_scaling
    step, grad = steps["adam"]
    np.testing.assert_allclose(step, -factor * lr * np.sign(grad), rtol=1e-6)  # Adam's first step: lr * sign
    step, grad = steps["sgd"]
    np.testing.assert_allclose(step, -(factor**2) * lr * grad, rtol=1e-10)


# ---- magnitudes and dtypes -------------------------------------------------------------------
def test_float32_rows_from_1e_minus_30_to_1e30_come_out_on_the_sphere(backend):
    # With eps below the smallest row norm, every row is divided by its own norm.
    x, dy = _rand(0, 11, 4), _rand(1, 11, 4)
    magnitudes = 10.0 ** np.arange(-30, 31, 6).reshape(-1, 1)
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    module = tn.nn.L2Norm(4, eps=1e-37).to("float32")
    y, dx, dscale = _forward_backward(module, (magnitudes * x).astype(np.float32), dy.astype(np.float32))
    np.testing.assert_allclose(y, u, rtol=2e-6, atol=1e-7)
    _, dx1, dscale1 = _forward_backward(tn.nn.L2Norm(4), x, dy)
    np.testing.assert_allclose(dx * magnitudes, dx1, rtol=1e-4, atol=1e-5)  # dx(c x) = dx(x) / c
    np.testing.assert_allclose(dscale, dscale1, rtol=1e-5)


def test_float16_input_gives_float16_output_computed_in_float32():
    x = _rand(0, 3, 8)
    module = tn.nn.L2Norm(8).to("float16")
    y = module(tn.tensor(x, dtype="float16"))
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.numpy(), x / np.linalg.norm(x, axis=-1, keepdims=True), atol=2e-3)


def test_rows_with_a_nan_or_an_inf_give_nan(backend):
    x, dy = _rand(0, 3, 4), _rand(1, 3, 4)
    x[1, 2], x[2, 0] = np.nan, np.inf
    y, dx, _ = _forward_backward(tn.nn.L2Norm(4), x, dy)
    assert np.isnan(y[1:]).all() and np.isnan(dx[1:]).all()  # no direction: nothing finite comes out
    assert np.isfinite(y[0]).all() and np.isfinite(dx[0]).all()


# ---- a broken backward is caught --------------------------------------------------------------
def _failed_inputs(broken, monkeypatch):
    """The inputs whose gradient check fails once ``broken`` replaces the lesson's backward."""
    module, x = NORMS["l2norm"].build("2d")
    with kernels.disabled():
        assert tn.gradcheck(module, x)
        monkeypatch.setattr(l2norm, "l2_norm_backward", broken)
        result = tn.gradcheck(module, x, raise_exception=False)
    assert not result.passed
    return {f.input for f in result.failures}


def test_gradcheck_catches_a_backward_without_the_tangent_projection(monkeypatch):
    def without_projection(dy, x, scale, factor, norm, eps):  # dx = g / norm: the radial part left in
        u = x / norm
        return dy * scale * factor / norm, factor * np.sum(dy * u, axis=0)

    assert _failed_inputs(without_projection, monkeypatch) == {"input 0"}


def test_gradcheck_catches_a_scale_gradient_without_the_factor(monkeypatch):
    original = l2norm.l2_norm_backward

    def without_factor(dy, x, scale, factor, norm, eps):  # the gradient of s, not of the stored scale
        dx, dscale = original(dy, x, scale, factor, norm, eps)
        return dx, dscale / factor

    assert _failed_inputs(without_factor, monkeypatch) == {"scale"}


# ---- bad input --------------------------------------------------------------------------------
def test_a_column_scale_is_refused_with_the_broadcast_trap_explained():
    with pytest.raises(ValueError, match=r"scale: expected shape \(4,\), got \(4, 1\)\. A \(4, 1\) column"):
        F.l2_norm(tn.tensor(_rand(0, 4, 4)), 4, scale=tn.ones(4, 1))


def test_a_one_element_scale_is_refused_not_broadcast():
    with pytest.raises(ValueError, match=r"scale: expected shape \(4,\), got \(1,\)\. A single value"):
        F.l2_norm(tn.tensor(_rand(0, 2, 4)), 4, scale=tn.ones(1))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scale_init": 0.0}, ValueError, r"scale_init: expected a positive number .*got 0\.0"),
        ({"scale_init": -1.0}, ValueError, r"scale_init: expected a positive number"),
        ({"scale_init": float("nan")}, TypeError, r"scale_init: expected a finite real number, got nan"),
        ({"scale_scaling": 0.0}, ValueError, r"scale_scaling: expected a positive number .*got 0\.0"),
        ({"scale_scaling": "1"}, TypeError, r"scale_scaling: expected a finite real number, got '1'"),
        ({"eps": 0.0}, ValueError, r"eps: expected a positive number"),
        ({"normalized_shape": 0}, ValueError, r"normalized_shape: expected a positive int"),
    ],
)
def test_bad_constructor_arguments_are_refused_by_name(kwargs, error, message):
    with pytest.raises(error, match=message):
        tn.nn.L2Norm(**({"normalized_shape": 4} | kwargs))


def test_bad_functional_arguments_are_refused_by_name():
    x = tn.tensor(_rand(0, 2, 4))
    with pytest.raises(ValueError, match=r"l2_norm: input's trailing shape must equal normalized_shape \(4,\)"):
        tn.nn.L2Norm(4)(tn.tensor(_rand(0, 4, 5)))
    with pytest.raises(TypeError, match=r"l2_norm: input must have a floating dtype, got int64"):
        tn.nn.L2Norm(4)(tn.tensor(np.ones((2, 4), dtype=np.int64)))
    with pytest.raises(TypeError, match=r"scale: expected a tn.Tensor of shape \(4,\) or None, got ndarray"):
        F.l2_norm(x, 4, scale=np.ones(4))
    with pytest.raises(TypeError, match=r"scale_factor: expected a finite real number, got inf"):
        F.l2_norm(x, 4, scale=tn.ones(4), scale_factor=float("inf"))
    with pytest.raises(ValueError, match=r"eps: 1e-50 rounds to 0 in float32"):
        F.l2_norm(x.to("float32"), 4, eps=1e-50)
