"""Higher-order gradients: every op and norm differentiated through its own explicit backward.

``backward(create_graph=True)`` runs each node's forward again on its input Tensors, then
its backward on Tensors (``tinynorm/graph_xp.py``), so the gradient is a Tensor with a
graph. These tests hold every registered op and norm to finite differences at orders 2
and 3, hold the second derivatives to PyTorch's, and show that the checks catch the two
ways a double backward goes wrong: statistics without history (wrong from order 2), and
PyTorch's own trap, a hand-derived double backward whose statistics have no history
(right at order 2, wrong at order 3).
"""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn
from tinynorm import kernels
from tinynorm.autograd import Context, Function
from tinynorm.backend import namespace_of
from tinynorm.norms import layernorm
from tinynorm.registry import NORMS, OPS
from tinynorm.stats import rms_rstd
from tinynorm.tensor import Tensor

NORM_CASES = [(name, case) for name in NORMS for case in ("2d", "3d")]


def _op_fn(op):
    return (lambda *a: op.fn(*a, axis=(0, 2))) if op.kind == "reduction" else op.fn


# ---- the registry, at orders 2 and 3 ------------------------------------------------------------
@pytest.mark.parametrize(("name", "case"), NORM_CASES)
def test_every_norm_passes_gradgradcheck(backend, name, case):
    module, x = NORMS[name].build(case)
    result = tn.gradgradcheck(module, x, raise_exception=False)
    assert result, result.report()
    assert result.max_error_ratio < 0.1  # far inside the tolerance, not just under it


@pytest.mark.parametrize(("name", "case"), NORM_CASES)
def test_every_norm_passes_the_third_order_check(backend, name, case):
    module, x = NORMS[name].build(case)
    result = tn.higher_order_gradcheck(module, x, 3, fast=True, raise_exception=False)
    assert result, result.report()


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("order", [2, 3])
def test_every_op_passes_the_higher_order_checks(backend, name, order):
    op = OPS[name]
    inputs = op.inputs(np.random.default_rng(0))
    result = tn.higher_order_gradcheck(_op_fn(op), inputs, order, fast=order == 3, raise_exception=False)
    assert result, result.report()


def test_the_autograd_references_pass_gradgradcheck_too():
    for name, spec in NORMS.items():
        module, x = spec.build("2d", impl="autograd")
        assert tn.gradgradcheck(module, x, fast=True, raise_exception=False), name


# ---- the two traps ------------------------------------------------------------------------------
def _plant_statistics_without_history(monkeypatch):
    """LayerNorm whose forward, run again for create_graph, saves mean and rstd as constants."""
    forward = layernorm.LayerNormFunction.forward

    def planted(ctx, *args, **kwargs):
        y = forward(ctx, *args, **kwargs)
        if ctx.recomputing:
            x, weight, bias, mean, rstd = ctx.saved_tensors
            ctx.saved_tensors = (x, weight, bias, Tensor(mean.data), Tensor(rstd.data))
        return y

    monkeypatch.setattr(layernorm.LayerNormFunction, "forward", staticmethod(planted))


def test_statistics_without_history_fail_gradgradcheck_and_the_third_order_check_naming_x(monkeypatch):
    module, x = NORMS["layernorm"].build("2d")
    assert tn.gradcheck(module, x)  # first order cannot see it
    _plant_statistics_without_history(monkeypatch)
    assert tn.gradcheck(module, x)
    second = tn.gradgradcheck(module, x, raise_exception=False)
    third = tn.higher_order_gradcheck(module, x, 3, fast=True, raise_exception=False)
    assert not second and not third
    assert "input 0" in {f.input for f in second.failures}
    assert "input 0" in {f.input for f in third.failures}
    assert "third-order check failed" in third.report()


class _RMSGradWithConstantRstd(Function):
    """RMSNorm's backward (no weight) as a Function with a hand-derived double backward, rstd
    given as a constant: PyTorch's fused double backward, in miniature (see the module docstring).

    With ``c = mean(dy * x)``: ``dx = r dy - r**3 x c``; for an upstream ``v`` of ``dx``:
    ``d/d dy = r v - r**3 x mean(v x)`` and
    ``d/dx = -r**3 (x mean(v dy) + v c + dy mean(v x)) + 3 r**5 x mean(v x) c``."""

    @staticmethod
    def forward(ctx, dy, x, rstd):
        xp = namespace_of(x)
        if ctx is not None:
            ctx.save_for_backward(dy, x)
            ctx.rstd = rstd
        c = xp.mean(dy * x, axis=-1, keepdims=True)
        return rstd * dy - rstd**3 * x * c

    @staticmethod
    def backward(ctx, v):
        dy, x = ctx.saved_tensors
        r = ctx.rstd  # the trap: a constant, so what is computed here has no path to x through r
        xp = namespace_of(x)

        def mean(a):
            return xp.mean(a, axis=-1, keepdims=True)

        c, vx = mean(dy * x), mean(v * x)
        d_dy = r * v - r**3 * x * vx
        d_x = -(r**3) * (x * mean(v * dy) + v * c + dy * vx) + 3 * r**5 * x * vx * c
        return d_dy, d_x


