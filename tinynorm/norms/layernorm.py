r"""LayerNorm (Ba, Kiros & Hinton 2016), as ``torch.nn.LayerNorm``.

Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    mean = mean(x)                      (per row)
    var  = mean((x - mean)**2)          (biased: divides by N, as PyTorch)
    rstd = 1 / sqrt(var + eps)          (eps inside the square root)
    xhat = (x - mean) * rstd
    y    = xhat * weight + bias

Learnable parameters:

* ``weight``, shape ``normalized_shape``, init ones: rescales each normalized feature;
* ``bias``, shape ``normalized_shape``, init zeros: shifts each feature.

Backward (derivation: ``docs/norms/layernorm.md``), with ``g = dy * weight``:

    dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))
    dweight = sum over rows of dy * xhat
    dbias   = sum over rows of dy

Saved for backward: the input ``x`` (kept alive by the graph anyway) and the per-row
``mean`` and ``rstd``; ``xhat`` is recomputed, as in llm.c, rather than stored as a
second full-size array.

Numerics: float16 input is normalized in float32; the variance is two-pass; rows
whose statistics overflow (|x| beyond ~1e19 in float32) are recomputed from
``x / max|x|`` (see ``_shared.mean_rstd``), so rows from 1e-30 to 1e30 are right. The
backward's sums of ``dy * (x - mean)`` stay finite as long as a row's sum does (tested
to |x| = 1e30 in float32; PyTorch 2.13's float32 LayerNorm returns NaN gradients there).

Speed (measured by ``python -m benchmarks``): the formulas below are the plain ones,
applied to blocks of rows small enough to stay in a core's cache (on both cores for big
inputs), with results written into memory already allocated where the backend allows it
(``_shared.for_each_row_block``, ``mul_``); the backward never stores ``xhat`` (see
``layer_norm_backward_rows``). On CuPy both passes are single fused CUDA kernels instead
(``tinynorm/kernels/cupy_fused.py``). What each of these was worth: ``docs/performance.md``.
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
    as_rows,
    as_shape,
    as_vector,
    centered_mean_rstd,
    check_eps,
    check_input,
    check_param,
    column_sums,
    feature_axes,
    for_each_row_block,
    fused_kernels,
    mul_,
    normalize_rows,
    row_sums,
    sub_,
    sum_partials,
    widen,
)

__all__ = ["LayerNorm"]


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def layer_norm_rows(x: Any, weight: Any, bias: Any, eps: float, out: Any = None) -> tuple[Any, Any, Any]:
    """Forward on rows ``x`` of shape ``(rows, N)``: ``y`` and the per-row ``mean`` and ``rstd``.

    ``out``, if given, is memory ``y`` may be written into (the caller's output block).
    """
    xp = namespace_of(x)
    xw = widen(x)
    mean, rstd, centered = centered_mean_rstd(xw, (1,), eps, out=out)  # centered = xw - mean, in y's memory
    y = normalize_rows(centered, rstd, weight, bias, out=centered)  # y = (xw - mean) * rstd * weight + bias
    return xp.astype(y, x.dtype, copy=False), mean, rstd


def layer_norm_backward_rows(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool, out: Any = None
) -> tuple[Any, Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx`` and these rows' shares of ``dweight`` and ``dbias``.

    The formulas of the module docstring, with one saving: ``xhat = centered * rstd`` is never
    stored. ``rstd`` is one number per row, so it comes out of every sum and is applied to
    the few per-row results instead of to a whole array. Every sum is a matrix-vector product
    (``row_sums``, ``column_sums``). ``out``, if given, is memory ``dx`` may be written into.
    """
    xp = namespace_of(x)
    n = x.shape[1]
    dy = widen(dy)
    centered = widen(x) - mean  # recomputed: cheaper than storing it
    dy_centered = dy * centered  # dy * xhat / rstd
    # Parameter gradients: every row contributes; the caller adds up the blocks' shares.
    dweight = column_sums(xp, dy_centered, rstd) if weight is not None else None  # sum of dy * xhat
    dbias = column_sums(xp, dy) if with_bias else None  # sum of dy
    # The formula's two per-row means, with g = dy * weight:
    mean_g = row_sums(xp, dy, weight) / n
    mean_g_xhat = row_sums(xp, dy_centered, weight) * (rstd / n)
    # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), xhat * mean(g * xhat) being
    # centered * (rstd * mean(g * xhat)); built in dx's memory and centered's (not needed after).
    g = mul_(dy, weight, out=out) if weight is not None else dy
    dx = sub_(g, mean_g, out=out)  # g - mean(g)
    dx = sub_(dx, mul_(centered, rstd * mean_g_xhat, out=centered), out=dx)  # ... - xhat * mean(g * xhat)
    dx = mul_(dx, rstd, out=dx)
    return xp.astype(dx, x.dtype, copy=False), dweight, dbias


class LayerNormFunction(Function):
    """LayerNorm with its hand-derived backward.

    Both passes see the input as ``(rows, N)`` and run the formulas above on blocks of rows
    small enough to stay in cache (``for_each_row_block``), or, on CuPy, the fused CUDA
    kernels of ``tinynorm.kernels.cupy_fused``. Blocking changes no formula, only the order
    in which rows are visited (and the order the parameter gradients are summed in).
    """

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        n = math.prod(normalized_shape)
        x2, w, b = as_rows(x, n), as_vector(weight, n), as_vector(bias, n)
        fused = fused_kernels(x2, w, b)
        if fused is not None:
            y2, mean, rstd = fused.layer_norm_forward(x2, w, b, eps)
        else:
            y2 = xp.empty(x2.shape, dtype=x.dtype)
            mean = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))
            rstd = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

            def block(start: int, stop: int) -> None:
                rows = slice(start, stop)
                # When y landed in y2's own memory (out=), this assignment copies nothing.
                y2[rows, ...], mean[rows, ...], rstd[rows, ...] = layer_norm_rows(
                    x2[rows, ...], w, b, eps, out=y2[rows, ...]
                )

            for_each_row_block(block, x2)
        # Saved as the plain formulas have them: mean and rstd keep x's dimensions (size 1 on the axes).
        axes = feature_axes(x.ndim, normalized_shape)
        stat_shape = x.shape[: axes[0]] + (1,) * len(axes)
        mean, rstd = xp.reshape(mean, stat_shape), xp.reshape(rstd, stat_shape)
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd, axes)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, mean, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        normalized_shape = tuple(x.shape[axes[0] :])
        n = math.prod(normalized_shape)
        x2, dy2, w = as_rows(x, n), as_rows(dy, n), as_vector(weight, n)
        mean, rstd = as_rows(mean, 1), as_rows(rstd, 1)
        fused = fused_kernels(x2, w)  # either backward fits either forward: both save the same statistics
        if fused is not None:
            dx2, dweight, dbias = fused.layer_norm_backward(dy2, x2, w, mean, rstd, bias_dtype is not None)
        else:
            dx2 = xp.empty(x2.shape, dtype=x2.dtype)

            def block(start: int, stop: int) -> tuple[Any, Any]:
                rows = slice(start, stop)
                dx2[rows, ...], dweight, dbias = layer_norm_backward_rows(
                    dy2[rows, ...],
                    x2[rows, ...],
                    w,
                    mean[rows, ...],
                    rstd[rows, ...],
                    bias_dtype is not None,
                    out=dx2[rows, ...],
                )
                return dweight, dbias

            partials = for_each_row_block(block, x2)
            dweight = sum_partials([p[0] for p in partials], x2.shape[1], x2) if w is not None else None
            dbias = sum_partials([p[1] for p in partials], x2.shape[1], x2) if bias_dtype is not None else None
        dweight = None if dweight is None else xp.reshape(xp.astype(dweight, w.dtype), normalized_shape)
        dbias = None if dbias is None else xp.reshape(xp.astype(dbias, bias_dtype), normalized_shape)
        return xp.reshape(dx2, x.shape), dweight, dbias


