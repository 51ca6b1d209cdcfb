r"""RMSNorm followed by a learnable ``(dim, dim)`` matrix: the first of the learnable
RMSNorm extensions in ``docs/index.md``, "a weight matrix the size of the input
instead of a vector", taken literally and done properly.

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
  The proposal's ``ones((dim, 1))`` is neither: it is a column that broadcasts
  (see ``docs/norms/rmsnorm.md``).

Backward (derivation: ``docs/norms/rmsnorm_matrix.md``):

    dweight = sum over rows of outer(dy, xhat)     (= dy_rows.T @ xhat_rows)
    g       = dy @ weight                          (the gradient reaching xhat)
    dx      = rstd * (g - xhat * mean(g * xhat))   (RMSNorm's backward with this g)

Where RMSNorm has ``g = dy * weight`` (a diagonal map), this has ``g = dy @ weight``;
everything after ``g`` is unchanged, because the normalization is the same.

Saved for backward: ``x``, ``weight`` and the per-row ``rstd``; ``xhat`` is recomputed.

Numerics (``tinynorm/stats.py``): float16 input is normalized in float32 and rows whose
mean square overflows are recomputed from ``x / max|x|``, as in RMSNorm. The weight is
used in the input's compute dtype; its gradient comes back in its own.

Speed: ``rms_norm_matrix_forward`` and ``rms_norm_matrix_backward`` below are the plain
formulas and the source of truth; on NumPy a kernel with the same results runs instead,
which saves memory rather than time: the three matrix products are the cost either way
(``tinynorm/kernels/``; ``docs/performance.md``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..stats import in_compute_dtype, rms_rstd, widen
from ..tensor import Tensor, tensor
from ._shared import (
    NormModule,
    as_rows,
    check_eps,
    check_input,
    check_param,
    check_positive_int,
    eps_for,
    param_grad,
)
from .rmsnorm import rms_norm_dx

__all__ = ["RMSNormMatrix"]


# ---- the lesson: forward and backward on rows ``(rows, dim)`` --------------------------------
def rms_norm_matrix_forward(x: Any, weight: Any, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, dim)`` and the per-row ``rstd`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    rstd = rms_rstd(xw, eps)
    xhat = xw * rstd
    y = xhat @ xp.matrix_transpose(weight)  # y_i = sum_j weight[i, j] * xhat_j
    return xp.astype(y, x.dtype), rstd


def rms_norm_matrix_backward(dy: Any, x: Any, weight: Any, rstd: Any) -> tuple[Any, Any]:
    """``dx`` ``(rows, dim)`` and ``dweight`` ``(dim, dim)``."""
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = widen(x) * rstd  # recomputed from the saved statistic
    # weight[i, j] multiplies xhat_j into y_i in every row: the outer products dy_i * xhat_j, summed.
    dweight = xp.matrix_transpose(dy) @ xhat
    g = dy @ weight  # y = xhat @ weight.T sends dy back to xhat as dy @ weight
    dx = rms_norm_dx(g, xhat, rstd)  # then RMSNorm's two paths from x to xhat
    return xp.astype(dx, x.dtype), dweight


class RMSNormMatrixFunction(Function):
    """RMSNorm followed by ``@ weight.T``, with its hand-derived backward, on rows ``(rows, dim)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, eps: float) -> Any:
        x2, w = as_rows(x, x.shape[-1]), in_compute_dtype(weight, x)
        forward, _ = kernels.pick("rms_norm_matrix", x2, w) or (rms_norm_matrix_forward, rms_norm_matrix_backward)
        y2, rstd = forward(x2, w, eps)
        ctx.save_for_backward(x, weight, rstd)
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, rstd = ctx.saved_tensors
        dim = x.shape[-1]
        x2, dy2, w = as_rows(x, dim), as_rows(dy, dim), in_compute_dtype(weight, x)
        _, backward = kernels.pick("rms_norm_matrix", x2, w) or (rms_norm_matrix_forward, rms_norm_matrix_backward)
        dx2, dweight = backward(dy2, x2, w, rstd)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dweight, weight)


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
    check_param("weight", weight, (dim, dim), x)
    eps = eps_for(check_eps(eps), x)
    if impl == "autograd":
        return rms_norm_matrix_reference(x, weight, eps)
    return RMSNormMatrixFunction.apply(x, weight, eps=eps)


class RMSNormMatrix(NormModule):
    """``tn.nn.RMSNormMatrix(dim, eps=1e-6)``: RMSNorm, then a learnable ``(dim, dim)`` matrix.

    ``weight`` (the identity) mixes features: ``dim**2`` parameters, not a per-dimension
    scale. No PyTorch counterpart; it equals ``RMSNorm(dim, elementwise_affine=False)``
    followed by ``Linear(dim, dim, bias=False)``. Formulas in the module docstring;
    derivation in ``docs/norms/rmsnorm_matrix.md``.
    """

    def __init__(self, dim: int, eps: float = 1e-6, impl: str = "explicit") -> None:
        super().__init__(impl)
        self.dim = check_positive_int("dim", dim)
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
            "large": Case({"dim": 257}, (601, 257)),
        },
        family="rmsnorm_extensions",
        perturb=_perturb_identity,
    )
)
