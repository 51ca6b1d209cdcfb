"""CPU kernels for the channel norms: GroupNorm (and InstanceNorm, its ``G = C`` case) and
BatchNorm, the lessons' formulas visiting memory in cache-sized pieces.

The lessons compute on views that cost nothing (GroupNorm's group rows) or on a copy of
the whole input (BatchNorm's channel rows). The kernels here give the same results with
the savings of ``cpu_rows`` (writes into memory already owned, sums as matrix-vector
products, per-row factors taken out of the sums) and without whole-array copies:

* **GroupNorm** runs on blocks of whole samples, so that no group is split: on the
  ``(n * G, M)`` view of a block the statistics and ``dx`` are LayerNorm's row kernels.
* **BatchNorm** needs every sample of a channel, and how it reaches them depends on how
  long the runs of a channel's values are in memory (``L`` values, ``C * L`` apart).
  Short runs (``L < LONG_RUN``, ``(N, C)`` input above all): sweeps down the batch over
  blocks of whole samples, each block adding its column sums to the per-channel sums
  (the mean, then the two-pass variance, then ``y``; in the backward ``sum(dy)`` and
  ``sum(dy * (x - mean))``, then ``dx``). Long runs: blocks of channels copied into
  channel rows (a transpose the size of a cache, not of ``x``), the lesson's formulas on
  those rows, and the result copied back.

``blocks.for_each_row_block`` (or ``blocked_forward``/``blocked_backward``) runs the
blocks, on both cores for big inputs. What the choices were worth, as measured:
``docs/performance.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import namespace_of
from ..norms import batchnorm, groupnorm
from ..norms.batchnorm import channel_rows, from_channel_rows
from ..stats import centered_mean_rstd, row_sum_of_product, widen
from . import Kernel, register
from .blocks import (
    add_,
    blocked_backward,
    blocked_forward,
    column_sums,
    for_each_row_block,
    mul_,
    normalize_rows,
    row_sums,
    sub_,
    sum_partials,
)
from .cpu_rows import cast_like, layer_norm_backward_block


# ---- GroupNorm: blocks of whole samples ---------------------------------------------------------
# The driver slices 2-D rows, so each sample is one row of (N, C * L); inside a block the
# (n * G, M) view carries the statistics and the (n, C, L) view the per-channel weight.
def group_norm_forward(x: Any, weight: Any, bias: Any, num_groups: int, eps: float) -> tuple[Any, Any, Any]:
    """``groupnorm.group_norm_forward``, by blocks of whole samples."""
    xp = namespace_of(x)
    samples, channels, length = x.shape
    x2 = xp.reshape(x, (samples, channels * length))
    y2, mean, rstd = blocked_forward(_group_norm_block, x2, weight, bias, num_groups, channels, eps)
    return xp.reshape(y2, x.shape), mean, rstd


def _group_norm_block(
    x: Any, weight: Any, bias: Any, num_groups: int, channels: int, eps: float, out: Any
) -> tuple[Any, Any, Any]:
    xp = namespace_of(x)
    samples = x.shape[0]
    groups = (samples * num_groups, x.shape[1] // num_groups)
    out_groups = None if out is None else xp.reshape(out, groups)
    # x - mean goes straight into y's memory: the two-pass variance computes it anyway.
    rows = xp.reshape(widen(x), groups)
    mean, rstd, centered = centered_mean_rstd(rows, eps, subtract=lambda a, b: sub_(a, b, out=out_groups))
    xhat = mul_(centered, rstd, out=centered)
    y = xp.reshape(xhat, (samples, channels, x.shape[1] // channels))  # weight and bias act per channel
    y = y if weight is None else mul_(y, weight, out=y)
    y = y if bias is None else add_(y, bias, out=y)
    return cast_like(xp.reshape(y, x.shape), x), mean, rstd


def group_norm_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, num_groups: int, with_bias: bool
) -> tuple[Any, Any, Any]:
    """``groupnorm.group_norm_backward``, by blocks of whole samples."""
    xp = namespace_of(x)
    samples, channels, length = x.shape
    flat = (samples, channels * length)
    # The statistics as (N, G), so that the driver slices them with their samples.
    by_sample = tuple(xp.reshape(s, (samples, num_groups)) for s in (mean, rstd))
    dx2, dweight, dbias = blocked_backward(
        _group_norm_backward_block,
        xp.reshape(dy, flat),
        xp.reshape(x, flat),
        by_sample,
        weight,
        num_groups,
        channels,
        with_bias,
    )
    return xp.reshape(dx2, x.shape), dweight, dbias


def _group_norm_backward_block(
    dy: Any, x: Any, mean: Any, rstd: Any, weight: Any, num_groups: int, channels: int, with_bias: bool, out: Any
) -> tuple[Any, Any, Any]:
    xp = namespace_of(x)
    samples, length = x.shape[0], x.shape[1] // channels
    groups, by_channel = (samples * num_groups, x.shape[1] // num_groups), (samples * channels, length)
    mean, rstd = (xp.reshape(s, (samples * num_groups, 1)) for s in (mean, rstd))
    dy = widen(dy)
    xhat = xp.reshape(widen(x), groups) - mean  # recomputed: cheaper than storing it
    xhat = mul_(xhat, rstd, out=xhat)
    # The parameter gradients are per channel: dot products along each channel's L values
    # (no dy * xhat temporary), then sums over these samples.
    dweight = dbias = None
    if weight is not None:
        sums = row_sum_of_product(xp.reshape(dy, by_channel), xp.reshape(xhat, by_channel))
        dweight = xp.sum(xp.reshape(sums, (samples, channels)), axis=0)
    if with_bias:
        dbias = xp.sum(xp.reshape(row_sums(xp.reshape(dy, by_channel)), (samples, channels)), axis=0)
    g = dy if weight is None else xp.reshape(xp.reshape(dy, (samples, channels, length)) * weight, x.shape)
    out_groups = None if out is None else xp.reshape(out, groups)
    # LayerNorm's dx on the group rows, with g as the upstream gradient and no weight of its own.
    dx, _, _ = layer_norm_backward_block(
        xp.reshape(g, groups), xp.reshape(x, groups), mean, rstd, None, False, out_groups
    )
    return xp.reshape(dx, x.shape), dweight, dbias


# ---- BatchNorm ----------------------------------------------------------------------------------
LONG_RUN = 64
"""From runs of this many values per channel (``L``) on, copying blocks of channels into rows
pays; below it (``(N, C)`` input above all) the sweeps down the batch are faster."""


def batch_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """``batchnorm.batch_norm_forward``, without copying ``x`` into channel rows whole."""
    if x.shape[2] < LONG_RUN:
        return _batch_norm_by_samples(x, weight, bias, eps)
    return _batch_norm_by_channels(x, weight, bias, eps)


def batch_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``batchnorm.batch_norm_backward``, without copying ``x`` and ``dy`` into channel rows whole."""
    if x.shape[2] < LONG_RUN:
        return _batch_norm_backward_by_samples(dy, x, weight, mean, rstd, with_bias)
    return _batch_norm_backward_by_channels(dy, x, weight, mean, rstd, with_bias)


