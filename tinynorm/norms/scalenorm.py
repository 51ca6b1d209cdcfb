r"""ScaleNorm (Nguyen & Salazar 2019, "Transformers without Tears").

Each row is projected onto the sphere and rescaled by one learned length:

    norm  = sqrt(sum(x**2))           (the row's L2 norm, per row)
    denom = max(norm, eps)            (the clamp keeps an all-zero row finite)
    u     = x / denom                 (the row's direction; shorter than 1 where clamped)
    y     = g * u

Learnable parameter:

* ``g``, shape ``()``, init ``sqrt(N)`` (``N`` features per row): the length every row is
  scaled to. At init a row of ``N`` features has norm ``sqrt(N)``, i.e. root mean square 1,
  as after RMSNorm. One scalar for the whole layer, not one per feature.

Backward (derivation: ``docs/norms/scalenorm.md``):

    where norm >= eps:  dx = (g / norm) * (dy - u * sum(dy * u))
    where norm <  eps:  dx = g * dy / eps        (the denominator is a constant there)
    dg = sum over every element of dy * u

The first line removes from ``dy`` its component along ``x``: scaling a row does not
change its direction, so the output cannot respond to it.

Saved for backward: ``x`` and the per-row ``norm`` (``denom`` and the clamp follow from it).

Numerics (``tinynorm/stats.py``): float16 input is computed in float32; the row norm
(``row_norm``) is right from 1e-30 to 1e30, with no underflow of ``sum(x**2)`` for tiny
rows (which would divide them by ``eps`` instead of their norm) and no overflow for huge
ones. A row with a NaN or an inf in it has no direction: its output and gradients are NaN.
At ``norm == eps`` the function has a kink; the gradient there is taken from the ``norm``
side. The autograd reference is not defined for an all-zero row (the gradient of ``sqrt``
at 0 is infinite); the explicit backward is (``dx = g * dy / eps``). ``g`` is used in the
input's compute dtype; its gradient comes back in its own.

Speed: ``scale_norm_forward`` and ``scale_norm_backward`` below are the plain formulas and
the source of truth; on NumPy a faster kernel with the same results runs instead
(``tinynorm/kernels/``; ``docs/performance.md``).

Differs from the paper: ``normalized_shape`` may be a tuple of trailing dimensions (as in
LayerNorm); the paper normalizes over the last axis only.
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..ops import maximum
from ..registry import NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype, row_norm, widen
from ..tensor import Tensor, tensor
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    check_eps,
    check_input,
    eps_for,
    feature_axes,
    param_grad,
    scalar_param,
)

__all__ = ["ScaleNorm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def clamp(norm: Any, eps: float) -> tuple[Any, Any]:
    """Per row: ``denom = max(norm, eps)``, and ``unclamped = norm >= eps`` (where it is ``norm``).

    A row whose norm is not finite (a NaN or an inf in it) gets a NaN ``denom``: dividing by
    an infinite norm would give zeros beside NaN, a direction the row does not have.
    """
    xp = namespace_of(norm)
    denom = xp.where(xp.isfinite(norm), xp.maximum(norm, eps), xp.nan)
    return denom, norm >= eps


def scale_norm_forward(x: Any, g: Any, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``norm`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32
    norm = row_norm(xw)  # sqrt(sum(x**2)), safe from underflow and overflow
    denom, _ = clamp(norm, eps)
    y = g * (xw / denom)
    return xp.astype(y, x.dtype), norm


def scale_norm_backward(dy: Any, x: Any, g: Any, norm: Any, eps: float) -> tuple[Any, Any]:
    """``dx`` ``(rows, N)`` and ``dg`` (shape ``()``)."""
    xp = namespace_of(x)
    dy = widen(dy)
    denom, unclamped = clamp(norm, eps)
    u = widen(x) / denom  # recomputed from the saved norm
    dx = sphere_dx(g * dy, u, denom, unclamped)  # g * dy is the gradient reaching u
    dg = xp.sum(dy * u)  # g scales every element of every row
    return xp.astype(dx, x.dtype), dg


def sphere_dx(du: Any, u: Any, denom: Any, unclamped: Any) -> Any:
    """The input gradient of ``u = x / max(||x||, eps)`` from ``du``, the gradient reaching ``u``.

    Where the clamp is inactive it is the tangent projection ``(I - u u^T) du / ||x||``: the
    part of ``du`` along ``x`` is removed, since scaling a row does not move its direction.
    Where it is active the denominator is the constant ``eps``: ``du / eps``, no projection.
    ScaleNorm (``du = g * dy``) and L2Norm (``du = dy * scale``, ``l2norm.py``) both end here.
    """
    xp = namespace_of(u)
    along = xp.sum(du * u, axis=-1, keepdims=True)  # sum(du * u), per row: du's radial part
    radial = xp.where(unclamped, along, xp.zeros_like(along))
    return (du - u * radial) / denom


class ScaleNormFunction(Function):
    """ScaleNorm with its hand-derived backward, on the input seen as rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, g: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        n = math.prod(normalized_shape)
        x2, gc = as_rows(x, n), in_compute_dtype(g, x)
        forward, _ = kernels.pick("scale_norm", x2, gc) or (scale_norm_forward, scale_norm_backward)
        y2, norm = forward(x2, gc, eps)
        ctx.save_for_backward(x, g, norm)
        ctx.n, ctx.eps = n, eps
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, g, norm = ctx.saved_tensors
        x2, dy2, gc = as_rows(x, ctx.n), as_rows(dy, ctx.n), in_compute_dtype(g, x)
        _, backward = kernels.pick("scale_norm", x2, gc) or (scale_norm_forward, scale_norm_backward)
        dx2, dg = backward(dy2, x2, gc, norm, ctx.eps)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dg, g)


