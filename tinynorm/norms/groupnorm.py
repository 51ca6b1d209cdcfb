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
groups whose statistics overflow are rescued (``_shared.mean_rstd``).
"""

from __future__ import annotations

from typing import Any

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import namespace_of, sum_to
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, zeros
from ._shared import NormModule, check_eps, check_input, check_param, mean_rstd, widen

__all__ = ["GroupNorm", "InstanceNorm1d"]


def channel_shape(x_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``(C, 1, ...)``: a per-channel vector reshaped to broadcast against ``(N, C, *)``."""
    return (x_shape[1],) + (1,) * (len(x_shape) - 2)


class GroupNormFunction(Function):
    """GroupNorm with its hand-derived backward (LayerNorm's, on the ``(N, G, M)`` view)."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, num_groups: int, eps: float) -> Any:
        xp = namespace_of(x)
        grouped = xp.reshape(widen(x), (x.shape[0], num_groups, -1))  # (N, G, M)
        mean, rstd = mean_rstd(grouped, (2,), eps)
        xhat = xp.reshape((grouped - mean) * rstd, x.shape)
        shape = channel_shape(tuple(x.shape))
        y = xhat * xp.reshape(weight, shape) if weight is not None else xhat
        if bias is not None:
            y = y + xp.reshape(bias, shape)
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd)
        return xp.astype(y, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, mean, rstd = ctx.saved_tensors
        xp = namespace_of(x)
        group_view = tuple(mean.shape[:2]) + (-1,)
        shape = channel_shape(tuple(x.shape))
        dy = widen(dy)
        xhat = (xp.reshape(widen(x), group_view) - mean) * rstd  # recomputed, (N, G, M)
        g = xp.reshape(dy * xp.reshape(weight, shape) if weight is not None else dy, group_view)
        # LayerNorm's three terms (direct, through the mean, through rstd), inside each group.
        dx = rstd * (g - xp.mean(g, axis=2, keepdims=True) - xhat * xp.mean(g * xhat, axis=2, keepdims=True))
        # Parameter gradients: per channel, so back to (N, C, *) and sum over N and *.
        xhat = xp.reshape(xhat, x.shape)
        num_channels = (x.shape[1],)
        dweight = dbias = None
        if weight is not None:
            dweight = xp.astype(xp.reshape(sum_to(dy * xhat, shape), num_channels), weight.dtype)
        if bias_dtype is not None:
            dbias = xp.astype(xp.reshape(sum_to(dy, shape), num_channels), bias_dtype)
        return xp.astype(xp.reshape(dx, x.shape), x.dtype), dweight, dbias


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
