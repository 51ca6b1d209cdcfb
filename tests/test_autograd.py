"""Autograd: the backward walk, what it accumulates and frees, and the Tensor basics it relies on."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import tinynorm as tn

needs_array_api_strict = pytest.mark.skipif(
    importlib.util.find_spec("array_api_strict") is None, reason="array_api_strict is not installed"
)


def grad_of(t: tn.Tensor) -> np.ndarray:
    return tn.backend.to_numpy(t.grad)


# ---- the graph: reuse, diamonds, long chains ---------------------------------------------------------
def test_a_node_used_twice_gets_both_gradients(backend):
    # y = x * x uses x on both sides of one op: dy/dx = x + x = 2x (micrograd's classic bug gave x).
    x = tn.tensor([3.0, -1.5], requires_grad=True)
    (x * x).backward(tn.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(grad_of(x), [6.0, -3.0])


def test_a_diamond_sums_the_gradients_of_both_paths(backend):
    # a = 2x and b = 3x both lead to y = a * b = 6 x**2, so dy/dx = 12 x.
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    a, b = x * 2.0, x * 3.0
    (a * b).backward(tn.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(grad_of(x), [12.0, 24.0])


def test_an_intermediate_reused_downstream_is_backpropagated_once_with_the_summed_gradient(backend):
    # h = exp(x) feeds y = h * h + h: dy/dx = (2h + 1) h.
    x = tn.tensor([0.0, 1.0], requires_grad=True)
    h = x.exp()
    (h * h + h).backward(tn.tensor([1.0, 1.0]))
    e = np.exp([0.0, 1.0])
    np.testing.assert_allclose(grad_of(x), (2 * e + 1) * e, rtol=1e-15)


def test_a_chain_of_100_000_ops_backpropagates_without_recursion_error():
    x = tn.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y + 0.0
    y.backward()
    assert x.grad == 1.0


def test_freeing_a_chain_of_100_000_ops_does_not_crash():
    # Dropping the last tensor frees 100,000 nested links; a recursive teardown would overflow
    # the C stack, which kills the interpreter, so it runs in a child process.
    script = (
        "import tinynorm as tn\n"
        "x = tn.tensor(1.0, requires_grad=True)\n"
        "y = x\n"
        "for _ in range(100_000):\n"
        "    y = y * 1.0\n"
        "del y\n"
        "print('freed')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout.strip()) == (0, "freed"), done.stderr


# ---- accumulation and backward twice -----------------------------------------------------------------
def test_gradients_accumulate_across_backward_calls(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).backward(tn.tensor([1.0, 1.0]))
    (x * x).backward(tn.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(grad_of(x), [3.0 + 2.0, 3.0 + 4.0])


def test_a_second_backward_without_retain_graph_raises():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"backward through .* a second time.*retain_graph=True"):
        y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])  # the failed call added nothing


def test_a_second_backward_with_retain_graph_accumulates(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(grad_of(x), [4.0, 8.0])


def test_backward_frees_what_the_forward_saved():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = x * x
    y.backward(tn.tensor([1.0, 1.0]))
    assert (y._ctx, y._parents) == (None, ())


# ---- turning the graph off ---------------------------------------------------------------------------
def test_no_grad_records_no_graph(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    with tn.no_grad():
        assert tn.is_grad_enabled() is False
        y = x * 2.0
    assert tn.is_grad_enabled() is True
    assert (y.requires_grad, y.is_leaf) == (False, True)


def test_no_grad_is_restored_after_an_exception():
    with pytest.raises(KeyError), tn.no_grad():
        raise KeyError("inside")
    assert tn.is_grad_enabled() is True


def test_retain_grad_keeps_the_gradient_of_an_intermediate(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    y.retain_grad()
    z = y * 5.0
    (y * y).backward(tn.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(grad_of(y), [6.0, 12.0])  # 2y
    assert z.grad is None


def test_intermediates_keep_no_gradient_by_default():
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    (y * y).backward(tn.tensor([1.0, 1.0]))
    assert y.grad is None


def test_detach_cuts_the_graph_and_shares_the_data(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 3.0).detach()
    assert (d.requires_grad, d.is_leaf) == (False, True)
    (x * d).backward(tn.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(grad_of(x), [3.0, 6.0])  # d is a constant: d(x * d)/dx = d


# ---- the Tensor basics ----------------------------------------------------------------------------------
def test_numpy_returns_a_copy(backend):
    x = tn.tensor([1.0, 2.0])
    host = x.numpy()
    host[0] = 99.0
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])


def test_numpy_of_a_numpy_tensor_does_not_share_memory():
    x = tn.tensor([1.0, 2.0])
    assert not np.shares_memory(x.numpy(), x.data)


@pytest.mark.parametrize("data", [1.5, [1.0, 2.0], [[1, 2.5]], np.array([1.0], dtype=np.float64)])
def test_floats_become_float64(backend, data):
    assert tn.tensor(data).dtype == tn.backend.namespace().float64


def test_integers_stay_integers(backend):
    assert tn.tensor([1, 2]).dtype == tn.backend.namespace().int64


def test_float32_data_keeps_its_dtype(backend):
    assert tn.tensor(np.ones(2, dtype=np.float32)).dtype == tn.backend.namespace().float32


@pytest.mark.parametrize("dtype", ["float32", tn.float32, np.float32])
def test_the_dtype_argument_wins(backend, dtype):
    xp = tn.backend.namespace()
    assert tn.tensor([1, 2], dtype=dtype).dtype == xp.float32
    assert tn.zeros(2, 3, dtype=dtype).dtype == xp.float32


def test_zeros_ones_and_randn_are_float64_with_the_given_shape(backend):
    xp = tn.backend.namespace()
    for t in (tn.zeros(2, 3), tn.ones(2, 3), tn.randn(2, 3), tn.rand(2, 3)):
        assert (t.shape, t.dtype, t.backend) == ((2, 3), xp.float64, backend)


@needs_array_api_strict
def test_to_another_backend_and_back_keeps_values_and_requires_grad():
    x = tn.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    there = x.to("array_api_strict")
    back = there.to("numpy")
    assert (there.backend, back.backend) == ("array_api_strict", "numpy")
    assert there.requires_grad and back.requires_grad
    np.testing.assert_array_equal(back.numpy(), [[1.0, 2.0], [3.0, 4.0]])


def test_to_the_same_backend_is_the_tensor_itself(backend):
    x = tn.tensor([1.0])
    assert x.to(backend) is x


def test_to_a_dtype_casts_differentiably(backend):
    x = tn.tensor([1.0, 2.0], requires_grad=True)
    y = x.to("float32")
    assert y.dtype == tn.backend.namespace().float32
    y.backward(tn.tensor([1.0, 1.0], dtype="float32"))
    assert x.grad.dtype == tn.backend.namespace().float64
    np.testing.assert_array_equal(grad_of(x), [1.0, 1.0])


def test_a_gradient_has_the_dtype_of_its_input_as_in_pytorch():
    """A float32 tensor times a float64 one computes in float64 (NumPy's promotion), but
    each input's gradient comes back in that input's own dtype."""
    x = tn.tensor(np.arange(1.0, 4.0, dtype=np.float32), requires_grad=True)
    w = tn.tensor(np.full(3, 0.5), requires_grad=True)
    (x * w).backward(tn.tensor(np.ones(3)))
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float64
    np.testing.assert_array_equal(x.grad, np.full(3, 0.5, dtype=np.float32))
    np.testing.assert_array_equal(w.grad, np.arange(1.0, 4.0))
