"""Every primitive op in the registry passes the gradcheck, on every backend, over generated shapes.

Shapes are small (sides 1 to 3) but cover what breaks unbroadcasting: 0-d tensors,
size-1 axes, prepended axes, and both operands broadcasting at once. ``sum_to``,
the one unbroadcast every op uses, is pinned down with numbers at the end.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinynorm as tn
from tinynorm.registry import OPS

KINDS = ("unary", "binary", "reduction", "shape", "matmul")
seeds = st.integers(0, 2**31 - 1)
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)
broadcastable_pairs = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3)


def ops_of_kind(*kinds: str) -> list[str]:
    return [name for name, spec in OPS.items() if spec.kind in kinds]


def assert_gradcheck_both_modes(fn, inputs) -> None:
    assert tn.gradcheck(fn, inputs) is True
    assert tn.gradcheck(fn, inputs, fast=True) is True


def test_every_op_has_a_kind_this_file_generates_shapes_for():
    # A new kind would otherwise be silently left out of every test below.
    assert {spec.kind for spec in OPS.values()} <= set(KINDS)
    assert sorted(ops_of_kind(*KINDS)) == sorted(OPS)


@pytest.mark.parametrize("name", ops_of_kind("unary", "shape"))
@given(shape=shapes, seed=seeds)
def test_unary_and_shape_ops_pass_gradcheck(backend, name, shape, seed):
    spec = OPS[name]
    inputs = spec.inputs(np.random.default_rng(seed), (shape,))
    assert_gradcheck_both_modes(spec.fn, inputs)


@pytest.mark.parametrize("name", ops_of_kind("binary"))
@given(pair=broadcastable_pairs, seed=seeds)
def test_binary_ops_pass_gradcheck_on_broadcast_shapes(backend, name, pair, seed):
    spec = OPS[name]
    inputs = spec.inputs(np.random.default_rng(seed), pair.input_shapes)
    assert inputs[0].shape == pair.input_shapes[0] and inputs[1].shape == pair.input_shapes[1]
    assert_gradcheck_both_modes(spec.fn, inputs)


@st.composite
def shape_and_axis(draw: st.DrawFn) -> tuple[tuple[int, ...], int | tuple[int, ...] | None]:
    """A shape and an axis argument for it: None, one int, or a tuple of distinct axes, negative ones too."""
    shape = draw(shapes)
    ndim = len(shape)
    if ndim == 0:
        return shape, draw(st.sampled_from([None, ()]))
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, min_size=1, max_size=ndim))
    signed = tuple(ax - ndim if draw(st.booleans()) else ax for ax in chosen)
    return shape, draw(st.sampled_from([None, signed[0], signed]))


@pytest.mark.parametrize("name", ops_of_kind("reduction"))
@given(case=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
def test_reductions_pass_gradcheck_over_any_axes(backend, name, case, keepdims, seed):
    spec = OPS[name]
    shape, axis = case
    reduced = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
    assume(math.prod(shape[ax] for ax in reduced) >= spec.min_count)  # var and std need 2 values
    inputs = spec.inputs(np.random.default_rng(seed), (shape,))
    assert_gradcheck_both_modes(lambda a: spec.fn(a, axis=axis, keepdims=keepdims), inputs)


@st.composite
def matmul_shapes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(m, k) @ (k, n), with either side 1-D, or with batch axes that broadcast."""
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    form = draw(st.sampled_from(["matrix", "vector @ matrix", "matrix @ vector", "vector @ vector", "batched"]))
    if form == "matrix":
        return (m, k), (k, n)
    if form == "vector @ matrix":
        return (k,), (k, n)
    if form == "matrix @ vector":
        return (m, k), (k,)
    if form == "vector @ vector":
        return (k,), (k,)
    batch_a, batch_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=2)).input_shapes
    return batch_a + (m, k), batch_b + (k, n)


@pytest.mark.parametrize("name", ops_of_kind("matmul"))
@given(pair=matmul_shapes(), seed=seeds)
def test_matmul_passes_gradcheck(backend, name, pair, seed):
    spec = OPS[name]
    inputs = spec.inputs(np.random.default_rng(seed), pair)
    assert_gradcheck_both_modes(spec.fn, inputs)


@pytest.mark.parametrize("name", list(OPS))
def test_registry_example_passes_gradcheck(backend, name):
    # The shapes `python -m tinynorm check` uses; reductions over axes (0, 2) as there.
    spec = OPS[name]
    fn = (lambda a: spec.fn(a, axis=(0, 2))) if spec.kind == "reduction" else spec.fn
    assert_gradcheck_both_modes(fn, spec.inputs(np.random.default_rng(0)))


# ---- sum_to: undoing broadcasting ---------------------------------------------------------------
def _sum_to(values, shape):
    xp = tn.backend.namespace()
    return tn.backend.to_numpy(tn.sum_to(xp.asarray(np.asarray(values, dtype=np.float64)), shape))


def test_sum_to_sums_over_prepended_axes(backend):
    grad = [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]
    np.testing.assert_array_equal(_sum_to(grad, (3,)), [11.0, 22.0, 33.0])


