r"""The hypersphere norm of nGPT (Loshchilov, Hsieh, Sun & Ginsburg 2024, "nGPT: Normalized
Transformer with Representation Learning on the Hypersphere", arXiv 2410.01131).

Each row is put on the unit sphere, then stretched per dimension by a learned scale:

    norm  = sqrt(sum(x**2))             (the row's L2 norm, per row)
    denom = max(norm, eps)              (the clamp of torch.nn.functional.normalize)
    u     = x / denom                   (the row's direction: a point on the unit sphere)
    s     = scale * (scale_init / scale_scaling)    (the effective scale, per dimension)
    y     = s * u

over the last ``len(normalized_shape)`` axes (``N`` features per row), as LayerNorm.

Learnable parameter:

* ``scale``, shape ``normalized_shape``, init ``scale_scaling`` (default ``1/sqrt(N)``),
  used as ``scale * (scale_init / scale_scaling)``, so the effective scale ``s`` starts at
  ``scale_init`` (default 1). This is nGPT's way to store its scaling vectors (``s_qk``,
  ``s_u``, ``s_z`` and the eigen learning rates): a parameter kept at size ``s_scale`` and
  multiplied by ``s_init / s_scale`` where it is used. The values here are those of NVIDIA's
  reference code (``github.com/NVIDIA/ngpt``, ``model.py``): ``sqk_init_value = 1``,
  ``sqk_init_scaling = base_scale = 1/sqrt(n_embd)``. Why: Adam moves every parameter by
  about ``lr`` per step whatever its gradient's size, so the stored ``scale`` moves by
  ``lr`` and ``s`` by ``lr * scale_init / scale_scaling``: ``s`` changes by the fraction
  ``lr / scale_scaling`` of itself per step, whatever ``scale_init`` is. Under plain SGD the
  factor enters twice (the stored gradient is ``factor`` times ``s``'s), so ``s`` moves
  ``factor**2`` times faster. ``scale_scaling = scale_init`` turns the trick off.

Backward (derivation: ``docs/norms/l2norm.md``), with ``g = dy * s``, the gradient reaching ``u``:

    where norm >= eps:  dx = (I - u u^T) g / norm = (g - u * sum(g * u)) / norm
    where norm <  eps:  dx = g / eps              (the denominator is a constant there)
    dscale = (scale_init / scale_scaling) * sum over rows of dy * u

``I - u u^T`` projects onto the plane tangent to the sphere at ``u``: a step along ``x``
only rescales the row and leaves ``u`` where it is, so every row of ``dx`` is orthogonal to
``x``. The projection is ScaleNorm's (``scalenorm.sphere_dx``), and so is the clamp.

Saved for backward: ``x`` and the per-row ``norm``. Numerics as ScaleNorm's: float16 input is
computed in float32; the norm (``row_norm``) is right from 1e-30 to 1e30; a row with a NaN or
an inf has no direction and gives NaN (``torch.nn.functional.normalize`` gives zeros beside
the NaN for an inf). The autograd reference is not defined for an all-zero row.

PyTorch has ``torch.nn.functional.normalize(x, dim=-1, eps=1e-12)``, the same ``u``; times
``s`` it is this forward, and tests/test_norms_l2norm.py holds both to it. PyTorch has no
module; ``normalized_shape`` may be several trailing axes (nGPT normalizes the last one).
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype, row_norm, widen
from ..tensor import Tensor, ones
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    as_vector,
    check_eps,
    check_input,
    check_param,
    check_real,
    eps_for,
    param_grad,
)
from .scalenorm import clamp, input_away_from_the_kinks, scale_norm_reference, sphere_dx

__all__ = ["L2Norm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def l2_norm_forward(x: Any, scale: Any, factor: float, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``norm`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32
    norm = row_norm(xw)  # sqrt(sum(x**2)), safe from underflow and overflow
    denom, _ = clamp(norm, eps)  # max(norm, eps); NaN for a row with a NaN or an inf
    u = xw / denom  # on the unit sphere (inside it where clamped)
    y = u if scale is None else u * (scale * factor)  # the stored scale times scale_init / scale_scaling
    return xp.astype(y, x.dtype), norm


def l2_norm_backward(dy: Any, x: Any, scale: Any, factor: float, norm: Any, eps: float) -> tuple[Any, Any]:
    """``dx`` ``(rows, N)`` and ``dscale`` ``(N,)`` (``None`` without a scale)."""
    xp = namespace_of(x)
    dy = widen(dy)
    denom, unclamped = clamp(norm, eps)
    u = widen(x) / denom  # recomputed from the saved norm
    g = dy if scale is None else dy * (scale * factor)  # the gradient reaching u
    # The tangent projection: (g - u * sum(g * u)) / norm, g with its part along x removed.
    dx = sphere_dx(g, u, denom, unclamped)
    # The optimizer sees the stored scale: the chain rule through s = scale * factor.
    dscale = None if scale is None else factor * xp.sum(dy * u, axis=0)
    return xp.astype(dx, x.dtype), dscale


class L2NormFunction(Function):
    """The hypersphere norm with its hand-derived backward, on rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, scale: Any, normalized_shape: tuple[int, ...], factor: float, eps: float) -> Any:
        n = math.prod(normalized_shape)
        x2, s = as_rows(x, n), in_compute_dtype(as_vector(scale, n), x)
        forward, _ = kernels.pick("l2_norm", x2, s) or (l2_norm_forward, l2_norm_backward)
        y2, norm = forward(x2, s, factor, eps)
        ctx.save_for_backward(x, scale, norm)
        ctx.n, ctx.factor, ctx.eps = n, factor, eps
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, scale, norm = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        s = in_compute_dtype(as_vector(scale, ctx.n), x)
        _, backward = kernels.pick("l2_norm", x2, s) or (l2_norm_forward, l2_norm_backward)
        dx2, dscale = backward(dy2, x2, s, ctx.factor, norm, ctx.eps)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dscale, scale)


