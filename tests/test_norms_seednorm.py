"""SeeDNorm against the same formula composed in torch, in float64: forward and every gradient;
its reductions to RMSNorm; the second path of dx through tanh(x . beta); float32 rows of any
magnitude; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinynorm as tn
from tinynorm.norms import seednorm
from tinynorm.norms.seednorm import seed_norm
from tinynorm.registry import NORMS

EPS = 1e-6


def _torch_seed_norm(x, alpha, beta, weight, ndim, eps=EPS):
    """(alpha * tanh(x . beta) + weight) * x / sqrt(mean(x**2) + eps), over the last ``ndim`` axes."""
    dims = tuple(range(-ndim, 0))
    xhat = x / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + eps)
    t = torch.tanh((x * beta).sum(dim=dims, keepdim=True))
    return (alpha * t + weight) * xhat


def _random(shape, normalized_shape, rng):
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    alpha = 1.0 + 0.5 * rng.normal(size=normalized_shape)
    beta = 0.4 * rng.normal(size=normalized_shape)  # x . beta of order 1: tanh neither linear nor flat
    weight = 1.0 + 0.5 * rng.normal(size=normalized_shape)
    return x, dy, (alpha, beta, weight)


def _ours(x, dy, params, normalized_shape, impl="explicit", eps=EPS):
    nx = tn.tensor(x, requires_grad=True)
    nparams = [tn.tensor(p, requires_grad=True) for p in params]
    y = seed_norm(nx, normalized_shape, *nparams, eps=eps, impl=impl)
    y.backward(tn.tensor(dy))
    return y.numpy(), [np.asarray(t.grad) for t in (nx, *nparams)]


@pytest.mark.parametrize(
    ("shape", "normalized_shape"), [((4, 6), (6,)), ((2, 3, 5), (5,)), ((2, 3, 4), (3, 4)), ((3, 1), (1,))]
)
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_seednorm_matches_torch_forward_and_every_gradient(shape, normalized_shape, impl):
    x, dy, params = _random(shape, normalized_shape, np.random.default_rng(0))
    tx = torch.tensor(x, requires_grad=True)
    tparams = [torch.tensor(p, requires_grad=True) for p in params]
    ty = _torch_seed_norm(tx, *tparams, ndim=len(normalized_shape))
    ty.backward(torch.tensor(dy))
    y, grads = _ours(x, dy, params, normalized_shape, impl)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    for name, mine, theirs in zip(("x", "alpha", "beta", "weight"), grads, (tx, *tparams)):
        np.testing.assert_allclose(mine, theirs.grad.numpy(), rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("zero", ["alpha", "beta"])
def test_with_alpha_or_beta_zero_it_is_torchs_rms_norm_with_weight(zero):
    x, dy, (alpha, beta, weight) = _random((4, 7), (7,), np.random.default_rng(1))
    alpha, beta = (0 * alpha, beta) if zero == "alpha" else (alpha, 0 * beta)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    ty = torch.nn.functional.rms_norm(tx, (7,), tw, eps=EPS)
    ty.backward(torch.tensor(dy))
    y, (dx, dalpha, dbeta, dweight) = _ours(x, dy, (alpha, beta, weight), (7,))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dweight, tw.grad.numpy(), rtol=0, atol=1e-12)
    if zero == "beta":  # t = tanh(0) = 0: alpha gets no gradient, beta gets all of dL/dt
        assert np.all(dalpha == 0.0)
        assert np.abs(dbeta).max() > 0.1


def test_a_new_module_is_rmsnorm_and_its_alpha_cannot_move_first():
    module = tn.nn.SeeDNorm(6)
    assert np.all(module.weight.numpy() == 1.0) and np.all(module.beta.numpy() == 0.0)
    assert np.all(module.alpha.numpy() == 1.0)
    assert np.all(tn.nn.SeeDNorm(6, alpha_init=0.1).alpha.numpy() == 0.1)
    x = tn.tensor(np.random.default_rng(2).normal(size=(5, 6)) * 3.0)
    rms = tn.nn.RMSNorm(6)
    np.testing.assert_allclose(module(x).numpy(), rms(x).numpy(), rtol=0, atol=1e-15)
    (module(x) * tn.tensor(np.random.default_rng(3).normal(size=(5, 6)))).sum().backward()
    assert np.all(module.alpha.grad == 0.0) and np.abs(module.beta.grad).max() > 0.1


def test_unlike_rmsnorm_the_output_remembers_the_rows_scale():
    module, _ = NORMS["seednorm"].build("2d", eps=1e-300)  # eps -> 0: RMSNorm exactly scale-invariant
    x = tn.tensor(np.random.default_rng(4).normal(size=(3, 5)))
    y1, y10 = module(x).numpy(), module(x * 10.0).numpy()
    assert np.abs(y10 - y1).max() > 0.1  # tanh(10 x . beta) != tanh(x . beta)
    module.beta.data = module.beta.xp.zeros(5)
    np.testing.assert_allclose(module(x * 10.0).numpy(), module(x).numpy(), rtol=1e-12, atol=1e-12)


def test_dx_along_x_is_exactly_the_path_through_tanh():
    """RMSNorm (eps -> 0) is scale-invariant, so its dx is orthogonal to x; SeeDNorm's is not,
    and what is left, x . dx per row, is ds * s = (1 - t**2) * sum(dy * alpha * xhat) * (x . beta)."""
    x, dy, (alpha, beta, weight) = _random((6, 8), (8,), np.random.default_rng(5))
    _, (dx, *_) = _ours(x, dy, (alpha, beta, weight), (8,), eps=1e-300)
    s = x @ beta
    xhat = x / np.sqrt((x * x).mean(-1, keepdims=True))
    ds = (1 - np.tanh(s) ** 2) * (dy * alpha * xhat).sum(-1)
    np.testing.assert_allclose((x * dx).sum(-1), ds * s, rtol=1e-10, atol=1e-12)
    assert np.abs(ds * s).min() > 1e-3  # the second term is really there


_RIGHT_BACKWARD = seednorm.seed_norm_backward


def _forget_the_path_through_tanh(dy, x, alpha, beta, weight, rstd, t):
    dx, dalpha, dbeta, dweight = _RIGHT_BACKWARD(dy, x, alpha, beta, weight, rstd, t)
    xp = tn.backend.namespace_of(x)
    ds = (1 - t * t) * xp.sum(dy * x * rstd * alpha, axis=-1, keepdims=True)
    return dx - ds * beta, dalpha, dbeta, dweight  # RMSNorm's dx alone, with the row's scale


def _forget_the_tanh_derivative(dy, x, alpha, beta, weight, rstd, t):
    dx, dalpha, dbeta, dweight = _RIGHT_BACKWARD(dy, x, alpha, beta, weight, rstd, t)
    return dx, dalpha, dbeta / (1 - t * t).mean(), dweight


@pytest.mark.parametrize("broken", [_forget_the_path_through_tanh, _forget_the_tanh_derivative])
def test_a_broken_backward_fails_the_gradcheck(broken, monkeypatch):
    monkeypatch.setattr(seednorm, "seed_norm_backward", broken)
    module, x = NORMS["seednorm"].build("2d")
    with tn.kernels.disabled(), pytest.raises(tn.GradcheckError):
        tn.gradcheck(module, x)


# ---- float32 rows of any magnitude ---------------------------------------------------------------
def test_float32_rows_of_any_magnitude_match_float64():
    """Rows from 1e-30 to 1e30: rstd is rescued where x**2 overflows; tanh(x . beta) saturates to
    +-1 for the large rows and is x . beta for the tiny ones; both dtypes agree."""
    magnitudes = 10.0 ** np.arange(-30, 31, 6)
    rng = np.random.default_rng(6)
    module, _ = NORMS["seednorm"].build("3d", dtype="float32")
    x = (rng.standard_normal((len(magnitudes), 3, 4)) * magnitudes.reshape(-1, 1, 1)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    results = {}
    for dtype in ("float32", "float64"):
        module.to(dtype)
        for p in module.parameters():
            p.grad = None
        xt = tn.tensor(x.astype(dtype), requires_grad=True)
        y = module(xt)
        y.backward(tn.tensor(dy.astype(dtype)))
        results[dtype] = [y.numpy(), np.asarray(xt.grad)] + [np.asarray(p.grad) for p in module.parameters()]
    y32, dx32, *params32 = results["float32"]
    y64, dx64, *params64 = results["float64"]
    for name, a, b in (("y", y32, y64), ("dx", dx32, dx64)):
        assert np.all(np.isfinite(a)), f"{name}: non-finite in float32"
        per_row = np.abs(a - b).reshape(len(magnitudes), -1).max(-1)
        size = np.abs(b).reshape(len(magnitudes), -1).max(-1)
        np.testing.assert_array_less(per_row, 1e-4 * size + 1e-30, err_msg=name)
    for a, b in zip(params32, params64):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


# ---- bad input -----------------------------------------------------------------------------------
def _params(n=5):
    return tn.ones(n), tn.zeros(n), tn.ones(n)


def test_a_column_parameter_is_refused_with_the_broadcast_trap_explained():
    alpha, beta, weight = _params()
    with pytest.raises(ValueError, match=r"beta: expected shape \(5,\), got \(5, 1\)\. A \(5, 1\) column"):
        seed_norm(tn.randn(5, 5), 5, alpha, tn.zeros(5, 1), weight)


@pytest.mark.parametrize("name", ["alpha", "beta", "weight"])
def test_a_missing_parameter_is_refused_by_name(name):
    params = dict(zip(("alpha", "beta", "weight"), _params()))
    params[name] = None
    with pytest.raises(TypeError, match=rf"seed_norm: {name} must be a tn.Tensor of shape \(5,\), got None"):
        seed_norm(tn.randn(3, 5), 5, **params)


def test_a_scalar_alpha_is_refused_it_is_per_dimension():
    _, beta, weight = _params()
    with pytest.raises(ValueError, match=r"alpha: expected shape \(5,\), got \(1,\)\. A single value"):
        seed_norm(tn.randn(3, 5), 5, tn.ones(1), beta, weight)


def test_an_input_of_the_wrong_trailing_shape_or_dtype_is_refused():
    module = tn.nn.SeeDNorm(5)
    with pytest.raises(ValueError, match=r"seed_norm: input's trailing shape must equal normalized_shape \(5,\)"):
        module(tn.randn(3, 4))
    with pytest.raises(TypeError, match="seed_norm: input must have a floating dtype, got int64"):
        module(tn.tensor(np.ones((3, 5), dtype=np.int64)))


@pytest.mark.parametrize("bad", ["1", None, float("nan")])
def test_a_bad_alpha_init_is_refused_by_name(bad):
    with pytest.raises(TypeError, match="alpha_init: expected a finite real number"):
        tn.nn.SeeDNorm(5, alpha_init=bad)
