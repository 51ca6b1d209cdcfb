"""BatchNorm1d/2d, GroupNorm and InstanceNorm1d/2d: PyTorch as an independent oracle (train and
eval, running statistics), the relations between them and LayerNorm, the kernels against the
lessons, empty batches, extreme magnitudes, default dtypes, bad input, and broken backwards."""

from __future__ import annotations

import contextlib
import importlib.util

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynorm as tn
from tinynorm.kernels import blocks, cpu_channels
from tinynorm.norms.batchnorm import BatchNormEvalFunction, BatchNormFunction
from tinynorm.norms.groupnorm import GroupNormFunction
from tinynorm.registry import NORMS

needs_array_api_strict = pytest.mark.skipif(
    importlib.util.find_spec("array_api_strict") is None, reason="array_api_strict is not installed"
)

F = tn.nn.functional
TOL = {"rtol": 1e-10, "atol": 1e-10}


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _randomize_affine(ours, theirs, seed):
    """Move weight and bias off ones/zeros, identically in both modules (hides fewer bugs)."""
    torch = pytest.importorskip("torch")
    if ours.weight is None:
        return
    c = ours.weight.shape[0]
    w, b = 1 + 0.5 * _rand(seed, c), 0.5 * _rand(seed + 1, c)
    ours.weight.data, ours.bias.data = tn.tensor(w).data, tn.tensor(b).data
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(w))
        theirs.bias.copy_(torch.tensor(b))


def _assert_same_step(ours, theirs, x_host, dy_host):
    """One forward and backward through both; outputs and every gradient agree to 1e-10."""
    torch = pytest.importorskip("torch")
    x, tx = tn.tensor(x_host, requires_grad=True), torch.tensor(x_host, requires_grad=True)
    y, ty = ours(x), theirs(tx)
    y.backward(tn.tensor(dy_host))
    ty.backward(torch.tensor(dy_host))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **TOL, err_msg="output")
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), **TOL, err_msg="input gradient")
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, getattr(theirs, name).grad.numpy(), **TOL, err_msg=name)
        p.grad = None
        getattr(theirs, name).grad = None


def _assert_same_running_stats(ours, theirs):
    np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), **TOL)
    assert int(ours.num_batches_tracked.item()) == int(theirs.num_batches_tracked.item())


# ---- BatchNorm1d against PyTorch ------------------------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5), (1, 2, 4)], ids=["NC", "NCL", "batch1-NCL"])
def test_batchnorm1d_training_step_matches_pytorch(shape, affine, impl):
    torch = pytest.importorskip("torch")
    c = shape[1]
    ours = tn.nn.BatchNorm1d(c, affine=affine, impl=impl)
    theirs = torch.nn.BatchNorm1d(c, affine=affine, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=5)
    _assert_same_step(ours, theirs, 3 + 2 * _rand(0, *shape), _rand(1, *shape))
    _assert_same_running_stats(ours, theirs)


@pytest.mark.torch
@pytest.mark.parametrize("momentum", [0.1, 0.3, None], ids=["momentum0.1", "momentum0.3", "cumulative"])
@pytest.mark.parametrize("shape", [(6, 3), (3, 3, 4)], ids=["NC", "NCL"])
def test_batchnorm1d_running_stats_after_five_steps_match_pytorch(shape, momentum):
    torch = pytest.importorskip("torch")
    ours = tn.nn.BatchNorm1d(3, momentum=momentum)
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64)
    for step in range(5):  # batches with different means and spreads, so every step moves the estimates
        _assert_same_step(ours, theirs, step + (1 + step) * _rand(10 + step, *shape), _rand(20 + step, *shape))
    _assert_same_running_stats(ours, theirs)
    assert int(ours.num_batches_tracked.item()) == 5


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (1, 3)], ids=["NC", "NCL", "batch1-NC"])
def test_batchnorm1d_eval_uses_the_running_stats_as_pytorch(shape, impl):
    torch = pytest.importorskip("torch")
    ours, theirs = tn.nn.BatchNorm1d(3, impl=impl), torch.nn.BatchNorm1d(3, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=7)
    for step in range(3):
        batch = (4, 3, 5)
        _assert_same_step(ours, theirs, 2 - step + 3 * _rand(30 + step, *batch), _rand(40 + step, *batch))
    ours.eval(), theirs.eval()
    # A batch of one is fine in eval: nothing is estimated from it.
    _assert_same_step(ours, theirs, 5 * _rand(50, *shape), _rand(51, *shape))
    _assert_same_running_stats(ours, theirs)


@pytest.mark.torch
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batchnorm1d_without_running_stats_uses_the_batch_in_both_modes(training):
    torch = pytest.importorskip("torch")
    ours = tn.nn.BatchNorm1d(3, track_running_stats=False).train(training)
    theirs = torch.nn.BatchNorm1d(3, track_running_stats=False, dtype=torch.float64).train(training)
    _randomize_affine(ours, theirs, seed=9)
    _assert_same_step(ours, theirs, 1 + _rand(60, 4, 3, 2), _rand(61, 4, 3, 2))
    assert ours.running_mean is None and ours.running_var is None


def test_eval_mode_leaves_the_running_stats_alone():
    norm = tn.nn.BatchNorm1d(3)
    norm(tn.tensor(_rand(0, 5, 3)))
    before = norm.state_dict()
    norm.eval()(tn.tensor(_rand(1, 5, 3)))
    after = norm.state_dict()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)


