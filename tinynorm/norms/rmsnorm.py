r"""RMSNorm (Zhang & Sennrich 2019), with a learnable per-dimension scale (``weight``)
and, optionally, a learnable per-dimension shift (``bias``): the first two of the four
learnable RMSNorm extensions described in ``docs/index.md``.

Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    rstd = 1 / sqrt(mean(x**2) + eps)   (no centering: the mean is not subtracted)
    xhat = x * rstd
    y    = xhat * weight + bias

Learnable parameters:

* ``weight``, shape ``normalized_shape``, init ones: the per-dimension scale. A vector,
  not a ``(dim, 1)`` column, which broadcasts to a ``(dim, dim)`` result when batch
  equals dim (rejected with an explanation; see ``check_param``);
* ``bias`` (only with ``bias=True``; PyTorch's RMSNorm has none), shape
  ``normalized_shape``, init zeros: the per-dimension shift.

Backward (derivation: ``docs/norms/rmsnorm.md``; with the bias, ``docs/norms/rmsnorm_bias.md``),
with ``g = dy * weight``:

    dx      = rstd * (g - xhat * mean(g * xhat))
    dweight = sum over rows of dy * xhat
    dbias   = sum over rows of dy

Compared with LayerNorm's, the ``- mean(g)`` term is gone because nothing was
centred. ``eps`` does not appear: it is inside the saved ``rstd``.

Saved for backward: ``x`` and the per-row ``rstd``; ``xhat`` is recomputed.

Numerics (``tinynorm/stats.py``): float16 input is normalized in float32; rows whose
mean square overflows are recomputed from ``x / max|x|``. ``eps=None`` means the machine
epsilon of the input's dtype, as in PyTorch.

Speed: ``rms_norm_forward`` and ``rms_norm_backward`` below are the plain formulas and
the source of truth; on NumPy and CuPy a faster kernel with the same results runs
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
    as_vector,
    check_eps,
    check_input,
    check_param,
    eps_for,
    feature_axes,
    machine_eps,
    param_grad,
)

__all__ = ["RMSNorm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def rms_norm_forward(x: Any, weight: Any, bias: Any, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``rstd`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    rstd = rms_rstd(xw, eps)  # 1 / sqrt(mean(x**2) + eps)
    xhat = xw * rstd
    y = xhat if weight is None else xhat * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype), rstd


def rms_norm_backward(dy: Any, x: Any, weight: Any, rstd: Any, with_bias: bool) -> tuple[Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dweight`` and ``dbias`` ``(N,)`` (``None`` where there is none)."""
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = widen(x) * rstd  # recomputed from the saved statistic
    g = dy if weight is None else dy * weight  # the gradient reaching xhat
    dx = rms_norm_dx(g, xhat, rstd)
    dweight = None if weight is None else xp.sum(dy * xhat, axis=0)
    dbias = xp.sum(dy, axis=0) if with_bias else None
    return xp.astype(dx, x.dtype), dweight, dbias


def rms_norm_dx(g: Any, xhat: Any, rstd: Any) -> Any:
    """RMSNorm's input gradient from ``g``, the gradient reaching ``xhat``.

    Two paths from ``x`` to ``xhat = x * rstd``: directly, and through ``rstd``, which
    depends on every ``x`` of the row. Every RMSNorm-like backward ends here with its own
    ``g``: ``dy * weight`` (RMSNorm), ``dy * (1 + weight)`` (Gemma), ``dy @ weight.T``
    (RMSNormMatrix), the gradient through a tanh (RMSNormTanh).
    """
    xp = namespace_of(xhat)
    return rstd * (g - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))


