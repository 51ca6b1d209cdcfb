r"""RMSNorm (Zhang & Sennrich 2019), with the seed document's first two extensions:
a learnable per-dimension scale (``weight``) and a learnable shift (``bias``).

Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    rstd = 1 / sqrt(mean(x**2) + eps)   (no centering: the mean is not subtracted)
    xhat = x * rstd
    y    = xhat * weight + bias

Learnable parameters:

* ``weight``, shape ``normalized_shape``, init ones: the per-dimension scale. A vector,
  not the seed's ``(dim, 1)`` column, which broadcasts to a ``(dim, dim)`` result when
  batch equals dim (rejected with an explanation; see ``check_param``);
* ``bias`` (only with ``bias=True``; PyTorch's RMSNorm has none), shape
  ``normalized_shape``, init zeros: the seed's learnable shift.

Backward (derivation: ``docs/norms/rmsnorm.md``), with ``g = dy * weight``:

    dx      = rstd * (g - xhat * mean(g * xhat))
    dweight = sum over rows of dy * xhat
    dbias   = sum over rows of dy

Compared with LayerNorm's, the ``- mean(g)`` term is gone because nothing was
centred. ``eps`` does not appear: it is inside the saved ``rstd``.

Saved for backward: ``x`` and the per-row ``rstd``; ``xhat`` is recomputed.

Numerics: float16 input is normalized in float32; rows whose mean square overflows
are recomputed from ``x / max|x|`` (``_shared.rms_rstd``).
"""

from __future__ import annotations

from typing import Any

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import namespace_of, sum_to
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, zeros
from ._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes, rms_rstd, widen

__all__ = ["RMSNorm"]


class RMSNormFunction(Function):
    """RMSNorm (optionally with a bias) with its hand-derived backward."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        axes = feature_axes(x.ndim, normalized_shape)
        xw = widen(x)
        rstd = rms_rstd(xw, axes, eps)
        y = xw * rstd
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x, weight, None if bias is None else bias.dtype, rstd, axes)
        return xp.astype(y, x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, weight, bias_dtype, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        dy = widen(dy)
        xhat = widen(x) * rstd  # recomputed: cheaper than storing it
        g = dy * weight if weight is not None else dy
        # Two terms: the direct path, and the path through rstd (which depends on every x).
        dx = rstd * (g - xhat * xp.mean(g * xhat, axis=axes, keepdims=True))
        # Parameter gradients: each row contributes, so sum over every leading axis.
        normalized_shape = tuple(x.shape[axes[0] :])
        dweight = xp.astype(sum_to(dy * xhat, normalized_shape), weight.dtype) if weight is not None else None
        dbias = xp.astype(sum_to(dy, normalized_shape), bias_dtype) if bias_dtype is not None else None
        return xp.astype(dx, x.dtype), dweight, dbias


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
    eps: float = 1e-6,
    bias: Tensor | None = None,
    impl: str = "explicit",
) -> Tensor:
    """Functional RMSNorm, ``torch.nn.functional.rms_norm``'s signature plus ``bias`` and ``impl``.

    Differs from PyTorch: ``eps`` defaults to 1e-6 rather than the dtype's machine epsilon.
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("rms_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    eps = check_eps(eps)
    if impl == "autograd":
        return rms_norm_reference(x, normalized_shape, weight, bias, eps)
    return RMSNormFunction.apply(x, weight, bias, normalized_shape=normalized_shape, eps=eps)


class RMSNorm(NormModule):
    """``tn.nn.RMSNorm(normalized_shape, eps=1e-6, elementwise_affine=True, bias=False)``.

    ``weight`` (ones) is the per-dimension scale; ``bias`` (zeros, with ``bias=True``)
    the seed document's learnable shift. Both have shape ``normalized_shape``.
    Differs from ``torch.nn.RMSNorm``: ``eps`` defaults to 1e-6, and ``bias`` exists.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-6,
        elementwise_affine: bool = True,
        bias: bool = False,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
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
        family="seed",
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
        family="seed",
    )
)