def test_running_stats_use_the_unbiased_variance_and_momentum(backend):
    # One step from the initial (0, 1): running = 0.9 * initial + 0.1 * batch, with var over M - 1 = 9.
    x = 2 + 3 * _rand(0, 5, 2, 2)
    norm = tn.nn.BatchNorm1d(2, momentum=0.1)
    norm(tn.tensor(x))
    np.testing.assert_allclose(norm.running_mean.numpy(), 0.1 * x.mean(axis=(0, 2)), rtol=1e-12)
    np.testing.assert_allclose(norm.running_var.numpy(), 0.9 + 0.1 * x.var(axis=(0, 2), ddof=1), rtol=1e-12)


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
def test_eval_mode_backward_passes_gradcheck(impl, backend):
    module, x = NORMS["batchnorm1d"].build("3d", impl=impl)
    module(x)  # one training step moves the running stats off (0, 1)
    module.eval()
    assert tn.gradcheck(module, x)


# ---- GroupNorm and InstanceNorm1d against PyTorch ----------------------------------------------------
@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(
    "num_groups, shape",
    [(2, (3, 4)), (3, (2, 6, 5)), (2, (2, 4, 3, 2)), (1, (2, 4, 3)), (4, (2, 4, 3))],
    ids=["rank2", "rank3", "rank4", "one-group", "group-per-channel"],
)
def test_groupnorm_matches_pytorch(num_groups, shape, affine, impl):
    torch = pytest.importorskip("torch")
    c = shape[1]
    ours = tn.nn.GroupNorm(num_groups, c, affine=affine, impl=impl)
    theirs = torch.nn.GroupNorm(num_groups, c, affine=affine, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=11)
    _assert_same_step(ours, theirs, 1 + 2 * _rand(70, *shape), _rand(71, *shape))


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 5), (3, 5), (1, 3, 2)], ids=["NCL", "unbatched-CL", "batch1-L2"])
def test_instancenorm1d_matches_pytorch(shape, affine, impl):
    torch = pytest.importorskip("torch")
    ours = tn.nn.InstanceNorm1d(3, affine=affine, impl=impl)
    theirs = torch.nn.InstanceNorm1d(3, affine=affine, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=13)
    _assert_same_step(ours, theirs, 1 + 2 * _rand(80, *shape), _rand(81, *shape))


# ---- BatchNorm2d and InstanceNorm2d against PyTorch -----------------------------------------------
# (4, 3, 2, 5) has H * W = 10 (the kernel sweeps down the batch), (2, 3, 8, 9) has 72 (it copies
# blocks of channels into rows): both kernel paths, and the lesson on array_api_strict elsewhere.
IMAGE_SHAPES = [(4, 3, 2, 5), (2, 3, 8, 9), (1, 3, 2, 2), (2, 3, 1, 1)]
IMAGE_IDS = ["short-HW", "long-HW", "batch1", "HW1"]


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=IMAGE_IDS)
def test_batchnorm2d_training_step_matches_pytorch(shape, affine, impl):
    torch = pytest.importorskip("torch")
    ours = tn.nn.BatchNorm2d(3, affine=affine, impl=impl)
    theirs = torch.nn.BatchNorm2d(3, affine=affine, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=15)
    _assert_same_step(ours, theirs, 3 + 2 * _rand(90, *shape), _rand(91, *shape))
    _assert_same_running_stats(ours, theirs)


@pytest.mark.torch
@pytest.mark.parametrize("momentum", [0.1, 0.3, None], ids=["momentum0.1", "momentum0.3", "cumulative"])
@pytest.mark.parametrize("shape", IMAGE_SHAPES[:2], ids=IMAGE_IDS[:2])
def test_batchnorm2d_running_stats_after_five_steps_match_pytorch(shape, momentum):
    torch = pytest.importorskip("torch")
    ours = tn.nn.BatchNorm2d(3, momentum=momentum)
    theirs = torch.nn.BatchNorm2d(3, momentum=momentum, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=17)
    for step in range(5):
        _assert_same_step(ours, theirs, step + (1 + step) * _rand(100 + step, *shape), _rand(110 + step, *shape))
    _assert_same_running_stats(ours, theirs)
    assert int(ours.num_batches_tracked.item()) == 5


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (1, 3, 1, 1)], ids=["NCHW", "one-value"])
def test_batchnorm2d_eval_uses_the_running_stats_as_pytorch(shape, impl):
    torch = pytest.importorskip("torch")
    ours, theirs = tn.nn.BatchNorm2d(3, impl=impl), torch.nn.BatchNorm2d(3, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=19)
    for step in range(3):
        _assert_same_step(ours, theirs, 2 - step + 3 * _rand(120 + step, 4, 3, 3, 3), _rand(130 + step, 4, 3, 3, 3))
    ours.eval(), theirs.eval()
    _assert_same_step(ours, theirs, 5 * _rand(140, *shape), _rand(141, *shape))
    _assert_same_running_stats(ours, theirs)


@pytest.mark.torch
@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(
    "shape", [(2, 3, 4, 5), (3, 4, 5), (1, 3, 1, 2), (2, 3, 9, 8)], ids=["NCHW", "unbatched-CHW", "HW2", "long-HW"]
)
def test_instancenorm2d_matches_pytorch_in_train_and_eval(shape, affine, impl):
    torch = pytest.importorskip("torch")
    ours = tn.nn.InstanceNorm2d(3, affine=affine, impl=impl)
    theirs = torch.nn.InstanceNorm2d(3, affine=affine, dtype=torch.float64)
    _randomize_affine(ours, theirs, seed=21)
    _assert_same_step(ours, theirs, 1 + 2 * _rand(150, *shape), _rand(151, *shape))
    ours.eval(), theirs.eval()  # no running statistics (PyTorch's default): eval is the same
    _assert_same_step(ours, theirs, 1 + 2 * _rand(152, *shape), _rand(153, *shape))


