"""The erf op, Derf (Dynamic erf) and LayerScale: what makes each of them itself.

The registry-driven tests gradcheck every case of both entries and of the ``erf`` op; these
pin down erf's accuracy over the whole real line, and Derf and LayerScale against the same
formulas composed in PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinynorm as tn
from tinynorm.ops import erf_values

F = tn.nn.functional


def _ulps(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    tiny = np.finfo(want.dtype).tiny
    return np.abs(got.astype(np.float64) - want.astype(np.float64)) / np.spacing(np.maximum(np.abs(want), tiny))


def _grid(dtype) -> np.ndarray:
    tails = np.geomspace(1e-300 if dtype == np.float64 else 1e-37, 30, 20001)
    return np.concatenate([np.linspace(-30, 30, 600001), tails, -tails]).astype(dtype)


# ---- erf -------------------------------------------------------------------------------------
def test_erf_values_is_within_4_ulps_of_math_erf_in_float64_over_the_real_line():
    x = _grid(np.float64)
    want = np.array([math.erf(v) for v in x])
    assert _ulps(erf_values(x), want).max() <= 4.0  # measured: 4.0, at |x| ~ 0.474 (erf just below 0.5)


def test_erf_values_is_within_4_ulps_of_math_erf_in_float32():
    x = _grid(np.float32)
    got = erf_values(x)
    assert got.dtype == np.float32
    want = np.array([math.erf(float(v)) for v in x]).astype(np.float32)
    assert _ulps(got, want).max() <= 4.0  # measured: 4.0


def test_erf_values_at_zero_infinities_and_nan():
    got = erf_values(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300, 5e-324]))
    np.testing.assert_array_equal(got[:4], [0.0, -0.0, 1.0, -1.0])
    assert np.signbit(got[1]) and np.isnan(got[4])
    np.testing.assert_array_equal(got[5:7], [1.0, -1.0])
    assert got[7] == math.erf(5e-324)


def test_erf_matches_torch_erf_to_1e15_forward_and_backward():
    rng = np.random.default_rng(0)
    x = rng.uniform(-6, 6, 2000)
    xt = torch.tensor(x, requires_grad=True)
    torch.erf(xt).backward(torch.ones_like(xt))
    a = tn.tensor(x, requires_grad=True)
    y = tn.erf(a)
    y.backward(np.ones_like(x))
    np.testing.assert_allclose(y.numpy(), torch.erf(xt).detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(a.grad, xt.grad.numpy(), rtol=1e-14, atol=1e-15)


def test_erf_is_a_tensor_method_and_gradchecks():
    a = tn.tensor(np.random.default_rng(1).standard_normal((3, 4)), requires_grad=True)
    np.testing.assert_array_equal(a.erf().numpy(), tn.erf(a).numpy())
    assert tn.gradcheck(tn.erf, a)


# ---- Derf ------------------------------------------------------------------------------------
def _derf_in_torch(x, alpha, shift, weight, bias):
    return weight * torch.erf(alpha * x + shift) + bias


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_derf_matches_torch_erf_composition_to_1e10_forward_and_every_gradient(impl):
    rng = np.random.default_rng(2)
    x, dy = rng.standard_normal((5, 3, 4)) * 2, rng.standard_normal((5, 3, 4))
    module = tn.nn.Derf((3, 4), impl=impl)
    params = {"alpha": 0.7, "shift": -0.3, "weight": rng.standard_normal((3, 4)), "bias": rng.standard_normal((3, 4))}
    for name, value in params.items():
        getattr(module, name).data = np.asarray(value, dtype=np.float64)
    xt = tn.tensor(x, requires_grad=True)
    y = module(xt)
    y.backward(dy)
    torch_params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = _derf_in_torch(x_torch, **torch_params)
    y_torch.backward(torch.tensor(dy))
    np.testing.assert_allclose(y.numpy(), y_torch.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(xt.grad, x_torch.grad.numpy(), rtol=0, atol=1e-10)
    for name in params:
        np.testing.assert_allclose(getattr(module, name).grad, torch_params[name].grad.numpy(), rtol=0, atol=1e-10)


def test_derf_parameters_shapes_and_inits():
    module = tn.nn.Derf((2, 3))
    got = {name: (p.shape, p.numpy().ravel()[0]) for name, p in module.named_parameters()}
    assert got == {"alpha": ((), 0.5), "shift": ((), 0.0), "weight": ((2, 3), 1.0), "bias": ((2, 3), 0.0)}
    assert tn.nn.Derf(4, alpha_init=2.0).alpha.item() == 2.0


def test_derf_saturates_to_plus_minus_weight_with_zero_gradient():
    x = tn.tensor(np.array([[-100.0, 100.0]]), requires_grad=True)
    module = tn.nn.Derf(2)
    module(x).backward(np.ones((1, 2)))
    np.testing.assert_array_equal(module(x).numpy(), [[-1.0, 1.0]])
    np.testing.assert_array_equal(x.grad, [[0.0, 0.0]])
    assert module.alpha.grad == 0.0 and module.shift.grad == 0.0


def test_a_derf_shift_that_is_not_a_number_is_refused_by_name():
    with pytest.raises(TypeError, match="shift: expected a real number"):
        F.derf(tn.ones(2, 3), 3, alpha=0.5, shift="0")


# ---- LayerScale ------------------------------------------------------------------------------
def test_layerscale_matches_torch_to_1e10_forward_and_both_gradients():
    rng = np.random.default_rng(3)
    x, dy, w = rng.standard_normal((4, 3, 6)), rng.standard_normal((4, 3, 6)), rng.standard_normal(6)
    module = tn.nn.LayerScale(6)
    module.weight.data = w.copy()
    xt = tn.tensor(x, requires_grad=True)
    y = module(xt)
    y.backward(dy)
    x_torch, w_torch = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    y_torch = w_torch * x_torch
    y_torch.backward(torch.tensor(dy))
    np.testing.assert_allclose(y.numpy(), y_torch.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(xt.grad, x_torch.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(module.weight.grad, w_torch.grad.numpy(), rtol=0, atol=1e-10)


def test_a_residual_block_with_layerscale_starts_within_1e5_of_the_identity():
    x = np.random.default_rng(4).standard_normal((8, 5))
    branch = tn.nn.Linear(5, 5)
    out = tn.tensor(x) + tn.nn.LayerScale(5)(branch(tn.tensor(x)))
    bound = 1e-5 * np.abs(branch(tn.tensor(x)).numpy()).max()
    assert np.abs(out.numpy() - x).max() <= bound * (1 + 1e-12)


def test_layerscale_weight_gradient_does_not_shrink_with_the_tiny_init():
    x, dy = np.random.default_rng(5).standard_normal((2, 3, 4)), np.ones((2, 3, 4))
    module = tn.nn.LayerScale(4)
    xt = tn.tensor(x, requires_grad=True)
    module(xt).backward(dy)
    np.testing.assert_allclose(module.weight.grad, x.sum(axis=(0, 1)), rtol=1e-14)  # no 1e-5 factor
    np.testing.assert_allclose(xt.grad, np.full_like(x, 1e-5), rtol=1e-14)  # but dx has it


def test_layerscale_refuses_a_weight_of_the_wrong_shape_by_name():
    with pytest.raises(TypeError, match=r"weight: expected a 1-d tn.Tensor of shape \(dim,\), got \(4, 1\)"):
        F.layer_scale(tn.ones(2, 4), tn.ones(4, 1))
    with pytest.raises(ValueError, match="dim"):
        tn.nn.LayerScale(0)
