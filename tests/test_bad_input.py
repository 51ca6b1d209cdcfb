"""Bad input fails loudly: the right exception, a message that names the argument, what was
expected and what was given, and nothing changed by the failing call."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest

import tinynorm as tn

needs_array_api_strict = pytest.mark.skipif(
    importlib.util.find_spec("array_api_strict") is None, reason="array_api_strict is not installed"
)


# ---- data that cannot require a gradient ---------------------------------------------------------------
@pytest.mark.parametrize(("data", "dtype_name"), [([1, 2], "int64"), ([True, False], "bool")])
def test_integer_or_boolean_data_cannot_require_grad(backend, data, dtype_name):
    with pytest.raises(TypeError, match=rf"requires_grad: only floating-point .* got dtype \S*{dtype_name}"):
        tn.tensor(data, requires_grad=True)


def test_non_numeric_data_is_refused():
    with pytest.raises(TypeError, match=r"tensor: expected numbers, got data of dtype <U1"):
        tn.tensor(["a"])


def test_an_unknown_dtype_name_is_refused(backend):
    with pytest.raises(TypeError, match=r"dtype: expected a dtype name .* such as 'float64', got 'float65'"):
        tn.tensor([1.0], dtype="float65")


# ---- shapes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum"])
def test_shapes_that_cannot_broadcast_are_refused(backend, op):
    with pytest.raises(ValueError, match=rf"{op}: shapes \(2, 3\) and \(4,\) cannot be broadcast together"):
        getattr(tn.ops, op)(tn.ones(2, 3), tn.ones(4))


def test_broadcast_to_a_shape_that_does_not_fit_is_refused(backend):
    with pytest.raises(ValueError, match=r"broadcast_to: cannot broadcast shape \(2, 3\) to \(4, 3\)"):
        tn.ones(2, 3).broadcast_to((4, 3))


def test_matmul_of_mismatched_shapes_is_refused(backend):
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(2, 3\) do not match"):
        tn.ones(2, 3) @ tn.ones(2, 3)


def test_matmul_of_a_0d_operand_is_refused(backend):
    with pytest.raises(ValueError, match=r"matmul: operands must have at least 1 dimension, got \(\) and \(3,\)"):
        tn.matmul(tn.tensor(1.0), tn.ones(3))


def test_reshape_to_a_different_size_is_refused(backend):
    with pytest.raises(ValueError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) into \(4, 2\)"):
        tn.ones(2, 3).reshape(4, 2)


def test_an_axis_out_of_range_is_refused(backend):
    with pytest.raises(ValueError, match=r"axis: expected values in \[-2, 2\), got 2"):
        tn.ones(2, 3).sum(axis=2)


def test_permute_needs_a_permutation(backend):
    with pytest.raises(ValueError, match=r"permute: expected a permutation of \(0, 1\), got \(0, 0\)"):
        tn.ones(2, 3).permute(0, 0)


def test_advanced_indexing_is_refused(backend):
    with pytest.raises(TypeError, match=r"indexing: only basic slicing .* got list"):
        tn.ones(2, 3)[[0, 1]]


def test_item_needs_one_element():
    with pytest.raises(ValueError, match=r"item: expected a tensor with one element, got shape \(2,\)"):
        tn.ones(2).item()


def test_an_op_refuses_a_non_number_operand():
    with pytest.raises(TypeError, match=r"expected a tn.Tensor or a Python number, got str"):
        tn.ones(2) + "1"


def test_function_apply_refuses_raw_arrays():
    with pytest.raises(TypeError, match=r"Add.apply: input 0 must be a tn.Tensor or None, got ndarray"):
        tn.ops.Add.apply(np.ones(2), np.ones(2))


# ---- backward --------------------------------------------------------------------------------------------
def test_a_gradient_of_the_wrong_shape_is_refused_and_the_graph_survives(backend):
    x = tn.ones(2, 3, requires_grad=True)
    y = x * 2.0
    with pytest.raises(ValueError, match=r"backward: grad must have the output's shape \(2, 3\), got \(3,\)"):
        y.backward(tn.ones(3))
    assert x.grad is None
    y.backward(tn.ones(2, 3))  # the failed call freed nothing
    np.testing.assert_array_equal(tn.backend.to_numpy(x.grad), np.full((2, 3), 2.0))


def test_backward_on_a_non_scalar_needs_a_gradient(backend):
    y = tn.ones(2, 3, requires_grad=True) * 2.0
    with pytest.raises(RuntimeError, match=r"grad can be omitted only for a scalar output.* shape \(2, 3\)"):
        y.backward()


def test_backward_on_a_tensor_that_does_not_require_grad_is_refused():
    with pytest.raises(RuntimeError, match=r"backward: this tensor does not require grad"):
        tn.ones(2).sum().backward()


@needs_array_api_strict
def test_a_gradient_from_another_backend_is_refused():
    y = tn.ones(2, requires_grad=True) * 2.0
    other = tn.tensor([1.0, 1.0], backend_name="array_api_strict")
    with pytest.raises(TypeError, match=r"grad lives on backend 'array_api_strict', the output on 'numpy'"):
        y.backward(other)


# ---- backends ----------------------------------------------------------------------------------------------
def test_an_unknown_backend_name_is_refused_and_the_backend_is_unchanged():
    with pytest.raises(
        ValueError, match=r"backend: expected one of \('numpy', 'cupy', 'array_api_strict'\), got 'jax'"
    ):
        tn.set_backend("jax")
    assert tn.get_backend() == "numpy"


def test_an_unknown_backend_in_use_backend_changes_nothing():
    with pytest.raises(ValueError, match="got 'torch'"), tn.use_backend("torch"):
        pass
    assert tn.get_backend() == "numpy"


def test_cupy_on_a_machine_without_it_is_unavailable_with_a_reason():
    try:
        import cupy
    except ImportError:
        pass
    else:
        if cupy.cuda.is_available():
            pytest.skip("this machine can run CuPy")
    with pytest.raises(tn.BackendUnavailableError, match=r"backend 'cupy'"):
        tn.set_backend("cupy")
    assert tn.get_backend() == "numpy"


def _fake_cupy(is_available):
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(is_available=is_available)
    return fake


def test_cupy_without_a_gpu_is_unavailable_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(lambda: False))
    with pytest.raises(tn.BackendUnavailableError, match=r"no usable CUDA GPU .*cupy\.cuda\.is_available\(\) is False"):
        tn.set_backend("cupy")
    assert tn.get_backend() == "numpy"


def test_cupy_with_a_broken_driver_is_unavailable_and_says_why(monkeypatch):
    def broken():
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(broken))
    with pytest.raises(tn.BackendUnavailableError, match=r"CUDA is not usable here \(libcuda\.so\.1"):
        tn.set_backend("cupy")
    assert tn.get_backend() == "numpy"


def test_cupy_not_installed_is_unavailable_and_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(tn.BackendUnavailableError, match=r"needs CuPy: pip install 'tinynorm\[cuda12\]'"):
        tn.set_backend("cupy")
    assert tn.get_backend() == "numpy"


def test_array_api_strict_not_installed_is_unavailable_and_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "array_api_strict", None)
    with pytest.raises(tn.BackendUnavailableError, match=r"needs the package array-api-strict"):
        tn.set_backend("array_api_strict")
    assert tn.get_backend() == "numpy"


@needs_array_api_strict
def test_tensors_from_two_backends_in_one_op_are_refused():
    a = tn.tensor([1.0, 2.0])
    b = tn.tensor([1.0, 2.0], backend_name="array_api_strict")
    with pytest.raises(TypeError, match=r"one backend, got tensors on \['array_api_strict', 'numpy'\]"):
        a + b


def test_to_an_unknown_target_names_backends_and_dtypes():
    with pytest.raises(ValueError, match=r"to: expected a backend name .*'jax'"):
        tn.randn(2).to("jax")