class _RMSNormHandDerived(Function):
    @staticmethod
    def forward(ctx, x, eps):
        rstd = rms_rstd(x, eps)
        ctx.save_for_backward(x, rstd)
        return x * rstd

    @staticmethod
    def backward(ctx, dy):
        x, rstd = ctx.saved_tensors
        if isinstance(dy, Tensor):  # differentiated: the double backward above takes over
            constant = rstd.data if isinstance(rstd, Tensor) else rstd
            return _RMSGradWithConstantRstd.apply(dy, x, rstd=constant)
        return _RMSGradWithConstantRstd.forward(None, dy, x, rstd)


def test_pytorchs_trap_a_hand_derived_double_backward_is_right_at_order_2_and_wrong_at_order_3():
    x = tn.tensor(np.random.default_rng(1).standard_normal((3, 5)), requires_grad=True)

    def fused(t):
        return _RMSNormHandDerived.apply(t, eps=1e-5)

    def composed(t):
        return tn.nn.functional.rms_norm(t, 5, eps=1e-5)

    assert tn.gradcheck(fused, x)
    assert tn.gradgradcheck(fused, x)  # the hand-derived second derivative is right
    third = tn.higher_order_gradcheck(fused, x, 3, fast=True, raise_exception=False)
    assert not third
    assert "input 0" in {f.input for f in third.failures}
    # tinynorm's way, the lesson's backward run on Tensors, is right at every order.
    assert tn.higher_order_gradcheck(composed, x, 3, fast=True)


# ---- second derivatives against PyTorch ---------------------------------------------------------
def _hvp_tn(module, x, v, u):
    """d/d(x, params) of <u, d(v . y)/dx>: one Hessian-vector product per input."""
    params = list(module.parameters())
    y = module(x)
    (dx,) = tn.grad(y, [x], tn.tensor(v), create_graph=True)
    grads = tn.grad((dx * tn.tensor(u)).sum(), [x, *params], allow_unused=True)  # bias: no second derivative
    return [np.zeros(t.shape) if g is None else g.numpy() for g, t in zip(grads, [x, *params])]


def _hvp_torch(torch, fn, x, params, v, u):
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    (dx,) = torch.autograd.grad(fn(tx, *tp), [tx], torch.tensor(v), create_graph=True)
    grads = torch.autograd.grad((dx * torch.tensor(u)).sum(), [tx, *tp], allow_unused=True)
    return [np.zeros(t.shape) if g is None else g.numpy() for g, t in zip(grads, [tx, *tp])]


TORCH_CASES = {
    "layernorm": ("2d", lambda F, x, w, b: F.layer_norm(x, (5,), w, b, eps=1e-5)),
    "rmsnorm": ("2d", lambda F, x, w: F.rms_norm(x, (5,), w, eps=1e-6)),
    "groupnorm": ("3d", lambda F, x, w, b: F.group_norm(x, 2, w, b, eps=1e-5)),
    "batchnorm1d": ("3d", lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-5)),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_hessian_vector_products_match_pytorch_to_1e_10(name):
    torch = pytest.importorskip("torch")
    case, fn = TORCH_CASES[name]
    module, x = NORMS[name].build(case)
    if hasattr(module, "eps") and name == "rmsnorm":
        module.eps = 1e-6
    rng = np.random.default_rng(3)
    v, u = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    ours = _hvp_tn(module, x, v, u)
    params = [p.numpy() for p in module.parameters()]
    theirs = _hvp_torch(torch, lambda *a: fn(torch.nn.functional, *a), x.numpy(), params, v, u)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.torch
