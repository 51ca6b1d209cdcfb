r"""BatchNorm1d (Ioffe & Szegedy 2015), as ``torch.nn.BatchNorm1d``.

Input ``(N, C)`` or ``(N, C, L)``. The statistics are per channel ``c``, over every
other axis (the batch, and the length): ``M = N * L`` values per channel. LayerNorm's
formula with the axes turned round: LayerNorm averages over the features of one
sample, BatchNorm over the samples (and positions) of one feature.

Training mode, batch statistics:

    mean = mean over (N, L) of x               (per channel)
    var  = mean over (N, L) of (x - mean)**2   (biased: divides by M, to normalize)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = xhat * weight + bias                (weight, bias broadcast along channels)

and, with ``track_running_stats=True``, the running estimates move towards the batch's:

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

(the *unbiased* batch variance, as PyTorch; ``momentum`` is the weight of the new
batch, so Keras's ``momentum=0.99`` is PyTorch's ``0.01``; ``momentum=None`` gives
the cumulative average, weight ``1 / num_batches_tracked``).

Eval mode (with running statistics): the same ``y`` with ``running_mean`` and
``running_var`` in place of ``mean`` and ``var``: constants, so ``y`` is an affine
map of ``x``. With ``track_running_stats=False`` the batch statistics are used in
both modes.

Learnable parameters (``affine=True``):

* ``weight``, shape ``(C,)``, init ones: rescales each normalized channel;
* ``bias``, shape ``(C,)``, init zeros: shifts each channel.

Buffers (``track_running_stats=True``): ``running_mean`` (``(C,)``, zeros),
``running_var`` (``(C,)``, ones), ``num_batches_tracked`` (a count, 0).

Backward (derivation: ``docs/norms/batchnorm1d.md``), with ``g = dy * weight`` and
every mean and sum over ``(N, L)``, per channel:

    training: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))
    eval:     dx = rstd * g              (the statistics do not depend on x)
    dweight = sum of dy * xhat
    dbias   = sum of dy

How the training-mode passes visit memory depends on ``L``. The formulas above, with
their means over the batch axes, are ``batch_norm_columns`` and
``batch_norm_backward_columns``: the direct way, used when ``L`` is short (``(N, C)``
input above all), where a channel's values lie ``C`` elements apart. They sweep over
blocks of whole samples, each block adding its column sums to the per-channel sums
(the mean, then the two-pass variance, then ``y``; in the backward, ``sum(dy)`` and
``sum(dy * (x - mean))``, then ``dx``). For long ``L``, training mode is InstanceNorm of the
transpose: the ``M`` values of channel ``c`` are the ``c``-th channel of one sample of
shape ``(1, C, N * L)``, so both passes are GroupNorm's formulas with ``G = C``
(``groupnorm.group_norm_rows`` and ``group_norm_backward_rows``, whose ``dx`` is
LayerNorm's), run on blocks of channels copied into rows (``channel_rows``): a transpose
the size of a cache, not of ``x``, that pays only when each channel's runs of ``L``
values are long.

Saved for backward: ``x`` and the per-channel ``mean`` and ``rstd``; ``xhat`` is
recomputed. Updating the running statistics reads ``x`` once more, block by block
(``batch_mean_var`` for short ``L``; PyTorch's kernel fuses it into the forward; here it
is a separate function so each step reads alone).

Numerics: float16 input is normalized in float32; the variance is two-pass and
channels whose statistics overflow are rescued (``_shared.centered_mean_rstd``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..autograd import Context, Function
from ..backend import compute_dtype
from ..nn.module import Parameter
from ..ops import namespace_of, sum_to
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, tensor, zeros
from ._shared import (
    NormModule,
    add_,
    as_rows,
    centered_mean_rstd,
    check_eps,
    check_input,
    check_param,
    column_sums,
    for_each_row_block,
    in_compute_dtype,
    mul_,
    normalize_rows,
    row_mean,
    row_mean_of_product,
    sub_,
    sum_partials,
    widen,
)
from .groupnorm import as_channels, group_norm_backward_rows, group_norm_rows

__all__ = ["BatchNorm1d"]


def batch_axes(ndim: int) -> tuple[int, ...]:
    """Every axis but the channel axis 1: the batch and any length/spatial axes."""
    return (0,) + tuple(range(2, ndim))


def channel_shape(x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(C, 1, ...)``: a per-channel vector reshaped to broadcast against ``(N, C, *)``."""
    return (x_shape[1],) + (1,) * (len(x_shape) - 2)


