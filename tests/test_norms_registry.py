"""The catalog's contract, checked for every registry entry: the explicit backward and the
autograd reference both pass the finite-difference gradcheck, and they agree to 1e-10.
The explicit backward is checked twice: as it runs by default (a kernel where one is
registered for the backend) and with kernels off (the lesson's plain code)."""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.registry import CASES, NORMS

ENTRIES = sorted(NORMS)


@pytest.fixture(params=["kernels on", "kernels off"])
def kernel_switch(request):
    if request.param == "kernels off":
        with tn.kernels.disabled():
            yield request.param
    else:
        yield request.param


def _outputs_and_grads(spec, case, impl, backend_seed=0):
    module, x = spec.build(case, impl=impl, seed=backend_seed)
    y = module(x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(tn.tensor(dy))
    grads = {"x": x.grad} | {name: p.grad for name, p in module.named_parameters()}
    return y.numpy(), {k: tn.backend.to_numpy(g) for k, g in grads.items()}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ENTRIES)
def test_explicit_backward_passes_gradcheck(name, case, backend, kernel_switch):
    module, x = NORMS[name].build(case, impl="explicit")
    assert tn.gradcheck(module, x)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ENTRIES)
def test_autograd_reference_passes_gradcheck(name, case, backend):
    module, x = NORMS[name].build(case, impl="autograd")
    assert tn.gradcheck(module, x)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", ENTRIES)
def test_explicit_and_reference_agree(name, case, backend, kernel_switch):
    y_explicit, g_explicit = _outputs_and_grads(NORMS[name], case, "explicit")
    y_reference, g_reference = _outputs_and_grads(NORMS[name], case, "autograd")
    np.testing.assert_allclose(y_explicit, y_reference, rtol=1e-10, atol=1e-10)
    assert g_explicit.keys() == g_reference.keys()
    for key in g_explicit:
        np.testing.assert_allclose(g_explicit[key], g_reference[key], rtol=1e-10, atol=1e-10, err_msg=key)


@pytest.mark.parametrize("name", ENTRIES)
def test_fast_mode_passes_too(name):
    module, x = NORMS[name].build("3d")
    assert tn.gradcheck(module, x, fast=True)


@pytest.mark.parametrize("name", ENTRIES)
def test_registry_entry_is_complete(name):
    spec = NORMS[name]
    module, _ = spec.build("2d", perturb=False)
    learnable = {n for n, _ in module.named_parameters()}
    assert learnable == {p.name for p in spec.params}, "the registry must describe every learnable parameter"
    assert spec.doc.startswith("docs/norms/") and spec.doc.endswith(".md")
    assert spec.functional.__name__ in dir(tn.nn.functional)
    assert getattr(tn.nn, spec.module.__name__) is spec.module


@pytest.mark.parametrize("name", ENTRIES)
def test_integer_input_is_rejected(name):
    module, x = NORMS[name].build("2d")
    with pytest.raises(TypeError, match="floating"):
        module(tn.tensor(np.ones(x.shape, dtype=np.int64)))


@pytest.mark.parametrize("name", ENTRIES)
def test_unknown_impl_is_rejected(name):
    spec = NORMS[name]
    with pytest.raises(ValueError, match="impl"):
        spec.module(**spec.cases["2d"].kwargs, impl="fused-by-hand")


def test_unknown_norm_name_names_the_close_matches_then_the_known_ones():
    with pytest.raises(KeyError) as err:
        tn.registry.get_norm("rmsnrom")
    message = err.value.args[0]
    assert message.startswith("norm: unknown name 'rmsnrom'; did you mean 'rmsnorm', ")
    assert message.endswith(f"(the norms: {', '.join(sorted(NORMS))})")
