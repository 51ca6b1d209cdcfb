"""DynamicRangeNorm (the learnable-strength custom norm), ScaleNorm and DyT: what makes each
of them itself.

The registry-driven tests (test_norms_registry.py) gradcheck every case of every norm; these
tests pin down the variant-specific behaviour: the special values of the learnable
parameters, the clamp, tiny, huge and non-finite rows, the saturation-free limit, bad
input, and that a broken backward is caught by tn.gradcheck.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynorm as tn
from tinynorm import kernels
from tinynorm.kernels import blocks
from tinynorm.norms import custom_norm, dyt, scalenorm
from tinynorm.norms.custom_norm import eps_raw_for
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


def _failed_inputs(module, x, lesson, name, broken, monkeypatch):
    """The inputs whose gradient check fails once ``broken`` replaces the lesson's ``name``
    (kernels off, so the lesson is what runs)."""
    with kernels.disabled():
        assert tn.gradcheck(module, x)
        monkeypatch.setattr(lesson, name, broken)
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
    for bad_p in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"p: expected a number in \[0, 1\]"):
            tn.nn.DynamicRangeNorm(4, p=bad_p)
        with pytest.raises(ValueError, match=r"p: expected a number in \[0, 1\]"):
            F.dynamic_range_norm(tn.tensor(_rand(0, 2, 4)), 4, p=bad_p)
    for bad_p in (True, "1", None):
        with pytest.raises(TypeError, match=r"p: expected a number in \[0, 1\] or a 0-d tn.Tensor, got "):
            tn.nn.DynamicRangeNorm(4, p=bad_p)
        with pytest.raises(TypeError, match=r"p: expected a number in \[0, 1\] or a 0-d tn.Tensor, got "):
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


def test_gradcheck_catches_a_backward_that_divides_by_n_instead_of_n_minus_1(monkeypatch):
    module, x = NORMS["custom_norm"].build("3d")  # the unbiased case
    assert module.unbiased
    correct = custom_norm.dynamic_range_norm_backward

    def biased_backward(dy, x, weight, mean, rstd, p, correction, with_bias):  # the forward divided by N - 1
        return correct(dy, x, weight, mean, rstd, p, 0, with_bias)

    # Only dx has the divisor D in its formula (dp and deps_raw see var through rstd alone).
    assert _failed_inputs(module, x, custom_norm, "dynamic_range_norm_backward", biased_backward, monkeypatch) == {
        "input 0"
    }


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
    with pytest.raises(TypeError, match="g: expected a finite real number, got inf"):
        F.scale_norm(tn.tensor(_rand(0, 2, 4)), 4, g=float("inf"))


def test_gradcheck_catches_a_scalenorm_backward_without_the_projection(monkeypatch):
    module, x = NORMS["scalenorm"].build("2d")

    def backward_without_projection(dy, x, g, norm, eps):  # treats every row as clamped: dx = g * dy / norm
        return g * dy / norm, np.sum(dy * x / norm)

    assert _failed_inputs(module, x, scalenorm, "scale_norm_backward", backward_without_projection, monkeypatch) == {
        "input 0"
    }


def test_scalenorm_tiny_rows_are_divided_by_their_norm_not_by_eps(backend):
    # sum(x**2) underflows to 0 for float32 rows of 1e-30 and float64 rows of 1e-200; the norm must not.
    x, dy = _rand(0, 3, 4), _rand(1, 3, 4)
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    module = tn.nn.ScaleNorm(4)
    y1, dx1, grads1 = _forward_backward(module, x, dy)
    for dtype, scale, eps in [("float32", 1e-30, 1e-37), ("float64", 1e-200, 1e-300)]:
        module = tn.nn.ScaleNorm(4, eps=eps).to(dtype)
        y, dx, grads = _forward_backward(module, (scale * x).astype(dtype), dy.astype(dtype))
        rtol = 1e-6 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(y, 2.0 * u, rtol=rtol)  # g = sqrt(4): rows of norm 2, as for ordinary rows
        np.testing.assert_allclose(y, y1, rtol=rtol)
        np.testing.assert_allclose(dx * scale, dx1, rtol=10 * rtol, atol=10 * rtol)  # dx(c x) = dx(x) / c
        np.testing.assert_allclose(grads["g"], grads1["g"], rtol=10 * rtol)


def test_scalenorm_rows_with_a_nan_or_an_inf_give_nan(backend):
    x, dy = _rand(0, 3, 4), _rand(1, 3, 4)
    x[1, 2], x[2, 0] = np.nan, np.inf
    y, dx, grads = _forward_backward(tn.nn.ScaleNorm(4), x, dy)
    assert np.isnan(y[1:]).all() and np.isnan(dx[1:]).all()  # no direction: nothing finite comes out
    assert np.isnan(grads["g"])
    y0, dx0, _ = _forward_backward(tn.nn.ScaleNorm(4), x[:1], dy[:1])
    np.testing.assert_allclose(y[0], y0[0], rtol=1e-15)  # the other rows are untouched
    np.testing.assert_allclose(dx[0], dx0[0], rtol=1e-15)


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
    with pytest.raises(TypeError, match="alpha_init: expected a finite real number, got nan"):
        tn.nn.DyT(4, alpha_init=float("nan"))
    with pytest.raises(
        TypeError, match=r"alpha: expected a real number \(fixed\) or a 0-d tn.Tensor \(learnable\), got"
    ):
        F.dyt(tn.tensor(_rand(0, 2, 4)), 4, alpha="0.5")
    with pytest.raises(ValueError, match=r"alpha: expected shape \(\), got \(2,\)"):
        F.dyt(tn.tensor(_rand(0, 2, 4)), 4, alpha=tn.ones(2))
    with pytest.raises(ValueError, match=r"trailing shape must equal normalized_shape \(4,\)"):
        tn.nn.DyT(4)(tn.tensor(_rand(0, 4, 2)))
    with pytest.raises(ValueError, match=r"weight: expected shape \(4,\), got \(4, 1\)"):
        F.dyt(tn.tensor(_rand(0, 4, 4)), 4, alpha=0.5, weight=tn.ones(4, 1))


def test_gradcheck_catches_a_dyt_backward_with_the_wrong_sign_in_dalpha(monkeypatch):
    module, x = NORMS["dyt"].build("2d")
    correct = dyt.dyt_backward

    def wrong_sign(dy, x, alpha, weight, with_bias):
        dx, dalpha, dweight, dbias = correct(dy, x, alpha, weight, with_bias)
        return dx, -dalpha, dweight, dbias

    assert _failed_inputs(module, x, dyt, "dyt_backward", wrong_sign, monkeypatch) == {"alpha"}


# ---- the kernels compute what the lessons compute, over many row blocks on two threads -----------
@pytest.mark.parametrize("name", ["custom_norm", "scalenorm", "dyt"])
def test_kernel_in_one_row_blocks_equals_the_lesson_to_1e12(name, monkeypatch):
    monkeypatch.setattr(blocks, "ROW_BLOCK_BYTES", 1)
    monkeypatch.setattr(blocks, "THREADS", 2)
    monkeypatch.setattr(blocks, "PARALLEL_MIN_BYTES", 0)

    def step():
        module, _ = NORMS[name].build("3d")  # custom_norm: learnable p and eps, unbiased
        y, dx, grads = _forward_backward(module, _rand(0, 7, 3, 4), _rand(1, 7, 3, 4))
        return [y, dx] + list(grads.values())

    fast = step()
    with kernels.disabled():
        plain = step()
    assert len(fast) == {"custom_norm": 6, "scalenorm": 3, "dyt": 5}[name]  # y, dx and every parameter
    for a, b in zip(fast, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---- arguments are checked up front; float32 is right at any magnitude ---------------------------
def _call(name, x, **given):
    """The functional form of ``name`` on rows of 4 features, every parameter a valid Tensor unless given."""
    if name == "custom_norm":
        learnable_eps = {} if "eps" in given else {"eps_raw": tn.tensor(-2.0)}
        params = {"weight": tn.ones(4), "bias": tn.zeros(4), "p": tn.tensor(0.5)} | learnable_eps
        return F.dynamic_range_norm(x, 4, **(params | given))
    if name == "scalenorm":
        return F.scale_norm(x, 4, **({"g": tn.tensor(2.0)} | given))
    return F.dyt(x, 4, **({"alpha": tn.tensor(0.5), "weight": tn.ones(4), "bias": tn.zeros(4)} | given))


@pytest.mark.parametrize("eps", ["1e-5", [1e-5]])
@pytest.mark.parametrize("name", ["custom_norm", "scalenorm"])
def test_a_functional_eps_that_is_not_a_number_is_refused_naming_eps(name, eps):
    # The modules' eps: tests/test_norm_arguments.py, for every norm.
    with pytest.raises(TypeError, match=r"eps: expected a finite real number, got "):
        _call(name, tn.tensor(_rand(0, 3, 4)), eps=eps)


def test_scalenorm_eps_none_is_refused_and_custom_norm_eps_none_means_learnable_or_1e_5():
    with pytest.raises(TypeError, match=r"eps: expected a finite real number, got None"):
        tn.nn.ScaleNorm(4, eps=None)
    with pytest.raises(TypeError, match=r"eps: expected a finite real number, got None"):
        tn.nn.DynamicRangeNorm(4, eps=None)  # the module's eps is a number: the (initial) epsilon
    x = tn.tensor(_rand(0, 3, 4))
    np.testing.assert_array_equal(F.dynamic_range_norm(x, 4, eps=None).numpy(), F.dynamic_range_norm(x, 4).numpy())


@pytest.mark.parametrize("name", ["custom_norm", "scalenorm"])
def test_a_functional_eps_that_rounds_to_0_in_float32_is_refused(name):
    zero_rows = np.zeros((3, 4))  # only eps keeps a zero row away from 0/0
    with pytest.raises(ValueError, match=r"eps: 1e-50 rounds to 0 in float32"):
        _call(name, tn.tensor(zero_rows, dtype="float32"), eps=1e-50)
    assert np.isfinite(_call(name, tn.tensor(zero_rows), eps=1e-50).numpy()).all()  # fine in float64


def test_custom_norm_eps_min_is_checked_as_eps_is():
    with pytest.raises(TypeError, match=r"eps_min: expected a finite real number, got '1e-8'"):
        tn.nn.DynamicRangeNorm(4, eps_min="1e-8")
    with pytest.raises(TypeError, match=r"eps_min: expected a finite real number, got None"):
        _call("custom_norm", tn.tensor(_rand(0, 3, 4)), eps_min=None)
    # A floor of 1e-50 is no floor in float32: softplus(eps_raw) may underflow to 0 there.
    x32 = tn.tensor(np.zeros((3, 4)), dtype="float32")
    with pytest.raises(ValueError, match=r"1e-50 rounds to 0 in float32"):
        _call("custom_norm", x32, eps_raw=tn.tensor(-800.0), eps_min=1e-50)
    module = tn.nn.DynamicRangeNorm(4, eps=1e-5, eps_min=1e-50)  # fine in float64
    assert np.isfinite(module(tn.tensor(np.zeros((3, 4)))).numpy()).all()


@pytest.mark.parametrize("given", [lambda a: np.atleast_1d(a).tolist(), lambda a: a], ids=["list", "ndarray"])
@pytest.mark.parametrize(
    "name, param, shape",
    [
        ("custom_norm", "weight", (4,)),
        ("custom_norm", "bias", (4,)),
        ("custom_norm", "p", ()),
        ("custom_norm", "eps_raw", ()),
        ("scalenorm", "g", ()),
        ("dyt", "alpha", ()),
        ("dyt", "weight", (4,)),
        ("dyt", "bias", (4,)),
    ],
)
def test_a_parameter_that_is_not_a_tensor_is_refused_naming_it(name, param, shape, given):
    value = given(np.full(shape, 0.5))
    with pytest.raises(TypeError, match=rf"^{param}: expected .*tn.Tensor.* got {type(value).__name__}"):
        _call(name, tn.tensor(_rand(0, 3, 4)), **{param: value})


@pytest.mark.parametrize("size", [8.0, None, "8"])
@pytest.mark.parametrize("name", ["custom_norm", "scalenorm", "dyt"])
def test_a_size_that_is_not_a_positive_int_is_refused(name, size):
    with pytest.raises(ValueError, match=r"^normalized_shape: expected a positive int"):
        NORMS[name].module(size)


@pytest.mark.parametrize("name", ["custom_norm", "scalenorm", "dyt"])
def test_a_numpy_int_size_is_accepted_as_pytorch_accepts_it(name):
    module = NORMS[name].module(np.int64(8))
    assert module(tn.tensor(_rand(0, 3, 8))).shape == (3, 8)


def _results(module, x_host, dy_host):
    y, dx, grads = _forward_backward(module, x_host, dy_host)
    return [y, dx] + list(grads.values())


def test_custom_norm_on_float32_input_computes_in_float32():
    # Every norm, to float32 rounding: tests/test_norm_arguments.py. With p and eps fixed (plain
    # floats, the same in both), the default module's arithmetic is the float32 module's, bit for bit.
    fixed = {"learnable_eps": False, "learnable_p": False}
    default, x = NORMS["custom_norm"].build("3d", **fixed)  # float64 parameters, as built with defaults
    cast, _ = NORMS["custom_norm"].build("3d", dtype="float32", **fixed)  # the same after .to("float32")
    x32, dy32 = x.numpy().astype(np.float32), _rand(1, *x.shape).astype(np.float32)
    got, want = _results(default, x32, dy32), _results(cast, x32, dy32)
    assert got[0].dtype == got[1].dtype == np.float32
    assert [p.grad.dtype for p in default.parameters()] == [np.float64, np.float64]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b.astype(a.dtype))


def _custom_norm_beyond_its_initial_range():
    """A DynamicRangeNorm as training may leave it: p moved above 1, eps near a tiny floor."""
    module = tn.nn.DynamicRangeNorm((3, 4), eps=1e-36, eps_min=1e-37)
    _set(module.p, 1.5)
    _set(module.weight, 1 + 0.5 * _rand(2, 3, 4))
    return module.to("float32")


@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
@pytest.mark.parametrize("name", ["custom_norm", "custom_norm_beyond", "scalenorm", "dyt"])
def test_float32_rows_of_extreme_magnitude_match_float64_forward_and_backward(name, magnitude):
    if name == "custom_norm_beyond":
        module, shape = _custom_norm_beyond_its_initial_range(), (2, 3, 4)
    else:
        module, x = NORMS[name].build("3d", dtype="float32")
        shape = x.shape
    x_host, dy_host = magnitude * _rand(0, *shape), _rand(1, *shape)
    got = _results(module, x_host.astype(np.float32), dy_host.astype(np.float32))
    want = _results(module.to("float64"), x_host, dy_host)
    for i, (a, b) in enumerate(zip(got, want)):
        # Right to float32 rounding wherever float32 can hold the result (not below its smallest normal).
        atol = 1e-5 * np.abs(b).max() + np.finfo(np.float32).smallest_normal
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol, err_msg=f"{name}: result {i}")