def _affine(xp: Any, xhat: Any, weight: Any, bias: Any) -> Any:
    """``xhat * weight + bias``, per channel, written into ``xhat``'s memory (a fresh array in
    both callers) where the backend allows it."""
    shape = channel_shape(tuple(xhat.shape))
    y = xhat if weight is None else mul_(xhat, xp.reshape(in_compute_dtype(weight, xhat), shape), out=xhat)
    return y if bias is None else add_(y, xp.reshape(in_compute_dtype(bias, xhat), shape), out=y)


def _param_grads(xp: Any, dy: Any, xhat: Any, weight: Any, bias_dtype: Any) -> tuple[Any, Any]:
    """``dweight = sum(dy * xhat)``, ``dbias = sum(dy)`` over every axis but the channels."""
    shape = channel_shape(tuple(dy.shape))
    num_channels = (dy.shape[1],)
    dweight = dbias = None
    if weight is not None:
        dweight = xp.astype(xp.reshape(sum_to(dy * xhat, shape), num_channels), weight.dtype)
    if bias_dtype is not None:
        dbias = xp.astype(xp.reshape(sum_to(dy, shape), num_channels), bias_dtype)
    return dweight, dbias


# ---- training mode, short L: the formulas as written, means over the batch axes ------------------
# Copying a channel's values into a row would cost more than it saves when they come in runs of
# L < LONG_RUN elements; (N, C) input, L = 1, is the common case. The means are then taken down
# the batch axis, in sweeps over blocks of whole samples (rows of the (N, C * L) view): each block
# adds its column sums (``column_sums``), and a per-channel result is the sum of its L columns.
LONG_RUN = 64


def _sample_rows(x: Any) -> Any:
    """``(N, C, *)`` as ``(N, C * L)``: one row per sample (a view)."""
    return namespace_of(x).reshape(x, (x.shape[0], -1))


def _per_channel(sums: Any, channels: int) -> Any:
    """Column sums ``(C * L,)`` of the sample rows -> per-channel sums ``(C,)``."""
    xp = namespace_of(sums)
    return xp.sum(xp.reshape(sums, (channels, -1)), axis=1)


