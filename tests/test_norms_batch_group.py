"""BatchNorm1d, GroupNorm and InstanceNorm1d: PyTorch as an independent oracle (train and eval,
running statistics), the relations between them and LayerNorm, bad input, and broken backwards."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinynorm as tn
from tinynorm.norms import _shared, batchnorm
from tinynorm.norms.batchnorm import BatchNormEvalFunction, BatchNormFunction
from tinynorm.norms.groupnorm import GroupNormFunction
from tinynorm.registry import NORMS

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


# ---- blocks of samples (GroupNorm) and of channels (BatchNorm) ------------------------------------
def _step_in_blocks(name, shape, block_bytes, threads, monkeypatch, dtype="float64", long_run=1):
    """y, every gradient and (BatchNorm) the running statistics, with blocks of ``block_bytes``.

    BatchNorm takes the channels-as-rows path with ``long_run=1``, the sweeps over blocks of
    samples with a huge ``long_run``."""
    monkeypatch.setattr(_shared, "ROW_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(_shared, "THREADS", threads)
    monkeypatch.setattr(_shared, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(batchnorm, "LONG_RUN", long_run)
    module, _ = NORMS[name].build("3d", dtype=dtype)
    x = tn.tensor(3 + _rand(0, *shape), dtype=dtype, requires_grad=True)
    y = module(x)
    y.backward(tn.tensor(_rand(1, *shape), dtype=dtype))
    grads = [tn.backend.to_numpy(x.grad)] + [tn.backend.to_numpy(p.grad) for p in module.parameters()]
    buffers = [getattr(module, b).numpy() for b in ("running_mean", "running_var") if hasattr(module, b)]
    return [y.numpy()] + grads + buffers


@pytest.mark.parametrize(
    ("name", "shape", "long_run"),
    [("batchnorm1d", (5, 2, 7), 1), ("batchnorm1d", (5, 2, 7), 10**9), ("batchnorm1d", (7, 2), 10**9)]
    + [("groupnorm", (5, 4, 7), 1)],
)
def test_blocked_equals_unblocked_to_1e12(name, shape, long_run, backend, monkeypatch):
    whole = _step_in_blocks(name, shape, 2**62, 1, monkeypatch, long_run=long_run)
    # one channel (or one sample) per block, on two threads
    one_per_block = _step_in_blocks(name, shape, 1, 2, monkeypatch, long_run=long_run)
    for a, b in zip(whole, one_per_block):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("name", "shape"), [("batchnorm1d", (5, 2, 7)), ("groupnorm", (5, 4, 7))])
def test_blocked_float16_is_normalized_in_float32(name, shape, monkeypatch):
    y16 = _step_in_blocks(name, shape, 1, 2, monkeypatch, dtype="float16")[0]
    y64 = _step_in_blocks(name, shape, 1, 2, monkeypatch)[0]
    assert y16.dtype == np.float16
    np.testing.assert_allclose(y16, y64, atol=3e-3 * np.abs(y64).max())


@pytest.mark.parametrize("shape", [(6, 3), (5, 2, 7), (2, 3, 70)])
def test_batchnorm_columns_and_channel_rows_paths_agree_to_1e12(shape, backend, monkeypatch):
    # Short runs of L reduce down the batch axes; long ones copy channels into rows. Same numbers.
    results = []
    for long_run in (1, 10**9):
        monkeypatch.setattr(batchnorm, "LONG_RUN", long_run)
        module = tn.nn.BatchNorm1d(shape[1])
        module.weight.data = module.weight.data + 0.5
        x = tn.tensor(3 + _rand(0, *shape), requires_grad=True)
        module(x).backward(tn.tensor(_rand(1, *shape)))
        results.append(
            [x.grad, module.weight.grad, module.bias.grad, module.running_mean.data, module.running_var.data]
        )
    for a, b in zip(*results):
        np.testing.assert_allclose(tn.backend.to_numpy(a), tn.backend.to_numpy(b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_batchnorm_channel_rows_path_passes_gradcheck(case, monkeypatch):
    monkeypatch.setattr(batchnorm, "LONG_RUN", 1)
    module, x = NORMS["batchnorm1d"].build(case)
    assert tn.gradcheck(module, x)


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
    ],
    ids=["bn-4d", "bn-1d", "bn-channels", "gn-channels", "gn-1d", "in-4d", "in-channels", "in-length1"],
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
        x, weight, bias_dtype, mean, rstd = ctx.saved_tensors
        axes = (0,) + tuple(range(2, x.ndim))
        w = weight.reshape((x.shape[1],) + (1,) * (x.ndim - 2))
        xhat = (x - mean) * rstd
        grads = _normalize_grad(dy * w, xhat, rstd, axes, variant), np.sum(dy * xhat, axis=axes), np.sum(dy, axis=axes)
        return grads + (None, None) if variant == "train-formula-in-eval" else grads

    return staticmethod(backward)


def _broken_groupnorm(variant):
    def backward(ctx, dy):
        x, weight, bias_dtype, mean, rstd = ctx.saved_tensors
        view = tuple(mean.shape[:2]) + (-1,)
        axes = (0,) + tuple(range(2, x.ndim))
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
        (BatchNormEvalFunction, "train-formula-in-eval", lambda: _trained_then_eval("3d")),
        (GroupNormFunction, "no-mean-term", lambda: NORMS["groupnorm"].build("3d")),
        (GroupNormFunction, "N-1", lambda: NORMS["groupnorm"].build("batch1")),
        (GroupNormFunction, "N-1", lambda: NORMS["instancenorm1d"].build("3d")),
    ],
    ids=["bn-no-mean-term", "bn-N-1", "bn-2d-N-1", "bn-eval-as-train", "gn-no-mean-term", "gn-N-1", "in-N-1"],
)
def test_gradcheck_catches_a_broken_backward(function, variant, make, fast, monkeypatch):
    module, x = make()
    assert tn.gradcheck(module, x, fast=fast)
    broken = _broken_groupnorm(variant) if function is GroupNormFunction else _broken_batchnorm(variant)
    monkeypatch.setattr(function, "backward", broken)
    with pytest.raises(tn.GradcheckError):
        tn.gradcheck(module, x, fast=fast)