def test_the_2d_modules_have_pytorchs_defaults():
    bn, instance = tn.nn.BatchNorm2d(4), tn.nn.InstanceNorm2d(4)
    assert (bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (1e-5, 0.1, True, True)
    np.testing.assert_array_equal(bn.running_mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(bn.running_var.numpy(), np.ones(4))
    assert int(bn.num_batches_tracked.item()) == 0
    assert (instance.eps, instance.affine, instance.track_running_stats) == (1e-5, False, False)
    assert instance.weight is None and instance.bias is None


def test_batchnorm2d_is_batchnorm1d_with_the_image_flattened():
    # The same lesson: (N, C, H, W) normalizes exactly as (N, C, H * W).
    x_host, dy_host = 1 + _rand(0, 3, 2, 4, 5), _rand(1, 3, 2, 4, 5)
    results = []
    for module, shape in ((tn.nn.BatchNorm2d(2), x_host.shape), (tn.nn.BatchNorm1d(2), (3, 2, 20))):
        module.weight.data = module.weight.data + 0.5
        x = tn.tensor(x_host.reshape(shape), requires_grad=True)
        y = module(x)
        y.backward(tn.tensor(dy_host.reshape(shape)))
        results.append([y.numpy().reshape(x_host.shape), x.grad.reshape(x_host.shape), module.weight.grad])
        results[-1] += [module.bias.grad, module.running_mean.numpy(), module.running_var.numpy()]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_instancenorm2d_is_instancenorm1d_with_the_image_flattened():
    x = _rand(0, 2, 3, 4, 5)
    y2 = tn.nn.InstanceNorm2d(3)(tn.tensor(x)).numpy()
    y1 = tn.nn.InstanceNorm1d(3)(tn.tensor(x.reshape(2, 3, 20))).numpy()
    np.testing.assert_allclose(y2, y1.reshape(x.shape), rtol=1e-13, atol=1e-13)


# ---- the same formula over other axes ----------------------------------------------------------------------
def test_batchnorm_is_layernorm_over_the_batch_axes():
    # (N, C, L) -> (C, N*L): each channel becomes a row, and BatchNorm is LayerNorm of that row.
    n, c, length = 3, 2, 4
    x_host, dy_host = _rand(0, n, c, length), _rand(1, n, c, length)
    x_bn = tn.tensor(x_host, requires_grad=True)
    tn.nn.BatchNorm1d(c, affine=False)(x_bn).backward(tn.tensor(dy_host))
    rows = np.transpose(x_host, (1, 0, 2)).reshape(c, n * length)
    x_ln = tn.tensor(rows, requires_grad=True)
    y_ln = F.layer_norm(x_ln, n * length)
    y_ln.backward(tn.tensor(np.transpose(dy_host, (1, 0, 2)).reshape(c, n * length)))
    dx_ln = np.transpose(x_ln.grad.reshape(c, n, length), (1, 0, 2))
    np.testing.assert_allclose(x_bn.grad, dx_ln, **TOL)


def test_groupnorm_with_one_group_is_layernorm_over_channels_and_length():
    x = tn.tensor(_rand(0, 2, 4, 3))
    np.testing.assert_allclose(F.group_norm(x, 1).numpy(), F.layer_norm(x, (4, 3)).numpy(), **TOL)


def test_instancenorm_is_groupnorm_with_a_group_per_channel():
    x = tn.tensor(_rand(0, 2, 4, 3))
    np.testing.assert_allclose(F.instance_norm(x).numpy(), F.group_norm(x, 4).numpy(), **TOL)


def test_instancenorm_of_one_sample_is_batchnorm_of_a_batch_of_one():
    x = tn.tensor(_rand(0, 1, 4, 3))
    batchnorm = tn.nn.BatchNorm1d(4, affine=False, track_running_stats=False)
    np.testing.assert_allclose(F.instance_norm(x).numpy(), batchnorm(x).numpy(), **TOL)


def test_a_groupnorm_sample_ignores_the_rest_of_the_batch_and_a_batchnorm_sample_does_not():
    x = tn.tensor(_rand(0, 4, 6, 3))
    alone = F.group_norm(x[0:1], 3).numpy()
    np.testing.assert_allclose(F.group_norm(x, 3).numpy()[0:1], alone, **TOL)
    bn = tn.nn.BatchNorm1d(6, track_running_stats=False)
    assert np.abs(bn(x).numpy()[0:1] - bn(x[0:1]).numpy()).max() > 0.1


@given(st.integers(2, 5), st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_batchnorm_dx_sums_to_zero_per_channel(n, c, length, seed):
    # Adding a constant to a channel changes nothing after centering, so dx sums to 0 over (N, L).
    x, dy = tn.tensor(_rand(seed, n, c, length), requires_grad=True), _rand(seed + 1, n, c, length)
    norm = tn.nn.BatchNorm1d(c)
    norm.weight.data = tn.tensor(1 + _rand(seed + 2, c)).data
    norm(x).backward(tn.tensor(dy))
    scale = np.abs(dy).max() * np.abs(norm.weight.numpy()).max() / x.numpy().std(axis=(0, 2)).min()
    np.testing.assert_allclose(np.sum(x.grad, axis=(0, 2)), 0.0, atol=1e-12 * n * length * scale)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_groupnorm_dx_sums_to_zero_per_group(n, groups, per_group, length, seed):
    c = groups * per_group
    x, dy = tn.tensor(_rand(seed, n, c, length), requires_grad=True), _rand(seed + 1, n, c, length)
    F.group_norm(x, groups, tn.tensor(1 + _rand(seed + 2, c))).backward(tn.tensor(dy))
    sums = x.grad.reshape(n, groups, -1).sum(axis=-1)
    spread = x.numpy().reshape(n, groups, -1).std(axis=-1).min()
    np.testing.assert_allclose(sums, 0.0, atol=1e-12 * c * length * np.abs(dy).max() * 3 / spread)


# ---- the kernels against the lessons ----------------------------------------------------------------
def _step(name, case, dtype="float64", kernels_on=True, shape=None):
    """y, every gradient and (BatchNorm) the running statistics after one training step."""
    module, x = NORMS[name].build(case, dtype=dtype)
    if shape is not None:
        x = tn.tensor(3 + _rand(0, *shape), dtype=dtype, requires_grad=True)
    with contextlib.nullcontext() if kernels_on else tn.kernels.disabled():
        y = module(x)
        y.backward(tn.tensor(_rand(1, *x.shape), dtype=dtype))
    grads = [tn.backend.to_numpy(x.grad)] + [tn.backend.to_numpy(p.grad) for p in module.parameters()]
    buffers = [getattr(module, b).numpy() for b in ("running_mean", "running_var") if hasattr(module, b)]
    return [y.numpy()] + grads + buffers


def _small_blocks_on_two_threads(monkeypatch):
    monkeypatch.setattr(blocks, "ROW_BLOCK_BYTES", 1)  # one sample (or one channel) per block
    monkeypatch.setattr(blocks, "THREADS", 2)
    monkeypatch.setattr(blocks, "PARALLEL_MIN_BYTES", 0)


CHANNEL_NORMS = ["batchnorm1d", "batchnorm2d", "groupnorm", "instancenorm1d", "instancenorm2d"]


@pytest.mark.parametrize("case", ["2d", "3d", "batch1", "smallest", "large"])
@pytest.mark.parametrize("name", CHANNEL_NORMS)
def test_the_kernel_agrees_with_the_lesson_to_1e12(name, case, monkeypatch):
    lesson = _step(name, case, kernels_on=False)
    _small_blocks_on_two_threads(monkeypatch)
    kernel = _step(name, case)
    for a, b in zip(lesson, kernel):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("long_run", [1, 10**9], ids=["channel-rows", "sample-sweeps"])
@pytest.mark.parametrize("shape", [(6, 2), (5, 2, 7), (3, 2, 70), (7, 2, 3, 3), (1, 2, 70)])
def test_both_batchnorm_kernel_paths_agree_with_the_lesson_to_1e12(shape, long_run, monkeypatch):
    # Short runs of L reduce down the batch axes; long ones copy channels into rows. Same numbers.
    name = "batchnorm2d" if len(shape) == 4 else "batchnorm1d"
    lesson = _step(name, "3d", kernels_on=False, shape=shape)
    monkeypatch.setattr(cpu_channels, "LONG_RUN", long_run)
    _small_blocks_on_two_threads(monkeypatch)
    for a, b in zip(lesson, _step(name, "3d", shape=shape)):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", CHANNEL_NORMS)
def test_the_kernel_normalizes_float16_in_float32(name, monkeypatch):
    _small_blocks_on_two_threads(monkeypatch)
    y16, y64 = _step(name, "large", dtype="float16")[0], _step(name, "large")[0]
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16, y64, atol=3e-3 * np.abs(y64).max())


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_batchnorm_channel_rows_path_passes_gradcheck(case, monkeypatch):
    monkeypatch.setattr(cpu_channels, "LONG_RUN", 1)
    module, x = NORMS["batchnorm1d"].build(case)
    assert tn.gradcheck(module, x)


@pytest.mark.parametrize("name", CHANNEL_NORMS)
def test_the_lesson_passes_gradcheck_with_kernels_off(name):
    module, x = NORMS[name].build("3d")
    with tn.kernels.disabled():
        assert tn.gradcheck(module, x)


# ---- extreme magnitudes ---------------------------------------------------------------------------------
def _batchnorm_grads(x_host, dy_host, dtype, eps=1e-5):
    # (The running variance of a float32 module would overflow at 1e20: a test of its own.)
    module = tn.nn.BatchNorm1d(x_host.shape[1], eps=eps, track_running_stats=False).to(dtype)
    module.weight.data = module.weight.data + 0.5
    x = tn.tensor(x_host, dtype=dtype, requires_grad=True)
    module(x).backward(tn.tensor(dy_host, dtype=dtype))
    return [np.asarray(g, dtype=np.float64) for g in (x.grad, module.weight.grad, module.bias.grad)]


@pytest.mark.parametrize("kernels_on", [True, False], ids=["kernel", "lesson"])
@pytest.mark.parametrize("magnitude", [1e20, 1e22, 1e30, 1e-30])
def test_batchnorm_backward_of_float32_channels_of_any_magnitude_matches_float64(magnitude, kernels_on):
    # (N, C) input: the sample sweeps. rstd * rstd underflowed to 0 in float32 for channels of
    # 1e20 and beyond, and the projection term of dx vanished (issue 11: 4% off at 1e22).
    x = (magnitude * (2 + _rand(0, 64, 3))).astype(np.float32)
    dy = _rand(1, 64, 3).astype(np.float32)
    with contextlib.nullcontext() if kernels_on else tn.kernels.disabled():
        grads32 = _batchnorm_grads(x, dy, "float32")
    grads64 = _batchnorm_grads(x.astype(np.float64), dy.astype(np.float64), "float64")
    for name, g32, g64 in zip(("dx", "dweight", "dbias"), grads32, grads64):
        np.testing.assert_allclose(g32, g64, rtol=0, atol=3e-6 * np.abs(g64).max(), err_msg=name)


@pytest.mark.parametrize("kernels_on", [True, False], ids=["kernel", "lesson"])
def test_batchnorm_backward_of_float64_channels_of_1e200_is_scale_invariant(kernels_on):
    # x -> s * x leaves xhat alone and divides dx by s (eps negligible): at 1e200, rstd**2 = 1e-400.
    x, dy = 2 + _rand(0, 64, 3), _rand(1, 64, 3)
    with contextlib.nullcontext() if kernels_on else tn.kernels.disabled():
        dx_big, dweight_big, _ = _batchnorm_grads(1e200 * x, dy, "float64", eps=1e-300)
    dx, dweight, _ = _batchnorm_grads(x, dy, "float64", eps=1e-300)
    np.testing.assert_allclose(dx_big * 1e200, dx, rtol=1e-12, atol=1e-12 * np.abs(dx).max())
    np.testing.assert_allclose(dweight_big, dweight, rtol=1e-12)


def test_the_running_variance_of_float32_channels_of_1e20_fits_a_default_module():
    # The variance, 1e40, is beyond float32: it is derived from rstd in the buffers' float64.
    x = (1e20 * (2 + _rand(0, 64, 3))).astype(np.float32)
    module = tn.nn.BatchNorm1d(3)
    module(tn.tensor(x))
    expected = 0.9 + 0.1 * x.astype(np.float64).var(axis=0, ddof=1)
    np.testing.assert_allclose(module.running_var.numpy(), expected, rtol=1e-5)


# ---- empty batches --------------------------------------------------------------------------------------
EMPTY = [
    (lambda impl: tn.nn.GroupNorm(2, 6, impl=impl), (0, 6, 5)),
    (lambda impl: tn.nn.GroupNorm(2, 6, impl=impl), (0, 6)),
    (lambda impl: tn.nn.GroupNorm(2, 6, impl=impl), (2, 6, 0)),
    (lambda impl: tn.nn.InstanceNorm1d(6, affine=True, impl=impl), (0, 6, 5)),
    (lambda impl: tn.nn.InstanceNorm1d(6, affine=True, impl=impl), (2, 6, 0)),
    (lambda impl: tn.nn.InstanceNorm2d(6, affine=True, impl=impl), (0, 6, 2, 3)),
    (lambda impl: tn.nn.BatchNorm1d(6, impl=impl), (0, 6)),
    (lambda impl: tn.nn.BatchNorm1d(6, impl=impl), (0, 6, 5)),
    (lambda impl: tn.nn.BatchNorm1d(6, impl=impl), (2, 6, 0)),
    (lambda impl: tn.nn.BatchNorm1d(6, impl=impl).eval(), (0, 6)),
    (lambda impl: tn.nn.BatchNorm2d(6, impl=impl), (0, 6, 3, 3)),
]
EMPTY_IDS = ["gn-N0", "gn-N0-2d", "gn-L0", "in1d-N0", "in1d-L0", "in2d-N0"]
EMPTY_IDS += ["bn-N0-2d", "bn-N0", "bn-L0", "bn-eval-N0", "bn2d-N0"]


@pytest.mark.parametrize("impl", ["explicit", "autograd"])
@pytest.mark.parametrize("make, shape", EMPTY, ids=EMPTY_IDS)
def test_an_empty_batch_gives_an_empty_result_and_zero_parameter_gradients(make, shape, impl):
    # As PyTorch 2.13: an empty output (its GroupNorm gives NaN weight gradients for L = 0; 0 here).
    module = make(impl)
    x = tn.tensor(np.zeros(shape), requires_grad=True)
    y = module(x)
    assert y.shape == shape
    y.backward(tn.tensor(np.zeros(shape)))
    assert x.grad.shape == shape
    for name, p in module.named_parameters():
        np.testing.assert_array_equal(p.grad, np.zeros(6), err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_an_empty_batch_leaves_the_running_stats_alone_and_is_counted_as_pytorch(momentum):
    torch = pytest.importorskip("torch")
    ours = tn.nn.BatchNorm1d(3, momentum=momentum)
    theirs = torch.nn.BatchNorm1d(3, momentum=momentum, dtype=torch.float64)
    for step, shape in enumerate([(8, 3), (0, 3), (8, 3), (0, 3, 4)]):
        x = 5 + 2 * _rand(step, *shape)
        with torch.no_grad():
            theirs(torch.tensor(x))
        ours(tn.tensor(x))
        _assert_same_running_stats(ours, theirs)
    assert int(ours.num_batches_tracked.item()) == 4


# ---- dtypes -------------------------------------------------------------------------------------------
def _float32_step(module, x_host, dy_host):
    x = tn.tensor(x_host, dtype="float32", requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(dy_host, dtype="float32"))
    return y, x.grad


def _equal_to_float32_rounding(actual, desired, err_msg=""):
    np.testing.assert_allclose(actual, desired, rtol=1e-6, atol=1e-6, err_msg=err_msg)


@pytest.mark.parametrize(
    ("name", "shape"),
    [(name, None) for name in CHANNEL_NORMS] + [("batchnorm1d", (3, 2, 70))],
    ids=CHANNEL_NORMS + ["batchnorm1d-long-L"],
)
def test_a_default_module_computes_float32_input_in_float32(name, shape):
    # Parameters and buffers are float64 by default; float32 input is computed in float32 (the
    # same numbers as a float32 module), the gradients come back in the parameters' float64,
    # and the running statistics stay float64.
    default, x = NORMS[name].build("3d", dtype="float32")
    default.to("float64")
    single = NORMS[name].build("3d", dtype="float32")[0]
    x_host = x.numpy() if shape is None else (3 + _rand(0, *shape)).astype(np.float32)
    dy_host = _rand(1, *x_host.shape)
    for mode in ("train", "eval"):
        (y, dx), (y32, dx32) = (
            _float32_step(module.train(mode == "train"), x_host, dy_host) for module in (default, single)
        )
        assert y.dtype == "float32" and dx.dtype == np.float32
        # Training uses the batch's own statistics: the same float32 numbers, bit for bit. In
        # eval the running statistics were accumulated in float64 in one module and in float32
        # in the other, so they may differ in the last float32 bit.
        same = np.testing.assert_array_equal if mode == "train" else _equal_to_float32_rounding
        same(y.numpy(), y32.numpy(), err_msg=mode)
        same(dx, dx32, err_msg=mode)
        for (pname, p), p32 in zip(default.named_parameters(), single.parameters()):
            assert p.grad.dtype == np.float64, pname
            same(p.grad, p32.grad.astype(np.float64), err_msg=f"{mode} {pname}")
            p.grad = p32.grad = None
    for buffer in ("running_mean", "running_var"):
        if hasattr(default, buffer):
            assert getattr(default, buffer).dtype == "float64"
            np.testing.assert_allclose(getattr(default, buffer).numpy(), getattr(single, buffer).numpy(), rtol=1e-6)


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1)])
def test_batchnorm_training_needs_more_than_one_value_per_channel(shape):
    with pytest.raises(ValueError, match=r"more than 1 value per channel when training, got input of shape \(1, 3"):
        tn.nn.BatchNorm1d(3)(tn.tensor(_rand(0, *shape)))