class RMSNormFunction(Function):
    """RMSNorm (optionally with a bias) with its hand-derived backward, on rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        n = math.prod(normalized_shape)
        x2 = as_rows(x, n)
        w, b = (in_compute_dtype(as_vector(p, n), x) for p in (weight, bias))
        forward, _ = kernels.pick("rms_norm", x2, w, b) or (rms_norm_forward, rms_norm_backward)
        y2, rstd = forward(x2, w, b, eps)
        ctx.save_for_backward(x, weight, bias, rstd)
        ctx.n = n
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias, rstd = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        w = in_compute_dtype(as_vector(weight, ctx.n), x)
        # Either backward fits either forward: both save the same statistic.
        _, backward = kernels.pick("rms_norm", x2, w) or (rms_norm_forward, rms_norm_backward)
        dx2, dweight, dbias = backward(dy2, x2, w, rstd, bias is not None)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dweight, weight), param_grad(dbias, bias)


def rms_norm_reference(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    y = x / ((x * x).mean(axis=axes, keepdims=True) + eps).sqrt()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def rms_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    weight: Tensor | None = None,
    eps: float | None = 1e-6,
    bias: Tensor | None = None,
    impl: str = "explicit",
) -> Tensor:
    """Functional RMSNorm, ``torch.nn.functional.rms_norm``'s signature plus ``bias`` and ``impl``.

    Differs from PyTorch: ``eps`` defaults to 1e-6; ``eps=None`` is PyTorch's default, the
    machine epsilon of the input's dtype (``finfo(x.dtype).eps``).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("rms_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape, x)
    check_param("bias", bias, normalized_shape, x)
    eps = eps_for(machine_eps(x) if eps is None else check_eps(eps), x)
    if impl == "autograd":
        return rms_norm_reference(x, normalized_shape, weight, bias, eps)
    return RMSNormFunction.apply(x, weight, bias, normalized_shape=normalized_shape, eps=eps)


class RMSNorm(NormModule):
    """``tn.nn.RMSNorm(normalized_shape, eps=1e-6, elementwise_affine=True, bias=False)``.

    ``weight`` (ones) is the per-dimension scale; ``bias`` (zeros, with ``bias=True``)
    the per-dimension shift. Both have shape ``normalized_shape``.
    Differs from ``torch.nn.RMSNorm``: ``eps`` defaults to 1e-6 (``eps=None``, PyTorch's
    default, is the input dtype's machine epsilon), and ``bias`` exists.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float | None = 1e-6,
        elementwise_affine: bool = True,
        bias: bool = False,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = None if eps is None else check_eps(eps)
        self.weight = Parameter(ones(*self.normalized_shape)) if elementwise_affine else None
        self.bias = Parameter(zeros(*self.normalized_shape)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps, bias=self.bias, impl=self.impl)

    def extra_repr(self) -> str:
        affine = self.weight is not None
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={affine}, bias={self.bias is not None}"


_CASES = {
    "2d": Case({"normalized_shape": 5}, (3, 5)),
    "3d": Case({"normalized_shape": 4}, (2, 3, 4)),
    "batch1": Case({"normalized_shape": 6}, (1, 6)),
    "smallest": Case({"normalized_shape": 1}, (3, 1)),
    "large": Case({"normalized_shape": 257}, (601, 257)),
}

register_norm(
    NormSpec(
        name="rmsnorm",
        title="RMSNorm (per-dimension scale)",
        summary="scale each row by its root mean square, then by a learnable per-dimension weight",
        module=RMSNorm,
        functional=rms_norm,
        params=(ParamSpec("weight", "normalized_shape", "ones", "the per-dimension scale of each normalized feature"),),
        doc="docs/norms/rmsnorm.md",
        cases=_CASES,
        family="rmsnorm_extensions",
    )
)

register_norm(
    NormSpec(
        name="rmsnorm_bias",
        title="RMSNorm with scale and shift",
        summary="RMSNorm followed by a learnable per-dimension scale and shift",
        module=RMSNorm,
        functional=rms_norm,
        params=(
            ParamSpec("weight", "normalized_shape", "ones", "the per-dimension scale of each normalized feature"),
            ParamSpec("bias", "normalized_shape", "zeros", "the per-dimension shift added after scaling"),
        ),
        doc="docs/norms/rmsnorm_bias.md",
        cases={name: Case({**case.kwargs, "bias": True}, case.input_shape) for name, case in _CASES.items()},
        family="rmsnorm_extensions",
    )
)
