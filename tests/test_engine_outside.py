"""What outside tests (micrograd's, MiniTorch's, PyTorch as the oracle, a bad-input sweep) found in the
engine, each pinned down: in-place writes after a forward, memory shared with the caller, upstream
gradients that are not real floats, relu at 0, backwards that return the wrong thing, NumPy on the left."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import tinynorm as tn

needs_array_api_strict = pytest.mark.skipif(
    importlib.util.find_spec("array_api_strict") is None, reason="array_api_strict is not installed"
)
MODIFIED = r"one of the variables needed for gradient computation has been modified by an inplace operation"


def grad_of(t: tn.Tensor) -> np.ndarray:
    return tn.backend.to_numpy(t.grad)


# ---- in-place writes after the forward saved a tensor ------------------------------------------------
def test_writing_into_a_saved_input_makes_backward_raise_naming_the_function_and_input(backend):
    x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = tn.tensor([4.0, 5.0, 6.0], requires_grad=True)
    y = w * x  # Mul saves both inputs: dx = dy * w needs w as it was
    with tn.no_grad():
        w[0] = 100.0
    with pytest.raises(RuntimeError, match=MODIFIED + r": its input 0 \(shape \(3,\)\), saved by Mul, is at version 1"):
        y.backward(tn.ones(3))
    assert x.grad is None and w.grad is None  # checked before any gradient was written


def test_assigning_data_between_forward_and_backward_is_an_inplace_write(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    w = tn.tensor([3.0, 4.0], requires_grad=True)
    y = x * w
    w.data = w.data * 2
    with pytest.raises(RuntimeError, match=MODIFIED + r": its input 1 .* saved by Mul"):
        y.backward(tn.ones(2))


def test_an_optimizer_step_before_backward_is_caught():
    # PyTorch raises here too: the step changed the weight that Linear's backward needs.
    layer = tn.nn.Linear(3, 2)
    opt = tn.optim.SGD(layer.parameters(), lr=0.1)
    x = tn.randn(4, 3, requires_grad=True)
    layer(x).backward(tn.ones(4, 2))
    y = layer(x)
    opt.step()
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward(tn.ones(4, 2))


def test_writing_into_a_saved_output_is_caught(backend):
    x = tn.tensor([0.0, 1.0], requires_grad=True)
    y = x.exp()  # Exp saves its output: d exp(x) = exp(x) dx
    with tn.no_grad():
        y[0] = 0.0
    with pytest.raises(RuntimeError, match=MODIFIED + r": its output .* saved by Exp"):
        y.backward(tn.ones(2))


def test_a_write_through_a_view_or_a_detached_tensor_is_seen_by_what_saved_the_other(backend):
    x = tn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * 2.0
    v = h[0:2]  # a view of h's memory
    z = v * v
    with tn.no_grad():
        h[0] = 100.0  # changes v too
    with pytest.raises(RuntimeError, match=MODIFIED):
        z.backward(tn.ones(2))

    y = x * x
    x.detach()[1] = -7.0  # the detached tensor shares x's memory, and its version counter
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward(tn.ones(3))


def test_a_write_into_an_input_that_was_not_saved_is_harmless_and_allowed(backend):
    # Add saves only the shapes, so its backward does not depend on the values (PyTorch agrees).
    a = tn.tensor([1.0, 2.0], requires_grad=True)
    b = tn.tensor([3.0, 4.0])
    y = a + b
    b[0] = 50.0
    y.backward(tn.tensor([1.0, 2.0]))
    np.testing.assert_array_equal(grad_of(a), [1.0, 2.0])


def test_writes_after_backward_are_fine_and_counted(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    (x * x).backward(tn.ones(2))
    with tn.no_grad():
        x[1] = 5.0
    assert x._version[0] == 1
    np.testing.assert_array_equal(x.numpy(), [1.0, 5.0])
    np.testing.assert_array_equal(grad_of(x), [2.0, 4.0])


def test_setitem_is_refused_where_autograd_would_lose_a_gradient(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"t\[index\] = value: in-place writes are not recorded by autograd"):
        x[0] = 3.0
    plain = tn.zeros(2)
    with pytest.raises(RuntimeError, match=r"not recorded by autograd"):
        plain[0] = x[0]  # the value requires grad
    plain[1] = 7.0
    np.testing.assert_array_equal(plain.numpy(), [0.0, 7.0])


# ---- tn.tensor copies; from_numpy and as_tensor share --------------------------------------------
def test_tensor_copies_the_callers_array(backend):
    source = np.array([1.0, 2.0, 3.0])
    x = tn.tensor(source, requires_grad=True)
    y = x * x
    source[:] = 99.0  # after the forward: must change neither the data nor the gradient
    y.backward(tn.ones(3))
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(grad_of(x), [2.0, 4.0, 6.0])


def test_tensor_of_a_tensor_copies_too(backend):
    x = tn.tensor([1.0, 2.0])
    copy = tn.tensor(x)
    copy[0] = 5.0
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])


def test_from_numpy_shares_memory_both_ways():
    source = np.array([1.0, 2.0])
    x = tn.from_numpy(source)
    source[0] = 10.0
    x[1] = 20.0
    np.testing.assert_array_equal(x.numpy(), [10.0, 20.0])
    np.testing.assert_array_equal(source, [10.0, 20.0])
    assert x.backend == "numpy" and x.dtype == np.float64


@needs_array_api_strict
def test_from_numpy_gives_a_numpy_tensor_whatever_the_current_backend():
    with tn.use_backend("array_api_strict"):
        assert tn.from_numpy(np.ones(2, dtype=np.float32)).backend == "numpy"


@pytest.mark.parametrize("bad", [[1.0, 2.0], np.array(["a"]), 3.0])
def test_from_numpy_needs_a_numpy_array_of_numbers(bad):
    with pytest.raises(TypeError, match=r"from_numpy: expected a NumPy array of numbers, got"):
        tn.from_numpy(bad)


def test_as_tensor_shares_when_backend_and_dtype_match_and_copies_otherwise():
    source = np.array([1.0, 2.0])
    shared = tn.as_tensor(source)
    cast = tn.as_tensor(source, dtype="float32")
    copied = tn.as_tensor([1.0, 2.0])
    source[0] = 5.0
    assert shared.numpy()[0] == 5.0
    assert (cast.numpy()[0], cast.dtype) == (1.0, np.float32)
    assert copied.numpy()[0] == 1.0
    t = tn.tensor([1.0])
    assert tn.as_tensor(t) is t


@needs_array_api_strict
def test_as_tensor_copies_onto_another_backend():
    source = np.array([1.0, 2.0])
    with tn.use_backend("array_api_strict"):
        moved = tn.as_tensor(source)
    source[0] = 5.0
    assert moved.backend == "array_api_strict"
    np.testing.assert_array_equal(moved.numpy(), [1.0, 2.0])


# ---- upstream gradients that are not real floats --------------------------------------------------
@pytest.mark.parametrize(
    ("grad", "dtype"),
    [
        (np.array([1.0, 2.0], dtype=object), "object"),
        (np.array([1 + 2j, 3j]), "complex128"),
        (["a", "b"], "<U1"),
        (np.array([True, False]), "bool"),
        (np.array([1, 2]), "int64"),
    ],
    ids=["object", "complex", "strings", "bool", "int"],
)
def test_a_non_real_floating_upstream_gradient_is_refused_naming_grad(backend, grad, dtype):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    with pytest.raises(TypeError, match=rf"backward: grad must have a real floating dtype .* got \S*{dtype}"):
        y.backward(grad)
    assert x.grad is None
    y.backward(np.array([1.0, 1.0]) if backend == "numpy" else tn.ones(2))  # the graph survived
    np.testing.assert_array_equal(grad_of(x), [3.0, 3.0])


def test_a_float32_upstream_gradient_is_cast_to_the_outputs_dtype():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    (x * 2.0).backward(np.ones(2, dtype=np.float32))
    assert x.grad.dtype == np.float64


# ---- relu at 0 ------------------------------------------------------------------------------------------
def test_relu_passes_no_gradient_at_exactly_zero(backend):
    # PyTorch, micrograd and MiniTorch all take relu'(0) = 0; maximum(x, 0)'s tie rule gave 1/2.
    x = tn.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    y = tn.relu(x)
    y.backward(tn.tensor([10.0, 10.0, 10.0]))
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(grad_of(x), [0.0, 0.0, 10.0])


def test_relu_keeps_nan(backend):
    assert np.isnan(tn.relu(tn.tensor([float("nan")])).numpy()[0])


# ---- what a Function's backward returns ----------------------------------------------------------
class ReturnsTensor(tn.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        return tn.Tensor(grad * 2)  # should be the array itself


class WrongShape(tn.Function):
    @staticmethod
    def forward(ctx, x, w):
        return x * w

    @staticmethod
    def backward(ctx, grad):
        return grad, grad  # w has shape (3,), grad (2, 3)


def test_a_backward_returning_a_tensor_is_refused_naming_the_function_and_input(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match=r"ReturnsTensor.backward returned a Tensor as the gradient of input 0"):
        ReturnsTensor.apply(x).backward(tn.ones(2))
    assert x.grad is None


def test_a_backward_returning_the_wrong_shape_is_refused_naming_the_function_and_input(backend):
    x = tn.ones(2, 3, requires_grad=True)
    w = tn.ones(3, requires_grad=True)
    message = r"WrongShape.backward returned a gradient of shape \(2, 3\) for an input of shape \(3,\) \(input 1\)"
    with pytest.raises(RuntimeError, match=message):
        WrongShape.apply(x, w).backward(tn.ones(2, 3))


# ---- NumPy on the left ------------------------------------------------------------------------------------
def test_numpy_on_the_left_gives_tensors_with_the_right_values():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = tn.tensor([[10.0, 20.0], [30.0, 40.0]], requires_grad=True)
    results = {
        "add": (a + t, a + t.numpy()),
        "sub": (a - t, a - t.numpy()),
        "mul": (a * t, a * t.numpy()),
        "div": (a / t, a / t.numpy()),
        "pow": (a**t, a ** t.numpy()),
        "matmul": (a @ t, a @ t.numpy()),
    }
    for name, (ours, expected) in results.items():
        assert type(ours) is tn.Tensor, name
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-15, err_msg=name)


def test_numpy_on_the_left_is_differentiable():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    t = tn.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    (a @ t).backward(np.ones((2, 2)))
    np.testing.assert_array_equal(t.grad, a.T @ np.ones((2, 2)))


def test_numpy_comparisons_and_asarray_give_plain_arrays():
    t = tn.tensor([1.0, 5.0])
    np.testing.assert_array_equal(np.array([2.0, 2.0]) > t, [True, False])
    host = np.asarray(t)
    assert host.dtype == np.float64 and not np.shares_memory(host, t.data)
    np.testing.assert_array_equal(host, [1.0, 5.0])


def test_a_numpy_ufunc_on_a_tensor_is_refused():
    with pytest.raises(TypeError, match=r"does not support ufuncs"):
        np.exp(tn.tensor([1.0]))


@needs_array_api_strict
def test_a_numpy_array_with_a_tensor_of_another_backend_is_refused():
    with tn.use_backend("array_api_strict"):
        t = tn.ones(2)
    with pytest.raises(TypeError, match=r"got ndarray of backend 'numpy' \(an array of the tensor's own backend"):
        np.ones(2) + t
