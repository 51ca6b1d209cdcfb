r"""GroupNorm (Wu & He 2018), as ``torch.nn.GroupNorm``, and InstanceNorm1d, its ``G = C`` case.

Input ``(N, C, *)``. The ``C`` channels are split into ``G = num_groups`` groups of
``C / G`` consecutive channels; the statistics are per sample and per group, over
the group's channels and every spatial position: ``M = (C / G) * prod(*)`` values.
Viewing ``x`` as ``(N, G, M)`` turns GroupNorm into LayerNorm over the last axis:

    mean = mean over the M values of a group       (per sample, per group)
    var  = mean over the M values of (x - mean)**2 (biased: divides by M)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd                       (back in the (N, C, *) shape)
    y    = xhat * weight + bias                    (weight, bias per channel)

``G = 1`` normalizes each sample over all its channels and positions (LayerNorm over
``(C, *)``, but with a per-channel rather than a per-element weight); ``G = C`` is
InstanceNorm, each channel of each sample on its own. No statistic crosses samples,
so, unlike BatchNorm, the batch size does not matter and train and eval agree.

Learnable parameters (``affine=True``):

* ``weight``, shape ``(C,)``, init ones: rescales each normalized channel;
* ``bias``, shape ``(C,)``, init zeros: shifts each channel.

Backward (derivation: ``docs/norms/groupnorm.md``), with ``g = dy * weight`` and the
means over the ``M`` values of each group (on the ``(N, G, M)`` view):

    dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dweight = sum over N and * of dy * xhat      (per channel)
    dbias   = sum over N and * of dy

The weight sits *after* the group statistics and varies inside a group, which is why
``g = dy * weight`` is formed in the ``(N, C, *)`` shape before the reshape.

Saved for backward: ``x`` and the per-group ``mean`` and ``rstd`` (``(N, G, 1)``);
``xhat`` is recomputed.

Numerics: float16 input is normalized in float32; the variance is two-pass and
groups whose statistics overflow are rescued (``_shared.centered_mean_rstd``).

Speed: the formulas below run on blocks of whole samples small enough to stay in cache
(on both cores for big inputs), writing into memory already allocated where the backend allows it, as
LayerNorm's do (``_shared.for_each_row_block``, ``mul_``); ``dx`` is computed by
LayerNorm's own ``layer_norm_backward_rows`` on the group view.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Context, Function
from ..backend import compute_dtype
from ..nn.module import Parameter
from ..ops import namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, zeros
from ._shared import (
    NormModule,
    add_,
    as_rows,
    centered_mean_rstd,
    check_eps,
    check_input,
    check_param,
    for_each_row_block,
    layer_norm_backward_rows,
    mul_,
    row_mean,
    row_mean_of_product,
    sum_partials,
    widen,
)

__all__ = ["GroupNorm", "InstanceNorm1d"]


def channel_shape(x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(C, 1, ...)``: a per-channel vector reshaped to broadcast against ``(N, C, *)``."""
    return (x_shape[1],) + (1,) * (len(x_shape) - 2)


# ---- the formulas, on a block of samples ``(n, C, L)`` ------------------------------------
# Each sample is its G groups of M = (C / G) * L values: on the (n * G, M) view the statistics
# are LayerNorm's per row; on the (n, C, L) view weight and bias, shape (C, 1), act per channel.
def group_norm_rows(
    x: Any, weight: Any, bias: Any, num_groups: int, eps: float, out: Any = None
) -> tuple[Any, Any, Any]:
    """Forward on samples ``x`` of shape ``(n, C, L)``: ``y`` and the per-group ``mean`` and
    ``rstd``, shape ``(n * G, 1)``. ``out``, if given, is memory ``y`` may be written into."""
    xp = namespace_of(x)
    groups = (x.shape[0] * num_groups, -1)
    mean, rstd, centered = centered_mean_rstd(widen(xp.reshape(x, groups)), (1,), eps)  # LayerNorm's, per group
    xhat = xp.reshape(mul_(centered, rstd, out=centered), x.shape)  # in centered's memory (a new array)
    y = mul_(xhat, weight, out=out) if weight is not None else xhat
    if bias is not None:
        y = add_(y, bias, out=y)
    return xp.astype(y, x.dtype, copy=False), mean, rstd


