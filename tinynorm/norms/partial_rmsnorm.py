r"""Partial RMSNorm, pRMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization",
section 4): the root mean square is estimated from the first ``k = ceil(p * N)``
features only, then divides all ``N``.

Forward, over the last axis (``N`` features per row, ``k`` of them in the statistic):

    rstd = 1 / sqrt(mean(x[..., :k]**2) + eps)     (first k features only)
    xhat = x * rstd                                (every feature)
    y    = xhat * weight + bias

The paper's argument: the features of a layer are roughly exchangeable, so a few of
them estimate the RMS well enough, and computing it costs ``k`` instead of ``N``
multiplies (it reports ``p = 6.25%`` working). The output is still invariant to
rescaling the whole row, but the first ``k`` features now play a special role.

Learnable parameters:

* ``weight``, shape ``(N,)``, init ones: the per-dimension scale, as RMSNorm's;
* ``bias`` (only with ``bias=True``), shape ``(N,)``, init zeros.

Backward (derivation: ``docs/norms/partial_rmsnorm.md``), with ``g = dy * weight`` and
``in_stat`` the mask of the first ``k`` features:

    dx      = rstd * (g - in_stat * xhat * sum(g * xhat) / k)
    dweight = sum over rows of dy * xhat
    dbias   = sum over rows of dy

The projection term comes from ``rstd``, and ``rstd`` depends only on the first ``k``
features: features ``k..N-1`` get the direct term ``rstd * g`` and nothing else. The
sum of ``g * xhat`` still runs over all ``N`` features (all of them were divided by
``rstd``), but it is divided by ``k``, the count inside the mean. With ``k = N`` this
is RMSNorm's backward.

Saved for backward: ``x``, ``weight`` and the per-row ``rstd``; ``xhat`` is recomputed.
Both passes run on cache-sized blocks of rows, as RMSNorm's do.

Where tinynorm deliberately differs from the authors' PyTorch code (``bzhangGo/rmsnorm``):
``k`` is the paper's ``ceil(p * N)``, not the code's ``int(p * N)``, which is 0 (a
division by zero) whenever ``p * N < 1``; ``eps`` is 1e-6 and sits inside the square root,
as in every tinynorm RMSNorm, where that code adds 1e-8 to the RMS itself.

Numerics: as RMSNorm (float16 widened to float32; overflow rescued by ``x / max|x|``).
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
    check_eps,
    check_input,
    check_param,
    column_sums,
    for_each_row_block,
    in_compute_dtype,
    mul_,
    normalize_rows,
    rms_rstd,
    row_mean_of_product,
    sub_,
    sum_partials,
    widen,
)

__all__ = ["PartialRMSNorm"]


def check_p(p: Any) -> float:
    """The fraction of features in the statistic must lie in ``(0, 1]``."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(f"p: expected the fraction of features used for the RMS, in (0, 1], got {p!r}")
    return float(p)


def partial_size(n: int, p: float) -> int:
    """``k = ceil(p * n)``, the number of leading features in the statistic (at least 1).

    ``p * n`` is rounded to 9 decimals first: ``0.1 * 30`` is ``3.0000000000000004`` in
    floating point, and its ceiling would be 4 instead of 3.
    """
    return max(1, math.ceil(round(p * n, 9)))


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def partial_rms_norm_rows(x: Any, weight: Any, bias: Any, k: int, eps: float, out: Any = None) -> tuple[Any, Any]:
    """Forward on rows ``x`` of shape ``(rows, N)``: ``y`` and the per-row ``rstd`` ``(rows, 1)``.

    ``out``, if given, is memory ``y`` may be written into.
    """
    xp = namespace_of(x)
    xw = widen(x)
    rstd = rms_rstd(xw[:, :k], (1,), eps)  # the statistic sees the first k features
    y = normalize_rows(xw, rstd, weight, bias, out=out)  # ... and divides all of them
    return xp.astype(y, x.dtype, copy=False), rstd


