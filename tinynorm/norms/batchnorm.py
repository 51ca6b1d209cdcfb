r"""BatchNorm1d and BatchNorm2d (Ioffe & Szegedy 2015), as ``torch.nn.BatchNorm1d``/``2d``.

Input ``(N, C)`` or ``(N, C, L)`` (BatchNorm1d), ``(N, C, H, W)`` (BatchNorm2d), seen as
``(N, C, L)`` with ``L`` the product of the axes after the channels (1 for ``(N, C)``,
``H * W`` for images). The statistics are per channel ``c``, over every other axis: the
``M = N * L`` values of channel ``c``, from every sample and position. Lay each channel's
values out as one row of a ``(C, M)`` array and BatchNorm is LayerNorm's formula on those
rows: LayerNorm averages over the features of one sample, BatchNorm over the samples
(and positions) of one feature.

Training mode, batch statistics:

    mean = mean over (N, L) of x               (per channel)
    var  = mean over (N, L) of (x - mean)**2   (biased: divides by M, to normalize)
    rstd = 1 / sqrt(var + eps)
    xhat = (x - mean) * rstd
    y    = xhat * weight + bias                (weight, bias per channel)

and, with ``track_running_stats=True``, the running estimates move towards the batch's:

    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)

(the *unbiased* batch variance, as PyTorch; ``momentum`` is the weight of the new
batch, so Keras's ``momentum=0.99`` is PyTorch's ``0.01``; ``momentum=None`` gives
the cumulative average, weight ``1 / num_batches_tracked``). The update uses the
``mean`` and ``rstd`` the forward has just computed (``var = 1 / rstd**2 - eps``), as
PyTorch's update uses its forward's statistics.

Eval mode (with running statistics): the same ``y`` with ``running_mean`` and
``running_var`` in place of ``mean`` and ``var``: constants, so ``y`` is an affine
map of ``x``. With ``track_running_stats=False`` the batch statistics are used in
both modes.

Learnable parameters (``affine=True``):

* ``weight``, shape ``(C,)``, init ones: rescales each normalized channel;
* ``bias``, shape ``(C,)``, init zeros: shifts each channel.

Buffers (``track_running_stats=True``): ``running_mean`` (``(C,)``, zeros),
``running_var`` (``(C,)``, ones), ``num_batches_tracked`` (a count, 0).

Backward (derivation: ``docs/norms/batchnorm1d.md``; BatchNorm2d:
``docs/norms/batchnorm2d.md``), with ``g = dy * weight`` and every mean and sum over
the ``M`` values of a channel:

    training: dx = rstd * (g - mean(g) - xhat * mean(g * xhat))    (LayerNorm's, per channel)
    eval:     dx = rstd * g              (the statistics do not depend on x)
    dweight = sum of dy * xhat
    dbias   = sum of dy

Saved for backward: ``x`` and the per-channel ``mean`` and ``rstd``; ``xhat`` is
recomputed. An input with no values (``N = 0``, or ``L = 0``) gives an empty output
and zero parameter gradients and leaves the running statistics alone, as PyTorch 2.13
(which still counts the batch in ``num_batches_tracked``).

Numerics (``tinynorm/stats.py``): float16 input is normalized in float32, the variance is
two-pass, and channels whose statistics overflow are recomputed from ``x / max|x|``.
Parameters are used in the input's compute dtype (a float64 module computes float32
input in float32); their gradients come back in their own dtype, and the running
statistics keep theirs.

Speed: ``batch_norm_forward`` and ``batch_norm_backward`` below are the plain formulas
and the source of truth; they copy ``x`` into channel rows. On NumPy a faster kernel with
the same results runs instead, without that copy (``tinynorm/kernels/cpu_channels.py``;
``with tn.kernels.disabled():`` runs the code below; ``docs/performance.md``).
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
from ..tensor import Tensor, ones, tensor, zeros
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

__all__ = ["BatchNorm1d", "BatchNorm2d"]


def channel_rows(a: Any) -> Any:
    """``(N, C, L)`` as ``(C, N * L)``: channel ``c``'s values, from every sample and
    position, in row ``c`` (a copy, unless ``N = 1``: a channel's values are ``C * L``
    apart in ``a``, in runs of ``L``)."""
    samples, channels, length = a.shape
    xp = namespace_of(a)
    return xp.reshape(xp.permute_dims(a, (1, 0, 2)), (channels, samples * length))


def from_channel_rows(rows: Any, shape: tuple[int, int, int]) -> Any:
    """The inverse of ``channel_rows``: ``(C, N * L)`` back to ``(N, C, L)``."""
    samples, channels, length = shape
    xp = namespace_of(rows)
    return xp.permute_dims(xp.reshape(rows, (channels, samples, length)), (1, 0, 2))


# ---- the lesson: training mode, on ``(N, C, L)`` -----------------------------------------------
def batch_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """``x`` ``(N, C, L)``, ``weight`` and ``bias`` ``(C, 1)`` or ``None``: ``y`` ``(N, C, L)``
    and the per-channel ``mean`` and ``rstd`` ``(C, 1)`` it saves."""
    xp = namespace_of(x)
    rows = channel_rows(widen(x))  # (C, M); float16 -> float32 for the statistics
    xhat, mean, rstd = layer_norm_forward(rows, None, None, eps)  # LayerNorm of each channel's row
    y = xhat if weight is None else xhat * weight  # one weight and one bias per row
    y = y if bias is None else y + bias
    return xp.astype(from_channel_rows(y, x.shape), x.dtype), mean, rstd


def batch_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` ``(N, C, L)``, ``dweight`` and ``dbias`` ``(C,)`` (``None`` where there is none)."""
    xp = namespace_of(x)
    dy_rows, x_rows = channel_rows(widen(dy)), channel_rows(x)
    g = dy_rows if weight is None else dy_rows * weight  # the gradient reaching xhat
    # Each channel's row is a LayerNorm row of M values: LayerNorm's dx, with g as its
    # upstream gradient and no weight of its own. Every sample's dx depends on the others'.
    dx, _, _ = layer_norm_backward(g, x_rows, None, mean, rstd, False)
    xhat = (widen(x_rows) - mean) * rstd
    # weight and bias are per channel: their gradients sum along the channel's row.
    dweight = None if weight is None else xp.sum(dy_rows * xhat, axis=1)
    dbias = xp.sum(dy_rows, axis=1) if with_bias else None
    return from_channel_rows(dx, x.shape), dweight, dbias