def test_a_rejected_batch_is_not_counted():
    norm = tn.nn.BatchNorm1d(3)
    with pytest.raises(ValueError):
        norm(tn.tensor(_rand(0, 1, 3)))
    assert int(norm.num_batches_tracked.item()) == 0
    np.testing.assert_array_equal(norm.running_mean.numpy(), np.zeros(3))


@pytest.mark.parametrize(
    "make, shape, error, message",
    [
        (lambda: tn.nn.BatchNorm1d(3), (2, 3, 4, 5), ValueError, r"expected 2D \(N, C\) or 3D \(N, C, L\).*4D"),
        (lambda: tn.nn.BatchNorm1d(3), (3,), ValueError, r"expected 2D \(N, C\) or 3D \(N, C, L\).*1D"),
        (lambda: tn.nn.BatchNorm1d(3), (4, 5), ValueError, r"expected 3 channels \(input.shape\[1\]\).*\(4, 5\)"),
        (lambda: tn.nn.GroupNorm(2, 4), (2, 6, 3), ValueError, r"expected input of shape \(N, 4, \*\).*\(2, 6, 3\)"),
        (lambda: tn.nn.GroupNorm(2, 4), (4,), ValueError, r"expected input of shape \(N, 4, \*\)"),
        (lambda: tn.nn.InstanceNorm1d(3), (2, 3, 4, 5), ValueError, r"expected 3D \(N, C, L\) or unbatched 2D"),
        (lambda: tn.nn.InstanceNorm1d(3), (2, 5, 4), ValueError, r"expected 3 channels \(input.shape\[-2\]\)"),
        (lambda: tn.nn.InstanceNorm1d(3), (2, 3, 1), ValueError, r"more than 1 spatial element.*\(2, 3, 1\)"),
        (lambda: tn.nn.BatchNorm2d(3), (2, 3, 4), ValueError, r"BatchNorm2d: expected 4D \(N, C, H, W\).*3D"),
        (lambda: tn.nn.BatchNorm2d(3), (2, 4, 2, 2), ValueError, r"expected 3 channels \(input.shape\[1\]\)"),
        (lambda: tn.nn.InstanceNorm2d(3), (3, 4), ValueError, r"expected 4D \(N, C, H, W\) or unbatched 3D"),
        (lambda: tn.nn.InstanceNorm2d(3), (4, 4, 5), ValueError, r"expected 3 channels \(input.shape\[-3\]\)"),
        (lambda: tn.nn.InstanceNorm2d(3), (2, 3, 1, 1), ValueError, r"more than 1 spatial element.*\(2, 3, 1, 1\)"),
    ],
    ids=["bn-4d", "bn-1d", "bn-channels", "gn-channels", "gn-1d", "in-4d", "in-channels", "in-length1"]
    + ["bn2d-3d", "bn2d-channels", "in2d-2d", "in2d-unbatched-channels", "in2d-HW1"],
)
def test_bad_input_shape_is_rejected(make, shape, error, message):
    with pytest.raises(error, match=message):
        make()(tn.tensor(_rand(0, *shape)))