def test_a_gradient_penalty_through_layernorm_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x_host, w_host = rng.standard_normal((4, 6)), rng.standard_normal(6)
    x, w = tn.tensor(x_host, requires_grad=True), tn.tensor(w_host, requires_grad=True)
    (dx,) = tn.grad(tn.nn.functional.layer_norm(x, 6, w).tanh().sum(), [x], create_graph=True)
    penalty = ((dx * dx).sum(axis=-1).sqrt() - 1.0) ** 2.0
    gx, gw = tn.grad(penalty.mean(), [x, w])
    tx, tw = torch.tensor(x_host, requires_grad=True), torch.tensor(w_host, requires_grad=True)
    (tdx,) = torch.autograd.grad(torch.nn.functional.layer_norm(tx, (6,), tw).tanh().sum(), [tx], create_graph=True)
    tgx, tgw = torch.autograd.grad(((tdx.norm(dim=-1) - 1) ** 2).mean(), [tx, tw])
    np.testing.assert_allclose(gx.numpy(), tgx.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(gw.numpy(), tgw.numpy(), rtol=0, atol=1e-10)


# ---- the API ----------------------------------------------------------------------------------
def test_grad_returns_tensors_and_writes_no_dot_grad():
    x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (g,) = tn.grad((x * x * x).sum(), x)
    assert isinstance(g, Tensor) and not g.requires_grad
    np.testing.assert_allclose(g.numpy(), [3.0, 12.0, 27.0])
    assert x.grad is None


def test_create_graph_gives_gradients_that_differentiate_to_any_order():
    x = tn.tensor([0.5, -1.0], requires_grad=True)
    y = (x * x * x * x).sum()  # d/dx = 4x^3, then 12x^2, 24x, 24
    expected = [4 * np.array([0.5, -1.0]) ** 3, 12 * np.array([0.5, -1.0]) ** 2, 24 * np.array([0.5, -1.0])]
    g = y
    for want in expected:
        (g,) = tn.grad(g.sum() if g.ndim else g, x, create_graph=True)
        np.testing.assert_allclose(g.numpy(), want)


def test_backward_with_create_graph_leaves_a_differentiable_grad():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    (x * x * x).sum().backward(create_graph=True)
    assert isinstance(x.grad, Tensor) and x.grad.requires_grad
    first = x.grad
    x.grad = None
    first.sum().backward()
    np.testing.assert_allclose(x.grad, [6.0, 12.0])  # d/dx sum(3x^2) = 6x, a plain array again


def test_without_create_graph_nothing_changes():
    module, x = NORMS["layernorm"].build("large")
    with kernels.record() as chosen:
        module(x).backward(np.ones(x.shape))
    assert isinstance(x.grad, np.ndarray)
    assert chosen  # the fast kernel ran, in both passes
    with kernels.record() as chosen:
        tn.grad(module(x), [x], tn.tensor(np.ones(x.shape)), create_graph=True)
    assert len(chosen) == 1  # the forward only: differentiating, the lesson's backward runs on Tensors


def test_allow_unused_gives_none_and_otherwise_names_the_input():
    x, unused = tn.tensor([1.0], requires_grad=True), tn.tensor([2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[1\].*not used.*allow_unused=True"):
        tn.grad((x * 2.0).sum(), [x, unused])
    assert tn.grad((x * 2.0).sum(), [x, unused], allow_unused=True)[1] is None


def test_a_gradient_can_be_taken_with_respect_to_the_upstream_gradient():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    v = tn.tensor([3.0, 4.0], requires_grad=True)
    (dx,) = tn.grad(x * x, x, v, create_graph=True)  # 2 x v
    (dv,) = tn.grad(dx.sum(), v)
    np.testing.assert_allclose(dv.numpy(), [2.0, 4.0])


def test_a_backward_that_leaves_the_graph_is_refused_by_name():
    class EscapingSquare(Function):
        @staticmethod
        def forward(ctx: Context, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx: Context, grad):
            (a,) = ctx.saved_tensors
            return np.asarray(grad) * 2 * np.asarray(a)  # NumPy on .data: out of the graph

    x = tn.tensor([1.0, 2.0], requires_grad=True)
    assert tn.gradcheck(lambda t: EscapingSquare.apply(t), x)
    with pytest.raises(TypeError, match="EscapingSquare.backward.*left the graph"):
        tn.grad(EscapingSquare.apply(x), x, tn.tensor([1.0, 1.0]), create_graph=True)


def test_a_function_missing_from_the_graph_namespace_is_named():
    xp = namespace_of(tn.tensor([1.0]))
    with pytest.raises(AttributeError, match=r"xp\.sort.*graph namespace"):
        _ = xp.sort


def test_batchnorm_updates_its_running_statistics_once_when_differentiated_twice():
    module, x = NORMS["batchnorm1d"].build("2d")
    plain, _ = NORMS["batchnorm1d"].build("2d")
    v = tn.tensor(np.random.default_rng(0).standard_normal(x.shape))
    tn.grad(module(x), [x], v, create_graph=True)
    plain(x).backward(v)
    np.testing.assert_array_equal(module.running_mean.numpy(), plain.running_mean.numpy())
    assert int(module.num_batches_tracked.item()) == int(plain.num_batches_tracked.item()) == 1