# ---- eval mode: the running statistics are constants ----------------------------------------------
def batch_norm_eval_forward(x: Any, weight: Any, bias: Any, mean: Any, rstd: Any) -> Any:
    """``y`` ``(N, C, L)`` from the running ``mean`` and ``rstd`` ``(C, 1)``: an affine map of ``x``."""
    xp = namespace_of(x)
    xhat = (widen(x) - mean) * rstd
    y = xhat if weight is None else xhat * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype)


def batch_norm_eval_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool
) -> tuple[Any, Any, Any]:
    """``dx`` ``(N, C, L)``, ``dweight`` and ``dbias`` ``(C,)``, in eval mode."""
    xp = namespace_of(x)
    dy = widen(dy)
    g = dy if weight is None else dy * weight
    dx = rstd * g  # no mean term and no projection term: mean and rstd do not move with x
    xhat = (widen(x) - mean) * rstd
    dweight = None if weight is None else xp.sum(dy * xhat, axis=(0, 2))
    dbias = xp.sum(dy, axis=(0, 2)) if with_bias else None
    return xp.astype(dx, x.dtype), dweight, dbias


def update_running_stats(
    running_mean: Tensor, running_var: Tensor, momentum: float, mean: Any, rstd: Any, eps: float, count: int
) -> None:
    """``running = (1 - momentum) * running + momentum * batch`` for both buffers (their
    ``.data`` is replaced), from the per-channel ``mean`` and ``rstd`` the forward computed.

    The batch's biased variance is ``1 / rstd**2 - eps``, taken in the buffers' dtype (a
    float32 channel of 1e20 has a variance of 1e40, beyond float32 but not float64). It
    enters unbiased (times ``count / (count - 1)``, ``count`` the values per channel): the
    running value estimates the population variance that eval mode will divide by, and
    PyTorch does the same, although training normalizes with the biased one.
    """
    xp = running_mean.xp
    mean, rstd = (xp.astype(xp.reshape(s, running_mean.shape), running_mean.dtype) for s in (mean, rstd))
    std = 1 / rstd  # sqrt(var + eps)
    var = xp.maximum(std * std - eps, 0.0)  # rounding cannot make it negative
    for buffer, batch in ((running_mean, mean), (running_var, var * (count / (count - 1)))):
        buffer.data = (1 - momentum) * buffer.data + momentum * batch


