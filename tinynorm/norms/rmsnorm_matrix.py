r"""RMSNorm followed by a learnable ``(dim, dim)`` matrix: the seed document's "a weight
matrix the size of the input instead of a vector", taken literally and done properly.

Forward, over the last axis (``dim`` features per row):

    rstd = 1 / sqrt(mean(x**2) + eps)
    xhat = x * rstd
    y    = xhat @ weight.T          (y_i = sum_j weight[i, j] * xhat_j)

``weight.T`` follows ``torch.nn.Linear``'s convention (``weight`` is ``(out, in)``), so
this layer is exactly ``RMSNorm(dim, elementwise_affine=False)`` followed by
``Linear(dim, dim, bias=False)``.

Learnable parameter:

* ``weight``, shape ``(dim, dim)``, init the identity (so a fresh layer is plain RMSNorm):
  a **feature-mixing linear map** with ``dim**2`` parameters, *not* a per-dimension
  scale. Its diagonal alone would be RMSNorm's per-dimension ``weight``; the
  off-diagonal entries let every output feature read every normalized feature.
  The seed's ``ones((dim, 1))`` is neither: it is a column that broadcasts
  (see ``docs/norms/rmsnorm.md``).

Backward (derivation: ``docs/norms/rmsnorm_matrix.md``):

    dweight = sum over rows of outer(dy, xhat)     (= dy_rows.T @ xhat_rows)
    g       = dy @ weight                          (the gradient reaching xhat)
    dx      = rstd * (g - xhat * mean(g * xhat))   (RMSNorm's backward with this g)

Where RMSNorm has ``g = dy * weight`` (a diagonal map), this has ``g = dy @ weight``;
everything after ``g`` is unchanged, because the normalization is the same.

Saved for backward: ``x``, ``weight`` and the per-row ``rstd``; ``xhat`` is recomputed.
The forward forms no ``xhat`` at all: ``xhat @ weight.T = (x @ weight.T) * rstd``.

Numerics: float16 input is normalized in float32 and rows whose mean square overflows
are recomputed from ``x / max|x|`` (``_shared.rms_rstd``), as in RMSNorm.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, tensor
from ._shared import (
    NormModule,
    as_rows,
    check_eps,
    check_input,
    check_param,
    in_compute_dtype,
    mul_,
    rms_rstd,
    widen,
)
from ._shared import rms_norm_dx

__all__ = ["RMSNormMatrix"]


class RMSNormMatrixFunction(Function):
    """RMSNorm followed by ``@ weight.T``, with its hand-derived backward.

    The three ``(rows, dim) x (dim, dim)`` matrix products (``y``, ``dweight``, ``g``) are
    the cost; they run whole, on the BLAS's own threads. What is left to save is memory:
    no ``xhat`` in the forward, one in the backward, and ``dx`` built in ``g``'s memory.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, eps: float) -> Any:
        xp = namespace_of(x)
        axes = (x.ndim - 1,)
        x2, w = as_rows(x, x.shape[-1]), in_compute_dtype(weight, x)
        xw = widen(x2)
        rstd = rms_rstd(xw, (1,), eps)
        # xhat @ W.T = (x @ W.T) * rstd: rstd is one number per row, and a row's linear map
        # commutes with scaling it, so the product is taken on x and no xhat array is formed.
        y = xp.matmul(xw, xp.matrix_transpose(w))
        y = mul_(y, rstd, out=y)
        ctx.save_for_backward(x, weight, xp.reshape(rstd, x.shape[:-1] + (1,)), axes)
        return xp.reshape(xp.astype(y, x.dtype, copy=False), x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        dim = x.shape[-1]
        dy2, rstd2, w = widen(as_rows(dy, dim)), as_rows(rstd, 1), in_compute_dtype(weight, x)
        xhat = widen(as_rows(x, dim)) * rstd2  # recomputed: cheaper than storing it
        # weight[i, j] multiplies xhat_j into y_i in every row: sum the outer products dy_i * xhat_j.
        dweight = xp.astype(xp.matmul(xp.matrix_transpose(dy2), xhat), weight.dtype)
        # y = xhat @ W.T sends dy back to xhat as g = dy @ W; then RMSNorm's two paths,
        # dx = rstd * (g - xhat * mean(g * xhat)), written over xhat and then g (rmsnorm.rms_norm_dx).
        g = xp.matmul(dy2, w)
        dx = rms_norm_dx(g, xhat, rstd2, out=g)
        return xp.reshape(xp.astype(dx, x.dtype, copy=False), x.shape), dweight


def rms_norm_matrix_reference(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    xhat = x / ((x * x).mean(axis=-1, keepdims=True) + eps).sqrt()
    return xhat @ weight.T


def rms_norm_matrix(x: Tensor, weight: Tensor, eps: float = 1e-6, impl: str = "explicit") -> Tensor:
    """Functional form: ``rms_norm(x, x.shape[-1]) @ weight.T``.

    Parameters
    ----------
    x
        Input of shape ``(..., dim)``; each row (last axis) is normalized.
    weight
        The ``(dim, dim)`` feature-mixing matrix (``torch.nn.Linear``'s ``(out, in)`` layout).
    eps
        Added to the mean square inside the square root.
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (composed from primitive ops).
    """
    check_input("rms_norm_matrix", x)
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight: expected a tn.Tensor of shape (dim, dim), got {type(weight).__name__}")
    dim = x.shape[-1] if x.ndim else 0
    if dim < 1:
        raise ValueError(f"rms_norm_matrix: input must have at least one axis of features, got shape {x.shape}")
    check_param("weight", weight, (dim, dim))
    eps = check_eps(eps)
    if impl == "autograd":
        return rms_norm_matrix_reference(x, weight, eps)
    return RMSNormMatrixFunction.apply(x, weight, eps=eps)


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive int (the number of features), got {dim!r}")
    return dim


class RMSNormMatrix(NormModule):
    """``tn.nn.RMSNormMatrix(dim, eps=1e-6)``: RMSNorm, then a learnable ``(dim, dim)`` matrix.

    ``weight`` (the identity) mixes features: ``dim**2`` parameters, not a per-dimension
    scale. No PyTorch counterpart; it equals ``RMSNorm(dim, elementwise_affine=False)``
    followed by ``Linear(dim, dim, bias=False)``. Formulas in the module docstring;
    derivation in ``docs/norms/rmsnorm_matrix.md``.
    """

    def __init__(self, dim: int, eps: float = 1e-6, impl: str = "explicit") -> None:
        super().__init__(impl)
        self.dim = _check_dim(dim)
        self.eps = check_eps(eps)
        self.weight = Parameter(tensor(np.eye(self.dim)))

    def forward(self, x: Tensor) -> Tensor:
        check_input("RMSNormMatrix", x, (self.dim,))
        return rms_norm_matrix(x, self.weight, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


def _perturb_identity(module: RMSNormMatrix, rng: np.random.Generator) -> None:
    """Identity plus noise: a non-symmetric, non-diagonal matrix, so a backward that
    forgot a transpose or kept only the diagonal fails the gradcheck."""
    w = module.weight
    noisy = np.eye(module.dim) + 0.3 * rng.standard_normal((module.dim, module.dim))
    w.data = w.xp.astype(w.xp.asarray(noisy), w.dtype)


register_norm(
    NormSpec(
        name="rmsnorm_matrix",
        title="RMSNorm with a feature-mixing matrix",
        summary="RMSNorm followed by a learnable (dim, dim) matrix (identity init) that mixes features",
        module=RMSNormMatrix,
        functional=rms_norm_matrix,
        params=(
            ParamSpec(
                "weight", "(dim, dim)", "identity", "a linear map mixing the normalized features (dim**2 parameters)"
            ),
        ),
        doc="docs/norms/rmsnorm_matrix.md",
        cases={
            "2d": Case({"dim": 5}, (3, 5)),
            "3d": Case({"dim": 4}, (2, 3, 4)),
            "batch1": Case({"dim": 6}, (1, 6)),
            "smallest": Case({"dim": 1}, (3, 1)),
        },
        family="seed",
        perturb=_perturb_identity,
    )
)
