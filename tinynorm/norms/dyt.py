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

Saved for backward: ``x``, ``alpha`` and ``weight``; ``t`` is recomputed (one ``tanh``)
rather than stored as a second full-size array. Both passes run on cache-sized blocks of
rows, as RMSNorm's do: the element-wise chain above then makes one trip to main memory, not
one per operation.

Numerics: float16 input is computed in float32. ``tanh`` never overflows, so no rescue
is needed; for ``|alpha * x| > ~19`` ``t`` rounds to +-1 in float64 and the gradient
through ``x`` and ``alpha`` is exactly 0 (saturation).
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, tensor, zeros
from ._shared import (
    NormModule,
    add_,
    as_rows,
    as_shape,
    as_vector,
    check_input,
    check_param,
    column_sums,
    for_each_row_block,
    in_compute_dtype,
    mul_,
    row_mean_of_product,
    sum_partials,
    tanh_,
    widen,
)

__all__ = ["DyT"]


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def dyt_rows(x: Any, alpha: Any, weight: Any, bias: Any, out: Any = None) -> Any:
    """Forward on rows ``x`` of shape ``(rows, N)``; ``out``, if given, is memory ``y`` may be written into."""
    xp = namespace_of(x)
    y = mul_(widen(x), alpha, out=out)
    y = tanh_(y, out=y)  # t = tanh(alpha * x)
    if weight is not None:
        y = mul_(y, weight, out=out)
    if bias is not None:
        y = add_(y, bias, out=y)
    return xp.astype(y, x.dtype, copy=False)


def dyt_backward_rows(
    dy: Any, x: Any, alpha: Any, weight: Any, with_bias: bool, out: Any = None
) -> tuple[Any, Any, Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx`` and these rows' shares of ``dalpha`` (one number),
    ``dweight`` and ``dbias`` (sums over the rows, shape ``(N,)``)."""
    xp = namespace_of(x)
    dy, xw = widen(dy), widen(x)
    t = mul_(xw, alpha, out=out)
    t = tanh_(t, out=t)  # recomputed (dx's memory is free until the end)
    dweight = column_sums(xp, dy * t) if weight is not None else None
    dbias = column_sums(xp, dy) if with_bias else None
    dt = 1 - mul_(t, t, out=t)  # tanh' = 1 - tanh**2
    dt = mul_(dt, dy, out=dt)
    if weight is not None:
        dt = mul_(dt, weight, out=dt)  # dt = dy * weight * (1 - t**2), the gradient reaching alpha * x
    # dalpha = sum of x * dt over every element, taken as per-row dot products (no x * dt array).
    dalpha = xw.shape[1] * xp.sum(row_mean_of_product(xp, xw, dt, (1,)))
    dx = mul_(dt, alpha, out=out)
    return xp.astype(dx, x.dtype, copy=False), dalpha, dweight, dbias


class DyTFunction(Function):
    """DyT with its hand-derived backward.

    Both passes see the input as ``(rows, N)`` and run the formulas above on blocks of
    rows small enough to stay in cache (``for_each_row_block``), as ``RMSNormFunction``
    does; the parameters are used in the compute dtype (``in_compute_dtype``).
    """

    @staticmethod
    def forward(ctx: Context, x: Any, alpha: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...]) -> Any:
        xp = namespace_of(x)
        n = math.prod(normalized_shape)
        x2, a = as_rows(x, n), in_compute_dtype(alpha, x)
        w, b = as_vector(in_compute_dtype(weight, x), n), as_vector(in_compute_dtype(bias, x), n)
        y2 = xp.empty(x2.shape, dtype=x.dtype)

        def block(start: int, stop: int) -> None:
            rows = slice(start, stop)
            y2[rows, ...] = dyt_rows(x2[rows, ...], a, w, b, out=y2[rows, ...])

        for_each_row_block(block, x2)
        ctx.save_for_backward(x, alpha, weight, None if bias is None else bias.dtype, normalized_shape)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, Any]:
        x, alpha, weight, bias_dtype, normalized_shape = ctx.saved_tensors
        xp = namespace_of(x)
        n = math.prod(normalized_shape)
        x2, dy2 = as_rows(x, n), as_rows(dy, n)
        a, w = in_compute_dtype(alpha, x), as_vector(in_compute_dtype(weight, x), n)
        dx2 = xp.empty(x2.shape, dtype=x2.dtype)

        def block(start: int, stop: int) -> tuple[Any, Any, Any]:
            rows = slice(start, stop)
            dx2[rows, ...], dalpha, dweight, dbias = dyt_backward_rows(
                dy2[rows, ...], x2[rows, ...], a, w, bias_dtype is not None, out=dx2[rows, ...]
            )
            return dalpha, dweight, dbias

        partials = for_each_row_block(block, x2)
        dalpha = sum(p[0] for p in partials) if partials else xp.zeros((), dtype=a.dtype)  # one number
        dalpha = xp.astype(dalpha, alpha.dtype)
        # Per-feature parameters: each row contributes, so the blocks' row sums are added up.
        dweight = dbias = None
        if weight is not None:
            dweight = xp.reshape(xp.astype(sum_partials([p[1] for p in partials], n, x2), weight.dtype), weight.shape)
        if bias_dtype is not None:
            dbias = xp.reshape(xp.astype(sum_partials([p[2] for p in partials], n, x2), bias_dtype), normalized_shape)
        return xp.reshape(dx2, x.shape), dalpha, dweight, dbias


def dyt_reference(x: Tensor, alpha: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    y = (alpha * x).tanh()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _as_alpha(alpha: Tensor | float, like: Tensor) -> Tensor:
    """A 0-d Tensor (learnable), or a constant one made from a Python number (fixed)."""
    if isinstance(alpha, Tensor):
        check_param("alpha", alpha, ())
        return alpha
    return tensor(_check_alpha(alpha), dtype=like.dtype, backend_name=like.backend)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha: expected a finite number or a 0-d tn.Tensor, got {alpha!r}")
    return float(alpha)


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
    alpha = _as_alpha(alpha, x)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
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
        self.alpha = Parameter(tensor(_check_alpha(alpha_init)))
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
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            "3d": Case({"normalized_shape": (3, 4)}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            "smallest": Case({"normalized_shape": 1}, (3, 1)),
        },
    )
)
