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
optimizer starts and what weight decay does, never in the gradient. So Gemma's lesson
below has no formula of its own: ``gemma_rms_norm_forward`` and ``gemma_rms_norm_backward``
hand the scale ``1 + weight`` to RMSNorm's forward and backward.

Saved for backward: ``x``, ``weight`` and the per-row ``rstd``; ``xhat`` is recomputed.

Numerics (``tinynorm/stats.py``): as Hugging Face's Gemma, float16 input is normalized
*and multiplied by* ``1 + weight`` in float32, then cast back (Llama's RMSNorm casts
before the multiply). Rows whose mean square overflows are recomputed from ``x / max|x|``.
The weight is used in the input's compute dtype; its gradient comes back in its own.

Speed: RMSNorm's forward and backward are its plain lesson (``rmsnorm.rms_norm_forward``,
``rms_norm_backward``) or, on NumPy and CuPy, its faster kernel with the same results:
the one choice, ``kernels.pick("rms_norm", ...)``, is made in Gemma's two functions
(``tinynorm/kernels/``; ``docs/performance.md``).

Differs from Hugging Face: ``normalized_shape`` may be a tuple of trailing axes, and
there is an ``impl`` switch.
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype
from ..tensor import Tensor, zeros
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
from .rmsnorm import rms_norm_backward, rms_norm_forward

__all__ = ["GemmaRMSNorm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def gemma_rms_norm_forward(x: Any, weight: Any, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``rstd`` ``(rows, 1)``: RMSNorm's, scaled by ``1 + weight``."""
    forward, _ = kernels.pick("rms_norm", x, weight) or (rms_norm_forward, rms_norm_backward)
    return forward(x, one_plus(weight), None, eps)


def gemma_rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any) -> tuple[Any, Any]:
    """``dx`` ``(rows, N)`` and ``dweight`` ``(N,)``: RMSNorm's, with the scale ``1 + weight``."""
    _, backward = kernels.pick("rms_norm", x, weight) or (rms_norm_forward, rms_norm_backward)
    dx, dscale, _ = backward(dy, x, one_plus(weight), rstd, False)
    return dx, dscale  # d(1 + w)/dw = 1: the gradient of the scale is the weight's


def one_plus(weight: Any) -> Any:
    """The scale ``1 + weight`` (``None`` for no weight): Gemma's whole difference from RMSNorm."""
    return None if weight is None else 1.0 + weight


class GemmaRMSNormFunction(Function):
    """Gemma's RMSNorm with its hand-derived backward, on the input seen as rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        n = math.prod(normalized_shape)
        x2, w = as_rows(x, n), in_compute_dtype(as_vector(weight, n), x)
        y2, rstd = gemma_rms_norm_forward(x2, w, eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.n = n
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, rstd = ctx.saved_tensors
        x2, dy2, w = as_rows(x, ctx.n), as_rows(dy, ctx.n), in_compute_dtype(as_vector(weight, ctx.n), x)
        dx2, dweight = gemma_rms_norm_backward(dy2, x2, w, rstd)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dweight, weight)


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
    check_param("weight", weight, normalized_shape, x)
    eps = eps_for(check_eps(eps), x)
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
        cases=row_cases(),
    )
)
