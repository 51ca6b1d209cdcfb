"""``state_dict`` and ``load_state_dict``: PyTorch's key names and order, every problem reported at once
by name, nothing changed by a failed load, and a PyTorch model's state loaded into the same tinynorm
model giving PyTorch's forward and backward."""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.nn import BatchNorm1d, LayerNorm, Linear, Sequential


def model() -> Sequential:
    tn.manual_seed(0)
    return Sequential(Linear(8, 4), LayerNorm(4), BatchNorm1d(4))


KEYS = [
    "0.weight",
    "0.bias",
    "1.weight",
    "1.bias",
    "2.weight",
    "2.bias",
    "2.running_mean",
    "2.running_var",
    "2.num_batches_tracked",
]


def test_state_dict_has_pytorchs_keys_in_pytorchs_order_parameters_and_buffers():
    assert list(model().state_dict()) == KEYS
    # Each module's own parameters, then its own buffers, then the next module's: not all buffers last.
    keys = list(Sequential(BatchNorm1d(3), Linear(3, 2)).state_dict())
    batch_norm = ["0.weight", "0.bias", "0.running_mean", "0.running_var", "0.num_batches_tracked"]
    assert keys == batch_norm + ["1.weight", "1.bias"]


def test_load_state_dict_copies_values_into_the_parameters_dtype_and_backend(backend):
    m = model().to(backend)
    rng = np.random.default_rng(0)
    state = {key: rng.standard_normal(value.shape).astype(np.float32) for key, value in model().state_dict().items()}
    state["2.num_batches_tracked"] = np.array(7)
    result = m.load_state_dict(state)
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    loaded = m.state_dict()
    for key in KEYS:
        np.testing.assert_array_equal(loaded[key], state[key], err_msg=key)
    assert m[0].weight.dtype == tn.backend.namespace(backend).float64 and m[0].weight.backend == backend
    assert isinstance(m[0].weight, tn.nn.Parameter) and m[0].weight.requires_grad
    assert int(m[2].num_batches_tracked.item()) == 7


def test_loaded_values_do_not_share_memory_with_the_source():
    m = model()
    source = {key: value.copy() for key, value in model().state_dict().items()}
    m.load_state_dict(source)
    source["0.weight"][...] = 123.0
    assert not (m[0].weight.numpy() == 123.0).any()


def test_values_may_be_tensors_lists_or_any_array_like():
    m = model()
    state = model().state_dict()
    state["0.bias"] = tn.tensor([1.0, 2.0, 3.0, 4.0])
    state["1.weight"] = [5.0, 6.0, 7.0, 8.0]
    m.load_state_dict(state)
    np.testing.assert_array_equal(m[0].bias.numpy(), [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(m[1].weight.numpy(), [5.0, 6.0, 7.0, 8.0])


def test_every_problem_is_reported_at_once_by_name_and_nothing_changes():
    m = model()
    before = m.state_dict()
    state = model().state_dict()
    del state["0.bias"], state["2.running_var"]
    state["0.weight"] = np.ones((4, 3))
    state["2.running_mean"] = np.ones(5)
    state["3.weight"] = np.ones(2)
    state["1.bias"] = np.zeros(4)  # a good value: not loaded either, since the load fails
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(state)
    assert str(info.value) == (
        "Error(s) in loading state_dict for Sequential:\n"
        '\tMissing key(s) in state_dict: "0.bias", "2.running_var".\n'
        '\tUnexpected key(s) in state_dict: "3.weight".\n'
        "\tsize mismatch for 0.weight: copying a param with shape (4, 3) from checkpoint, "
        "the shape in current model is (4, 8).\n"
        "\tsize mismatch for 2.running_mean: copying a param with shape (5,) from checkpoint, "
        "the shape in current model is (4,)."
    )
    after = m.state_dict()
    for key in KEYS:
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)


def test_values_that_are_not_numbers_are_reported():
    state = model().state_dict()
    state["0.bias"] = np.array(["a", "b", "c", "d"])
    state["1.bias"] = [[1.0], [2.0, 3.0]]  # ragged: not an array
    with pytest.raises(RuntimeError, match=r"dtype mismatch for 0.bias: expected numbers, got an array of dtype <U1"):
        model().load_state_dict(state)
    with pytest.raises(RuntimeError, match=r"could not read 1.bias as an array: ValueError"):
        model().load_state_dict(state)


def test_strict_false_loads_what_matches_and_returns_the_missing_and_unexpected_keys():
    m = model()
    result = m.load_state_dict({"0.bias": np.arange(4.0), "extra.weight": np.ones(2)}, strict=False)
    assert result.missing_keys == [key for key in KEYS if key != "0.bias"]
    assert result.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(m[0].bias.numpy(), np.arange(4.0))


def test_strict_false_still_refuses_a_wrong_shape():
    with pytest.raises(RuntimeError, match=r"size mismatch for 0.bias: copying a param with shape \(3,\)"):
        model().load_state_dict({"0.bias": np.ones(3)}, strict=False)


def test_a_state_dict_must_be_a_mapping():
    with pytest.raises(TypeError, match=r"load_state_dict: expected a dict of arrays by name, got list"):
        model().load_state_dict([np.ones(3)])


def test_loading_between_forward_and_backward_is_caught_as_an_inplace_write():
    m = model()
    y = m(tn.randn(5, 8))
    m.load_state_dict(model().state_dict())
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation"):
        y.backward(tn.randn(5, 4))


@pytest.mark.torch
def test_a_torch_models_state_loads_and_then_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.LayerNorm(4), torch.nn.BatchNorm1d(4)).double()
    with torch.no_grad():  # move every parameter and buffer off its initial value
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    theirs(torch.randn(16, 8, dtype=torch.float64) * 2 + 1)  # a training step moves the running statistics
    ours = model()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({key: value.numpy() for key, value in theirs.state_dict().items()})
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((6, 8)), rng.standard_normal((6, 4))
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        ours.zero_grad()
        theirs.zero_grad()
        ox, tx = tn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        oy, ty = ours(ox), theirs(tx)
        oy.backward(dy)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(oy.numpy(), ty.detach().numpy(), rtol=0, atol=1e-10, err_msg=mode)
        np.testing.assert_allclose(ox.grad, tx.grad.numpy(), rtol=0, atol=1e-10, err_msg=mode)
        for (name, p), (_, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
            np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=0, atol=1e-10, err_msg=f"{mode} {name}")
    for key, value in theirs.state_dict().items():  # the training step updated both sides alike
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), rtol=0, atol=1e-10, err_msg=key)
