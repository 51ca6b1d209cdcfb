"""FlashNorm's weight fold (Graef et al. 2024, "FlashNorm: fast normalization for LLMs", arXiv 2407.09577): an RMSNorm
followed by a Linear computes the same function when the norm's per-dimension ``weight`` is
moved into the Linear, ``W* = W diag(weight)``, and the norm keeps no weight at all.

tinynorm's ``Linear.weight`` has torch's layout ``(out_features, in_features)`` and computes
``x @ W.T``, so ``diag(weight)`` scales its *columns*: ``W* = W * weight[None, :]``. A bias of
the norm (``rmsnorm_bias``) folds into the Linear's bias: ``c* = c + W @ bias``.
Outputs and input gradients must agree to round-off (1e-12 in float64), with a random
upstream gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn

D, M = 6, 4  # the norm's features, the Linear's outputs


def _rmsnorm_then_linear(rng: np.random.Generator, bias: bool) -> tuple[tn.nn.RMSNorm, tn.nn.Linear]:
    """An RMSNorm with a trained-looking weight (and bias) in front of a Linear."""
    norm, linear = tn.nn.RMSNorm(D, bias=bias), tn.nn.Linear(D, M)
    norm.weight.data = 1.0 + 0.5 * rng.normal(size=D)
    if bias:
        norm.bias.data = 0.3 * rng.normal(size=D)
    return norm, linear


def fold(norm: tn.nn.RMSNorm, linear: tn.nn.Linear) -> tuple[tn.nn.RMSNorm, tn.nn.Linear]:
    """The same function with the norm's weight (and bias) moved into a new Linear."""
    bare = tn.nn.RMSNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False)
    folded = tn.nn.Linear(linear.in_features, linear.out_features)
    weight = norm.weight.numpy()
    folded.weight.data = linear.weight.numpy() * weight[None, :]  # columns: W is (out, in)
    shift = linear.weight.numpy() @ norm.bias.numpy() if norm.bias is not None else 0.0
    folded.bias.data = linear.bias.numpy() + shift
    return bare, folded


def _output_and_input_grad(norm: tn.nn.Module, linear: tn.nn.Module, x: np.ndarray, dy: np.ndarray):
    xt = tn.tensor(x, requires_grad=True)
    y = linear(norm(xt))
    y.backward(tn.tensor(dy))
    return y.numpy(), np.asarray(xt.grad)


@pytest.mark.parametrize("batch_shape", [(7,), (2, 3)], ids=["2d", "3d"])
@pytest.mark.parametrize("bias", [False, True], ids=["rmsnorm", "rmsnorm_bias"])
def test_the_fold_keeps_outputs_and_input_gradients(batch_shape: tuple[int, ...], bias: bool) -> None:
    rng = np.random.default_rng(0)
    norm, linear = _rmsnorm_then_linear(rng, bias)
    x, dy = rng.normal(size=(*batch_shape, D)), rng.normal(size=(*batch_shape, M))
    y, dx = _output_and_input_grad(norm, linear, x, dy)
    bare, folded = fold(norm, linear)
    y_folded, dx_folded = _output_and_input_grad(bare, folded, x, dy)
    assert bare.weight is None and bare.bias is None  # the norm keeps nothing learnable
    np.testing.assert_allclose(y_folded, y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx_folded, dx, rtol=0, atol=1e-12)


def test_folding_the_rows_instead_is_wrong() -> None:
    """The layout matters: ``weight[:, None]`` would scale the outputs, not the inputs."""
    rng = np.random.default_rng(1)
    norm, linear = tn.nn.RMSNorm(D), tn.nn.Linear(D, D)  # square, so the wrong fold runs
    norm.weight.data = 1.0 + 0.5 * rng.normal(size=D)
    x = rng.normal(size=(5, D))
    bare = tn.nn.RMSNorm(D, elementwise_affine=False)
    wrong = tn.nn.Linear(D, D)
    wrong.weight.data, wrong.bias.data = linear.weight.numpy() * norm.weight.numpy()[:, None], linear.bias.numpy()
    y = linear(norm(tn.tensor(x))).numpy()
    assert np.abs(wrong(bare(tn.tensor(x))).numpy() - y).max() > 1e-2


def test_the_folded_pair_matches_torch_unfolded() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    norm, linear = _rmsnorm_then_linear(rng, bias=False)
    x, dy = rng.normal(size=(7, D)), rng.normal(size=(7, M))
    tx = torch.tensor(x, requires_grad=True)
    t_norm = torch.nn.RMSNorm(D, eps=norm.eps, dtype=torch.float64)
    with torch.no_grad():
        t_norm.weight.copy_(torch.tensor(norm.weight.numpy()))
    ty = torch.nn.functional.linear(t_norm(tx), torch.tensor(linear.weight.numpy()), torch.tensor(linear.bias.numpy()))
    ty.backward(torch.tensor(dy))
    y_folded, dx_folded = _output_and_input_grad(*fold(norm, linear), x, dy)
    np.testing.assert_allclose(y_folded, ty.detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(dx_folded, tx.grad.numpy(), rtol=0, atol=1e-12)