def test_sum_to_sums_over_stretched_size_one_axes(backend):
    grad = [[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]]
    np.testing.assert_array_equal(_sum_to(grad, (2, 1)), [[6.0], [60.0]])
    np.testing.assert_array_equal(_sum_to(grad, (1, 3)), [[11.0, 22.0, 33.0]])


def test_sum_to_handles_prepended_and_stretched_axes_together(backend):
    grad = np.arange(24.0).reshape(2, 3, 4)
    result = _sum_to(grad, (3, 1))
    assert result.shape == (3, 1)
    # row i sums grad[0, i, :] and grad[1, i, :]: (0+1+2+3) + (12+13+14+15) = 60, then 22 + 70, 38 + 86
    np.testing.assert_array_equal(result, [[60.0], [92.0], [124.0]])


def test_sum_to_a_0d_shape_is_the_total(backend):
    assert _sum_to(np.arange(6.0).reshape(2, 3), ()).shape == ()
    assert _sum_to(np.arange(6.0).reshape(2, 3), ()) == 15.0


def test_sum_to_the_same_shape_returns_the_gradient_itself(backend):
    grad = tn.backend.namespace().asarray(np.ones((2, 3)))
    assert tn.sum_to(grad, (2, 3)) is grad


# ---- the ops PyTorch users reach for ----------------------------------------------------------------------
TORCH_NAMED_OPS = ("relu", "sigmoid", "clamp", "softmax", "log_softmax", "min", "var", "std")
SHAPE_OPS = ("unsqueeze", "squeeze", "flatten", "cat", "stack")


def test_the_pytorch_named_ops_are_registered_so_every_test_above_and_the_cli_check_them():
    assert set(TORCH_NAMED_OPS + SHAPE_OPS) <= set(OPS)


def _torch_cases(torch):
    """(ours, theirs) pairs of the same computation on a (3, 4, 5) input."""
    return {
        "relu": (lambda t: t.relu(), lambda t: t.relu()),
        "sigmoid": (lambda t: t.sigmoid(), lambda t: t.sigmoid()),
        "clamp": (lambda t: t.clamp(min=-0.5, max=0.7), lambda t: t.clamp(min=-0.5, max=0.7)),
        "clamp_min_only": (lambda t: tn.clamp(t, min=0.1), lambda t: torch.clamp(t, min=0.1)),
        "softmax_dim1": (lambda t: t.softmax(dim=1), lambda t: t.softmax(dim=1)),
        "log_softmax_last": (lambda t: tn.log_softmax(t, -1), lambda t: torch.log_softmax(t, -1)),
        "var_all": (lambda t: t.var(), lambda t: t.var()),
        "var_dims_keepdim": (lambda t: t.var(dim=(0, 2), keepdim=True), lambda t: t.var(dim=(0, 2), keepdim=True)),
        "var_biased": (lambda t: t.var(1, unbiased=False), lambda t: t.var(1, unbiased=False)),
        "var_correction_2": (lambda t: t.var(axis=-1, correction=2), lambda t: t.var(dim=-1, correction=2)),
        "std_all": (lambda t: t.std(), lambda t: t.std()),
        "std_dim0": (lambda t: tn.std(t, dim=0), lambda t: torch.std(t, dim=0)),
        "min_all": (lambda t: t.min(), lambda t: t.min()),
        "min_dim": (lambda t: t.min(dim=1, keepdim=True), lambda t: t.amin(dim=1, keepdim=True)),
        "max_dim": (lambda t: t.max(dim=2), lambda t: t.amax(dim=2)),
        "sum_dim": (lambda t: t.sum(dim=1, keepdim=True), lambda t: t.sum(dim=1, keepdim=True)),
        "mean_dims": (lambda t: t.mean(dim=(0, 1)), lambda t: t.mean(dim=(0, 1))),
        "unsqueeze": (lambda t: t.unsqueeze(-2), lambda t: t.unsqueeze(-2)),
        "squeeze_all": (lambda t: t.unsqueeze(1).squeeze(), lambda t: t.unsqueeze(1).squeeze()),
        "squeeze_keeps_other_sizes": (lambda t: t.squeeze(0), lambda t: t.squeeze(0)),
        "flatten_from_1": (lambda t: t.flatten(1), lambda t: t.flatten(1)),
        "flatten_0_to_1": (lambda t: t.flatten(0, 1), lambda t: t.flatten(0, 1)),
        "cat_unequal_lengths": (
            lambda t: tn.cat([t, t[:, :2] * 2.0], dim=1),
            lambda t: torch.cat([t, t[:, :2] * 2.0], dim=1),
        ),
        "stack_last": (lambda t: tn.stack([t, t.exp()], dim=-1), lambda t: torch.stack([t, t.exp()], dim=-1)),
    }


