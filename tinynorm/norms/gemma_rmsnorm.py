r"""Gemma-style RMSNorm: the scale is stored as an offset from one, ``(1 + weight)``.

As Hugging Face's ``GemmaRMSNorm`` (``transformers/models/gemma/modeling_gemma.py``).
Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    rstd = 1 / sqrt(mean(x**2) + eps)
    xhat = x * rstd
    y    = xhat * (1 + weight)

Learnable parameter:

* ``weight``, shape ``normalized_shape``, init **zeros**: the per-dimension scale minus
  one. A fresh layer is therefore plain RMSNorm (scale 1), and weight decay, which
  pulls parameters towards zero, pulls the scale towards one (the identity) rather
  than towards zero (a layer that outputs nothing).

Backward (derivation: ``docs/norms/gemma_rmsnorm.md``), with ``g = dy * (1 + weight)``:

    dx      = rstd * (g - xhat * mean(g * xhat))
    dweight = sum over rows of dy * xhat

This is RMSNorm's backward with ``1 + weight`` in place of ``weight``; ``dweight`` is
unchanged because ``d(1 + w)/dw = 1``: the two parametrizations differ in where the
optimizer starts and what weight decay does, never in the gradient.

Saved for backward: ``x``, ``weight`` and the per-row ``rstd``; ``xhat`` is recomputed.

Numerics: as Hugging Face's Gemma, float16 input is normalized *and multiplied by*
``1 + weight`` in float32, then cast back (Llama's RMSNorm casts before the multiply).
Rows whose mean square overflows are recomputed from ``x / max|x|``.
Differs from Hugging Face: ``normalized_shape`` may be a tuple of trailing axes, and
there is an ``impl`` switch.
"""

from __future__ import annotations

from typing import Any

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import namespace_of, sum_to
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, zeros
from ._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes, rms_rstd, widen

__all__ = ["GemmaRMSNorm"]


class GemmaRMSNormFunction(Function):
    """Gemma's RMSNorm with its hand-derived backward."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        axes = feature_axes(x.ndim, normalized_shape)
        xw = widen(x)
        rstd = rms_rstd(xw, axes, eps)
        y = xw * rstd
        if weight is not None:
            y = y * (1.0 + xp.astype(weight, y.dtype))  # in the compute dtype, before the cast back
        ctx.save_for_backward(x, weight, rstd, axes)
        return xp.astype(y, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        dy = widen(dy)
        xhat = widen(x) * rstd  # recomputed: cheaper than storing it
        g = dy * (1.0 + xp.astype(weight, dy.dtype)) if weight is not None else dy
        # RMSNorm's two paths: the direct one, and the one through rstd.
        dx = rstd * (g - xhat * xp.mean(g * xhat, axis=axes, keepdims=True))
        # d(1 + w)/dw = 1: the weight gradient is RMSNorm's, summed over every row.
        normalized_shape = tuple(x.shape[axes[0] :])
        dweight = xp.astype(sum_to(dy * xhat, normalized_shape), weight.dtype) if weight is not None else None
        return xp.astype(dx, x.dtype), dweight


def gemma_rms_norm_reference(
    x: Tensor, normalized_shape: tuple[int, ...], weight: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    y = x / ((x * x).mean(axis=axes, keepdims=True) + eps).sqrt()
    return y * (1.0 + weight) if weight is not None else y


def gemma_rms_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    weight: Tensor | None = None,
    eps: float = 1e-6,
    impl: str = "explicit",
) -> Tensor:
    """Functional Gemma RMSNorm: ``rms_norm(x) * (1 + weight)``; ``weight=None`` means scale 1.

    Parameters
    ----------
    x
        Input whose trailing shape is ``normalized_shape``.
    normalized_shape
        The trailing axes normalized together.
    weight
        The scale offset, shape ``normalized_shape`` (zeros = plain RMSNorm).
    eps
        Added to the mean square inside the square root (Gemma's default 1e-6).
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (composed from primitive ops).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("gemma_rms_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    eps = check_eps(eps)
    if impl == "autograd":
        return gemma_rms_norm_reference(x, normalized_shape, weight, eps)
    return GemmaRMSNormFunction.apply(x, weight, normalized_shape=normalized_shape, eps=eps)


class GemmaRMSNorm(NormModule):
    """``tn.nn.GemmaRMSNorm(normalized_shape, eps=1e-6)``: ``rms_norm(x) * (1 + weight)``.

    ``weight`` (zeros, shape ``normalized_shape``) is the scale minus one. Hugging Face's
    class takes ``dim`` (an int); here ``normalized_shape`` may also be a tuple.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-6, impl: str = "explicit") -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.weight = Parameter(zeros(*self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return gemma_rms_norm(x, self.normalized_shape, self.weight, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


register_norm(
    NormSpec(
        name="gemma_rmsnorm",
        title="Gemma-style RMSNorm",
        summary="RMSNorm scaled by (1 + weight), weight zero-initialised (Hugging Face Gemma)",
        module=GemmaRMSNorm,
        functional=gemma_rms_norm,
        params=(ParamSpec("weight", "normalized_shape", "zeros", "the per-dimension scale minus one: y = xhat*(1+w)"),),
        doc="docs/norms/gemma_rmsnorm.md",
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            "3d": Case({"normalized_shape": (3, 4)}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            "smallest": Case({"normalized_shape": 1}, (3, 1)),
        },
    )
)