def _along_row(per_channel: Any, row_length: int) -> Any:
    """A per-channel ``(C,)`` vector laid out along a sample row ``(C * L,)``: each value L times."""
    xp = namespace_of(per_channel)
    channels = per_channel.shape[0]
    column = xp.reshape(per_channel, (channels, 1))
    return xp.reshape(xp.broadcast_to(column, (channels, row_length // channels)), (row_length,))


def _sum_down_samples(work: Callable[[Any], Any], x2: Any, channels: int) -> Any:
    """Per-channel sum, over every sample block ``rows`` of ``x2``, of ``column_sums(work(rows))``."""
    partials = for_each_row_block(lambda start, stop: column_sums(namespace_of(x2), work(slice(start, stop))), x2)
    return _per_channel(sum_partials(partials, x2.shape[1], x2), channels)


def batch_mean_var(x: Any) -> tuple[Any, Any]:
    """Per-channel ``mean`` and biased ``var`` of ``(N, C, *)``, shape ``(C,)``: two sweeps, two-pass."""
    x2, channels = _sample_rows(x), x.shape[1]
    count = x2.shape[0] * (x2.shape[1] // channels)
    mean = _sum_down_samples(lambda rows: widen(x2[rows, ...]), x2, channels) / count
    mean_row = _along_row(mean, x2.shape[1])

    def squares(rows: Any) -> Any:
        centered = widen(x2[rows, ...]) - mean_row
        return mul_(centered, centered, out=centered)

    return mean, _sum_down_samples(squares, x2, channels) / count


def batch_norm_columns(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """Forward on ``(N, C, *)``: ``y`` and the per-channel ``mean`` and ``rstd`` (``(1, C, 1, ...)``)."""
    xp = namespace_of(x)
    stat_shape = (1,) + channel_shape(tuple(x.shape))
    mean, var = batch_mean_var(x)
    if not bool(xp.all(xp.isfinite(var))):  # a channel's squares overflowed: the rescue of _shared, on all of x
        mean, rstd, _ = centered_mean_rstd(widen(x), batch_axes(x.ndim), eps)
        mean, rstd = xp.reshape(mean, (-1,)), xp.reshape(rstd, (-1,))
    else:
        rstd = 1 / xp.sqrt(var + eps)
    x2 = _sample_rows(x)
    mean_row = _along_row(mean, x2.shape[1])
    scale = _along_row(rstd if weight is None else rstd * in_compute_dtype(weight, mean), x2.shape[1])
    shift = None if bias is None else _along_row(in_compute_dtype(bias, mean), x2.shape[1])
    y2 = xp.empty(x2.shape, dtype=x.dtype)

    def block(start: int, stop: int) -> None:
        rows = slice(start, stop)
        centered = sub_(widen(x2[rows, ...]), mean_row, out=y2[rows, ...])
        y = normalize_rows(centered, scale, None, shift, out=centered)  # (x - mean) * rstd * weight + bias
        y2[rows, ...] = xp.astype(y, x.dtype, copy=False)

    for_each_row_block(block, x2)
    return xp.reshape(y2, x.shape), xp.reshape(mean, stat_shape), xp.reshape(rstd, stat_shape)


def batch_norm_backward_columns(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, bias_dtype: Any) -> tuple:
    """Backward on ``(N, C, *)``: ``dx``, ``dweight``, ``dbias``, every mean over the batch axes.

    One sweep gathers the per-channel sums of ``dy`` and ``dy * (x - mean)``; a second writes
    ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``, ``g = dy * weight``, in which every
    per-channel factor is known by then:

        dx = (rstd * weight) * dy - rstd * mean(g) - (rstd**2 * mean(g * xhat)) * (x - mean)
    """
    xp = namespace_of(x)
    x2, dy2, channels = _sample_rows(x), _sample_rows(dy), x.shape[1]
    count = x2.shape[0] * (x2.shape[1] // channels)
    mean, rstd = xp.reshape(mean, (-1,)), xp.reshape(rstd, (-1,))
    mean_row = _along_row(mean, x2.shape[1])

    def dy_centered(rows: Any) -> Any:
        centered = widen(x2[rows, ...]) - mean_row
        return mul_(centered, widen(dy2[rows, ...]), out=centered)

    sum_dy = _sum_down_samples(lambda rows: widen(dy2[rows, ...]), dy2, channels)
    sum_dy_xhat = _sum_down_samples(dy_centered, x2, channels) * rstd
    w = xp.ones_like(rstd) if weight is None else in_compute_dtype(weight, rstd)
    mean_g, mean_g_xhat = w * sum_dy / count, w * sum_dy_xhat / count
    dy_factor = _along_row(rstd * w, x2.shape[1])
    constant = _along_row(rstd * mean_g, x2.shape[1])
    centered_factor = _along_row(rstd * rstd * mean_g_xhat, x2.shape[1])
    dx2 = xp.empty(x2.shape, dtype=x.dtype)

    def block(start: int, stop: int) -> None:
        rows = slice(start, stop)
        centered = widen(x2[rows, ...]) - mean_row
        dx = mul_(widen(dy2[rows, ...]), dy_factor, out=dx2[rows, ...])
        dx = sub_(dx, constant, out=dx)
        dx = sub_(dx, mul_(centered, centered_factor, out=centered), out=dx)
        dx2[rows, ...] = xp.astype(dx, x.dtype, copy=False)

    for_each_row_block(block, x2)
    dweight = None if weight is None else xp.astype(sum_dy_xhat, weight.dtype)
    dbias = None if bias_dtype is None else xp.astype(sum_dy, bias_dtype)
    return xp.reshape(dx2, x.shape), dweight, dbias


# ---- training mode, long L: InstanceNorm of the transpose -----------------------------------------
# The C channels of (N, C, L), each taken as one row of its N * L values, are the channels of
# one sample of shape (1, C, N * L): BatchNorm of x is InstanceNorm (GroupNorm with G = C) of that
# transpose, so the training-mode formulas are GroupNorm's, run on blocks of channels. A block is
# copied into rows (a transpose, the size of a cache), and its result copied back.
def channel_rows(x3: Any, start: int, stop: int) -> Any:
    """Channels ``start:stop`` of ``(N, C, L)`` as one sample ``(1, stop - start, N * L)`` (a copy)."""
    xp = namespace_of(x3)
    rows = xp.reshape(xp.permute_dims(x3[:, start:stop, :], (1, 0, 2)), (stop - start, -1))
    return xp.expand_dims(rows, axis=0)


def put_channel_rows(x3: Any, start: int, stop: int, rows: Any) -> None:
    """The inverse of ``channel_rows``: write ``(1, stop - start, N * L)`` back into channels ``start:stop``."""
    xp = namespace_of(x3)
    x3[:, start:stop, :] = xp.permute_dims(xp.reshape(rows, (stop - start, x3.shape[0], x3.shape[2])), (1, 0, 2))


def for_each_channel_block(work: Callable[[int, int], Any], x3: Any) -> list[Any]:
    """``for_each_row_block`` over the channels of ``(N, C, L)``, the rows of its ``(C, N * L)`` transpose."""
    samples, _, length = x3.shape
    # A view with the channels first: its rows are the channels, each of samples * length values.
    channels_first = namespace_of(x3).permute_dims(x3, (1, 0, 2))
    return for_each_row_block(work, channels_first, row_length=samples * length)


def as_channel_first(x: Any) -> Any:
    """``(N, C, *)`` as ``(N, C, L)`` with ``L = prod(*)`` (1 for ``(N, C)``): a view."""
    return namespace_of(x).reshape(x, (x.shape[0], x.shape[1], math.prod(x.shape[2:])))


class BatchNormFunction(Function):
    """Training-mode BatchNorm (batch statistics) with its hand-derived backward: GroupNorm's
    formulas (``group_norm_rows``, ``group_norm_backward_rows``) on blocks of channels."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, eps: float) -> Any:
        xp = namespace_of(x)
        channels = x.shape[1]
        x3 = as_channel_first(x)
        if x3.shape[2] < LONG_RUN:
            y, mean, rstd = batch_norm_columns(x, weight, bias, eps)
            ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd)
            return y
        w, b = as_channels(weight), as_channels(bias)
        y3 = xp.empty(x3.shape, dtype=x.dtype)
        mean = xp.empty((channels, 1), dtype=compute_dtype(x.dtype, xp))
        rstd = xp.empty((channels, 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            these = slice(start, stop)
            w_block = None if w is None else w[these, ...]
            b_block = None if b is None else b[these, ...]
            y_rows, mean[these, ...], rstd[these, ...] = group_norm_rows(
                channel_rows(x3, start, stop), w_block, b_block, stop - start, eps
            )
            put_channel_rows(y3, start, stop, y_rows)

        for_each_channel_block(block, x3)
        # Saved as the plain formulas have them: one pair per channel, shape (1, C, 1, ...).
        stat_shape = (1,) + channel_shape(tuple(x.shape))
        mean, rstd = xp.reshape(mean, stat_shape), xp.reshape(rstd, stat_shape)
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd)
        return xp.reshape(y3, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, mean, rstd = ctx.saved_tensors
        xp = namespace_of(x)
        x3, dy3, w = as_channel_first(x), as_channel_first(dy), as_channels(weight)
        if x3.shape[2] < LONG_RUN:
            return batch_norm_backward_columns(dy, x, weight, mean, rstd, bias_dtype)
        mean, rstd = as_rows(mean, 1), as_rows(rstd, 1)
        dx3 = xp.empty(x3.shape, dtype=x.dtype)

        def block(start: int, stop: int) -> tuple[Any, Any]:
            these = slice(start, stop)
            dx_rows, dweight, dbias = group_norm_backward_rows(
                channel_rows(dy3, start, stop),
                channel_rows(x3, start, stop),
                None if w is None else w[these, ...],
                mean[these, ...],
                rstd[these, ...],
                stop - start,
                bias_dtype is not None,
            )
            put_channel_rows(dx3, start, stop, dx_rows)
            return dweight, dbias

        partials = for_each_channel_block(block, x3)  # each block's gradients are its own channels'
        dweight = dbias = None
        if weight is not None:
            dweight = xp.astype(xp.concat([q[0] for q in partials]), weight.dtype)
        if bias_dtype is not None:
            dbias = xp.astype(xp.concat([q[1] for q in partials]), bias_dtype)
        return xp.reshape(dx3, x.shape), dweight, dbias


# ---- eval mode ----------------------------------------------------------------------------------
class BatchNormEvalFunction(Function):
    """Eval-mode BatchNorm: the running statistics are constants, so the backward is affine."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, eps: float) -> Any:
        xp = namespace_of(x)
        shape = channel_shape(tuple(x.shape))
        mean = xp.reshape(running_mean, shape)
        rstd = 1 / xp.sqrt(xp.reshape(running_var, shape) + eps)
        y = _affine(xp, (widen(x) - mean) * rstd, weight, bias)
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd)
        return xp.astype(y, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, None, None]:
        x, weight, bias_dtype, mean, rstd = ctx.saved_tensors
        xp = namespace_of(x)
        dy = widen(dy)
        xhat = (widen(x) - mean) * rstd
        g = dy * xp.reshape(weight, channel_shape(tuple(x.shape))) if weight is not None else dy
        dx = rstd * g  # no mean and no projection term: mean and rstd do not move with x
        dweight, dbias = _param_grads(xp, dy, xhat, weight, bias_dtype)
        return xp.astype(dx, x.dtype), dweight, dbias, None, None  # the running stats get no gradient


def update_running_stats(x: Tensor, running_mean: Tensor, running_var: Tensor, momentum: float) -> None:
    """``running = (1 - momentum) * running + momentum * batch``, in place on the two buffers.

    The batch variance here is the unbiased one (divides by ``M - 1``): the running
    value estimates the population variance that eval mode will divide by, and
    PyTorch does the same, although training normalizes with the biased one.
    """
    xp = x.xp
    x3 = as_channel_first(x.data)
    count = x.size // x.shape[1]
    if x3.shape[2] < LONG_RUN:  # short runs: reduce down the batch axes directly
        mean, var = batch_mean_var(x.data)
        var_unbiased = var * (count / (count - 1))
    else:
        mean, var_unbiased = _channel_stats_by_rows(x3, count)
    mean, var_unbiased = xp.reshape(mean, (x.shape[1],)), xp.reshape(var_unbiased, (x.shape[1],))
    new_mean = (1 - momentum) * running_mean.data + momentum * mean
    new_var = (1 - momentum) * running_var.data + momentum * var_unbiased
    running_mean.data = xp.astype(new_mean, running_mean.dtype)
    running_var.data = xp.astype(new_var, running_var.dtype)


def _channel_stats_by_rows(x3: Any, count: int) -> tuple[Any, Any]:
    """Per-channel mean and unbiased variance of ``(N, C, L)``, channels copied into rows block by block."""
    xp = namespace_of(x3)
    mean = xp.empty((x3.shape[1], 1), dtype=compute_dtype(x3.dtype, xp))
    var_unbiased = xp.empty((x3.shape[1], 1), dtype=compute_dtype(x3.dtype, xp))

    def block(start: int, stop: int) -> None:
        rows = widen(channel_rows(x3, start, stop)[0, ...])  # (channels, N * L)
        mean[start:stop, ...] = row_mean(xp, rows, (1,))
        centered = rows - mean[start:stop, ...]
        var_unbiased[start:stop, ...] = row_mean_of_product(xp, centered, centered, (1,)) * (count / (count - 1))

    for_each_channel_block(block, x3)
    return mean, var_unbiased


def batch_norm_reference(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_batch_stats: bool,
    eps: float,
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes, shape = batch_axes(x.ndim), channel_shape(x.shape)
    if use_batch_stats:
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) * (x - mean)).mean(axis=axes, keepdims=True)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    y = (x - mean) / (var + eps).sqrt()
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    impl: str = "explicit",
) -> Tensor:
    """Functional BatchNorm, ``torch.nn.functional.batch_norm``'s signature plus ``impl``.

    ``x`` has shape ``(N, C, *)``. ``training=True`` normalizes with the batch statistics
    and, when ``running_mean``/``running_var`` are given, updates them in place (their
    ``.data`` is replaced). ``training=False`` normalizes with ``running_mean`` and
    ``running_var``, which are then required.
    """
    check_input("batch_norm", x)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: expected input of shape (N, C, *) with at least 2 dimensions, got {x.shape}")
    num_channels = (x.shape[1],)
    check_param("weight", weight, num_channels)
    check_param("bias", bias, num_channels)
    check_param("running_mean", running_mean, num_channels)
    check_param("running_var", running_var, num_channels)
    eps = check_eps(eps)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must be given together, or both be None")
    if training and x.size // x.shape[1] < 2:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input of shape {x.shape} "
            "(one value per channel has variance 0: xhat would be 0 whatever x is)"
        )
    if not training and running_mean is None:
        raise ValueError("batch_norm: training=False normalizes with running_mean and running_var; got None")
    if impl == "autograd":
        y = batch_norm_reference(x, running_mean, running_var, weight, bias, training, eps)
    elif training:
        y = BatchNormFunction.apply(x, weight, bias, eps=eps)
    else:
        y = BatchNormEvalFunction.apply(x, weight, bias, running_mean, running_var, eps=eps)
    if training and running_mean is not None:
        update_running_stats(x, running_mean, running_var, momentum)
    return y


def _check_num_features(num_features: int) -> int:
    if not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features: expected a positive int (the number of channels C), got {num_features!r}")
    return num_features


def _check_momentum(momentum: float | None) -> float | None:
    if momentum is not None and not 0 <= momentum <= 1:
        raise ValueError(f"momentum: expected a number in [0, 1] (the new batch's weight) or None, got {momentum}")
    return momentum


class BatchNorm1d(NormModule):
    """``tn.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``.

    Input ``(N, C)`` or ``(N, C, L)`` with ``C = num_features``. ``weight`` (ones) and
    ``bias`` (zeros) have shape ``(C,)``; ``running_mean`` (zeros), ``running_var``
    (ones) and ``num_batches_tracked`` are buffers. Training and eval behave as in
    PyTorch; see the module docstring and ``docs/norms/batchnorm1d.md``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.num_features = _check_num_features(num_features)
        self.eps = check_eps(eps)
        self.momentum = _check_momentum(momentum)
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight = Parameter(ones(num_features)) if affine else None
        self.bias = Parameter(zeros(num_features)) if affine else None
        tracked = track_running_stats
        self.register_buffer("running_mean", zeros(num_features) if tracked else None)
        self.register_buffer("running_var", ones(num_features) if tracked else None)
        self.register_buffer("num_batches_tracked", tensor(0, dtype="int64") if tracked else None)

    def forward(self, x: Tensor) -> Tensor:
        check_input("BatchNorm1d", x)
        if x.ndim not in (2, 3):
            raise ValueError(f"BatchNorm1d: expected 2D (N, C) or 3D (N, C, L) input, got {x.ndim}D of shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"BatchNorm1d: expected {self.num_features} channels (input.shape[1]), got input of shape {x.shape}"
            )
        updating = self.training and self.track_running_stats
        momentum = self.momentum
        if updating:
            batches = int(self.num_batches_tracked.item()) + 1
            momentum = 1.0 / batches if self.momentum is None else self.momentum  # None: cumulative average
        y = batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=self.training or not self.track_running_stats,
            momentum=momentum,
            eps=self.eps,
            impl=self.impl,
        )
        if updating:  # counted only once the batch was accepted
            self.num_batches_tracked.data = self.num_batches_tracked.data + 1
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


register_norm(
    NormSpec(
        name="batchnorm1d",
        title="BatchNorm1d",
        summary="centre and scale each channel by its mean and (biased) standard deviation over the batch",
        module=BatchNorm1d,
        functional=batch_norm,
        params=(
            ParamSpec("weight", "(num_features,)", "ones", "rescales each normalized channel"),
            ParamSpec("bias", "(num_features,)", "zeros", "shifts each channel after normalization"),
        ),
        doc="docs/norms/batchnorm1d.md",
        cases={
            "2d": Case({"num_features": 3}, (4, 3)),
            "3d": Case({"num_features": 2}, (3, 2, 4)),
            # A batch of one is defined only with a length > 1: the statistics need 2 values per channel.
            "batch1": Case({"num_features": 2}, (1, 2, 4)),
            "smallest": Case({"num_features": 1}, (2, 1)),
        },
    )
)
