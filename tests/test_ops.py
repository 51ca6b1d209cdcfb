"""Every primitive op in the registry passes the gradcheck, on every backend, over generated shapes.

Shapes are small (sides 1 to 3) but cover what breaks unbroadcasting: 0-d tensors,
size-1 axes, prepended axes, and both operands broadcasting at once. ``sum_to``,
the one unbroadcast every op uses, is pinned down with numbers at the end.
"""

from __future__ import annotations

import math

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