def partial_rms_norm_backward_rows(
    dy: Any, x: Any, weight: Any, rstd: Any, k: int, with_bias: bool, out: Any = None
) -> tuple[Any, Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx`` and these rows' shares of ``dweight`` and ``dbias``."""
    xp = namespace_of(x)
    n = x.shape[1]
    dy = widen(dy)
    xhat = widen(x) * rstd  # recomputed: cheaper than storing it
    g = dy * weight if weight is not None else dy
    dweight = column_sums(xp, dy * xhat) if weight is not None else None
    dbias = column_sums(xp, dy) if with_bias else None
    # Every feature feeds rstd's path through its g * xhat, but only the first k feed rstd itself:
    #   dx = rstd * (g - in_stat * xhat * sum(g * xhat) / k),  built in xhat's memory.
    projection = row_mean_of_product(xp, g, xhat, (1,)) * (n / k)  # sum(g * xhat) / k
    term = mul_(xhat, projection, out=xhat)
    term[:, k:] = 0  # features k..N-1 are not in the statistic: no projection term
    dx = sub_(g, term, out=term)
    dx = mul_(dx, rstd, out=out)
    return xp.astype(dx, x.dtype, copy=False), dweight, dbias


class PartialRMSNormFunction(Function):
    """pRMSNorm with its hand-derived backward.

    Both passes run the formulas above on blocks of rows small enough to stay in cache
    (``for_each_row_block``), as ``RMSNormFunction`` does.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, k: int, eps: float) -> Any:
        xp = namespace_of(x)
        n = x.shape[-1]
        x2, w, b = as_rows(x, n), in_compute_dtype(weight, x), in_compute_dtype(bias, x)
        y2 = xp.empty(x2.shape, dtype=x.dtype)
        rstd = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            rows = slice(start, stop)
            y2[rows, ...], rstd[rows, ...] = partial_rms_norm_rows(x2[rows, ...], w, b, k, eps, out=y2[rows, ...])

        for_each_row_block(block, x2)
        rstd = xp.reshape(rstd, x.shape[:-1] + (1,))  # keeps x's dimensions
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, rstd, k)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, rstd, k = ctx.saved_tensors
        xp = namespace_of(x)
        n = x.shape[-1]
        x2, dy2, rstd2, w = as_rows(x, n), as_rows(dy, n), as_rows(rstd, 1), in_compute_dtype(weight, x)
        dx2 = xp.empty(x2.shape, dtype=x2.dtype)

        def block(start: int, stop: int) -> tuple[Any, Any]:
            rows = slice(start, stop)
            dx2[rows, ...], dweight, dbias = partial_rms_norm_backward_rows(
                dy2[rows, ...], x2[rows, ...], w, rstd2[rows, ...], k, bias_dtype is not None, out=dx2[rows, ...]
            )
            return dweight, dbias

        partials = for_each_row_block(block, x2)
        dweight = dbias = None
        if weight is not None:
            dweight = xp.astype(sum_partials([p[0] for p in partials], n, x2), weight.dtype)
        if bias_dtype is not None:
            dbias = xp.astype(sum_partials([p[1] for p in partials], n, x2), bias_dtype)
        return xp.reshape(dx2, x.shape), dweight, dbias


def partial_rms_norm_reference(
    x: Tensor, k: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    head = x[..., :k]
    y = x / ((head * head).mean(axis=-1, keepdims=True) + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _as_feature_count(normalized_shape: int | tuple[int, ...]) -> tuple[int]:
    shape = as_shape(normalized_shape)
    if len(shape) != 1:
        raise ValueError(
            f"normalized_shape: pRMSNorm's 'first k features' needs one feature axis, "
            f"expected an int or a 1-tuple, got {normalized_shape!r}"
        )
    return shape  # type: ignore[return-value]


def partial_rms_norm(
    x: Tensor,
    normalized_shape: int | tuple[int],
    weight: Tensor | None = None,
    eps: float = 1e-6,
    bias: Tensor | None = None,
    p: float = 0.0625,
    impl: str = "explicit",
) -> Tensor:
    """Functional pRMSNorm: ``rms_norm``'s signature plus ``p``.

    Parameters
    ----------
    x
        Input of shape ``(..., N)``.
    normalized_shape
        ``N`` (the last axis only: "the first k features" needs an order).
    weight, bias
        Per-dimension scale and shift, shape ``(N,)``, or ``None``.
    eps
        Added to the partial mean square inside the square root.
    p
        Fraction of the features in the statistic: ``k = ceil(p * N)``, ``0 < p <= 1``.
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (composed from primitive ops).
    """
    normalized_shape = _as_feature_count(normalized_shape)
    check_input("partial_rms_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    eps = check_eps(eps)
    k = partial_size(normalized_shape[0], check_p(p))
    if impl == "autograd":
        return partial_rms_norm_reference(x, k, weight, bias, eps)
    return PartialRMSNormFunction.apply(x, weight, bias, k=k, eps=eps)


class PartialRMSNorm(NormModule):
    """``tn.nn.PartialRMSNorm(normalized_shape, p=0.0625, eps=1e-6, bias=False)``.

    The RMS of each row is taken over its first ``k = ceil(p * N)`` features and divides
    all ``N``. ``weight`` (ones) and ``bias`` (zeros, with ``bias=True``) have shape ``(N,)``.
    No PyTorch counterpart; formulas in the module docstring.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int],
        p: float = 0.0625,
        eps: float = 1e-6,
        bias: bool = False,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = _as_feature_count(normalized_shape)
        self.p = check_p(p)
        self.k = partial_size(self.normalized_shape[0], self.p)
        self.eps = check_eps(eps)
        self.weight = Parameter(ones(*self.normalized_shape))
        self.bias = Parameter(zeros(*self.normalized_shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return partial_rms_norm(x, self.normalized_shape, self.weight, self.eps, self.bias, p=self.p, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, p={self.p} (k={self.k}), eps={self.eps}, bias={self.bias is not None}"


register_norm(
    NormSpec(
        name="partial_rmsnorm",
        title="Partial RMSNorm (pRMSNorm)",
        summary="RMSNorm whose RMS is estimated from the first ceil(p*N) features only",
        module=PartialRMSNorm,
        functional=partial_rms_norm,
        params=(ParamSpec("weight", "normalized_shape", "ones", "the per-dimension scale of each normalized feature"),),
        doc="docs/norms/partial_rmsnorm.md",
        cases={
            "2d": Case({"normalized_shape": 8, "p": 0.25}, (3, 8)),  # k = 2 of 8
            "3d": Case({"normalized_shape": 5, "p": 0.5}, (2, 3, 5)),  # k = ceil(2.5) = 3 of 5
            "batch1": Case({"normalized_shape": 6, "p": 0.5}, (1, 6)),  # k = 3 of 6
            "smallest": Case({"normalized_shape": 1}, (3, 1)),  # k = 1: plain RMSNorm
        },
    )
)
