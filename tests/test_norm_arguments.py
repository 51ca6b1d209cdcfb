"""Bad arguments to the norms get a clear error that names the argument, and the dtype a
module computes in follows its input (issue: outside tests). Registry-driven where the
rule holds for every norm."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.registry import NORMS

ENTRIES = sorted(NORMS)


def _takes(module_class, name: str) -> bool:
    return name in inspect.signature(module_class.__init__).parameters


# ---- eps ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["1e-5", [1e-5], float("nan"), float("inf"), True])
@pytest.mark.parametrize("name", ENTRIES)
def test_an_eps_that_is_not_a_finite_number_is_refused_by_name(name, bad):
    spec = NORMS[name]
    if not _takes(spec.module, "eps"):
        pytest.skip(f"{spec.module.__name__} takes no eps")
    with pytest.raises((TypeError, ValueError), match="eps"):
        spec.build("2d", eps=bad)


@pytest.mark.parametrize("name", ENTRIES)
def test_an_eps_that_rounds_to_zero_in_the_compute_dtype_is_refused(name):
    spec = NORMS[name]
    if not _takes(spec.module, "eps"):
        pytest.skip(f"{spec.module.__name__} takes no eps")
    # A learnable eps must start above its floor: fix it for this check.
    fixed = {"learnable_eps": False} if _takes(spec.module, "learnable_eps") else {}
    module, x = spec.build("2d", eps=1e-50, dtype="float32", **fixed)
    with pytest.raises(ValueError, match="eps.*rounds to 0 in float32"):
        module(x)
    module.to("float64")
    assert np.isfinite(module(x.to("float64")).numpy()).all()  # 1e-50 is representable in float64


def test_eps_none_is_the_machine_epsilon_of_the_input_dtype_as_in_pytorch():
    rng = np.random.default_rng(0)
    x = np.full((2, 4), 1e-4) * rng.choice([-1.0, 1.0], (2, 4))  # mean square 1e-8: eps matters
    for dtype, eps in (("float32", np.finfo(np.float32).eps), ("float64", np.finfo(np.float64).eps)):
        got = tn.nn.functional.rms_norm(tn.tensor(x, dtype=dtype), 4, eps=None).numpy()
        want = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert tn.nn.RMSNorm(4, eps=None)(tn.tensor(x)).shape == (2, 4)


def test_layernorm_has_no_eps_none():
    with pytest.raises(TypeError, match="eps: expected a finite real number, got None"):
        tn.nn.LayerNorm(4, eps=None)


# ---- parameters passed to a functional ---------------------------------------------------------
@pytest.mark.parametrize("weight", [[1.0] * 5, np.ones(5)])
def test_a_functional_weight_that_is_not_a_tensor_names_weight(weight):
    x = tn.randn(3, 5)
    with pytest.raises(TypeError, match=r"weight: expected a tn.Tensor of shape \(5,\) or None, got (list|ndarray)"):
        tn.nn.functional.layer_norm(x, 5, weight=weight)
    with pytest.raises(TypeError, match="bias: expected a tn.Tensor"):
        tn.nn.functional.rms_norm(x, 5, bias=weight)


def test_an_integer_weight_is_refused():
    with pytest.raises(TypeError, match="weight: expected a floating dtype"):
        tn.nn.functional.layer_norm(tn.randn(3, 5), 5, weight=tn.tensor(np.ones(5, dtype=np.int64)))


# ---- constructor arguments ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [8.0, None, "8", True, 0, -3, (4, 0)])
@pytest.mark.parametrize("module", [tn.nn.LayerNorm, tn.nn.RMSNorm])
def test_a_normalized_shape_that_is_not_positive_ints_is_refused_by_name(module, bad):
    with pytest.raises(ValueError, match="normalized_shape: expected a positive int"):
        module(bad)


@pytest.mark.parametrize("module", [tn.nn.LayerNorm, tn.nn.RMSNorm])
def test_numpy_integers_are_accepted_as_in_pytorch(module):
    norm = module(np.int64(8))
    assert norm.normalized_shape == (8,) and isinstance(norm.normalized_shape[0], int)
    assert module((np.int32(2), 4)).normalized_shape == (2, 4)


# ---- the dtype a module computes in --------------------------------------------------------------
def _fwd_bwd(module, x, dy):
    for p in module.parameters():
        p.grad = None
    x.grad = None
    y = module(x)
    y.backward(dy)
    return y, x.grad, [p.grad for p in module.parameters()]


@pytest.mark.parametrize("name", ENTRIES)
def test_a_default_module_computes_in_its_inputs_float32(name):
    """Parameters are float64 by default; float32 input still gives float32 work and output,
    the same numbers as the module moved to float32, and gradients in each parameter's dtype."""
    spec = NORMS[name]
    module, x64 = spec.build("2d", dtype="float64")
    x = tn.tensor(x64.numpy(), dtype="float32", requires_grad=True)
    out_shape = module(x).shape  # a weight-side layer (weight_norm) changes the width
    dy = tn.tensor(np.random.default_rng(2).standard_normal(out_shape), dtype="float32")
    y, dx, grads = _fwd_bwd(module, x, dy)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert all(g.dtype == p.dtype == np.float64 for g, p in zip(grads, module.parameters()))
    module.to("float32")
    y32, dx32, grads32 = _fwd_bwd(module, x, dy)
    np.testing.assert_allclose(y.numpy(), y32.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, dx32, rtol=1e-4, atol=1e-4)
    for g, g32 in zip(grads, grads32):
        np.testing.assert_allclose(g, g32, rtol=1e-4, atol=1e-4)