def layer_norm_reference(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).mean(axis=axes, keepdims=True)
    y = centered / (var + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def layer_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
    impl: str = "explicit",
) -> Tensor:
    """Functional LayerNorm, ``torch.nn.functional.layer_norm``'s signature plus ``impl``."""
    normalized_shape = as_shape(normalized_shape)
    check_input("layer_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    eps = check_eps(eps)
    if impl == "autograd":
        return layer_norm_reference(x, normalized_shape, weight, bias, eps)
    return LayerNormFunction.apply(x, weight, bias, normalized_shape=normalized_shape, eps=eps)


class LayerNorm(NormModule):
    """``tn.nn.LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)``.

    ``weight`` (ones) and ``bias`` (zeros) have shape ``normalized_shape``; see the
    module docstring for the formulas and ``docs/norms/layernorm.md`` for the derivation.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.weight = Parameter(ones(*self.normalized_shape)) if elementwise_affine else None
        self.bias = Parameter(zeros(*self.normalized_shape)) if elementwise_affine and bias else None

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"


register_norm(
    NormSpec(
        name="layernorm",
        title="LayerNorm",
        summary="centre and scale each row by its mean and (biased) standard deviation",
        module=LayerNorm,
        functional=layer_norm,
        params=(
            ParamSpec("weight", "normalized_shape", "ones", "rescales each normalized feature"),
            ParamSpec("bias", "normalized_shape", "zeros", "shifts each feature after normalization"),
        ),
        doc="docs/norms/layernorm.md",
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            "3d": Case({"normalized_shape": (3, 4)}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            "smallest": Case({"normalized_shape": 1}, (3, 1)),
        },
    )
)
