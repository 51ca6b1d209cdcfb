"""FRN + TLU against the same formula composed in torch, in float64: forward and every gradient."""

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
