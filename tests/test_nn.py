"""``tn.nn`` and ``tn.optim``: modules find their parameters, Linear matches torch.nn.Linear,
SGD and Adam take the steps PyTorch takes, and a small MLP learns."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.nn import Linear, Module, ModuleList, Parameter, ReLU, Sequential, Tanh


class Block(Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = Linear(3, 4)
        self.scale = Parameter(tn.ones(4))

    def forward(self, x):
        return self.linear(x) * self.scale


class Net(Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x))


# ---- parameters ------------------------------------------------------------------------------------------
def test_named_parameters_are_nested_with_dotted_names_own_first():
    names = [name for name, _ in Net().named_parameters()]
    assert names == ["block.scale", "block.linear.weight", "block.linear.bias", "head.weight", "head.bias"]


def test_parameters_are_the_named_ones_in_the_same_order():
    net = Net()
    assert [id(p) for p in net.parameters()] == [id(p) for _, p in net.named_parameters()]
    assert sum(p.size for p in net.parameters()) == 4 + (4 * 3 + 4) + (2 * 4 + 2)


def test_sequential_names_its_layers_by_position():
    model = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(model) == 3 and isinstance(model[1], ReLU)


def test_a_parameter_requires_grad_and_is_a_leaf():
    p = Parameter(tn.zeros(3))
    assert (p.requires_grad, p.is_leaf) == (True, True)
    assert Parameter([1.0, 2.0]).dtype == np.float64


def test_zero_grad_forgets_every_gradient():
    net = Net()
    net(tn.randn(5, 3)).backward(tn.randn(5, 2))
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_train_and_eval_reach_every_submodule():
    net = Net()
    assert [m.training for m in net.modules()] == [True] * 4
    net.eval()
    assert [m.training for m in net.modules()] == [False] * 4
    net.train()
    assert [m.training for m in net.modules()] == [True] * 4


# ---- Linear --------------------------------------------------------------------------------------------------
def test_linear_shapes_match_torch(backend):
    layer = Linear(5, 3)
    assert (layer.weight.shape, layer.bias.shape) == ((3, 5), (3,))
    assert layer(tn.randn(4, 5)).shape == (4, 3)
    assert layer(tn.randn(2, 4, 5)).shape == (2, 4, 3)
    assert Linear(5, 3, bias=False).bias is None


def test_linear_computes_x_times_weight_transposed_plus_bias():
    layer = Linear(2, 2)
    layer.weight = Parameter(tn.tensor([[1.0, 2.0], [3.0, 4.0]]))
    layer.bias = Parameter(tn.tensor([0.5, -0.5]))
    np.testing.assert_array_equal(layer(tn.tensor([[1.0, 1.0]])).numpy(), [[3.5, 6.5]])


def test_linear_init_is_uniform_within_one_over_sqrt_fan_in():
    tn.manual_seed(0)
    layer = Linear(100, 50)
    bound = 1 / math.sqrt(100)
    for p in (layer.weight.numpy(), layer.bias.numpy()):
        assert np.abs(p).max() <= bound
    weights = layer.weight.numpy()
    assert weights.min() < -0.99 * bound and weights.max() > 0.99 * bound  # fills the interval (5000 draws)


def test_linear_passes_gradcheck(backend):
    assert tn.gradcheck(Linear(3, 2), tn.randn(4, 3, requires_grad=True)) is True


def test_linear_refuses_the_wrong_input_width_naming_in_features():
    with pytest.raises(ValueError, match=r"Linear: input's last dimension must equal in_features=3, got .* \(2, 4\)"):
        Linear(3, 2)(tn.ones(2, 4))


@pytest.mark.parametrize(("bad", "kind"), [(np.ones((2, 3)), "ndarray"), ([[1.0, 2.0, 3.0]], "list")])
def test_linear_refuses_input_that_is_not_a_tensor(bad, kind):
    # An ndarray used to come back as an object array of scalar Tensors.
    with pytest.raises(TypeError, match=rf"Linear: input must be a tn.Tensor, got {kind}"):
        Linear(3, 2)(bad)


def test_linear_refuses_integer_input():
    with pytest.raises(TypeError, match=r"Linear: input must have a floating dtype, got int64"):
        Linear(3, 2)(tn.tensor([[1, 2, 3]]))


# ---- containers and module traversal -------------------------------------------------------------------------
def test_module_list_holds_modules_by_position_and_registers_their_parameters():
    layers = ModuleList([Linear(2, 3)])
    layers.append(ReLU()).extend([Linear(3, 1), Tanh()])
    assert len(layers) == 4
    assert [type(m).__name__ for m in layers] == ["Linear", "ReLU", "Linear", "Tanh"]
    assert isinstance(layers[-2], Linear) and layers[-2] is layers[2]
    assert [type(m).__name__ for m in layers[1:3]] == ["ReLU", "Linear"] and isinstance(layers[1:3], ModuleList)
    assert [name for name, _ in layers.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    layers[1] = Linear(3, 3)
    assert [name for name, _ in layers.named_parameters()][2:4] == ["1.weight", "1.bias"]


def test_a_module_list_inside_a_module_contributes_dotted_names():
    class Tower(Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = ModuleList(Linear(2, 2) for _ in range(2))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    tower = Tower()
    assert [n for n, _ in tower.named_parameters()] == [f"blocks.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")]
    assert tower(tn.randn(4, 2)).shape == (4, 2)
    assert tn.gradcheck(tower, tn.randn(3, 2, requires_grad=True)) is True


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m[2], IndexError, r"ModuleList: index 2 is out of range for 2 modules"),
        (lambda m: m.append(np.ones(2)), TypeError, r"ModuleList.append: expected a tn.nn.Module, got ndarray"),
        (lambda m: m.extend(Linear(1, 1)), TypeError, r"ModuleList.extend: expected an iterable of modules, got one"),
    ],
)
def test_module_list_refuses_bad_positions_and_non_modules(call, error, message):
    with pytest.raises(error, match=message):
        call(ModuleList([ReLU(), Tanh()]))


def test_sequential_is_a_module_list_with_a_forward():
    model = Sequential(Linear(2, 3), ReLU())
    model.append(Linear(3, 1))
    assert isinstance(model, ModuleList) and len(model) == 3
    assert isinstance(model[:2], Sequential) and model(tn.randn(4, 2)).shape == (4, 1)


def test_named_modules_and_children_follow_pytorch():
    net = Net()
    assert [name for name, _ in net.named_modules()] == ["", "block", "block.linear", "head"]
    assert [type(m).__name__ for m in net.children()] == ["Block", "Linear"]
    assert [name for name, _ in net.named_children()] == ["block", "head"]
    assert [type(m).__name__ for m in net.modules()] == ["Net", "Block", "Linear", "Linear"]


def test_a_module_reachable_twice_is_listed_once():
    shared = Linear(2, 2)
    model = Sequential(shared, ReLU(), shared)
    assert [name for name, _ in model.named_modules()] == ["", "0", "1"]
    assert len(list(model.children())) == 2


@pytest.mark.torch
def test_named_modules_names_match_torch_for_the_same_model():
    torch = pytest.importorskip("torch")
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(3, 1)))
    ours = Sequential(Linear(2, 3), Sequential(ReLU(), Linear(3, 1)))
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]


# ---- moving and casting modules ----------------------------------------------------------------------------
def test_module_to_float32_casts_every_parameter_and_keeps_it_learnable():
    net = Net().to("float32")
    assert [(p.dtype, type(p), p.requires_grad) for p in net.parameters()] == [(np.float32, Parameter, True)] * 5
    assert net(tn.randn(2, 3, dtype="float32")).dtype == np.float32


def test_module_to_a_backend_moves_parameters_and_buffers(backend):
    class WithBuffer(Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = Linear(3, 2)
            self.register_buffer("running", tn.zeros(2))

    with tn.use_backend("numpy"):
        tn.manual_seed(0)
        module = WithBuffer()
    before = module.state_dict()
    module.to(backend)
    assert {p.backend for p in module.parameters()} == {backend}
    assert module.running.backend == backend
    after = module.state_dict()
    assert sorted(after) == ["linear.bias", "linear.weight", "running"]
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


# ---- optimizers ---------------------------------------------------------------------------------------------
def _param(values):
    p = Parameter(tn.tensor(values))
    return p


def test_sgd_step_is_p_minus_lr_times_grad():
    p = _param([1.0, -2.0])
    p.grad = np.array([0.5, 0.25])
    tn.optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.05, -2.0 - 0.025], rtol=1e-15)


def test_sgd_with_momentum_adds_the_decayed_previous_step():
    p = _param([1.0, -2.0])
    sgd = tn.optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([0.5, 0.25])
    sgd.step()  # velocity = grad
    sgd.step()  # velocity = 0.9 grad + grad = 1.9 grad
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1 * 2.9 * 0.5, -2.0 - 0.1 * 2.9 * 0.25], rtol=1e-15)


def test_sgd_weight_decay_adds_decay_times_p_to_the_gradient():
    p = _param([1.0, -2.0])
    p.grad = np.array([0.0, 0.0])
    tn.optim.SGD([p], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(p.numpy(), [1.0 - 0.1 * 0.5 * 1.0, -2.0 - 0.1 * 0.5 * -2.0], rtol=1e-15)


def test_adam_first_step_moves_each_parameter_by_lr_against_its_gradient_sign():
    # After one step the bias-corrected moments are m = g and v = g**2, so the step is lr * g / (|g| + eps).
    p = _param([1.0, -2.0, 0.5])
    p.grad = np.array([0.5, -0.25, 1e-3])
    tn.optim.Adam([p], lr=0.1).step()
    expected = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 + 0.1 * 0.25 / (0.25 + 1e-8), 0.5 - 0.1 * 1e-3 / (1e-3 + 1e-8)]
    np.testing.assert_allclose(p.numpy(), expected, rtol=1e-15)


def test_adam_second_step_uses_bias_corrected_moments():
    p = _param([1.0])
    adam = tn.optim.Adam([p], lr=0.1, betas=(0.5, 0.75), eps=0.0)
    p.grad = np.array([2.0])
    adam.step()  # m = 1, v = 1; corrected 2 and 4; p = 1 - 0.1 * 2 / 2 = 0.9
    p.grad = np.array([-1.0])
    adam.step()  # m = 0, v = 0.75 + 0.25 = 1; p = 0.9 - 0.1 * 0 = 0.9
    np.testing.assert_allclose(p.numpy(), [0.9], rtol=1e-15)
    p.grad = np.array([4.0])
    adam.step()  # m = 2, v = 0.75 + 4 = 4.75; corrected 2/0.875 and 4.75/(1 - 0.421875)
    m_hat, v_hat = 2 / 0.875, 4.75 / 0.578125
    np.testing.assert_allclose(p.numpy(), [0.9 - 0.1 * m_hat / math.sqrt(v_hat)], rtol=1e-15)


def test_a_parameter_without_gradient_is_not_moved():
    p, q = _param([1.0]), _param([2.0])
    p.grad = np.array([1.0])
    tn.optim.Adam([p, q], lr=0.1).step()
    assert q.numpy()[0] == 2.0


def test_optimizer_zero_grad_forgets_gradients():
    p = _param([1.0])
    p.grad = np.array([1.0])
    sgd = tn.optim.SGD([p], lr=0.1)
    sgd.zero_grad()
    assert p.grad is None


@pytest.mark.torch
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
        ("Adam", {"lr": 0.05}),
        ("Adam", {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
    ],
)
def test_optimizers_match_torch_optim_over_five_steps(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 2))
    grads = rng.standard_normal((5, 3, 2))
    ours = Parameter(tn.tensor(start))
    theirs = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    ours_opt = getattr(tn.optim, name)([ours], **kwargs)
    theirs_opt = getattr(torch.optim, name)([theirs], **kwargs)
    for g in grads:
        ours.grad = g.copy()
        theirs.grad = torch.tensor(g, dtype=torch.float64)
        ours_opt.step()
        theirs_opt.step()
        np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=0, atol=1e-12)


# ---- training --------------------------------------------------------------------------------------------------
def test_cross_entropy_of_uniform_logits_is_log_of_the_class_count():
    loss = tn.nn.cross_entropy(tn.zeros(4, 3), np.array([0, 1, 2, 0]))
    assert loss.item() == pytest.approx(math.log(3), rel=1e-15)


@pytest.mark.torch
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    ("input_shape", "target_shape"), [((5, 4), (5,)), ((4,), ()), ((3, 4, 2), (3, 2))], ids=["NC", "C", "NCd"]
)
def test_cross_entropy_matches_torch(backend, reduction, input_shape, target_shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(input_shape) * 3
    labels = rng.integers(0, 4, target_shape)
    x = tn.tensor(logits, requires_grad=True)
    ours = tn.nn.functional.cross_entropy(x, labels, reduction=reduction)
    tx = torch.tensor(logits, requires_grad=True)
    theirs = torch.nn.functional.cross_entropy(tx, torch.tensor(labels), reduction=reduction)
    dy = rng.standard_normal(ours.shape)
    ours.backward(tn.tensor(dy))
    theirs.backward(torch.tensor(dy))
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(tn.backend.to_numpy(x.grad), tx.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (np.array([0, 3]), ValueError, r"cross_entropy: target 3 is out of bounds: classes are 0 to 2"),
        (np.array([0.0, 1.0]), TypeError, r"cross_entropy: target must hold integer class indices, got dtype float64"),
        (np.array([[0, 1]]), ValueError, r"cross_entropy: target must have shape \(2,\) .* got \(1, 2\)"),
    ],
)
def test_cross_entropy_refuses_bad_targets(target, error, message):
    with pytest.raises(error, match=message):
        tn.nn.functional.cross_entropy(tn.zeros(2, 3), target)


def test_cross_entropy_refuses_an_unknown_reduction():
    with pytest.raises(ValueError, match=r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'"):
        tn.nn.functional.cross_entropy(tn.zeros(2, 3), [0, 1], reduction="avg")


def test_cross_entropy_passes_gradcheck(backend):
    labels = tn.backend.namespace().asarray(np.array([0, 2, 1]))
    logits = tn.randn(3, 4, requires_grad=True)
    assert tn.gradcheck(lambda z: tn.nn.cross_entropy(z, labels), logits) is True


def test_a_small_mlp_learns_xor_quadrants(backend):
    # Label 1 where x and y have the same sign: no linear model can do better than loss 0.69 here.
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (64, 2))
    labels = tn.backend.namespace().asarray((points[:, 0] * points[:, 1] > 0).astype(np.int64))
    x = tn.tensor(points)
    tn.manual_seed(0)
    model = Sequential(Linear(2, 16), Tanh(), Linear(16, 2))
    opt = tn.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = tn.nn.cross_entropy(model(x), labels)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert first > 0.6
    assert loss.item() < 0.05  # reaches 0.017 in 150 steps


def test_module_to_dtype_casts_only_floating_buffers():
    norm = tn.nn.BatchNorm1d(3).to("float32")
    assert norm.running_mean.dtype == np.float32
    assert norm.num_batches_tracked.dtype == np.int64


def test_a_shared_parameter_is_listed_and_stepped_once_as_in_pytorch():
    first, second = tn.nn.Linear(3, 3), tn.nn.Linear(3, 3)
    second.weight = first.weight  # tied weights
    model = tn.nn.Sequential(first, second)
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.bias"]
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
    ]
    before = first.weight.numpy().copy()
    first.weight.grad = np.ones((3, 3))
    for p in (first.bias, second.bias):
        p.grad = np.zeros(3)
    tn.optim.SGD(model.parameters(), lr=0.5).step()
    np.testing.assert_allclose(first.weight.numpy(), before - 0.5)  # one step, not two