def scale_norm_reference(x: Tensor, normalized_shape: tuple[int, ...], g: Tensor, eps: float = 1e-5) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward.
    (At a tie ``norm == eps``, ``maximum`` splits the gradient; away from it they agree.
    ``sum(x * x)`` underflows for tiny rows: the reference is for ordinary magnitudes.)"""
    axes = feature_axes(x.ndim, normalized_shape)
    norm = (x * x).sum(axis=axes, keepdims=True).sqrt()
    return g * x / maximum(norm, eps)


def scale_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    g: Tensor | float,
    eps: float = 1e-5,
    impl: str = "explicit",
) -> Tensor:
    """Functional ScaleNorm: ``g * x / max(||x||_2, eps)`` over ``normalized_shape``.

    ``g`` is a 0-d Tensor (learnable) or a number (fixed).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("scale_norm", x, normalized_shape)
    g = scalar_param("g", g, x)
    eps = eps_for(check_eps(eps), x)
    if impl == "autograd":
        return scale_norm_reference(x, normalized_shape, g, eps)
    return ScaleNormFunction.apply(x, g, normalized_shape=normalized_shape, eps=eps)


class ScaleNorm(NormModule):
    """``tn.nn.ScaleNorm(normalized_shape, eps=1e-5)``: one scalar ``g``, init ``sqrt(N)``.

    See the module docstring for the formulas and ``docs/norms/scalenorm.md`` for the
    derivation. PyTorch has no ScaleNorm; the name and ``g`` follow the paper.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, impl: str = "explicit") -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.g = Parameter(tensor(math.sqrt(math.prod(self.normalized_shape))))

    def forward(self, x: Tensor) -> Tensor:
        return scale_norm(x, self.normalized_shape, self.g, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


def input_away_from_the_kinks(rng: Any, shape: tuple[int, ...]) -> Any:
    """Entries of magnitude in [0.5, 2]: every row's norm is >= 0.5 (far above eps, away
    from the clamp), and a one-feature row (``y = g * sign(x)``) is away from 0."""
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)


register_norm(
    NormSpec(
        name="scalenorm",
        title="ScaleNorm",
        summary="project each row onto the unit sphere (L2 norm clamped at eps), then scale by one learned g",
        module=ScaleNorm,
        functional=scale_norm,
        params=(ParamSpec("g", "()", "sqrt(N)", "the length every row is rescaled to"),),
        doc="docs/norms/scalenorm.md",
        cases=row_cases(),
        input_fn=input_away_from_the_kinks,
    )
)
