"""DynamicRangeNorm (the seed's custom norm), ScaleNorm and DyT: what makes each of them itself.

The registry-driven tests (test_norms_registry.py) gradcheck every case of every norm; these
tests pin down the variant-specific behaviour: the special values of the learnable
parameters, the clamp, the saturation-free limit, bad input, and that a broken backward
is caught by tn.gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynorm as tn
from tinynorm.norms import _shared
from tinynorm.norms.custom_norm import DynamicRangeNormFunction, eps_raw_for
from tinynorm.norms.dyt import DyTFunction
from tinynorm.norms.scalenorm import ScaleNormFunction
from tinynorm.registry import NORMS

F = tn.nn.functional


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _set(param, value):
    param.data = param.xp.astype(param.xp.asarray(np.asarray(value, dtype=np.float64)), param.dtype)


def _forward_backward(module, x_host, dy_host):
    """Output, dx and the parameter gradients, as host arrays."""
    x = tn.tensor(x_host, requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(dy_host))
    grads = {name: tn.backend.to_numpy(p.grad) for name, p in module.named_parameters()}
    return y.numpy(), tn.backend.to_numpy(x.grad), grads


def _failed_inputs(module, x):
    result = tn.gradcheck(module, x, raise_exception=False)
    assert not result.passed
    return {f.input for f in result.failures}


# ---- DynamicRangeNorm ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_custom_norm_with_p_1_fixed_eps_biased_is_layernorm(backend, impl):
    d = 6
    x, dy, weight, bias = _rand(0, 4, d), _rand(1, 4, d), _rand(2, d), _rand(3, d)
    custom = tn.nn.DynamicRangeNorm(d, eps=1e-3, p=1.0, learnable_eps=False, learnable_p=False, impl=impl)
    layernorm = tn.nn.LayerNorm(d, eps=1e-3)
    for module in (custom, layernorm):
        _set(module.weight, weight)
        _set(module.bias, bias)
    y_c, dx_c, g_c = _forward_backward(custom, x, dy)
    y_l, dx_l, g_l = _forward_backward(layernorm, x, dy)
    assert set(g_c) == {"weight", "bias"}  # fixed p and eps are plain floats, not parameters
    np.testing.assert_allclose(y_c, y_l, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_c, dx_l, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g_c["weight"], g_l["weight"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(g_c["bias"], g_l["bias"], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_custom_norm_with_p_0_only_centres(backend, impl):
    d = 5
    x, dy, weight, bias = 10 * _rand(0, 3, d), _rand(1, 3, d), _rand(2, d), _rand(3, d)
    module = tn.nn.DynamicRangeNorm(d, eps=0.5, p=0.0, learnable_p=False, impl=impl)
    _set(module.weight, weight)
    _set(module.bias, bias)
    y, dx, grads = _forward_backward(module, x, dy)
    np.testing.assert_allclose(y, (x - x.mean(-1, keepdims=True)) * weight + bias, rtol=1e-12, atol=1e-12)
    # Centering is linear: dx = g - mean(g), and nothing depends on eps any more.
    g = dy * weight
    np.testing.assert_allclose(dx, g - g.mean(-1, keepdims=True), rtol=1e-12, atol=1e-12)
    assert grads["eps_raw"] == 0.0


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_unbiased_differs_from_biased_by_the_variance_factor(backend, p):
    # y is proportional to var**(-p/2), and var_unbiased = var_biased * N / (N - 1).
    d = 4
    x = _rand(0, 3, d)
    kwargs = {"eps": 1e-14, "p": p, "learnable_eps": False}
    biased = tn.nn.DynamicRangeNorm(d, unbiased=False, **kwargs)(tn.tensor(x)).numpy()
    unbiased = tn.nn.DynamicRangeNorm(d, unbiased=True, **kwargs)(tn.tensor(x)).numpy()
    np.testing.assert_allclose(unbiased / biased, ((d - 1) / d) ** (p / 2), rtol=1e-10)
    if p == 1.0:  # the seed's x.var(1) made LayerNorm's output smaller by sqrt((N-1)/N)
        np.testing.assert_allclose(unbiased / biased, math.sqrt(3 / 4), rtol=1e-10)


@given(st.integers(1, 4), st.integers(2, 8), st.floats(0.0, 1.0), st.booleans(), st.integers(0, 2**31 - 1))
def test_custom_norm_dx_rows_sum_to_zero_for_every_p(n, d, p, unbiased, seed):
    # Centering comes first, so adding a constant to a row changes nothing, whatever p is.
    module = tn.nn.DynamicRangeNorm(d, eps=0.1, p=p, unbiased=unbiased)
    _set(module.weight, _rand(seed + 2, d))
    x, dy = _rand(seed, n, d), _rand(seed + 1, n, d)
    _, dx, _ = _forward_backward(module, x, dy)
    np.testing.assert_allclose(np.sum(dx, axis=-1), 0.0, atol=1e-12 * d * (1 + np.abs(dx).max()))


def test_learnable_eps_starts_at_eps_and_stays_positive(backend):
    module = tn.nn.DynamicRangeNorm(3)
    assert module.eps == pytest.approx(1e-5, rel=1e-9)
    constant_rows = np.full((2, 3), 7.0)
    for raw, expected_eps in [(-1000.0, 1e-8), (-40.0, 1e-8 + math.exp(-40.0)), (1000.0, 1000.0 + 1e-8)]:
        _set(module.eps_raw, raw)
        assert module.eps == pytest.approx(expected_eps, rel=1e-12) and module.eps > 0
        # A constant row has var = 0: only eps keeps (var + eps)**(-p/2) finite.
        y, dx, grads = _forward_backward(module, constant_rows, _rand(1, 2, 3))
        np.testing.assert_array_equal(y, np.zeros((2, 3)))  # bias is zeros
        assert np.isfinite(dx).all() and all(np.isfinite(g).all() for g in grads.values())


def test_eps_raw_gradient_is_sigmoid_times_eps_gradient(backend):
    # Chain rule through eps = eps_min + softplus(eps_raw): d eps / d eps_raw = sigmoid(eps_raw).
    d, x, dy = 4, _rand(0, 3, 4), _rand(1, 3, 4)
    learnable = tn.nn.DynamicRangeNorm(d, eps=0.3, p=0.7, learnable_p=False)
    _, _, grads = _forward_backward(learnable, x, dy)
    h = 1e-6
    shifted = [
        tn.nn.DynamicRangeNorm(d, eps=0.3 + s, p=0.7, learnable_eps=False, learnable_p=False)(tn.tensor(x)).numpy()
        for s in (h, -h)
    ]
    deps = np.sum(dy * (shifted[0] - shifted[1]) / (2 * h))
    raw = eps_raw_for(0.3)
    np.testing.assert_allclose(grads["eps_raw"], deps / (1 + math.exp(-raw)), rtol=1e-6)


def test_custom_norm_bad_input_is_rejected_with_the_argument_named():
    x = tn.tensor(_rand(0, 2, 1))
    with pytest.raises(ValueError, match=r"unbiased: .*N - 1 = 0"):
        tn.nn.DynamicRangeNorm(1, unbiased=True)
    with pytest.raises(ValueError, match=r"unbiased: .*N - 1 = 0"):
        F.dynamic_range_norm(x, 1, unbiased=True)
    for bad_p in (-0.1, 1.5, float("nan"), True, "1"):
        with pytest.raises(ValueError, match=r"p: expected a number in \[0, 1\]"):
            tn.nn.DynamicRangeNorm(4, p=bad_p)
        with pytest.raises(ValueError, match=r"p: expected a number in \[0, 1\]"):
            F.dynamic_range_norm(tn.tensor(_rand(0, 2, 4)), 4, p=bad_p)
    with pytest.raises(ValueError, match=r"p: expected shape \(\), got \(1,\)"):
        F.dynamic_range_norm(tn.tensor(_rand(0, 2, 4)), 4, p=tn.tensor([0.5]))
    with pytest.raises(ValueError, match="not both"):
        F.dynamic_range_norm(tn.tensor(_rand(0, 2, 4)), 4, eps=1e-5, eps_raw=tn.tensor(0.0))
    with pytest.raises(ValueError, match="eps: expected a positive number"):
        tn.nn.DynamicRangeNorm(4, eps=0.0)
    with pytest.raises(ValueError, match="eps: a learnable eps must start above eps_min"):
        tn.nn.DynamicRangeNorm(4, eps=1e-9)
    with pytest.raises(ValueError, match="eps_min: expected a positive floor"):
        tn.nn.DynamicRangeNorm(4, eps_min=0.0)
    with pytest.raises(ValueError, match=r"trailing shape must equal normalized_shape \(4,\)"):
        tn.nn.DynamicRangeNorm(4)(tn.tensor(_rand(0, 4, 3)))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(4, 1\)"):
        F.dynamic_range_norm(tn.tensor(_rand(0, 4, 4)), 4, weight=tn.ones(4, 1))


def _custom_norm_step(block_bytes, threads, monkeypatch):
    monkeypatch.setattr(_shared, "ROW_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(_shared, "THREADS", threads)
    monkeypatch.setattr(_shared, "PARALLEL_MIN_BYTES", 0)
    module, _ = NORMS["custom_norm"].build("3d")  # learnable p and eps, unbiased
    x, dy = _rand(0, 7, 3, 4), _rand(1, 7, 3, 4)
    y, dx, grads = _forward_backward(module, x, dy)
    return [y, dx] + list(grads.values())


def test_custom_norm_blocked_equals_unblocked_to_1e12(monkeypatch):
    whole = _custom_norm_step(2**62, 1, monkeypatch)
    one_row_blocks = _custom_norm_step(1, 2, monkeypatch)
    assert len(whole) == 6  # y, dx, weight, bias, eps_raw, p
    for a, b in zip(whole, one_row_blocks):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def test_gradcheck_catches_a_backward_that_divides_by_n_instead_of_n_minus_1(monkeypatch):
    module, x = NORMS["custom_norm"].build("3d")  # the unbiased case
    assert module.unbiased and tn.gradcheck(module, x)
    correct = DynamicRangeNormFunction.backward

    def biased_backward(ctx, dy):  # the forward divided by N - 1, this backward by N
        ctx.saved_tensors = ctx.saved_tensors[:-1] + (0,)
        return correct(ctx, dy)

    monkeypatch.setattr(DynamicRangeNormFunction, "backward", staticmethod(biased_backward))
    # Only dx has the divisor D in its formula (dp and deps_raw see var through rstd alone).
    assert _failed_inputs(module, x) == {"input 0"}


# ---- ScaleNorm ------------------------------------------------------------------------------------
def test_scalenorm_at_init_scales_every_row_to_norm_sqrt_n(backend):
    for shape, n in [(7, 7), ((3, 4), 12)]:
        x = _rand(0, 5, *((shape,) if isinstance(shape, int) else shape))
        y = tn.nn.ScaleNorm(shape)(tn.tensor(100 * x)).numpy()
        norms = np.sqrt(np.sum(y.reshape(5, n) ** 2, axis=-1))
        np.testing.assert_allclose(norms, math.sqrt(n), rtol=1e-12)


def test_scalenorm_dx_rows_are_orthogonal_to_x(backend):
    # Scaling a row does not change its direction, so moving x along itself changes nothing.
    x, dy = _rand(0, 4, 6), _rand(1, 4, 6)
    _, dx, _ = _forward_backward(tn.nn.ScaleNorm(6), x, dy)
    np.testing.assert_allclose(np.sum(dx * x, axis=-1), 0.0, atol=1e-13)
    assert np.abs(dx).max() > 0.1


def test_scalenorm_clamp_branch_gradient_is_g_dy_over_eps(backend):
    eps, g = 1e-2, 1.7
    x = np.concatenate([1e-3 * _rand(0, 2, 3), np.zeros((1, 3)), _rand(1, 1, 3)])  # 3 clamped rows, 1 not
    dy = _rand(2, 4, 3)
    module = tn.nn.ScaleNorm(3, eps=eps)
    _set(module.g, g)
    y, dx, grads = _forward_backward(module, x, dy)
    np.testing.assert_allclose(y[:3], g * x[:3] / eps, rtol=1e-12)
    np.testing.assert_allclose(dx[:3], g * dy[:3] / eps, rtol=1e-12)  # eps is a constant: no projection
    u = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)
    np.testing.assert_allclose(dx[3], (g / np.linalg.norm(x[3])) * (dy[3] - u[3] * np.sum(dy[3] * u[3])), rtol=1e-12)
    np.testing.assert_allclose(grads["g"], np.sum(dy * u), rtol=1e-12)
    # Away from the zero row (where the reference's sqrt has no gradient) the check passes
    # on both branches at once.
    xt = tn.tensor(np.delete(x, 2, axis=0), requires_grad=True)
    assert tn.gradcheck(module, xt, eps=1e-8)


def test_scalenorm_bad_input_is_rejected_with_the_argument_named():
    for bad_eps in (0.0, -1e-5):
        with pytest.raises(ValueError, match="eps: expected a positive number"):
            tn.nn.ScaleNorm(4, eps=bad_eps)
        with pytest.raises(ValueError, match="eps: expected a positive number"):
            F.scale_norm(tn.tensor(_rand(0, 2, 4)), 4, g=2.0, eps=bad_eps)
    with pytest.raises(ValueError, match=r"normalized_shape: expected a positive int"):
        tn.nn.ScaleNorm(0)
    with pytest.raises(ValueError, match=r"trailing shape must equal normalized_shape \(4,\)"):
        tn.nn.ScaleNorm(4)(tn.tensor(_rand(0, 4, 5)))
    with pytest.raises(ValueError, match=r"g: expected shape \(\), got \(4,\)"):
        F.scale_norm(tn.tensor(_rand(0, 2, 4)), 4, g=tn.ones(4))
    with pytest.raises(ValueError, match="g: expected a finite number"):
        F.scale_norm(tn.tensor(_rand(0, 2, 4)), 4, g=float("inf"))


def test_gradcheck_catches_a_scalenorm_backward_without_the_projection(monkeypatch):
    module, x = NORMS["scalenorm"].build("2d")
    assert tn.gradcheck(module, x)
    correct = ScaleNormFunction.backward

    def backward_without_projection(ctx, dy):  # treats every row as clamped: dx = g * dy / norm
        x_, g, denom, unclamped, axes = ctx.saved_tensors
        ctx.saved_tensors = (x_, g, denom, unclamped & False, axes)
        return correct(ctx, dy)

    monkeypatch.setattr(ScaleNormFunction, "backward", staticmethod(backward_without_projection))
    assert _failed_inputs(module, x) == {"input 0"}


def _registry_step(name, block_bytes, threads, monkeypatch):
    """Output and every gradient of the registry's "3d" case of ``name`` on a (7, 3, 4) input."""
    monkeypatch.setattr(_shared, "ROW_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(_shared, "THREADS", threads)
    monkeypatch.setattr(_shared, "PARALLEL_MIN_BYTES", 0)
    module, _ = NORMS[name].build("3d")
    y, dx, grads = _forward_backward(module, _rand(0, 7, 3, 4), _rand(1, 7, 3, 4))
    return [y, dx] + list(grads.values())


def test_scalenorm_blocked_equals_unblocked_to_1e12(monkeypatch):
    whole = _registry_step("scalenorm", 2**62, 1, monkeypatch)
    one_row_blocks = _registry_step("scalenorm", 1, 2, monkeypatch)
    assert len(whole) == 3  # y, dx, g
    for a, b in zip(whole, one_row_blocks):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


# ---- DyT ------------------------------------------------------------------------------------------
def test_dyt_with_tiny_alpha_is_linear(backend):
    # tanh(a) = a - a**3/3 + ...: for alpha = 1e-4 and |x| < 5 the cubic term is below 5e-11.
    d, alpha = 5, 1e-4
    x, weight, bias = _rand(0, 3, d), _rand(1, d), _rand(2, d)
    module = tn.nn.DyT(d, alpha_init=alpha)
    _set(module.weight, weight)
    _set(module.bias, bias)
    y, dx, grads = _forward_backward(module, x, np.ones((3, d)))
    np.testing.assert_allclose(y, weight * alpha * x + bias, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dx, np.broadcast_to(weight * alpha, (3, d)), rtol=1e-7)
    np.testing.assert_allclose(grads["alpha"], np.sum(weight * x), rtol=1e-7)


def test_dyt_saturates_instead_of_normalizing(backend):
    # No statistics: scaling the input does not cancel (a norm's output would not change);
    # large inputs land on weight * sign(x) + bias.
    module = tn.nn.DyT(4)
    x = np.array([[1e3, -1e3, 2e3, -5e2]])
    y, dx, grads = _forward_backward(module, x, _rand(0, 1, 4))
    np.testing.assert_array_equal(y, np.sign(x))
    np.testing.assert_array_equal(dx, np.zeros((1, 4)))  # saturated: 1 - tanh**2 rounds to 0
    assert grads["alpha"] == 0.0
    small = module(tn.tensor(1e-6 * x)).numpy()  # entries up to 2e-3: the output shrinks with them
    np.testing.assert_allclose(small, 0.5e-6 * x, rtol=1e-6)  # tanh(alpha x) ~ alpha x


def test_dyt_bad_input_is_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="alpha: expected a finite number"):
        tn.nn.DyT(4, alpha_init=float("nan"))
    with pytest.raises(ValueError, match=r"alpha: expected shape \(\), got \(2,\)"):
        F.dyt(tn.tensor(_rand(0, 2, 4)), 4, alpha=tn.ones(2))
    with pytest.raises(ValueError, match=r"trailing shape must equal normalized_shape \(4,\)"):
        tn.nn.DyT(4)(tn.tensor(_rand(0, 4, 2)))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(4, 1\)"):
        F.dyt(tn.tensor(_rand(0, 4, 4)), 4, alpha=0.5, weight=tn.ones(4, 1))


def test_gradcheck_catches_a_dyt_backward_with_the_wrong_sign_in_dalpha(monkeypatch):
    module, x = NORMS["dyt"].build("2d")
    assert tn.gradcheck(module, x)
    correct = DyTFunction.backward

    def wrong_sign(ctx, dy):
        dx, dalpha, dweight, dbias = correct(ctx, dy)
        return dx, -dalpha, dweight, dbias

    monkeypatch.setattr(DyTFunction, "backward", staticmethod(wrong_sign))
    assert _failed_inputs(module, x) == {"alpha"}


def test_dyt_blocked_equals_unblocked_to_1e12(monkeypatch):
    whole = _registry_step("dyt", 2**62, 1, monkeypatch)
    one_row_blocks = _registry_step("dyt", 1, 2, monkeypatch)
    assert len(whole) == 5  # y, dx, alpha, weight, bias
    for a, b in zip(whole, one_row_blocks):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)
