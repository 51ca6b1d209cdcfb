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

Numerics (``tinynorm/stats.py``): float16 input is normalized in float32, the variance
is two-pass, and rows whose statistics overflow are recomputed from ``x / max|x|``, so
rows from 1e-30 to 1e30 are right. Parameters are used in the input's compute dtype
(a float64 weight does not turn float32 input into float64 work); their gradients come
back in the parameters' own dtype.

Speed: ``layer_norm_forward`` and ``layer_norm_backward`` below are the plain formulas
and the source of truth. On NumPy and CuPy the ``Function`` runs a faster kernel with
the same results instead (``tinynorm/kernels/``; ``with tn.kernels.disabled():`` runs
the code below). How they were made fast: ``docs/performance.md``.
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype, mean_rstd, widen
from ..tensor import Tensor, ones, zeros
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    as_vector,
    check_eps,
    check_input,
    check_param,
    eps_for,
    feature_axes,
    param_grad,
)

__all__ = ["LayerNorm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def layer_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``mean`` and ``rstd`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    mean, rstd = mean_rstd(xw, eps)  # two-pass: var = mean((x - mean)**2)
    xhat = (xw - mean) * rstd
    y = xhat if weight is None else xhat * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype), mean, rstd


def layer_norm_backward(dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dweight`` and ``dbias`` ``(N,)`` (``None`` where there is none)."""
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = (widen(x) - mean) * rstd  # recomputed from the saved statistics
    g = dy if weight is None else dy * weight  # the gradient reaching xhat
    # Three paths from x to xhat: directly, through the mean, and through rstd.
    mean_g = xp.mean(g, axis=-1, keepdims=True)
    mean_g_xhat = xp.mean(g * xhat, axis=-1, keepdims=True)
    dx = rstd * (g - mean_g - xhat * mean_g_xhat)
    # weight and bias are shared by every row: their gradients sum over the rows.
    dweight = None if weight is None else xp.sum(dy * xhat, axis=0)
    dbias = xp.sum(dy, axis=0) if with_bias else None
    return xp.astype(dx, x.dtype), dweight, dbias


class LayerNormFunction(Function):
    """LayerNorm with its hand-derived backward, on the input seen as rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        n = math.prod(normalized_shape)
        x2 = as_rows(x, n)
        w, b = (in_compute_dtype(as_vector(p, n), x) for p in (weight, bias))
        forward, _ = kernels.pick("layer_norm", x2, w, b) or (layer_norm_forward, layer_norm_backward)
        y2, mean, rstd = forward(x2, w, b, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.n = n
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias, mean, rstd = ctx.saved_tensors
        xp = namespace_of(x)
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        w = in_compute_dtype(as_vector(weight, ctx.n), x)
        # Either backward fits either forward: both save the same statistics.
        _, backward = kernels.pick("layer_norm", x2, w) or (layer_norm_forward, layer_norm_backward)
        dx2, dweight, dbias = backward(dy2, x2, w, mean, rstd, bias is not None)
        return xp.reshape(dx2, x.shape), param_grad(dweight, weight), param_grad(dbias, bias)


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
    check_param("weight", weight, normalized_shape, x)
    check_param("bias", bias, normalized_shape, x)
    eps = eps_for(check_eps(eps), x)
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
        cases=row_cases(),
    )
)
