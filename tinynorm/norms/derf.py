r"""Derf, Dynamic erf (Chen et al. 2025, arXiv 2512.10938), the successor of DyT.

Not a normalization: like DyT (``dyt.py``) no statistic of the row is computed; each
element goes through a learnable S-curve, here the error function with a learnable shift:

    y = weight * erf(alpha * x + shift) + bias

``erf`` is steeper at 0 than ``tanh`` (slope ``2/sqrt(pi) ~ 1.128`` against 1) and
saturates faster (``1 - erf(z)`` falls like ``exp(-z**2)``, ``1 - tanh(z)`` like
``exp(-2z)``); ``shift`` moves the curve's centre, so it need not sit at ``x = 0``.

Learnable parameters:

* ``alpha``, shape ``()``, init ``alpha_init`` (0.5): how steep the S-curve is;
* ``shift``, shape ``()``, init 0: where the curve is centred (at ``x = -shift/alpha``);
* ``weight``, shape ``normalized_shape``, init ones: rescales each feature;
* ``bias``, shape ``normalized_shape``, init zeros: shifts each feature.

Backward (derivation: ``docs/norms/derf.md``), with ``z = alpha * x + shift``,
``e = erf(z)`` and ``dz = dy * weight * 2/sqrt(pi) * exp(-z**2)`` (the gradient reaching ``z``):

    dx      = alpha * dz
    dalpha  = sum over every element of x * dz
    dshift  = sum over every element of dz
    dweight = sum over rows of dy * e
    dbias   = sum over rows of dy

Saved for backward: ``x`` and the parameters; ``z`` and ``e`` are recomputed.

Numerics: float16 input is computed in float32. ``erf`` is tinynorm's own
(``tinynorm.ops.erf_of``: Cody's rational approximations, as NumPy has no erf; on Tensors,
when a backward is differentiated, the ``Erf`` op with its exact derivative). For
``|z| > ~6`` ``e`` is +-1 and ``exp(-z**2)`` underflows: the gradient through ``x``,
``alpha`` and ``shift`` is exactly 0 (saturation).
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..ops import erf_of
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

__all__ = ["Derf"]

_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)  # erf'(z) = 2/sqrt(pi) * exp(-z**2)


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def derf_forward(x: Any, alpha: Any, shift: Any, weight: Any, bias: Any) -> Any:
    """``y`` ``(rows, N)``; there is no statistic to save."""
    xp = namespace_of(x)
    e = erf_of(alpha * widen(x) + shift)  # float16 -> float32
    y = e if weight is None else e * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype)


def derf_backward(
    dy: Any, x: Any, alpha: Any, shift: Any, weight: Any, with_bias: bool
) -> tuple[Any, Any, Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dalpha`` and ``dshift`` (shape ``()``), ``dweight`` and
    ``dbias`` ``(N,)`` (``None`` where there is none)."""
    xp = namespace_of(x)
    dy, xw = widen(dy), widen(x)
    z = alpha * xw + shift  # recomputed
    dz = _TWO_OVER_SQRT_PI * xp.exp(-z * z) * (dy if weight is None else dy * weight)
    dx = alpha * dz
    dalpha = xp.sum(xw * dz)  # alpha multiplies every element of every row
    dshift = xp.sum(dz)  # shift is added to every element of every row
    dweight = None if weight is None else xp.sum(dy * erf_of(z), axis=0)
    dbias = xp.sum(dy, axis=0) if with_bias else None
    return xp.astype(dx, x.dtype), dalpha, dshift, dweight, dbias