def group_norm_backward_rows(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, num_groups: int, with_bias: bool, out: Any = None
) -> tuple[Any, Any, Any]:
    """Backward on samples ``(n, C, L)``: ``dx`` and these samples' shares of ``dweight`` and ``dbias``.

    ``dx`` is LayerNorm's, on the ``(n * G, M)`` view, with ``g = dy * weight`` (formed per
    channel, in the ``(n, C, L)`` shape) as its upstream gradient and no weight of its own.
    """
    xp = namespace_of(x)
    groups = (x.shape[0] * num_groups, -1)
    dy = widen(dy)
    xhat = xp.reshape(widen(x), groups) - mean  # recomputed: cheaper than storing it
    xhat = xp.reshape(mul_(xhat, rstd, out=xhat), x.shape)
    # Parameter gradients, per channel: sums over the samples and the length L, the latter
    # as L times a mean along each row of L values (a dot product, no dy * xhat temporary).
    length = x.shape[2]
    dweight = xp.sum(row_mean_of_product(xp, dy, xhat, (2,)), axis=(0, 2)) * length if weight is not None else None
    dbias = xp.sum(row_mean(xp, dy, (2,)), axis=(0, 2)) * length if with_bias else None
    g = dy * weight if weight is not None else dy
    out = None if out is None else xp.reshape(out, groups)
    dx, _, _ = layer_norm_backward_rows(xp.reshape(g, groups), xp.reshape(x, groups), None, mean, rstd, False, out)
    return xp.reshape(dx, x.shape), dweight, dbias