@pytest.mark.parametrize("make", [lambda: tn.nn.BatchNorm1d(3), lambda: tn.nn.GroupNorm(1, 3)])
def test_integer_input_is_rejected(make):
    with pytest.raises(TypeError, match="must have a floating dtype, got int64"):
        make()(tn.tensor(np.ones((2, 3, 2), dtype=np.int64)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tn.nn.GroupNorm(3, 4), r"divisible by num_groups, got 4 channels and num_groups=3"),
        (lambda: F.group_norm(tn.tensor(_rand(0, 2, 6)), 4), r"got 6 channels and num_groups=4"),
        (lambda: tn.nn.GroupNorm(0, 4), r"num_groups: expected a positive int, got 0"),
        (lambda: tn.nn.BatchNorm1d(3, momentum=1.5), r"momentum: expected a number in \[0, 1\].*1.5"),
        (lambda: tn.nn.BatchNorm1d(0), r"num_features: expected a positive int"),
        (lambda: tn.nn.InstanceNorm1d(3, track_running_stats=True), r"no running statistics"),
        (lambda: F.batch_norm(tn.tensor(_rand(0, 4, 3)), None, None), r"training=False normalizes with running"),
        (
            lambda: F.batch_norm(tn.tensor(_rand(0, 4, 3)), tn.zeros(3), None, training=True),
            r"running_mean and running_var must be given together",
        ),
        (
            lambda: F.batch_norm(tn.tensor(_rand(0, 4, 3)), tn.zeros(2), tn.ones(2)),
            r"running_mean: expected shape \(3,\), got \(2,\)",
        ),
        (lambda: F.group_norm(tn.tensor(_rand(0, 2, 4)), 2, tn.ones(4, 1)), r"weight: expected shape \(4,\)"),
    ],
    ids=[
        "gn-divisible",
        "gn-functional-divisible",
        "gn-zero-groups",
        "bn-momentum",
        "bn-zero-features",
        "in-running-stats",
        "bn-eval-without-stats",
        "bn-half-stats",
        "bn-stats-shape",
        "gn-column-weight",
    ],
)
def test_bad_arguments_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