def l2_norm_reference(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    scale: Tensor | None = None,
    eps: float = 1e-12,
    scale_factor: float = 1.0,
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward.
    It is ScaleNorm's reference with a per-dimension ``g = scale * scale_factor`` (the same
    caveats: a tie ``norm == eps`` splits the gradient; not for tiny rows or zero rows)."""
    effective = 1.0 if scale is None else scale * scale_factor
    return scale_norm_reference(x, normalized_shape, effective, eps)


def l2_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    scale: Tensor | None = None,
    eps: float = 1e-12,
    scale_factor: float = 1.0,
    impl: str = "explicit",
) -> Tensor:
    """Functional hypersphere norm: ``(scale * scale_factor) * x / max(||x||_2, eps)`` over
    ``normalized_shape``.

    ``scale`` (shape ``normalized_shape``, or ``None`` for no scale) is the stored parameter
    and ``scale_factor`` the number it is multiplied by (nGPT's ``s_init / s_scale``).
    With ``scale=None`` and one axis this is ``torch.nn.functional.normalize(x, dim=-1, eps=eps)``.
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("l2_norm", x, normalized_shape)
    check_param("scale", scale, normalized_shape, x)
    scale_factor = check_real("scale_factor", scale_factor)
    eps = eps_for(check_eps(eps), x)
    if impl == "autograd":
        return l2_norm_reference(x, normalized_shape, scale, eps, scale_factor)
    return L2NormFunction.apply(x, scale, normalized_shape=normalized_shape, factor=scale_factor, eps=eps)


def _positive(name: str, value: Any, why: str) -> float:
    value = check_real(name, value)
    if not value > 0:
        raise ValueError(f"{name}: expected a positive number ({why}), got {value!r}")
    return value


class L2Norm(NormModule):
    """``tn.nn.L2Norm(normalized_shape, scale_init=1.0, scale_scaling=None, eps=1e-12)``.

    ``scale`` (shape ``normalized_shape``) is stored at ``scale_scaling`` (``None``: nGPT's
    ``1/sqrt(N)``) and used as ``scale * scale_factor``, ``scale_factor = scale_init /
    scale_scaling``; ``effective_scale()`` gives that product. See the module docstring for the
    formulas and the trick, and ``docs/norms/l2norm.md`` for the derivation.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        scale_init: float = 1.0,
        scale_scaling: float | None = None,
        eps: float = 1e-12,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.scale_init = _positive("scale_init", scale_init, "the effective scale at init")
        default = 1 / math.sqrt(math.prod(self.normalized_shape))
        scaling = default if scale_scaling is None else scale_scaling
        self.scale_scaling = _positive("scale_scaling", scaling, "the stored scale's init; it divides")
        self.scale = Parameter(ones(*self.normalized_shape) * self.scale_scaling)

    @property
    def scale_factor(self) -> float:
        """``scale_init / scale_scaling``: what the stored ``scale`` is multiplied by."""
        return self.scale_init / self.scale_scaling

    def effective_scale(self) -> Tensor:
        """``scale * scale_factor``, the per-dimension length the rows are stretched to."""
        return self.scale * self.scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return l2_norm(x, self.normalized_shape, self.scale, self.eps, self.scale_factor, impl=self.impl)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, scale_init={self.scale_init}, scale_scaling={self.scale_scaling}, eps={self.eps}"
        )


register_norm(
    NormSpec(
        name="l2norm",
        title="Hypersphere norm (nGPT)",
        summary="put each row on the unit sphere (L2 norm clamped at eps), then scale it per dimension",
        module=L2Norm,
        functional=l2_norm,
        params=(
            ParamSpec(
                "scale",
                "normalized_shape",
                "scale_scaling (1/sqrt(N)), used times scale_init / scale_scaling",
                "the per-dimension length each unit row is stretched to",
            ),
        ),
        doc="docs/norms/l2norm.md",
        cases=row_cases(),
        input_fn=input_away_from_the_kinks,
    )
)