class BatchNormFunction(Function):
    """Training-mode BatchNorm with its hand-derived backward, on the input seen as ``(N, C, L)``.

    With ``running=(running_mean, running_var, momentum)`` the forward also updates the
    running statistics, from the batch statistics it has just computed.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, eps: float, running: tuple | None = None) -> Any:
        x3 = as_ncl(x)
        w, b = (in_compute_dtype(per_channel(p), x) for p in (weight, bias))
        forward, _ = kernels.pick("batch_norm", x3, w, b) or (batch_norm_forward, batch_norm_backward)
        y3, mean, rstd = forward(x3, w, b, eps)
        if running is not None and not ctx.recomputing:  # run again for create_graph: update once only
            update_running_stats(*running, mean, rstd, eps, count=x3.shape[0] * x3.shape[2])
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return namespace_of(x).reshape(y3, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        x3, dy3 = as_ncl(x), as_ncl(dy)
        w = in_compute_dtype(per_channel(weight), x)
        # Either backward fits either forward: both save the same statistics.
        _, backward = kernels.pick("batch_norm", x3, w) or (batch_norm_forward, batch_norm_backward)
        dx3, dweight, dbias = backward(dy3, x3, w, mean, rstd, bias is not None)
        return namespace_of(x).reshape(dx3, x.shape), param_grad(dweight, weight), param_grad(dbias, bias)


class BatchNormEvalFunction(Function):
    """Eval-mode BatchNorm: the running statistics are constants, so the backward is affine."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, eps: float) -> Any:
        xp = namespace_of(x)
        w, b = (in_compute_dtype(per_channel(p), x) for p in (weight, bias))
        mean = in_compute_dtype(per_channel(running_mean), x)
        rstd = 1 / xp.sqrt(in_compute_dtype(per_channel(running_var), x) + eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return xp.reshape(batch_norm_eval_forward(as_ncl(x), w, b, mean, rstd), x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, None, None]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        w = in_compute_dtype(per_channel(weight), x)
        dx3, dweight, dbias = batch_norm_eval_backward(as_ncl(dy), as_ncl(x), w, mean, rstd, bias is not None)
        # The running statistics get no gradient.
        return namespace_of(x).reshape(dx3, x.shape), param_grad(dweight, weight), param_grad(dbias, bias), None, None


def batch_norm_reference(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    use_batch_stats: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The same forward composed from primitive ops; autograd derives its backward.

    Returns ``y`` and the ``mean`` and ``std = sqrt(var + eps)`` it normalized with, for
    the running statistics.
    """
    axes, shape = (0,) + tuple(range(2, x.ndim)), channel_shape(x.shape)
    if use_batch_stats:
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) * (x - mean)).mean(axis=axes, keepdims=True)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    std = (var + eps).sqrt()
    y = (x - mean) / std
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y, mean, std


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
    for name, p in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        check_param(name, p, (x.shape[1],), x)
    eps = eps_for(check_eps(eps), x)
    momentum = check_real("momentum", momentum, low=0, high=1)
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must be given together, or both be None")
    if not training and running_mean is None:
        raise ValueError("batch_norm: training=False normalizes with running_mean and running_var; got None")
    count = x.shape[0] * math.prod(x.shape[2:])  # values per channel
    if training and count == 1:
        raise ValueError(
            f"batch_norm: expected more than 1 value per channel when training, got input of shape {x.shape} "
            "(one value per channel has variance 0: xhat would be 0 whatever x is)"
        )
    if x.size == 0:  # nothing to normalize, and no statistics to update the running ones with
        return empty_norm(x, weight, bias)
    running = (running_mean, running_var, momentum) if training and running_mean is not None else None
    if impl == "autograd":
        y, mean, std = batch_norm_reference(x, running_mean, running_var, weight, bias, training, eps)
        if running is not None:
            update_running_stats(*running, mean.data, 1 / std.data, eps, count)
        return y
    if training:
        return BatchNormFunction.apply(x, weight, bias, eps=eps, running=running)
    return BatchNormEvalFunction.apply(x, weight, bias, running_mean, running_var, eps=eps)


class _BatchNorm(NormModule):
    """What BatchNorm1d and BatchNorm2d share: all but the input ranks they accept."""

    # Set by each subclass: the accepted ranks, and how the message names them.
    ranks: tuple[int, ...] = ()
    layouts = ""

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
        self.num_features = check_positive_int("num_features", num_features)
        self.eps = check_eps(eps)
        self.momentum = None if momentum is None else check_real("momentum", momentum, low=0, high=1)
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight = Parameter(ones(self.num_features)) if affine else None
        self.bias = Parameter(zeros(self.num_features)) if affine else None
        tracked = track_running_stats
        self.register_buffer("running_mean", zeros(self.num_features) if tracked else None)
        self.register_buffer("running_var", ones(self.num_features) if tracked else None)
        self.register_buffer("num_batches_tracked", tensor(0, dtype="int64") if tracked else None)

    def forward(self, x: Tensor) -> Tensor:
        name = type(self).__name__
        # The running statistics are state too: a module without parameters checks the backend up front.
        check_input(name, x, like=self.running_mean)
        if x.ndim not in self.ranks:
            raise ValueError(f"{name}: expected {self.layouts} input, got {x.ndim}D of shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}: expected {self.num_features} channels (input.shape[1]), got input of shape {x.shape}"
            )
        updating = self.training and self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if updating and self.momentum is None:  # the cumulative average
            momentum = 1.0 / (int(self.num_batches_tracked.item()) + 1)
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


class BatchNorm1d(_BatchNorm):
    """``tn.nn.BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``.

    Input ``(N, C)`` or ``(N, C, L)`` with ``C = num_features``. ``weight`` (ones) and
    ``bias`` (zeros) have shape ``(C,)``; ``running_mean`` (zeros), ``running_var``
    (ones) and ``num_batches_tracked`` are buffers. Training and eval behave as in
    PyTorch; see the module docstring and ``docs/norms/batchnorm1d.md``.
    """

    ranks, layouts = (2, 3), "2D (N, C) or 3D (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """``tn.nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True)``.

    Input ``(N, C, H, W)`` with ``C = num_features``: BatchNorm1d with the ``H * W``
    positions of each image in place of the length ``L`` (the same lesson, the spatial
    axes flattened). The same parameters, buffers and modes as BatchNorm1d, and as
    ``torch.nn.BatchNorm2d``; see ``docs/norms/batchnorm2d.md``.
    """

    ranks, layouts = (4,), "4D (N, C, H, W)"


_PARAMS = (
    ParamSpec("weight", "(num_features,)", "ones", "rescales each normalized channel"),
    ParamSpec("bias", "(num_features,)", "zeros", "shifts each channel after normalization"),
)

register_norm(
    NormSpec(
        name="batchnorm1d",
        title="BatchNorm1d",
        summary="centre and scale each channel by its mean and (biased) standard deviation over the batch",
        module=BatchNorm1d,
        functional=batch_norm,
        params=_PARAMS,
        doc="docs/norms/batchnorm1d.md",
        cases={
            "2d": Case({"num_features": 3}, (4, 3)),
            "3d": Case({"num_features": 2}, (3, 2, 4)),
            # A batch of one is defined only with a length > 1: the statistics need 2 values per channel.
            "batch1": Case({"num_features": 2}, (1, 2, 4)),
            "smallest": Case({"num_features": 1}, (2, 1)),
            "large": Case({"num_features": 257}, (601, 257)),
        },
    )
)

# Every BatchNorm2d case is an image batch (N, C, H, W), the only input it takes.
register_norm(
    NormSpec(
        name="batchnorm2d",
        title="BatchNorm2d",
        summary="centre and scale each channel of a batch of images by its mean and standard deviation over N, H, W",
        module=BatchNorm2d,
        functional=batch_norm,
        params=_PARAMS,
        doc="docs/norms/batchnorm2d.md",
        cases={
            "2d": Case({"num_features": 3}, (4, 3, 2, 2)),
            "3d": Case({"num_features": 2}, (3, 2, 3, 4)),
            "batch1": Case({"num_features": 2}, (1, 2, 2, 3)),
            "smallest": Case({"num_features": 1}, (2, 1, 1, 1)),
            "large": Case({"num_features": 7}, (13, 7, 9, 11)),  # H * W = 99: the kernel's channel rows
        },
    )
)
