r"""DyT, Dynamic Tanh (Zhu, Chen, He, LeCun & Liu 2025, "Transformers without Normalization").

Not a normalization: no statistic of the row is computed, so nothing about ``y`` depends
on the other features of the row. DyT is a drop-in *replacement* for a norm layer: the
paper observed that trained LayerNorms map their inputs along tanh-like S-curves, and
replaces them with the S-curve itself:

    y = weight * tanh(alpha * x) + bias

``alpha * x`` is in the linear part of tanh for small inputs and saturates large ones:
outliers are squashed instead of divided away. Every element is computed on its own.

Learnable parameters:

* ``alpha``, shape ``()``, init ``alpha_init`` (0.5, the paper's default): how steep
  the S-curve is, i.e. which input magnitudes reach saturation;
* ``weight``, shape ``normalized_shape``, init ones: rescales each feature;
* ``bias``, shape ``normalized_shape``, init zeros: shifts each feature.

Backward (derivation: ``docs/norms/dyt.md``), with ``t = tanh(alpha * x)`` and
``dt = dy * weight * (1 - t**2)`` (the gradient reaching ``alpha * x``):

    dx      = alpha * dt
    dalpha  = sum over every element of x * dt
    dweight = sum over rows of dy * t
    dbias   = sum over rows of dy

Saved for backward: ``x`` and the parameters; ``t`` is recomputed (one ``tanh``) rather
than stored as a second full-size array.

Numerics: float16 input is computed in float32. ``tanh`` never overflows, so no rescue
is needed; for ``|alpha * x| > ~19`` ``t`` rounds to +-1 in float64 and the gradient
through ``x`` and ``alpha`` is exactly 0 (saturation). Parameters are used in the
input's compute dtype; their gradients come back in their own.

Speed: ``dyt_forward`` and ``dyt_backward`` below are the plain formulas and the source
of truth; on NumPy a faster kernel with the same results runs instead
(``tinynorm/kernels/``; ``docs/performance.md``).
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype, widen
from ..tensor import Tensor, ones, tensor, zeros
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    as_vector,
    check_input,
    check_param,
    check_real,
    param_grad,
    scalar_param,
)

__all__ = ["DyT"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def dyt_forward(x: Any, alpha: Any, weight: Any, bias: Any) -> Any:
    """``y`` ``(rows, N)``; there is no statistic to save."""
    xp = namespace_of(x)
    t = xp.tanh(alpha * widen(x))  # float16 -> float32
    y = t if weight is None else t * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype)


def dyt_backward(dy: Any, x: Any, alpha: Any, weight: Any, with_bias: bool) -> tuple[Any, Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dalpha`` (shape ``()``), ``dweight`` and ``dbias`` ``(N,)``
    (``None`` where there is none)."""
    xp = namespace_of(x)
    dy, xw = widen(dy), widen(x)
    t = xp.tanh(alpha * xw)  # recomputed
    dt = (1 - t * t) * (dy if weight is None else dy * weight)  # the gradient reaching alpha * x
    dx = alpha * dt
    dalpha = xp.sum(xw * dt)  # alpha multiplies every element of every row
    dweight = None if weight is None else xp.sum(dy * t, axis=0)
    dbias = xp.sum(dy, axis=0) if with_bias else None
    return xp.astype(dx, x.dtype), dalpha, dweight, dbias


class DyTFunction(Function):
    """DyT with its hand-derived backward, on the input seen as rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, alpha: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...]) -> Any:
        n = math.prod(normalized_shape)
        x2, a = as_rows(x, n), in_compute_dtype(alpha, x)
        w, b = (in_compute_dtype(as_vector(p, n), x) for p in (weight, bias))
        forward, _ = kernels.pick("dyt", x2, a, w, b) or (dyt_forward, dyt_backward)
        y2 = forward(x2, a, w, b)
        ctx.save_for_backward(x, alpha, weight, bias)
        ctx.n = n
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, Any]:
        x, alpha, weight, bias = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        a, w = in_compute_dtype(alpha, x), in_compute_dtype(as_vector(weight, ctx.n), x)
        _, backward = kernels.pick("dyt", x2, a, w) or (dyt_forward, dyt_backward)
        dx2, dalpha, dweight, dbias = backward(dy2, x2, a, w, bias is not None)
        grads = (param_grad(dalpha, alpha), param_grad(dweight, weight), param_grad(dbias, bias))
        return (namespace_of(x).reshape(dx2, x.shape), *grads)


def dyt_reference(x: Tensor, alpha: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    y = (alpha * x).tanh()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def dyt(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    alpha: Tensor | float,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    impl: str = "explicit",
) -> Tensor:
    """Functional DyT: ``weight * tanh(alpha * x) + bias``.

    ``normalized_shape`` is the shape of ``weight`` and ``bias`` (the trailing dimensions
    of ``x``); ``alpha`` is a 0-d Tensor (learnable) or a number (fixed).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("dyt", x, normalized_shape)
    alpha = scalar_param("alpha", alpha, x)
    check_param("weight", weight, normalized_shape, x)
    check_param("bias", bias, normalized_shape, x)
    if impl == "autograd":
        return dyt_reference(x, alpha, weight, bias)
    return DyTFunction.apply(x, alpha, weight, bias, normalized_shape=normalized_shape)


class DyT(NormModule):
    """``tn.nn.DyT(normalized_shape, alpha_init=0.5)``: ``weight * tanh(alpha * x) + bias``.

    ``alpha`` (shape ``()``, init ``alpha_init``), ``weight`` (ones) and ``bias`` (zeros,
    shape ``normalized_shape``); see the module docstring for the formulas and
    ``docs/norms/dyt.md`` for the derivation. It replaces a norm layer but normalizes
    nothing. PyTorch has no DyT; names follow the paper's reference code.
    """

    def __init__(
        self, normalized_shape: int | tuple[int, ...], alpha_init: float = 0.5, impl: str = "explicit"
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.alpha = Parameter(tensor(check_real("alpha_init", alpha_init)))
        self.weight = Parameter(ones(*self.normalized_shape))
        self.bias = Parameter(zeros(*self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return dyt(x, self.normalized_shape, self.alpha, self.weight, self.bias, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha={self.alpha.item():.3g}"


register_norm(
    NormSpec(
        name="dyt",
        title="DyT (Dynamic Tanh)",
        summary="no statistics: weight * tanh(alpha * x) + bias, an element-wise drop-in replacement for a norm",
        module=DyT,
        functional=dyt,
        params=(
            ParamSpec("alpha", "()", "0.5", "steepness of the S-curve: which input magnitudes saturate"),
            ParamSpec("weight", "normalized_shape", "ones", "rescales each feature"),
            ParamSpec("bias", "normalized_shape", "zeros", "shifts each feature"),
        ),
        doc="docs/norms/dyt.md",
        cases=row_cases(),
    )
)
