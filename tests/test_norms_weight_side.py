"""The weight-side norms (``tinynorm/norms/weight_side.py``): WeightNormLinear against PyTorch's
``weight_norm(torch.nn.Linear, dim=0)`` and WSLinear against the same formula composed in torch,
forward and every gradient to 1e-10 in float64; the properties their derivation rests on; rows of
any magnitude; and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.norms import weight_side
from tinynorm.norms.weight_side import weight_norm_linear, ws_linear

OUT, IN = 4, 5


def _eye(dtype="float64"):
    """The identity as input: ``x @ W.T + 0`` is then ``W.T``, the weight the layer uses."""
    return tn.tensor(np.eye(IN), dtype=dtype)


def _params(rng, bias=True):
    v = rng.standard_normal((OUT, IN))
    g = np.linalg.norm(v, axis=1) * rng.uniform(0.5, 2.0, OUT)  # off its init: W != v
    return g, v, (rng.standard_normal(OUT) if bias else None)


def _tn_grads(fn, x, dy, *params):
    nx = tn.tensor(x, requires_grad=True)
    nps = [None if p is None else tn.tensor(p, requires_grad=True) for p in params]
    y = fn(nx, *nps)
    y.backward(tn.tensor(dy))
    return y.numpy(), [np.asarray(nx.grad)] + [None if p is None else np.asarray(p.grad) for p in nps]


def _assert_all_close(ours, theirs):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if b is None:
            assert a is None, i
            continue
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=f"result {i}")


# ---- the oracles -------------------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("x_shape", [(6, IN), (2, 3, IN)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_weight_norm_matches_torchs_weight_norm_parametrization(x_shape, bias, impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    g, v, b = _params(rng, bias)
    x, dy = rng.standard_normal(x_shape), rng.standard_normal(x_shape[:-1] + (OUT,))
    layer = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(IN, OUT, bias=bias).double(), dim=0)
    original = layer.parametrizations.weight
    with torch.no_grad():
        original.original0.copy_(torch.tensor(g).reshape(OUT, 1))  # torch's g is a column
        original.original1.copy_(torch.tensor(v))
        if bias:
            layer.bias.copy_(torch.tensor(b))
    tx = torch.tensor(x, requires_grad=True)
    ty = layer(tx)
    ty.backward(torch.tensor(dy))
    theirs = [tx.grad.numpy(), original.original0.grad.numpy().reshape(OUT), original.original1.grad.numpy()]
    theirs.append(layer.bias.grad.numpy() if bias else None)
    y, ours = _tn_grads(lambda *a: weight_norm_linear(*a, impl=impl), x, dy, g, v, b)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    _assert_all_close(ours, theirs)


@pytest.mark.torch
@pytest.mark.parametrize("x_shape", [(6, IN), (2, 3, IN)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_weight_std_matches_the_formula_composed_in_torch(x_shape, bias, impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w, b = rng.standard_normal((OUT, IN)), rng.standard_normal(OUT) if bias else None
    x, dy = rng.standard_normal(x_shape), rng.standard_normal(x_shape[:-1] + (OUT,))
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True) if bias else None
    centered = tw - tw.mean(dim=1, keepdim=True)
    w_hat = centered / torch.sqrt(tw.var(dim=1, unbiased=False, keepdim=True) + 1e-5)
    ty = torch.nn.functional.linear(tx, w_hat, tb)
    ty.backward(torch.tensor(dy))
    theirs = [tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy() if bias else None]
    y, ours = _tn_grads(lambda *a: ws_linear(*a, eps=1e-5, impl=impl), x, dy, w, b)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    _assert_all_close(ours, theirs)


# ---- init --------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", [tn.nn.WeightNormLinear, tn.nn.WSLinear])
def test_the_init_is_linears_drawn_the_same_way(module):
    tn.manual_seed(3)
    plain = tn.nn.Linear(IN, OUT)
    tn.manual_seed(3)
    layer = module(IN, OUT)
    raw = layer.v if module is tn.nn.WeightNormLinear else layer.weight
    np.testing.assert_array_equal(raw.numpy(), plain.weight.numpy())
    np.testing.assert_array_equal(layer.bias.numpy(), plain.bias.numpy())


def test_weight_norm_starts_as_the_plain_linear():
    tn.manual_seed(4)
    plain = tn.nn.Linear(IN, OUT)
    tn.manual_seed(4)
    layer = tn.nn.WeightNormLinear(IN, OUT)
    assert layer.g.shape == (OUT,) and layer.v.shape == (OUT, IN)
    np.testing.assert_allclose(layer.g.numpy(), np.linalg.norm(plain.weight.numpy(), axis=1), rtol=1e-15)
    np.testing.assert_allclose(layer.normalized_weight().numpy(), plain.weight.numpy(), rtol=1e-14, atol=1e-16)
    x = tn.randn(3, IN)
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=1e-13, atol=1e-15)
    assert [name for name, _ in layer.named_parameters()] == ["g", "v", "bias"]
    assert tn.nn.WeightNormLinear(IN, OUT, bias=False).bias is None


# ---- the properties the derivation rests on -----------------------------------------------------
def test_weight_norm_ignores_the_length_of_each_row_of_v():
    rng = np.random.default_rng(5)
    g, v, _ = _params(rng)
    scales = np.array([1e-3, 1.0, 7.0, 1e4]).reshape(OUT, 1)
    w = weight_norm_linear(_eye(), tn.tensor(g), tn.tensor(v)).numpy()
    w_scaled = weight_norm_linear(_eye(), tn.tensor(g), tn.tensor(v * scales)).numpy()
    np.testing.assert_allclose(w_scaled, w, rtol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), np.abs(g), rtol=1e-13)  # columns of x@W.T: rows of W


def test_each_row_of_dv_is_orthogonal_to_that_row_of_v_and_dg_is_the_part_along_it():
    rng = np.random.default_rng(6)
    g, v, b = _params(rng)
    x, dy = rng.standard_normal((7, IN)), rng.standard_normal((7, OUT))
    _, (_, dg, dv, _) = _tn_grads(weight_norm_linear, x, dy, g, v, b)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    dweight = dy.T @ x  # what the matmul sends to W
    np.testing.assert_allclose(np.sum(dv * v, axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(dg, np.sum(dweight * u, axis=1), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(dv, axis=1), (g / np.linalg.norm(v, axis=1)) * np.linalg.norm(
        dweight - u * dg[:, None], axis=1), rtol=1e-12)  # fmt: skip


def test_weight_std_rows_have_mean_0_and_variance_1_and_ignore_shift_and_scale():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((OUT, IN))
    eye = _eye()
    w_hat = ws_linear(eye, tn.tensor(w), eps=1e-12).numpy().T
    np.testing.assert_allclose(w_hat.mean(axis=1), 0.0, atol=1e-14)
    np.testing.assert_allclose(w_hat.var(axis=1), 1.0, rtol=1e-10)
    moved = w * np.array([1e-2, 3.0, 50.0, 1.0]).reshape(OUT, 1) + np.array([5.0, -2.0, 0.0, 1e3]).reshape(OUT, 1)
    np.testing.assert_allclose(ws_linear(eye, tn.tensor(moved), eps=1e-12).numpy().T, w_hat, atol=1e-8)


def test_each_row_of_dweight_sums_to_0_and_is_orthogonal_to_that_row_of_w_hat():
    rng = np.random.default_rng(8)
    w, b = rng.standard_normal((OUT, IN)), rng.standard_normal(OUT)
    x, dy = rng.standard_normal((7, IN)), rng.standard_normal((7, OUT))
    _, (_, dweight, _) = _tn_grads(lambda *a: ws_linear(*a, eps=1e-30), x, dy, w, b)
    w_hat = (w - w.mean(axis=1, keepdims=True)) / w.std(axis=1, keepdims=True)
    np.testing.assert_allclose(dweight.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(np.sum(dweight * w_hat, axis=1), 0.0, atol=1e-12)


def test_the_normalized_weight_is_the_one_the_matmul_uses():
    tn.manual_seed(9)
    for layer in (tn.nn.WeightNormLinear(IN, OUT), tn.nn.WSLinear(IN, OUT)):
        x = tn.randn(3, IN)
        want = x.numpy() @ layer.normalized_weight().numpy().T + layer.bias.numpy()
        np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-13)


# ---- a wrong backward is caught ----------------------------------------------------------------
def _without_the_projection(dweight, g, v, norm):
    xp = tn.backend.namespace_of(v)
    u = v / norm
    dg = xp.sum(dweight * u, axis=-1)
    return dg, (xp.reshape(g, (g.shape[0], 1)) / norm) * dweight  # the path through ||v|| left out


def _without_the_mean_term(dweight_hat, weight, mean, rstd):
    w_hat = (weight - mean) * rstd
    return rstd * (dweight_hat - w_hat * (dweight_hat * w_hat).mean(axis=-1, keepdims=True))


@pytest.mark.parametrize(
    ("name", "lesson", "broken", "param"),
    [
        ("weight_norm", "weight_norm_backward", _without_the_projection, "v"),
        ("weight_std", "weight_std_backward", _without_the_mean_term, "weight"),
    ],
)
def test_gradcheck_fails_when_the_backward_misses_a_term(monkeypatch, name, lesson, broken, param):
    module, x = tn.registry.NORMS[name].build("3d")
    assert tn.gradcheck(module, x)
    monkeypatch.setattr(weight_side, lesson, broken)
    with tn.kernels.disabled():
        result = tn.gradcheck(module, x, raise_exception=False)
    assert not result
    assert param in {f.input for f in result.failures}


# ---- rows of any magnitude ---------------------------------------------------------------------
MAGNITUDES = 10.0 ** np.arange(-30, 31, 6)


@pytest.mark.parametrize("name", ["weight_norm", "weight_std"])
def test_float32_weight_rows_of_any_magnitude_match_float64(name):
    rng = np.random.default_rng(10)
    raw = (rng.standard_normal((len(MAGNITUDES), IN)) * MAGNITUDES[:, None]).astype(np.float32)
    w = {}
    for dtype in ("float32", "float64"):
        if name == "weight_norm":
            g = tn.tensor(np.ones(len(MAGNITUDES)), dtype=dtype)
            w[dtype] = weight_norm_linear(_eye(dtype), g, tn.tensor(raw, dtype=dtype)).numpy().T
        else:
            w[dtype] = ws_linear(_eye(dtype), tn.tensor(raw, dtype=dtype), eps=1e-37).numpy().T
    assert np.all(np.isfinite(w["float32"]))
    np.testing.assert_allclose(w["float32"], w["float64"], rtol=2e-6, atol=1e-6)
    if name == "weight_norm":  # every row is a unit vector times g = 1, from 1e-30 to 1e30
        np.testing.assert_allclose(np.linalg.norm(w["float32"], axis=1), 1.0, rtol=1e-6)
    else:  # variance 1 wherever the row's variance is far above eps (rows of 1e-12 and up; 1e30 included)
        np.testing.assert_allclose(w["float32"][MAGNITUDES >= 1e-12].var(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["weight_norm", "weight_std"])
def test_float32_input_rows_of_any_magnitude_match_float64(name):
    module, _ = tn.registry.NORMS[name].build("3d", dtype="float32")
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((len(MAGNITUDES), 4)) * MAGNITUDES[:, None]).astype(np.float32)
    y32 = module(tn.tensor(x)).numpy()
    y64 = module.to("float64")(tn.tensor(x.astype(np.float64))).numpy()
    assert np.all(np.isfinite(y32))
    size = np.abs(y64).max(axis=1, keepdims=True)
    assert np.all(np.abs(y32 - y64) <= 1e-5 * size)


@pytest.mark.parametrize("name", ["weight_norm", "weight_std"])
def test_float16_input_gives_float16_output_with_the_weight_computed_in_float32(name):
    module, x = tn.registry.NORMS[name].build("3d", dtype="float16")
    y = module(x)
    y.backward(tn.ones(*y.shape, dtype="float16"))
    assert y.dtype == np.float16 and x.grad.dtype == np.float16
    assert all(p.grad.dtype == np.float16 and np.all(np.isfinite(p.grad)) for p in module.parameters())
    reference = module.to("float64")(tn.tensor(x.numpy().astype(np.float64))).numpy()
    np.testing.assert_allclose(y.numpy().astype(np.float64), reference, rtol=1e-2, atol=1e-2)


# ---- bad input ---------------------------------------------------------------------------------
def test_torchs_column_g_is_refused_with_the_reshape_to_use():
    g, v = tn.ones(OUT, 1), tn.randn(OUT, IN)
    with pytest.raises(ValueError, match=r"g: expected shape \(4,\), got \(4, 1\)\. PyTorch's weight_norm .*"
                       r"pass g\.reshape\(4\)"):  # fmt: skip
        weight_norm_linear(tn.randn(2, IN), g, v)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: weight_norm_linear(tn.randn(2, IN), None, tn.randn(OUT, IN)), TypeError, r"g: expected a tn.Tensor"),
        (lambda: weight_norm_linear(tn.randn(2, IN), tn.ones(OUT), tn.randn(IN)), TypeError, r"v: expected a 2-d"),
        (lambda: weight_norm_linear(tn.randn(2, IN), tn.ones(3), tn.randn(OUT, IN)), ValueError, r"g: expected shape"),
        (
            lambda: weight_norm_linear(tn.randn(2, IN), tn.ones(OUT), tn.randn(OUT, IN), tn.ones(OUT, 1)),
            ValueError,
            r"bias: expected shape \(4,\), got \(4, 1\)",
        ),
        (
            lambda: weight_norm_linear(tn.randn(2, 3), tn.ones(OUT), tn.randn(OUT, IN)),
            ValueError,
            r"weight_norm_linear: input's last dimension must equal in_features=5, got input of shape \(2, 3\)",
        ),
        (lambda: ws_linear(tn.randn(2, IN), np.ones((OUT, IN))), TypeError, r"weight: expected a 2-d tn.Tensor"),
        (lambda: ws_linear(tn.randn(2, IN), tn.randn(OUT, IN), eps=0.0), ValueError, r"eps: expected a positive"),
        (lambda: ws_linear(tn.randn(2, IN), tn.randn(OUT, IN), impl="fast"), ValueError, r"impl: expected one of"),
        (lambda: tn.nn.WSLinear(IN, OUT)(tn.randn(2, 3)), ValueError, r"WSLinear: input's last dimension .*=5"),
        (lambda: tn.nn.WeightNormLinear(IN, OUT)([1.0] * IN), TypeError, r"WeightNormLinear: input must be a tn"),
        (lambda: tn.nn.WeightNormLinear(0, OUT), ValueError, r"in_features: expected a positive int, got 0"),
        (lambda: tn.nn.WSLinear(IN, 2.0), ValueError, r"out_features: expected a positive int, got 2.0"),
    ],
)
def test_bad_input_names_the_argument_the_expected_and_the_actual(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_zero_row_of_v_has_no_direction_and_gives_nan_as_in_pytorch():
    v = np.ones((OUT, IN))
    v[1] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        w = weight_norm_linear(_eye(), tn.ones(OUT), tn.tensor(v)).numpy().T
    assert np.all(np.isnan(w[1])) and np.all(np.isfinite(np.delete(w, 1, axis=0)))
