"""FRN + TLU against the same formula composed in torch, in float64: forward and every gradient,
with the epsilon fixed and learnable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinynorm as tn
from tinynorm.norms.frn import frn


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5), (4, 3)])
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_frn_matches_torch(shape, impl):
    rng = np.random.default_rng(0)
    c = shape[1]
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    w, b, t = rng.normal(size=c), rng.normal(size=c) * 0.3, rng.normal(size=c) * 0.3
    tx, tw, tb, tt = (torch.tensor(a, requires_grad=True) for a in (x, w, b, t))
    view = (c,) + (1,) * (len(shape) - 2)
    axes = tuple(range(2, len(shape)))
    nu2 = (tx * tx).mean(dim=axes, keepdim=True) if axes else tx * tx
    z = tw.view(view) * tx / torch.sqrt(nu2 + 1e-6) + tb.view(view)
    ty = torch.maximum(z, tt.view(view))
    ty.backward(torch.tensor(dy))
    nx, nw, nb, nt = (tn.tensor(a, requires_grad=True) for a in (x, w, b, t))
    y = frn(nx, nw, nb, nt, 1e-6, impl=impl)
    y.backward(tn.tensor(dy))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=0, atol=1e-10)
    for mine, theirs in ((nx, tx), (nw, tw), (nb, tb), (nt, tt)):
        np.testing.assert_allclose(np.asarray(mine.grad), theirs.grad.numpy(), rtol=0, atol=1e-10)


def test_frn_tie_sends_the_gradient_to_tau():
    x = tn.tensor(np.ones((1, 1, 2)), requires_grad=True)
    w, b = tn.tensor(np.ones(1), requires_grad=True), tn.tensor(np.zeros(1), requires_grad=True)
    tau = tn.tensor(np.full(1, 1.0 / np.sqrt(1.0 + 1e-6)), requires_grad=True)  # z == tau exactly
    y = frn(x, w, b, tau, 1e-6)
    y.backward(tn.tensor(np.array([[[2.0, 3.0]]])))
    assert float(np.asarray(tau.grad)[0]) == 5.0
    assert np.all(np.asarray(x.grad) == 0.0)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("eps_l", [1e-4, -0.3])  # |eps_learned|: a negative value works as its magnitude
def test_learnable_eps_matches_torch(shape, impl, eps_l):
    rng = np.random.default_rng(1)
    c = shape[1]
    x, dy = rng.normal(size=shape), rng.normal(size=shape)
    w, b, t = rng.normal(size=c), rng.normal(size=c) * 0.3, rng.normal(size=c) * 0.3 - 1.0
    tx, tw, tb, tt = (torch.tensor(a, requires_grad=True) for a in (x, w, b, t))
    te = torch.tensor(eps_l, dtype=torch.float64, requires_grad=True)
    view = (c,) + (1,) * (len(shape) - 2)
    axes = tuple(range(2, len(shape)))
    nu2 = (tx * tx).mean(dim=axes, keepdim=True) if axes else tx * tx
    z = tw.view(view) * tx / torch.sqrt(nu2 + 1e-6 + te.abs()) + tb.view(view)
    torch.maximum(z, tt.view(view)).backward(torch.tensor(dy))
    nx, nw, nb, nt = (tn.tensor(a, requires_grad=True) for a in (x, w, b, t))
    ne = tn.tensor(eps_l, requires_grad=True)
    frn(nx, nw, nb, nt, 1e-6, eps_learned=ne, impl=impl).backward(tn.tensor(dy))
    for mine, theirs in ((nx, tx), (nw, tw), (nb, tb), (nt, tt), (ne, te)):
        np.testing.assert_allclose(np.asarray(mine.grad), theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_learnable_eps_is_off_by_default_and_a_scalar_when_on():
    assert [n for n, _ in tn.nn.FilterResponseNorm(4).named_parameters()] == ["weight", "bias", "tau"]
    norm = tn.nn.FilterResponseNorm(4, learnable_eps=True)
    assert norm.eps_learned.shape == () and float(norm.eps_learned.numpy()) == 1e-4
    x = tn.tensor(np.array([[0.01, -0.02, 0.5, 3.0]]))
    xhat = x.numpy() / np.sqrt(x.numpy() ** 2 + 1e-6 + 1e-4)  # (N, C): each value is its own row
    expected = np.maximum(xhat, 0.0)  # weight 1, bias 0, then the TLU with tau = 0
    np.testing.assert_allclose(norm(x).numpy(), expected, rtol=1e-12)


def test_a_vector_eps_learned_is_refused():
    x = tn.randn(2, 3)
    params = [tn.ones(3), tn.zeros(3), tn.zeros(3)]
    with pytest.raises(ValueError, match=r"eps_learned.*\(\)"):
        frn(x, *params, eps_learned=tn.tensor(np.full(3, 1e-4)))