X = tn.tensor(_rand(0, 4, 6, 3))  # (N, C, L): C = 6 divides into 2 groups


@pytest.mark.parametrize(
    "call",
    [
        lambda eps: F.batch_norm(X, None, None, training=True, eps=eps),
        lambda eps: F.group_norm(X, 2, eps=eps),
        lambda eps: F.instance_norm(X, eps=eps),
        lambda eps: tn.nn.BatchNorm1d(6, eps=eps),
        lambda eps: tn.nn.BatchNorm2d(6, eps=eps),
        lambda eps: tn.nn.GroupNorm(2, 6, eps=eps),
        lambda eps: tn.nn.InstanceNorm1d(6, eps=eps),
        lambda eps: tn.nn.InstanceNorm2d(6, eps=eps),
    ],
    ids=["batch_norm", "group_norm", "instance_norm", "BatchNorm1d", "BatchNorm2d", "GroupNorm", "In1d", "In2d"],
)
@pytest.mark.parametrize("eps", ["1e-5", None, True], ids=["str", "None", "bool"])
def test_an_eps_that_is_not_a_number_is_refused(call, eps):
    with pytest.raises(TypeError, match=rf"eps: expected a finite real number, got {eps!r}"):
        call(eps)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: F.batch_norm(x, None, None, training=True, eps=1e-50),
        lambda x: F.batch_norm(x, tn.zeros(6), tn.ones(6), eps=1e-50),
        lambda x: F.group_norm(x, 2, eps=1e-50),
        lambda x: tn.nn.BatchNorm1d(6, eps=1e-50)(x),
        lambda x: tn.nn.InstanceNorm1d(6, eps=1e-50)(x),
    ],
    ids=["batch_norm-train", "batch_norm-eval", "group_norm", "BatchNorm1d", "InstanceNorm1d"],
)
def test_an_eps_that_rounds_to_0_in_the_compute_dtype_is_refused(call):
    # 1e-50 is 0 in float32: a constant channel would give 0/0.
    x = tn.tensor(np.ones((4, 6, 3)), dtype="float32")
    with pytest.raises(ValueError, match=r"eps: 1e-50 rounds to 0 in float32"):
        call(x)