# Short runs: sweeps down the batch over blocks of whole samples, rows of the (N, C * L) view.
# A block's column sums are per (channel, position); a channel's sum adds up its L columns.
def _sample_rows(x: Any) -> Any:
    """``(N, C, L)`` as ``(N, C * L)``: one row per sample (a view)."""
    return namespace_of(x).reshape(x, (x.shape[0], x.shape[1] * x.shape[2]))


def _per_channel(sums: Any, channels: int) -> Any:
    """Column sums ``(C * L,)`` of the sample rows -> per-channel sums ``(C,)``."""
    xp = namespace_of(sums)
    return xp.sum(xp.reshape(sums, (channels, -1)), axis=1)


def _along_row(per_channel: Any, row_length: int) -> Any:
    """A per-channel vector (``(C,)`` or ``(C, 1)``) laid out along a sample row ``(C * L,)``."""
    xp = namespace_of(per_channel)
    channels = per_channel.shape[0]
    column = xp.reshape(per_channel, (channels, 1))
    return xp.reshape(xp.broadcast_to(column, (channels, row_length // channels)), (row_length,))


def _sum_down_samples(work: Callable[[Any], Any], x2: Any, channels: int) -> Any:
    """Per-channel sum, over every sample block ``rows`` of ``x2``, of ``column_sums(work(rows))``."""
    partials = for_each_row_block(lambda start, stop: column_sums(work(slice(start, stop))), x2)
    return _per_channel(sum_partials(partials), channels)


def _batch_mean_var(x2: Any, channels: int) -> tuple[Any, Any]:
    """Per-channel ``mean`` and biased ``var`` ``(C,)`` of the sample rows: two sweeps, two-pass."""
    count = x2.shape[0] * (x2.shape[1] // channels)
    mean = _sum_down_samples(lambda rows: widen(x2[rows, ...]), x2, channels) / count
    mean_row = _along_row(mean, x2.shape[1])

    def squares(rows: Any) -> Any:
        centered = widen(x2[rows, ...]) - mean_row
        return mul_(centered, centered, out=centered)

    return mean, _sum_down_samples(squares, x2, channels) / count


def _batch_norm_by_samples(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    xp = namespace_of(x)
    x2, channels = _sample_rows(x), x.shape[1]
    with np.errstate(over="ignore"):  # a channel whose squares overflow is rescued below
        mean, var = _batch_mean_var(x2, channels)
    if bool(xp.all(xp.isfinite(var))):
        rstd = 1 / xp.sqrt(var + eps)
    else:  # a channel's squares overflowed: the rescue of tinynorm/stats.py, on channel rows (a copy)
        mean, rstd, _ = centered_mean_rstd(channel_rows(widen(x)), eps)
        mean, rstd = xp.reshape(mean, (channels,)), xp.reshape(rstd, (channels,))
    mean_row = _along_row(mean, x2.shape[1])
    scale = _along_row(rstd if weight is None else rstd * xp.reshape(weight, (channels,)), x2.shape[1])
    shift = None if bias is None else _along_row(bias, x2.shape[1])
    y2 = xp.empty(x2.shape, dtype=x.dtype)

    def block(start: int, stop: int) -> None:
        rows = slice(start, stop)
        centered = sub_(widen(x2[rows, ...]), mean_row, out=y2[rows, ...])
        y = normalize_rows(centered, scale, None, shift, out=centered)  # (x - mean) * rstd * weight + bias
        y2[rows, ...] = cast_like(y, x)

    for_each_row_block(block, x2)
    return xp.reshape(y2, x.shape), xp.reshape(mean, (channels, 1)), xp.reshape(rstd, (channels, 1))


def _batch_norm_backward_by_samples(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool
) -> tuple[Any, Any, Any]:
    """One sweep gathers the per-channel sums of ``dy`` and ``dy * (x - mean)``; a second writes

        dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),   g = dy * weight
           = (rstd * weight) * dy - rstd * mean(g) - ((x - mean) * rstd) * (rstd * mean(g * xhat))

    with every per-channel factor known by then. The last product is taken in that order:
    ``rstd * rstd`` alone underflows for channels of 1e20 in float32 (and overflows for
    channels of 1e-20), which dropped the projection term.
    """
    xp = namespace_of(x)
    x2, dy2, channels = _sample_rows(x), _sample_rows(dy), x.shape[1]
    count, row_length = x2.shape[0] * x.shape[2], x2.shape[1]
    mean, rstd = xp.reshape(mean, (channels,)), xp.reshape(rstd, (channels,))
    mean_row = _along_row(mean, row_length)

    def dy_centered(rows: Any) -> Any:
        centered = widen(x2[rows, ...]) - mean_row
        return mul_(centered, widen(dy2[rows, ...]), out=centered)

    sum_dy = _sum_down_samples(lambda rows: widen(dy2[rows, ...]), dy2, channels)
    sum_dy_xhat = _sum_down_samples(dy_centered, x2, channels) * rstd
    w = xp.ones_like(rstd) if weight is None else xp.reshape(weight, (channels,))
    mean_g, mean_g_xhat = w * sum_dy / count, w * sum_dy_xhat / count
    dy_factor, constant = _along_row(rstd * w, row_length), _along_row(rstd * mean_g, row_length)
    rstd_row, projection = _along_row(rstd, row_length), _along_row(rstd * mean_g_xhat, row_length)
    dx2 = xp.empty(x2.shape, dtype=x.dtype)

    def block(start: int, stop: int) -> None:
        rows = slice(start, stop)
        xhat = widen(x2[rows, ...]) - mean_row
        xhat = mul_(xhat, rstd_row, out=xhat)
        dx = mul_(widen(dy2[rows, ...]), dy_factor, out=dx2[rows, ...])
        dx = sub_(dx, constant, out=dx)
        dx = sub_(dx, mul_(xhat, projection, out=xhat), out=dx)
        dx2[rows, ...] = cast_like(dx, x)

    for_each_row_block(block, x2)
    dweight = None if weight is None else sum_dy_xhat
    dbias = sum_dy if with_bias else None
    return xp.reshape(dx2, x.shape), dweight, dbias


# Long runs: blocks of channels, each copied into channel rows (C_block, N * L) and back.
def _for_each_channel_block(work: Callable[[int, int], Any], x: Any) -> list[Any]:
    """``for_each_row_block`` over the channels of ``(N, C, L)``: the rows of its ``(C, N, L)`` view."""
    samples, _, length = x.shape
    channels_first = namespace_of(x).permute_dims(x, (1, 0, 2))  # a view: rows are the channels
    return for_each_row_block(work, channels_first, row_length=samples * length)


def _batch_norm_by_channels(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    xp = namespace_of(x)
    y = xp.empty(x.shape, dtype=x.dtype)

    def block(start: int, stop: int) -> tuple[Any, Any]:
        these = slice(start, stop)
        # The lesson's formulas, on these channels' rows. (The rows may be a view of x when
        # N = 1: they are never written into.)
        rows = widen(channel_rows(x[:, these, :]))
        mean, rstd, centered = centered_mean_rstd(rows, eps)
        scale = rstd if weight is None else rstd * weight[these, ...]
        y_rows = normalize_rows(centered, scale, None, None if bias is None else bias[these, ...], out=centered)
        y[:, these, :] = from_channel_rows(cast_like(y_rows, x), (x.shape[0], stop - start, x.shape[2]))
        return mean, rstd

    per_block = _for_each_channel_block(block, x)
    return (y, *(xp.concat(list(stat)) for stat in zip(*per_block)))


def _batch_norm_backward_by_channels(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool
) -> tuple[Any, Any, Any]:
    xp = namespace_of(x)
    dx = xp.empty(x.shape, dtype=x.dtype)

    def block(start: int, stop: int) -> tuple[Any, Any]:
        these = slice(start, stop)
        dy_rows, x_rows = widen(channel_rows(dy[:, these, :])), channel_rows(x[:, these, :])
        block_mean, block_rstd = mean[these, ...], rstd[these, ...]
        g = dy_rows if weight is None else dy_rows * weight[these, ...]
        # LayerNorm's dx on the channel rows, with g as the upstream gradient.
        dx_rows, _, _ = layer_norm_backward_block(g, x_rows, block_mean, block_rstd, None, False, None)
        dx[:, these, :] = from_channel_rows(dx_rows, (x.shape[0], stop - start, x.shape[2]))
        # Per channel: dweight = rstd * sum(dy * (x - mean)), dbias = sum(dy), along the rows.
        dweight = None
        if weight is not None:
            dweight = row_sum_of_product(dy_rows, widen(x_rows) - block_mean) * block_rstd
        dbias = row_sums(dy_rows) if with_bias else None
        return dweight, dbias

    per_block = _for_each_channel_block(block, x)
    dweight, dbias = (
        None if shares[0] is None else xp.reshape(xp.concat(list(shares)), (x.shape[1],)) for shares in zip(*per_block)
    )
    return dx, dweight, dbias


register(
    Kernel(
        "group_norm",
        "numpy",
        group_norm_forward,
        group_norm_backward,
        lesson=(groupnorm.group_norm_forward, groupnorm.group_norm_backward),
    )
)
register(
    Kernel(
        "batch_norm",
        "numpy",
        batch_norm_forward,
        batch_norm_backward,
        lesson=(batchnorm.batch_norm_forward, batchnorm.batch_norm_backward),
    )
)
