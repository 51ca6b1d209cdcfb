r"""RMSNorm (Zhang & Sennrich 2019), with the seed document's first two extensions:
a learnable per-dimension scale (``weight``) and a learnable shift (``bias``).

Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    rstd = 1 / sqrt(mean(x**2) + eps)   (no centering: the mean is not subtracted)
    xhat = x * rstd
    y    = xhat * weight + bias

Learnable parameters:

* ``weight``, shape ``normalized_shape``, init ones: the per-dimension scale. A vector,
  not the seed's ``(dim, 1)`` column, which broadcasts to a ``(dim, dim)`` result when
  batch equals dim (rejected with an explanation; see ``check_param``);
* ``bias`` (only with ``bias=True``; PyTorch's RMSNorm has none), shape
  ``normalized_shape``, init zeros: the seed's learnable shift.

Backward (derivation: ``docs/norms/rmsnorm.md``; with the bias, ``docs/norms/rmsnorm_bias.md``),
with ``g = dy * weight``:

    dx      = rstd * (g - xhat * mean(g * xhat))
    dweight = sum over rows of dy * xhat
    dbias   = sum over rows of dy

Compared with LayerNorm's, the ``- mean(g)`` term is gone because nothing was
centred. ``eps`` does not appear: it is inside the saved ``rstd``.

Saved for backward: ``x`` and the per-row ``rstd``; ``xhat`` is recomputed.

Numerics: float16 input is normalized in float32; rows whose mean square overflows
are recomputed from ``x / max|x|`` (``_shared.rms_rstd``).

Speed (measured by ``python -m benchmarks``): the formulas below are the plain ones,
applied to blocks of rows small enough to stay in a core's cache (on both cores for big
inputs), with results written into memory already allocated where the backend allows it
(``_shared.for_each_row_block``, ``mul_``). On CuPy both passes are single fused CUDA
kernels instead (``tinynorm/kernels/cupy_fused.py``). What each of these was worth:
``docs/performance.md``.
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
    check_eps,
    check_input,
    check_param,
    column_sums,
    feature_axes,
    for_each_row_block,
    fused_kernels,
    mul_,
    normalize_rows,
    rms_rstd,
    row_mean_of_product,
    sub_,
    sum_partials,
    widen,
)

__all__ = ["RMSNorm"]


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def rms_norm_rows(x: Any, weight: Any, bias: Any, eps: float, out: Any = None) -> tuple[Any, Any]:
    """Forward on rows ``x`` of shape ``(rows, N)``: ``y`` and the per-row ``rstd`` ``(rows, 1)``.

    ``out``, if given, is memory ``y`` may be written into (the caller's output block).
    """
    xp = namespace_of(x)
    xw = widen(x)
    rstd = rms_rstd(xw, (1,), eps)
    y = normalize_rows(xw, rstd, weight, bias, out=out)  # y = xw * rstd * weight + bias
    return xp.astype(y, x.dtype, copy=False), rstd


def rms_norm_backward_rows(
    dy: Any, x: Any, weight: Any, rstd: Any, with_bias: bool, out: Any = None
) -> tuple[Any, Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx`` and these rows' shares of ``dweight`` and ``dbias``.

    ``out``, if given, is memory ``dx`` may be written into (the caller's output block).
    """
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = widen(x) * rstd  # recomputed: cheaper than storing it
    g = dy * weight if weight is not None else dy
    # Parameter gradients: every row contributes; the caller adds up the blocks' shares.
    dweight = column_sums(xp, dy * xhat) if weight is not None else None
    dbias = column_sums(xp, dy) if with_bias else None
    dx = rms_norm_dx(g, xhat, rstd, out=out)
    return xp.astype(dx, x.dtype, copy=False), dweight, dbias


def rms_norm_dx(g: Any, xhat: Any, rstd: Any, out: Any = None) -> Any:
    """RMSNorm's input gradient on rows ``(rows, N)``, from ``g``, the gradient reaching ``xhat``.

    Two terms: the direct path, and the path through ``rstd`` (which depends on every x):

        dx = rstd * (g - xhat * mean(g * xhat))

    Every RMSNorm-like backward ends here, with its own ``g``: ``dy * weight`` (RMSNorm,
    Gemma's ``dy * (1 + weight)``), ``dy @ weight`` (RMSNormMatrix), the gradient through a
    tanh (RMSNormTanh). Built in ``xhat``'s memory, so the caller must be done with ``xhat``;
    ``out``, if given, is memory ``dx`` may be written into.
    """
    xp = namespace_of(xhat)
    dx = mul_(xhat, row_mean_of_product(xp, g, xhat, (1,)), out=xhat)  # xhat * mean(g * xhat)
    dx = sub_(g, dx, out=dx)  # g - xhat * mean(g * xhat)
    return mul_(dx, rstd, out=out)


class RMSNormFunction(Function):
    """RMSNorm (optionally with a bias) with its hand-derived backward.

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
            y2, rstd = fused.rms_norm_forward(x2, w, b, eps)
        else:
            y2 = xp.empty(x2.shape, dtype=x.dtype)
            rstd = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

            def block(start: int, stop: int) -> None:
                rows = slice(start, stop)
                # When y landed in y2's own memory (out=), this assignment copies nothing.
                y2[rows, ...], rstd[rows, ...] = rms_norm_rows(x2[rows, ...], w, b, eps, out=y2[rows, ...])

            for_each_row_block(block, x2)
        # Saved as the plain formulas have it: rstd keeps x's dimensions (size 1 on the axes).
        axes = feature_axes(x.ndim, normalized_shape)
        rstd = xp.reshape(rstd, x.shape[: axes[0]] + (1,) * len(axes))
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, rstd, axes)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        normalized_shape = tuple(x.shape[axes[0] :])
        n = math.prod(normalized_shape)
        x2, dy2, w, rstd = as_rows(x, n), as_rows(dy, n), as_vector(weight, n), as_rows(rstd, 1)
        fused = fused_kernels(x2, w)  # either backward fits either forward: both save the same statistic
        if fused is not None:
            dx2, dweight, dbias = fused.rms_norm_backward(dy2, x2, w, rstd, bias_dtype is not None)
        else:
            dx2 = xp.empty(x2.shape, dtype=x2.dtype)

            def block(start: int, stop: int) -> tuple[Any, Any]:
                rows = slice(start, stop)
                dx2[rows, ...], dweight, dbias = rms_norm_backward_rows(
                    dy2[rows, ...], x2[rows, ...], w, rstd[rows, ...], bias_dtype is not None, out=dx2[rows, ...]
                )
                return dweight, dbias

            partials = for_each_row_block(block, x2)
            dweight = sum_partials([p[0] for p in partials], x2.shape[1], x2) if w is not None else None
            dbias = sum_partials([p[1] for p in partials], x2.shape[1], x2) if bias_dtype is not None else None
        dweight = None if dweight is None else xp.reshape(xp.astype(dweight, w.dtype), normalized_shape)
        dbias = None if dbias is None else xp.reshape(xp.astype(dbias, bias_dtype), normalized_shape)
        return xp.reshape(dx2, x.shape), dweight, dbias


def rms_norm_reference(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    y = x / ((x * x).mean(axis=axes, keepdims=True) + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    weight: Tensor | None = None,
    eps: float = 1e-6,
    bias: Tensor | None = None,
    impl: str = "explicit",
) -> Tensor:
    """Functional RMSNorm, ``torch.nn.functional.rms_norm``'s signature plus ``bias`` and ``impl``.

    Differs from PyTorch: ``eps`` defaults to 1e-6 rather than the dtype's machine epsilon.
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("rms_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    eps = check_eps(eps)
    if impl == "autograd":
        return rms_norm_reference(x, normalized_shape, weight, bias, eps)
    return RMSNormFunction.apply(x, weight, bias, normalized_shape=normalized_shape, eps=eps)


class RMSNorm(NormModule):
    """``tn.nn.RMSNorm(normalized_shape, eps=1e-6, elementwise_affine=True, bias=False)``.

    ``weight`` (ones) is the per-dimension scale; ``bias`` (zeros, with ``bias=True``)
    the seed document's learnable shift. Both have shape ``normalized_shape``.
    Differs from ``torch.nn.RMSNorm``: ``eps`` defaults to 1e-6, and ``bias`` exists.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        bias: bool = False,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.weight = Parameter(ones(*self.normalized_shape)) if elementwise_affine else None
        self.bias = Parameter(zeros(*self.normalized_shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps, bias=self.bias, impl=self.impl)

    def extra_repr(self) -> str:
        affine = self.weight is not None
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={affine}, bias={self.bias is not None}"


_CASES = {
    "2d": Case({"normalized_shape": 5}, (3, 5)),
    "3d": Case({"normalized_shape": 4}, (2, 3, 4)),
    "batch1": Case({"normalized_shape": 6}, (1, 6)),
    "smallest": Case({"normalized_shape": 1}, (3, 1)),
}

register_norm(
    NormSpec(
        name="rmsnorm",
        title="RMSNorm (per-dimension scale)",
        summary="scale each row by its root mean square, then by a learnable per-dimension weight",
        module=RMSNorm,
        functional=rms_norm,
        params=(ParamSpec("weight", "normalized_shape", "ones", "the per-dimension scale of each normalized feature"),),
        doc="docs/norms/rmsnorm.md",
        cases=_CASES,
        family="seed",
    )
)

register_norm(
    NormSpec(
        name="rmsnorm_bias",
        title="RMSNorm with scale and shift",
        summary="RMSNorm followed by a learnable per-dimension scale and shift",
        module=RMSNorm,
        functional=rms_norm,
        params=(
            ParamSpec("weight", "normalized_shape", "ones", "the per-dimension scale of each normalized feature"),
            ParamSpec("bias", "normalized_shape", "zeros", "the per-dimension shift added after scaling"),
        ),
        doc="docs/norms/rmsnorm_bias.md",
        cases={name: Case({**case.kwargs, "bias": True}, case.input_shape) for name, case in _CASES.items()},
        family="seed",
    )
)