@pytest.mark.parametrize("name", ["weight", "bias", "running_mean", "running_var"])
@pytest.mark.parametrize("value", [[1.0] * 6, np.ones(6)], ids=["list", "ndarray"])
def test_batch_norm_refuses_parameters_that_are_not_tensors(name, value):
    args = {"running_mean": tn.zeros(6), "running_var": tn.ones(6), name: value}
    with pytest.raises(TypeError, match=rf"{name}: expected a tn.Tensor of shape \(6,\) or None, got"):
        F.batch_norm(X, args["running_mean"], args["running_var"], args.get("weight"), args.get("bias"))


@pytest.mark.parametrize("call", [F.group_norm, lambda x, _, **kw: F.instance_norm(x, **kw)], ids=["gn", "in"])
@pytest.mark.parametrize("name", ["weight", "bias"])
@pytest.mark.parametrize("value", [[1.0] * 6, np.ones(6)], ids=["list", "ndarray"])
def test_group_and_instance_norm_refuse_parameters_that_are_not_tensors(call, name, value):
    with pytest.raises(TypeError, match=rf"{name}: expected a tn.Tensor of shape \(6,\) or None, got"):
        call(X, 2, **{name: value})


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: tn.nn.BatchNorm1d(3, momentum="0.1"),
            TypeError,
            r"momentum: expected a finite real number, got '0.1'",
        ),
        (lambda: tn.nn.BatchNorm2d(3, momentum=float("nan")), TypeError, r"momentum: expected a finite real"),
        (lambda: tn.nn.BatchNorm1d(8.0), ValueError, r"num_features: expected a positive int, got 8.0 \(float\)"),
        (lambda: tn.nn.BatchNorm2d(None), ValueError, r"num_features: expected a positive int, got None"),
        (lambda: tn.nn.GroupNorm(2, None), ValueError, r"num_channels: expected a positive int, got None"),
        (lambda: tn.nn.GroupNorm(2.0, 4), ValueError, r"num_groups: expected a positive int, got 2.0"),
        (lambda: tn.nn.InstanceNorm1d("3"), ValueError, r"num_features: expected a positive int, got '3'"),
        (lambda: tn.nn.InstanceNorm2d(3, momentum="0.1"), TypeError, r"momentum: expected a finite real number"),
        (lambda: F.group_norm(X, None), ValueError, r"num_groups: expected a positive int, got None"),
        (lambda: F.batch_norm(X, None, None, training=True, momentum="0.1"), TypeError, r"momentum: expected"),
    ],
    ids=["bn-momentum-str", "bn2d-momentum-nan", "bn-float", "bn2d-None", "gn-None", "gn-float-groups"]
    + ["in1d-str", "in2d-momentum-str", "group_norm-None", "batch_norm-momentum-str"],
)
def test_bad_constructor_arguments_get_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_integers_are_accepted_as_sizes():
    sizes = [np.int64(6), np.int32(2)]
    modules = [tn.nn.BatchNorm1d(sizes[0]), tn.nn.GroupNorm(sizes[1], sizes[0]), tn.nn.InstanceNorm1d(sizes[0])]
    for module in modules:
        assert module(X).shape == X.shape
    assert tn.nn.BatchNorm1d(np.int64(6)).num_features == 6 and type(modules[0].num_features) is int
    assert F.group_norm(X, np.int64(3)).shape == X.shape


