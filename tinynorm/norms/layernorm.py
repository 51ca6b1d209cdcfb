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
``x / max|x|`` (see ``_shared.mean_rstd``), so rows from 1e-30 to 1e30 are right.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import namespace_of, sum_to
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, zeros
from ._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes, mean_rstd, widen

__all__ = ["LayerNorm"]


class LayerNormFunction(Function):
    """LayerNorm with its hand-derived backward."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        axes = feature_axes(x.ndim, normalized_shape)
        xw = widen(x)
        mean, rstd = mean_rstd(xw, axes, eps)
        y = (xw - mean) * rstd
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, mean, rstd, axes)
        return xp.astype(y, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, mean, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        dy = widen(dy)
        xhat = (widen(x) - mean) * rstd  # recomputed: cheaper than storing it
        g = dy * weight if weight is not None else dy
        # Three terms: the direct path, the path through the mean, the path through rstd.
        dx = rstd * (g - xp.mean(g, axis=axes, keepdims=True) - xhat * xp.mean(g * xhat, axis=axes, keepdims=True))
        # Parameter gradients: each row contributes, so sum over every leading axis.
        normalized_shape = tuple(x.shape[axes[0] :])
        dweight = xp.astype(sum_to(dy * xhat, normalized_shape), weight.dtype) if weight is not None else None
        dbias = xp.astype(sum_to(dy, normalized_shape), bias_dtype) if bias_dtype is not None else None
        return xp.astype(dx, x.dtype), dweight, dbias


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