@pytest.mark.torch
def test_the_new_ops_match_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    values = rng.standard_normal((3, 4, 5))
    for name, (ours, theirs) in _torch_cases(torch).items():
        x = tn.tensor(values, requires_grad=True)
        tx = torch.tensor(values, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        assert y.shape == tuple(ty.shape), name
        dy = rng.standard_normal(y.shape)
        y.backward(dy)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


@pytest.mark.torch
def test_maximum_splits_the_gradient_of_ties_in_half_as_torch_does(backend):
    # The documented tie rule: where a == b each side gets half; elsewhere the larger side all of it.
    a = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = tn.tensor([1.0, 0.0, 5.0], requires_grad=True)
    tn.maximum(a, b).backward(tn.tensor([10.0, 10.0, 10.0]))
    np.testing.assert_array_equal(tn.backend.to_numpy(a.grad), [5.0, 10.0, 0.0])
    np.testing.assert_array_equal(tn.backend.to_numpy(b.grad), [5.0, 0.0, 10.0])
    torch = pytest.importorskip("torch")
    ta = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    tb = torch.tensor([1.0, 0.0, 5.0], requires_grad=True)
    torch.maximum(ta, tb).backward(torch.tensor([10.0, 10.0, 10.0]))
    assert ta.grad.tolist() == [5.0, 10.0, 0.0] and tb.grad.tolist() == [5.0, 0.0, 10.0]


def test_min_over_an_axis_shares_ties_as_max_does(backend):
    x = tn.tensor([[2.0, 1.0, 1.0]], requires_grad=True)
    x.min(axis=1).backward(tn.tensor([6.0]))
    np.testing.assert_array_equal(tn.backend.to_numpy(x.grad), [[0.0, 3.0, 3.0]])


def test_sigmoid_softmax_and_log_softmax_do_not_overflow_on_large_inputs(backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow in exp would warn
        big = tn.tensor([[1000.0, 0.0, -1000.0]], requires_grad=True)
        np.testing.assert_array_equal(tn.sigmoid(big).numpy(), [[1.0, 0.5, 0.0]])
        np.testing.assert_array_equal(tn.softmax(big).numpy(), [[1.0, 0.0, 0.0]])
        np.testing.assert_array_equal(tn.log_softmax(big).numpy(), [[0.0, -1000.0, -2000.0]])
        tn.log_softmax(big).backward(tn.tensor([[1.0, 2.0, 3.0]]))
        np.testing.assert_allclose(tn.backend.to_numpy(big.grad), [[1.0 - 6.0, 2.0, 3.0]], rtol=1e-15)


def test_var_with_no_degrees_of_freedom_warns_and_gives_nan_as_torch(backend):
    with pytest.warns(RuntimeWarning, match=r"var: 1 value\(s\) per result and correction=1.0 leave no degrees"):
        result = tn.tensor([[1.0], [2.0]]).var(axis=1)
    assert np.isnan(result.numpy()).all()
    np.testing.assert_array_equal(tn.tensor([[1.0], [2.0]]).var(axis=1, correction=0).numpy(), [0.0, 0.0])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda t: t.sum(axis=0, dim=1), TypeError, r"sum: got both axis=0 and dim=1; pass one of them"),
        (lambda t: t.mean(keepdims=True, keepdim=False), TypeError, r"mean: got both keepdims=True and keepdim=False"),
        (lambda t: t.var(correction=1, unbiased=True), TypeError, r"var: got both correction=1 and unbiased=True"),
        (lambda t: t.std(correction="1"), TypeError, r"std: correction must be a finite number"),
        (lambda t: t.max(tn.ones(3)), TypeError, r"axis: expected an int, .* got Tensor \(.*is tn.maximum\)"),
        (lambda t: t.sum(axis=1.0), TypeError, r"axis: expected an int, a tuple of ints or None, got float"),
        (lambda t: t.softmax(dim=(0, 1)), TypeError, r"softmax: axis \(dim\) must be one int, got tuple"),
        (lambda t: t.clamp(), ValueError, r"clamp: at least one of min and max must be a number"),
        (lambda t: t.clamp(min=tn.zeros(3)), TypeError, r"clamp: min must be a Python number or None, got Tensor"),
        (lambda t: t.unsqueeze(3), ValueError, r"unsqueeze: dim must be an int in \[-3, 2\], got 3"),
        (lambda t: t.flatten(1, 0), ValueError, r"flatten: start_dim 1 comes after end_dim 0"),
        (lambda t: tn.cat([t, tn.ones(3, 2)]), ValueError, r"cat: tensors\[1\] has shape \(3, 2\); along axis 0"),
        (lambda t: tn.cat(t), TypeError, r"cat: tensors must be a non-empty list or tuple of tn.Tensors, got Tensor"),
        (lambda t: tn.cat([t, np.ones((2, 3))]), TypeError, r"cat: tensors\[1\] must be a tn.Tensor, got ndarray"),
        (lambda t: tn.cat([t.sum(), t.sum()]), ValueError, r"cat: 0-d tensors have no axis to join along"),
        (lambda t: tn.stack([t, tn.ones(3, 2)]), ValueError, r"stack: tensors\[1\] has shape \(3, 2\), tensors\[0\]"),
    ],
)
def test_bad_arguments_to_the_new_ops_name_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call(tn.ones(2, 3))