@needs_array_api_strict
@pytest.mark.parametrize(
    "make", [lambda: tn.nn.BatchNorm1d(3, affine=False), lambda: tn.nn.BatchNorm2d(3, affine=False)], ids=["1d", "2d"]
)
def test_a_batchnorm_without_parameters_checks_the_input_backend_up_front(make):
    norm = make().to("array_api_strict")
    x = tn.tensor(_rand(0, *((4, 3) if isinstance(norm, tn.nn.BatchNorm1d) else (4, 3, 2, 2))))
    message = r"input is on backend 'numpy' but the module's state is on 'array_api_strict'"
    with pytest.raises(TypeError, match=message):
        norm(x)
    assert int(norm.num_batches_tracked.item()) == 0
    np.testing.assert_array_equal(norm.running_mean.numpy(), np.zeros(3))


def test_instance_norm_takes_weight_and_bias_by_keyword_only():
    # PyTorch's positional order is (input, running_mean, running_var, weight, ...): refuse it loudly.
    with pytest.raises(TypeError):
        F.instance_norm(tn.tensor(_rand(0, 2, 3, 4)), None, None, tn.ones(3))


# ---- a broken backward is caught ------------------------------------------------------------------------------
def _normalize_grad(g, xhat, rstd, axes, variant):
    """LayerNorm's dx over ``axes``, or one of two classic mistakes."""
    count = int(np.prod([g.shape[a] for a in axes]))
    if variant == "no-mean-term":
        return rstd * (g - xhat * np.mean(g * xhat, axis=axes, keepdims=True))
    if variant == "N-1":
        projection = np.sum(g * xhat, axis=axes, keepdims=True) / (count - 1)
        return rstd * (g - np.mean(g, axis=axes, keepdims=True) - projection)
    if variant == "train-formula-in-eval":
        return rstd * (g - np.mean(g, axis=axes, keepdims=True) - xhat * np.mean(g * xhat, axis=axes, keepdims=True))
    raise AssertionError(variant)


def _broken_batchnorm(variant):
    def backward(ctx, dy):
        x, weight, _, mean, rstd = ctx.saved_tensors
        axes, shape = (0,) + tuple(range(2, x.ndim)), (x.shape[1],) + (1,) * (x.ndim - 2)
        w, mean, rstd = weight.reshape(shape), mean.reshape(shape), rstd.reshape(shape)  # per channel
        xhat = (x - mean) * rstd
        grads = _normalize_grad(dy * w, xhat, rstd, axes, variant), np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)
        return grads + (None, None) if variant == "train-formula-in-eval" else grads

    return staticmethod(backward)


def _broken_groupnorm(variant):
    def backward(ctx, dy):
        x, weight, _, mean, rstd = ctx.saved_tensors
        groups = mean.shape[0] // x.shape[0]  # saved per group of each sample: (N * G, 1)
        view, axes = (x.shape[0], groups, -1), (0,) + tuple(range(2, x.ndim))
        mean, rstd = mean.reshape(x.shape[0], groups, 1), rstd.reshape(x.shape[0], groups, 1)
        xhat = (x.reshape(view) - mean) * rstd
        g = (dy * weight.reshape((x.shape[1],) + (1,) * (x.ndim - 2))).reshape(view)
        dx = _normalize_grad(g, xhat, rstd, (2,), variant).reshape(x.shape)
        return dx, np.sum(dy * xhat.reshape(x.shape), axis=axes), np.sum(dy, axis=axes)

    return staticmethod(backward)


def _trained_then_eval(case):
    module, x = NORMS["batchnorm1d"].build(case)
    module(x)
    return module.eval(), x


@pytest.mark.parametrize("fast", [False, True])
@pytest.mark.parametrize(
    "function, variant, make",
    [
        (BatchNormFunction, "no-mean-term", lambda: NORMS["batchnorm1d"].build("3d")),
        (BatchNormFunction, "N-1", lambda: NORMS["batchnorm1d"].build("3d")),
        (BatchNormFunction, "N-1", lambda: NORMS["batchnorm1d"].build("2d")),
        (BatchNormFunction, "no-mean-term", lambda: NORMS["batchnorm2d"].build("3d")),
        (BatchNormEvalFunction, "train-formula-in-eval", lambda: _trained_then_eval("3d")),
        (GroupNormFunction, "no-mean-term", lambda: NORMS["groupnorm"].build("3d")),
        (GroupNormFunction, "N-1", lambda: NORMS["groupnorm"].build("batch1")),
        (GroupNormFunction, "N-1", lambda: NORMS["instancenorm1d"].build("3d")),
        (GroupNormFunction, "no-mean-term", lambda: NORMS["instancenorm2d"].build("3d")),
    ],
    ids=["bn-no-mean-term", "bn-N-1", "bn-2d-N-1", "bn2d-no-mean-term", "bn-eval-as-train"]
    + ["gn-no-mean-term", "gn-N-1", "in-N-1", "in2d-no-mean-term"],
)
def test_gradcheck_catches_a_broken_backward(function, variant, make, fast, monkeypatch):
    module, x = make()
    assert tn.gradcheck(module, x, fast=fast)
    broken = _broken_groupnorm(variant) if function is GroupNormFunction else _broken_batchnorm(variant)
    monkeypatch.setattr(function, "backward", broken)
    with pytest.raises(tn.GradcheckError):
        tn.gradcheck(module, x, fast=fast)
