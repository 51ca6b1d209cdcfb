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
The row formulas are RMSNorm's own (``rmsnorm.rms_norm_rows``, ``rms_norm_backward_rows``,
given ``1 + weight`` as the weight), run on cache-sized blocks of rows as RMSNorm runs them.

Numerics: as Hugging Face's Gemma, float16 input is normalized *and multiplied by*
``1 + weight`` in float32, then cast back (Llama's RMSNorm casts before the multiply).
Rows whose mean square overflows are recomputed from ``x / max|x|``.
Differs from Hugging Face: ``normalized_shape`` may be a tuple of trailing axes, and
there is an ``impl`` switch.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Context, Function
from ..backend import compute_dtype
from ..nn.module import Parameter
from ..ops import namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, zeros
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    as_vector,
    check_eps,
    check_input,
    check_param,
    feature_axes,
    for_each_row_block,
    sum_partials,
)
from ._shared import rms_norm_backward_rows, rms_norm_rows

__all__ = ["GemmaRMSNorm"]


def one_plus(weight: Any, x: Any) -> Any:
    """The scale ``1 + weight``, in ``x``'s compute dtype (float32 for float16 input), as a
    vector; ``None`` for no weight. Gemma's whole difference from RMSNorm is this line."""
    if weight is None:
        return None
    xp = namespace_of(weight)
    return as_vector(1.0 + xp.astype(weight, compute_dtype(x.dtype, xp)), math.prod(weight.shape))


class GemmaRMSNormFunction(Function):
    """Gemma's RMSNorm with its hand-derived backward: RMSNorm's row formulas
    (``rmsnorm.rms_norm_rows``, ``rms_norm_backward_rows``) with the scale ``1 + weight``,
    on blocks of rows as in ``RMSNormFunction``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        x2, scale = as_rows(x, math.prod(normalized_shape)), one_plus(weight, x)
        y2 = xp.empty(x2.shape, dtype=x.dtype)
        rstd = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            rows = slice(start, stop)
            # y is multiplied by 1 + weight in the compute dtype, then cast back (Hugging Face's order).
            y2[rows, ...], rstd[rows, ...] = rms_norm_rows(x2[rows, ...], scale, None, eps, out=y2[rows, ...])

        for_each_row_block(block, x2)
        axes = feature_axes(x.ndim, normalized_shape)
        rstd = xp.reshape(rstd, x.shape[: axes[0]] + (1,) * len(axes))  # keeps x's dimensions
        ctx.save_for_backward(x, weight, rstd, axes)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        n = math.prod(x.shape[axes[0] :])
        x2, dy2, rstd2, scale = as_rows(x, n), as_rows(dy, n), as_rows(rstd, 1), one_plus(weight, x)
        dx2 = xp.empty(x2.shape, dtype=x2.dtype)

        def block(start: int, stop: int) -> Any:
            rows = slice(start, stop)
            # g = dy * (1 + weight); dx = rstd * (g - xhat * mean(g * xhat)); dweight = sum of dy * xhat.
            dx2[rows, ...], dweight, _ = rms_norm_backward_rows(
                dy2[rows, ...], x2[rows, ...], scale, rstd2[rows, ...], False, out=dx2[rows, ...]
            )
            return dweight

        partials = for_each_row_block(block, x2)
        # d(1 + w)/dw = 1: the weight gradient is RMSNorm's, summed over every row.
        dweight = None
        if weight is not None:
            dweight = xp.reshape(xp.astype(sum_partials(partials, n, x2), weight.dtype), weight.shape)
        return xp.reshape(dx2, x.shape), dweight


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