class DerfFunction(Function):
    """Derf with its hand-derived backward, on the input seen as rows ``(rows, N)``."""

    @staticmethod
    def forward(
        ctx: Context, x: Any, alpha: Any, shift: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...]
    ) -> Any:
        n = math.prod(normalized_shape)
        x2, a, s = as_rows(x, n), in_compute_dtype(alpha, x), in_compute_dtype(shift, x)
        w, b = (in_compute_dtype(as_vector(p, n), x) for p in (weight, bias))
        forward, _ = kernels.pick("derf", x2, a, s, w, b) or (derf_forward, derf_backward)
        y2 = forward(x2, a, s, w, b)
        ctx.save_for_backward(x, alpha, shift, weight, bias)
        ctx.n = n
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, Any, Any]:
        x, alpha, shift, weight, bias = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        a, s = in_compute_dtype(alpha, x), in_compute_dtype(shift, x)
        w = in_compute_dtype(as_vector(weight, ctx.n), x)
        _, backward = kernels.pick("derf", x2, a, s, w) or (derf_forward, derf_backward)
        dx2, dalpha, dshift, dweight, dbias = backward(dy2, x2, a, s, w, bias is not None)
        grads = (param_grad(g, p) for g, p in ((dalpha, alpha), (dshift, shift), (dweight, weight), (dbias, bias)))
        return (namespace_of(x).reshape(dx2, x.shape), *grads)


def derf_reference(
    x: Tensor, alpha: Tensor, shift: Tensor, weight: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    y = (alpha * x + shift).erf()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def derf(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    alpha: Tensor | float,
    shift: Tensor | float = 0.0,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    impl: str = "explicit",
) -> Tensor:
    """Functional Derf: ``weight * erf(alpha * x + shift) + bias``.

    ``normalized_shape`` is the shape of ``weight`` and ``bias`` (the trailing dimensions
    of ``x``); ``alpha`` and ``shift`` are 0-d Tensors (learnable) or numbers (fixed).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("derf", x, normalized_shape)
    alpha = scalar_param("alpha", alpha, x)
    shift = scalar_param("shift", shift, x)
    check_param("weight", weight, normalized_shape, x)
    check_param("bias", bias, normalized_shape, x)
    if impl == "autograd":
        return derf_reference(x, alpha, shift, weight, bias)
    return DerfFunction.apply(x, alpha, shift, weight, bias, normalized_shape=normalized_shape)


class Derf(NormModule):
    """``tn.nn.Derf(normalized_shape, alpha_init=0.5)``: ``weight * erf(alpha * x + shift) + bias``.

    ``alpha`` (shape ``()``, init ``alpha_init``), ``shift`` (shape ``()``, init 0),
    ``weight`` (ones) and ``bias`` (zeros, shape ``normalized_shape``); see the module
    docstring for the formulas and ``docs/norms/derf.md`` for the derivation. It replaces a
    norm layer but normalizes nothing. PyTorch has no Derf; names follow the paper.
    """

    def __init__(
        self, normalized_shape: int | tuple[int, ...], alpha_init: float = 0.5, impl: str = "explicit"
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.alpha = Parameter(tensor(check_real("alpha_init", alpha_init)))
        self.shift = Parameter(tensor(0.0))
        self.weight = Parameter(ones(*self.normalized_shape))
        self.bias = Parameter(zeros(*self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return derf(x, self.normalized_shape, self.alpha, self.shift, self.weight, self.bias, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, alpha={self.alpha.item():.3g}, shift={self.shift.item():.3g}"


register_norm(
    NormSpec(
        name="derf",
        title="Derf (Dynamic erf)",
        summary="no statistics: weight * erf(alpha * x + shift) + bias, DyT's successor with a learnable centre",
        module=Derf,
        functional=derf,
        params=(
            ParamSpec("alpha", "()", "0.5", "steepness of the S-curve: which input magnitudes saturate"),
            ParamSpec("shift", "()", "0", "moves the S-curve's centre to x = -shift / alpha"),
            ParamSpec("weight", "normalized_shape", "ones", "rescales each feature"),
            ParamSpec("bias", "normalized_shape", "zeros", "shifts each feature"),
        ),
        doc="docs/norms/derf.md",
        cases=row_cases(),
    )
)
