r"""GroupNorm (Wu & He 2018), as ``torch.nn.GroupNorm``, and InstanceNorm1d/2d, its ``G = C`` case.

Input ``(N, C, *)``, seen as ``(N, C, L)`` with ``L = prod(*)`` (1 for ``(N, C)``). The
``C`` channels are split into ``G = num_groups`` groups of ``C / G`` consecutive
channels; the statistics are per sample and per group, over the group's channels and
every position: ``M = (C / G) * L`` values. Each group of each sample is one row of the
``(N * G, M)`` view, and on those rows GroupNorm is LayerNorm:

    mean = mean over the M values of a group       (per sample, per group)
    var  = mean over the M values of (x - mean)**2 (biased: divides by M)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd                       (back in the (N, C, L) shape)
    y    = xhat * weight + bias                    (weight, bias per channel)

``G = 1`` normalizes each sample over all its channels and positions (LayerNorm over
``(C, *)``, but with a per-channel rather than a per-element weight); ``G = C`` is
InstanceNorm, each channel of each sample on its own. No statistic crosses samples,
so, unlike BatchNorm, the batch size does not matter and train and eval agree.

Learnable parameters (``affine=True``):

* ``weight``, shape ``(C,)``, init ones: rescales each normalized channel;
* ``bias``, shape ``(C,)``, init zeros: shifts each channel.

Backward (derivation: ``docs/norms/groupnorm.md``), with ``g = dy * weight`` and the
means over the ``M`` values of each group (LayerNorm's ``dx`` on the group rows):

    dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dweight = sum over N and L of dy * xhat      (per channel)
    dbias   = sum over N and L of dy

The weight sits *after* the group statistics and varies inside a group, which is why
``g = dy * weight`` is formed in the ``(N, C, L)`` shape before the group view.

Saved for backward: ``x`` and the per-group ``mean`` and ``rstd`` (``(N * G, 1)``);
``xhat`` is recomputed. An input with no values at all (``N = 0``, or ``L = 0``) gives an
empty output, as PyTorch's, with an empty input gradient and zero parameter gradients.

Numerics (``tinynorm/stats.py``): float16 input is normalized in float32, the variance is
two-pass, and groups whose statistics overflow are recomputed from ``x / max|x|``.
Parameters are used in the input's compute dtype; their gradients come back in their own.

Speed: ``group_norm_forward`` and ``group_norm_backward`` below are the plain formulas and
the source of truth. On NumPy a faster kernel with the same results runs instead, on
blocks of whole samples (``tinynorm/kernels/cpu_channels.py``; ``with
tn.kernels.disabled():`` runs the code below; ``docs/performance.md``).
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..stats import in_compute_dtype, widen
from ..tensor import Tensor, ones, zeros
from ._shared import (
    NormModule,
    as_ncl,
    channel_shape,
    check_eps,
    check_input,
    check_param,
    check_positive_int,
    check_real,
    empty_norm,
    eps_for,
    param_grad,
    per_channel,
)
from .layernorm import layer_norm_backward, layer_norm_forward

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d"]


# ---- the view the lesson computes on ----------------------------------------------------------
def group_rows(a: Any, num_groups: int) -> Any:
    """``(N, C, L)`` as ``(N * G, M)``: one row per group of each sample (a reshape, which
    copies nothing for contiguous input).

    The channel axis comes before the positions, so a group's ``C / G`` channels are one
    contiguous run of ``M = (C / G) * L`` values. (Sizes spelled out: ``-1`` is ambiguous
    for an empty batch.)
    """
    samples, channels, length = a.shape
    return namespace_of(a).reshape(a, (samples * num_groups, channels // num_groups * length))


# ---- the lesson: forward and backward on ``(N, C, L)`` --------------------------------------
def group_norm_forward(x: Any, weight: Any, bias: Any, num_groups: int, eps: float) -> tuple[Any, Any, Any]:
    """``x`` ``(N, C, L)``, ``weight`` and ``bias`` ``(C, 1)`` or ``None``: ``y`` ``(N, C, L)``
    and the per-group ``mean`` and ``rstd`` ``(N * G, 1)`` it saves."""
    xp = namespace_of(x)
    rows = group_rows(widen(x), num_groups)  # float16 -> float32 for the statistics
    xhat, mean, rstd = layer_norm_forward(rows, None, None, eps)  # LayerNorm of each group's row
    xhat = xp.reshape(xhat, x.shape)
    y = xhat if weight is None else xhat * weight  # per channel, in the (N, C, L) shape
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype), mean, rstd


def group_norm_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, num_groups: int, with_bias: bool
) -> tuple[Any, Any, Any]:
    """``dx`` ``(N, C, L)``, ``dweight`` and ``dbias`` ``(C,)`` (``None`` where there is none)."""
    xp = namespace_of(x)
    dy = widen(dy)
    g = dy if weight is None else dy * weight  # the gradient reaching xhat, formed per channel
    # Within a group x -> xhat is a LayerNorm row of M values: LayerNorm's dx, with g as
    # its upstream gradient and no weight of its own.
    dx, _, _ = layer_norm_backward(group_rows(g, num_groups), group_rows(x, num_groups), None, mean, rstd, False)
    xhat = xp.reshape((group_rows(widen(x), num_groups) - mean) * rstd, x.shape)
    # weight and bias are per channel: their gradients sum over the samples and positions.
    dweight = None if weight is None else xp.sum(dy * xhat, axis=(0, 2))
    dbias = xp.sum(dy, axis=(0, 2)) if with_bias else None
    return xp.reshape(dx, x.shape), dweight, dbias


class GroupNormFunction(Function):
    """GroupNorm with its hand-derived backward, on the input seen as ``(N, C, L)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, num_groups: int, eps: float) -> Any:
        x3 = as_ncl(x)
        w, b = (in_compute_dtype(per_channel(p), x) for p in (weight, bias))
        forward, _ = kernels.pick("group_norm", x3, w, b) or (group_norm_forward, group_norm_backward)
        y3, mean, rstd = forward(x3, w, b, num_groups, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.num_groups = num_groups
        return namespace_of(x).reshape(y3, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        x3, dy3 = as_ncl(x), as_ncl(dy)
        w = in_compute_dtype(per_channel(weight), x)
        # Either backward fits either forward: both save the same statistics.
        _, backward = kernels.pick("group_norm", x3, w) or (group_norm_forward, group_norm_backward)
        dx3, dweight, dbias = backward(dy3, x3, w, mean, rstd, ctx.num_groups, bias is not None)
        return namespace_of(x).reshape(dx3, x.shape), param_grad(dweight, weight), param_grad(dbias, bias)


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


def _check_groups(num_channels: int, num_groups: Any) -> int:
    num_groups = check_positive_int("num_groups", num_groups)
    if num_channels % num_groups:
        raise ValueError(
            f"num_groups: the number of channels must be divisible by num_groups, "
            f"got {num_channels} channels and num_groups={num_groups}"
        )
    return num_groups


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
    num_groups = _check_groups(x.shape[1], num_groups)
    check_param("weight", weight, (x.shape[1],), x)
    check_param("bias", bias, (x.shape[1],), x)
    eps = eps_for(check_eps(eps), x)
    if x.size == 0:
        return empty_norm(x, weight, bias)
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

    ``x`` has shape ``(N, C, *)`` with more than one spatial element (or none: an empty
    result). Differs from ``torch.nn.functional.instance_norm``: no running statistics
    (its ``running_mean``, ``running_var``, ``use_input_stats`` and ``momentum``
    arguments are absent), so ``weight`` and ``bias`` are keyword-only: a PyTorch-style
    positional call fails loudly instead of binding a running mean to ``weight``.
    """
    check_input("instance_norm", x)
    if x.ndim < 3:
        raise ValueError(f"instance_norm: expected input of shape (N, C, *) with a spatial axis, got {x.shape}")
    if math.prod(x.shape[2:]) == 1:
        raise ValueError(
            f"instance_norm: expected more than 1 spatial element per channel, got input of shape {x.shape} "
            "(one value per instance has variance 0: xhat would be 0 whatever x is)"
        )
    return group_norm(x, x.shape[1], weight, bias, eps, impl=impl)


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
        self.num_channels = check_positive_int("num_channels", num_channels)
        self.num_groups = _check_groups(self.num_channels, num_groups)
        self.eps = check_eps(eps)
        self.affine = affine
        self.weight = Parameter(ones(self.num_channels)) if affine else None
        self.bias = Parameter(zeros(self.num_channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        check_input("GroupNorm", x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm: expected input of shape (N, {self.num_channels}, *), got input of shape {x.shape}"
            )
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(NormModule):
    """What InstanceNorm1d and InstanceNorm2d share: all but the number of spatial axes."""

    # Set by each subclass: the number of spatial axes, and the input layouts for messages.
    spatial_axes = 0
    layout = unbatched_layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        name = type(self).__name__
        if track_running_stats:
            raise ValueError(
                f"track_running_stats: tinynorm's {name} keeps no running statistics and always "
                "normalizes with each instance's own; got track_running_stats=True (use False, the default)"
            )
        self.num_features = check_positive_int("num_features", num_features)
        self.eps = check_eps(eps)
        self.momentum = None if momentum is None else check_real("momentum", momentum, low=0, high=1)
        self.affine = affine
        self.track_running_stats = False
        self.weight = Parameter(ones(self.num_features)) if affine else None
        self.bias = Parameter(zeros(self.num_features)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        name, batched_ndim = type(self).__name__, 2 + self.spatial_axes
        check_input(name, x)
        if x.ndim not in (batched_ndim, batched_ndim - 1):
            raise ValueError(
                f"{name}: expected {batched_ndim}D {self.layout} or unbatched {batched_ndim - 1}D "
                f"{self.unbatched_layout} input, got {x.ndim}D of shape {x.shape}"
            )
        channel_axis = x.ndim - batched_ndim + 1  # -> axis 1 of the batched shape
        if x.shape[channel_axis] != self.num_features:
            raise ValueError(
                f"{name}: expected {self.num_features} channels (input.shape[{channel_axis - x.ndim}]), "
                f"got input of shape {x.shape}"
            )
        batched = x if x.ndim == batched_ndim else x.reshape((1,) + x.shape)  # unbatched: one sample
        y = instance_norm(batched, weight=self.weight, bias=self.bias, eps=self.eps, impl=self.impl)
        return y if x.ndim == batched_ndim else y.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}, track_running_stats=False"


class InstanceNorm1d(_InstanceNorm):
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

    spatial_axes, layout, unbatched_layout = 1, "(N, C, L)", "(C, L)"


class InstanceNorm2d(_InstanceNorm):
    """``tn.nn.InstanceNorm2d(num_features, eps=1e-5, momentum=0.1, affine=False, track_running_stats=False)``.

    InstanceNorm1d on images: each channel of each sample is normalized over its
    ``H * W`` positions on its own (the same lesson, the two spatial axes flattened into
    one). Input ``(N, C, H, W)``, or unbatched ``(C, H, W)``, as PyTorch's; the same
    defaults and the same difference from PyTorch (no running statistics) as
    InstanceNorm1d. See ``docs/norms/instancenorm2d.md``.
    """

    spatial_axes, layout, unbatched_layout = 2, "(N, C, H, W)", "(C, H, W)"


_CHANNEL_PARAMS = (
    ParamSpec("weight", "(num_channels,)", "ones", "rescales each normalized channel"),
    ParamSpec("bias", "(num_channels,)", "zeros", "shifts each channel after normalization"),
)

register_norm(
    NormSpec(
        name="groupnorm",
        title="GroupNorm",
        summary="centre and scale each sample's groups of channels by their own mean and standard deviation",
        module=GroupNorm,
        functional=group_norm,
        params=_CHANNEL_PARAMS,
        doc="docs/norms/groupnorm.md",
        cases={
            "2d": Case({"num_groups": 2, "num_channels": 4}, (3, 4)),
            "3d": Case({"num_groups": 2, "num_channels": 4}, (2, 4, 3)),
            "batch1": Case({"num_groups": 2, "num_channels": 4}, (1, 4, 2, 3)),
            # One channel, no spatial axis: each group holds one value, so xhat = 0 and y = bias.
            "smallest": Case({"num_groups": 1, "num_channels": 1}, (2, 1)),
            "large": Case({"num_groups": 5, "num_channels": 15}, (151, 15, 37)),
        },
    )
)

# PyTorch's InstanceNorm has affine=False; the registry's cases turn it on so that the
# gradchecks cover weight and bias as well as the input.
_INSTANCE_PARAMS = (
    ParamSpec("weight", "(num_features,)", "ones", "rescales each channel (only with affine=True)"),
    ParamSpec("bias", "(num_features,)", "zeros", "shifts each channel (only with affine=True)"),
)

register_norm(
    NormSpec(
        name="instancenorm1d",
        title="InstanceNorm1d",
        summary="centre and scale each channel of each sample by its own mean and standard deviation over L",
        module=InstanceNorm1d,
        functional=instance_norm,
        params=_INSTANCE_PARAMS,
        doc="docs/norms/instancenorm1d.md",
        cases={
            "2d": Case({"num_features": 3, "affine": True}, (3, 5)),  # unbatched (C, L)
            "3d": Case({"num_features": 3, "affine": True}, (2, 3, 4)),
            "batch1": Case({"num_features": 3, "affine": True}, (1, 3, 4)),
            "smallest": Case({"num_features": 1, "affine": True}, (2, 1, 2)),  # L = 1 is undefined
            "large": Case({"num_features": 7, "affine": True}, (151, 7, 37)),
        },
    )
)

register_norm(
    NormSpec(
        name="instancenorm2d",
        title="InstanceNorm2d",
        summary="centre and scale each channel of each image by its own mean and standard deviation over H and W",
        module=InstanceNorm2d,
        functional=instance_norm,
        params=_INSTANCE_PARAMS,
        doc="docs/norms/instancenorm2d.md",
        cases={
            "2d": Case({"num_features": 3, "affine": True}, (3, 2, 3)),  # unbatched (C, H, W)
            "3d": Case({"num_features": 3, "affine": True}, (2, 3, 2, 4)),
            "batch1": Case({"num_features": 3, "affine": True}, (1, 3, 4, 2)),
            "smallest": Case({"num_features": 1, "affine": True}, (2, 1, 1, 2)),  # H * W = 1 is undefined
            "large": Case({"num_features": 7, "affine": True}, (61, 7, 9, 11)),
        },
    )
)
