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

Saved for backward: ``x``, ``weight``, ``bias`` and the per-row ``rstd``; ``xhat`` is recomputed.

Where tinynorm deliberately differs from the authors' PyTorch code (``bzhangGo/rmsnorm``):
``k`` is the paper's ``ceil(p * N)``, not the code's ``int(p * N)``, which is 0 (a
division by zero) whenever ``p * N < 1``; ``eps`` is 1e-6 and sits inside the square root,
as in every tinynorm RMSNorm, where that code adds 1e-8 to the RMS itself.

Numerics (``tinynorm/stats.py``): as RMSNorm's (float16 widened to float32; rows whose
partial mean square overflows rescued by ``x / max|x|``). Parameters are used in the
input's compute dtype; their gradients come back in their own.

Speed: ``partial_rms_norm_forward`` and ``partial_rms_norm_backward`` below are the plain
formulas and the source of truth; on NumPy a faster kernel with the same results runs
instead (``tinynorm/kernels/``; ``docs/performance.md``).
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..stats import in_compute_dtype, rms_rstd, widen
from ..tensor import Tensor, ones, zeros
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    check_eps,
    check_input,
    check_param,
    check_real,
    eps_for,
    param_grad,
)

__all__ = ["PartialRMSNorm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def partial_rms_norm_forward(x: Any, weight: Any, bias: Any, k: int, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``rstd`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    rstd = rms_rstd(xw[:, :k], eps)  # the statistic sees the first k features ...
    xhat = xw * rstd  # ... and divides all of them
    y = xhat if weight is None else xhat * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype), rstd


def partial_rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any, k: int, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dweight`` and ``dbias`` ``(N,)`` (``None`` where there is none)."""
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = widen(x) * rstd  # recomputed from the saved statistic
    g = dy if weight is None else dy * weight  # the gradient reaching xhat
    # Every feature was divided by rstd, so the sum runs over all N; the mean inside rstd
    # counted k; and only the first k features (in_stat) move rstd.
    in_stat = xp.astype(xp.arange(x.shape[1]) < k, xhat.dtype)
    projection = xp.sum(g * xhat, axis=-1, keepdims=True) / k
    dx = rstd * (g - in_stat * xhat * projection)
    dweight = None if weight is None else xp.sum(dy * xhat, axis=0)
    dbias = xp.sum(dy, axis=0) if with_bias else None
    return xp.astype(dx, x.dtype), dweight, dbias


class PartialRMSNormFunction(Function):
    """pRMSNorm with its hand-derived backward, on the input seen as rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, k: int, eps: float) -> Any:
        n = x.shape[-1]
        x2 = as_rows(x, n)
        w, b = in_compute_dtype(weight, x), in_compute_dtype(bias, x)
        forward, _ = kernels.pick("partial_rms_norm", x2, w, b) or (partial_rms_norm_forward, partial_rms_norm_backward)
        y2, rstd = forward(x2, w, b, k, eps)
        ctx.save_for_backward(x, weight, bias, rstd)
        ctx.k = k
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias, rstd = ctx.saved_tensors
        n = x.shape[-1]
        x2, dy2, w = as_rows(x, n), as_rows(dy, n), in_compute_dtype(weight, x)
        _, backward = kernels.pick("partial_rms_norm", x2, w) or (partial_rms_norm_forward, partial_rms_norm_backward)
        dx2, dweight, dbias = backward(dy2, x2, w, rstd, ctx.k, bias is not None)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dweight, weight), param_grad(dbias, bias)


def check_p(p: Any) -> float:
    """The fraction of features in the statistic must be a number in ``(0, 1]``."""
    p = check_real("p", p)
    if not 0 < p <= 1:
        raise ValueError(f"p: expected the fraction of features used for the RMS, in (0, 1], got {p!r}")
    return p


def partial_size(n: int, p: float) -> int:
    """``k = ceil(p * n)``, the number of leading features in the statistic (at least 1).

    ``p * n`` is rounded to 9 decimals first: ``0.1 * 30`` is ``3.0000000000000004`` in
    floating point, and its ceiling would be 4 instead of 3.
    """
    return max(1, math.ceil(round(p * n, 9)))


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
    check_param("weight", weight, normalized_shape, x)
    check_param("bias", bias, normalized_shape, x)
    eps = eps_for(check_eps(eps), x)
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
            "large": Case({"normalized_shape": 257, "p": 0.25}, (601, 257)),  # k = 65 of 257
        },
    )
)