class GroupNormFunction(Function):
    """GroupNorm with its hand-derived backward (LayerNorm's, on the ``(N, G, M)`` view).

    Both passes see the input as ``(N, C, L)`` (``L = prod(*)``, 1 for ``(N, C)`` input) and
    run the formulas above on blocks of whole samples (``for_each_row_block``), so that no
    group is split between blocks.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, num_groups: int, eps: float) -> Any:
        xp = namespace_of(x)
        samples, channels = x.shape[0], x.shape[1]
        x3 = xp.reshape(x, (samples, channels, math.prod(x.shape[2:])))
        w, b = as_channels(weight), as_channels(bias)
        y3 = xp.empty(x3.shape, dtype=x.dtype)
        mean = xp.empty((samples * num_groups, 1), dtype=compute_dtype(x.dtype, xp))
        rstd = xp.empty((samples * num_groups, 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            these, their_groups = slice(start, stop), slice(start * num_groups, stop * num_groups)
            y3[these, ...], mean[their_groups, ...], rstd[their_groups, ...] = group_norm_rows(
                x3[these, ...], w, b, num_groups, eps, out=y3[these, ...]
            )

        for_each_row_block(block, xp.reshape(x3, (samples, -1)))
        # Saved as the plain formulas have them, on the (N, G, M) view: (N, G, 1).
        group_stats = (samples, num_groups, 1)
        mean, rstd = xp.reshape(mean, group_stats), xp.reshape(rstd, group_stats)
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd)
        return xp.reshape(y3, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, mean, rstd = ctx.saved_tensors
        xp = namespace_of(x)
        samples, num_groups = mean.shape[0], mean.shape[1]
        x3 = xp.reshape(x, (samples, x.shape[1], math.prod(x.shape[2:])))
        dy3, w = xp.reshape(dy, x3.shape), as_channels(weight)
        mean, rstd = as_rows(mean, 1), as_rows(rstd, 1)
        dx3 = xp.empty(x3.shape, dtype=x.dtype)

        def block(start: int, stop: int) -> tuple[Any, Any]:
            these, their_groups = slice(start, stop), slice(start * num_groups, stop * num_groups)
            dx3[these, ...], dweight, dbias = group_norm_backward_rows(
                dy3[these, ...],
                x3[these, ...],
                w,
                mean[their_groups, ...],
                rstd[their_groups, ...],
                num_groups,
                bias_dtype is not None,
                out=dx3[these, ...],
            )
            return dweight, dbias

        partials = for_each_row_block(block, xp.reshape(x3, (samples, -1)))
        dweight = dbias = None
        if weight is not None:
            dweight = xp.astype(sum_partials([q[0] for q in partials], x.shape[1], x3), weight.dtype)
        if bias_dtype is not None:
            dbias = xp.astype(sum_partials([q[1] for q in partials], x.shape[1], x3), bias_dtype)
        return xp.reshape(dx3, x.shape), dweight, dbias


def as_channels(param: Any) -> Any:
    """A ``(C,)`` parameter as ``(C, 1)``, to act per channel on ``(n, C, L)`` (``None`` stays)."""
    return None if param is None else namespace_of(param).reshape(param, (param.shape[0], 1))


def group_norm_reference(
    x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    grouped = x.reshape(x.shape[0], num_groups, -1)
    centered = grouped - grouped.mean(axis=2, keepdims=True)
    var = (centered * centered).mean(axis=2, keepdims=True)
    y = (centered / (var + eps).sqrt()).reshape(x.shape)
    shape = channel_shape(x.shape)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _check_channels_divisible(num_channels: int, num_groups: int) -> None:
    if not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"num_groups: expected a positive int, got {num_groups!r}")
    if num_channels % num_groups:
        raise ValueError(
            f"num_groups: the number of channels must be divisible by num_groups, "
            f"got {num_channels} channels and num_groups={num_groups}"
        )


def group_norm(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    impl: str = "explicit",
) -> Tensor:
    """Functional GroupNorm, ``torch.nn.functional.group_norm``'s signature plus ``impl``.

    ``x`` has shape ``(N, C, *)``; ``C`` must be divisible by ``num_groups``.
    """
    check_input("group_norm", x)
    if x.ndim < 2:
        raise ValueError(f"group_norm: expected input of shape (N, C, *) with at least 2 dimensions, got {x.shape}")
    _check_channels_divisible(x.shape[1], num_groups)
    check_param("weight", weight, (x.shape[1],))
    check_param("bias", bias, (x.shape[1],))
    eps = check_eps(eps)
    if impl == "autograd":
        return group_norm_reference(x, num_groups, weight, bias, eps)
    return GroupNormFunction.apply(x, weight, bias, num_groups=num_groups, eps=eps)


def instance_norm(
    x: Tensor,
    *,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    impl: str = "explicit",
) -> Tensor:
    """Functional InstanceNorm: ``group_norm`` with one group per channel.

    ``x`` has shape ``(N, C, *)`` with more than one spatial element. Differs from
    ``torch.nn.functional.instance_norm``: no running statistics (its ``running_mean``,
    ``running_var``, ``use_input_stats`` and ``momentum`` arguments are absent), so
    ``weight`` and ``bias`` are keyword-only: a PyTorch-style positional call fails
    loudly instead of binding a running mean to ``weight``.
    """
    check_input("instance_norm", x)
    if x.ndim < 3:
        raise ValueError(f"instance_norm: expected input of shape (N, C, *) with a spatial axis, got {x.shape}")
    if x.size // (x.shape[0] * x.shape[1]) < 2:
        raise ValueError(
            f"instance_norm: expected more than 1 spatial element per channel, got input of shape {x.shape} "
            "(one value per instance has variance 0: xhat would be 0 whatever x is)"
        )
    return group_norm(x, x.shape[1], weight, bias, eps, impl=impl)


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class GroupNorm(NormModule):
    """``tn.nn.GroupNorm(num_groups, num_channels, eps=1e-5, affine=True)``.

    Input ``(N, C, *)`` with ``C = num_channels``, divisible by ``num_groups``.
    ``weight`` (ones) and ``bias`` (zeros) have shape ``(C,)``; see the module
    docstring and ``docs/norms/groupnorm.md``.
    """

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, impl: str = "explicit"
    ) -> None:
        super().__init__(impl)
        self.num_channels = _check_positive("num_channels", num_channels)
        _check_channels_divisible(num_channels, num_groups)
        self.num_groups = num_groups
        self.eps = check_eps(eps)
        self.affine = affine
        self.weight = Parameter(ones(num_channels)) if affine else None
        self.bias = Parameter(zeros(num_channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        check_input("GroupNorm", x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm: expected input of shape (N, {self.num_channels}, *), got input of shape {x.shape}"
            )
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class InstanceNorm1d(NormModule):
    """``tn.nn.InstanceNorm1d(num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False)``.

    GroupNorm with ``G = C``: each channel of each sample is normalized over its
    length ``L`` on its own. Input ``(N, C, L)``, or unbatched ``(C, L)``, as PyTorch's.
    Note PyTorch's defaults, kept here: ``affine=False`` (no ``weight``/``bias`` unless
    asked for; with ``affine=True`` they are ``(C,)``, ones and zeros).

    Differs from PyTorch: no running statistics. ``track_running_stats=True`` raises;
    ``momentum`` is accepted for PyTorch's signature and, as in PyTorch with
    ``track_running_stats=False``, has no effect. Train and eval modes therefore agree.
    See ``docs/norms/instancenorm1d.md``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        if track_running_stats:
            raise ValueError(
                "track_running_stats: tinynorm's InstanceNorm1d keeps no running statistics and always "
                "normalizes with each instance's own; got track_running_stats=True (use False, the default)"
            )
        self.num_features = _check_positive("num_features", num_features)
        self.eps = check_eps(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = False
        self.weight = Parameter(ones(num_features)) if affine else None
        self.bias = Parameter(zeros(num_features)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        check_input("InstanceNorm1d", x)
        if x.ndim not in (2, 3):
            raise ValueError(
                f"InstanceNorm1d: expected 3D (N, C, L) or unbatched 2D (C, L) input, got {x.ndim}D of shape {x.shape}"
            )
        if x.shape[-2] != self.num_features:
            raise ValueError(
                f"InstanceNorm1d: expected {self.num_features} channels (input.shape[-2]), got input of shape {x.shape}"
            )
        batched = x if x.ndim == 3 else x.reshape((1,) + x.shape)  # (C, L) is one sample
        y = instance_norm(batched, weight=self.weight, bias=self.bias, eps=self.eps, impl=self.impl)
        return y if x.ndim == 3 else y.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}, track_running_stats=False"


register_norm(
    NormSpec(
        name="groupnorm",
        title="GroupNorm",
        summary="centre and scale each sample's groups of channels by their own mean and standard deviation",
        module=GroupNorm,
        functional=group_norm,
        params=(
            ParamSpec("weight", "(num_channels,)", "ones", "rescales each normalized channel"),
            ParamSpec("bias", "(num_channels,)", "zeros", "shifts each channel after normalization"),
        ),
        doc="docs/norms/groupnorm.md",
        cases={
            "2d": Case({"num_groups": 2, "num_channels": 4}, (3, 4)),
            "3d": Case({"num_groups": 2, "num_channels": 4}, (2, 4, 3)),
            "batch1": Case({"num_groups": 2, "num_channels": 4}, (1, 4, 2, 3)),
            # One channel, no spatial axis: each group holds one value, so xhat = 0 and y = bias.
            "smallest": Case({"num_groups": 1, "num_channels": 1}, (2, 1)),
        },
    )
)

# PyTorch's InstanceNorm1d has affine=False; the registry's cases turn it on so that the
# gradchecks cover weight and bias as well as the input.
register_norm(
    NormSpec(
        name="instancenorm1d",
        title="InstanceNorm1d",
        summary="centre and scale each channel of each sample by its own mean and standard deviation over L",
        module=InstanceNorm1d,
        functional=instance_norm,
        params=(
            ParamSpec("weight", "(num_features,)", "ones", "rescales each channel (only with affine=True)"),
            ParamSpec("bias", "(num_features,)", "zeros", "shifts each channel (only with affine=True)"),
        ),
        doc="docs/norms/instancenorm1d.md",
        cases={
            "2d": Case({"num_features": 3, "affine": True}, (3, 5)),  # unbatched (C, L)
            "3d": Case({"num_features": 3, "affine": True}, (2, 3, 4)),
            "batch1": Case({"num_features": 3, "affine": True}, (1, 3, 4)),
            "smallest": Case({"num_features": 1, "affine": True}, (2, 1, 2)),  # L = 1 is undefined
        },
    )
)
