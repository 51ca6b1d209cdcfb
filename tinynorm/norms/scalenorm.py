r"""ScaleNorm (Nguyen & Salazar 2019, "Transformers without Tears").

Each row is projected onto the sphere and rescaled by one learned length:

    norm  = sqrt(sum(x**2))           (the row's L2 norm, per row)
    denom = max(norm, eps)            (the clamp keeps an all-zero row finite)
    y     = g * x / denom

Learnable parameter:

* ``g``, shape ``()``, init ``sqrt(N)`` (``N`` features per row): the length every row is
  scaled to. At init a row of ``N`` features has norm ``sqrt(N)``, i.e. root mean square 1,
  as after RMSNorm. One scalar for the whole layer, not one per feature.

Backward (derivation: ``docs/norms/scalenorm.md``), with ``u = x / denom``:

    where norm >= eps:  dx = (g / norm) * (dy - u * sum(dy * u))
    where norm <  eps:  dx = g * dy / eps        (the denominator is a constant there)
    dg = sum over every element of dy * u

The first line removes from ``dy`` its component along ``x``: scaling a row does not
change its direction, so the output cannot respond to it.

Saved for backward: ``x`` and the per-row ``denom`` and whether the clamp was active.

Numerics: float16 input is computed in float32; rows whose sum of squares overflows
are recomputed from ``x / max|x|``. At ``norm == eps`` the function has a kink; the
gradient there is taken from the ``norm`` side. The autograd reference is not
defined for an all-zero row (the gradient of ``sqrt`` at 0 is infinite); the explicit
backward is (``dx = g * dy / eps``).

Differs from the paper: ``normalized_shape`` may be a tuple of trailing dimensions (as in
LayerNorm); the paper normalizes over the last axis only.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Context, Function
from ..nn.module import Parameter
from ..ops import maximum, namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, tensor
from ._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes, widen

__all__ = ["ScaleNorm"]


def row_norm(x: Any, axes: tuple[int, ...]) -> Any:
    """``sqrt(sum(x**2))`` per row (``keepdims``), without overflow.

    ``x**2`` is inf for ``|x| > 1.8e19`` in float32; those rows (and only those: the check
    looks at the per-row sums) are recomputed as ``s * sqrt(sum((x / s)**2))``,
    ``s = max|x|``.
    """
    xp = namespace_of(x)
    norm = xp.sqrt(xp.sum(x * x, axis=axes, keepdims=True))
    bad = ~xp.isfinite(norm)
    if not bool(xp.any(bad)):
        return norm
    scale = xp.max(xp.abs(x), axis=axes, keepdims=True)
    scale = xp.where(bad, scale, xp.ones_like(scale))
    xs = x / scale
    return xp.where(bad, scale * xp.sqrt(xp.sum(xs * xs, axis=axes, keepdims=True)), norm)


class ScaleNormFunction(Function):
    """ScaleNorm with its hand-derived backward."""

    @staticmethod
    def forward(ctx: Context, x: Any, g: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        axes = feature_axes(x.ndim, normalized_shape)
        xw = widen(x)
        norm = row_norm(xw, axes)
        unclamped = norm >= eps
        denom = xp.where(unclamped, norm, xp.full_like(norm, eps))
        ctx.save_for_backward(x, g, denom, unclamped, axes)
        return xp.astype(g * (xw / denom), x.dtype)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, g, denom, unclamped, axes = ctx.saved_tensors
        xp = namespace_of(x)
        dy = widen(dy)
        u = widen(x) / denom  # the unit direction of each row (not unit where clamped)
        along = xp.sum(dy * u, axis=axes, keepdims=True)
        # Where the clamp is active the denominator is the constant eps: no projection term.
        along_x = xp.where(unclamped, along, xp.zeros_like(along))
        dx = (g / denom) * (dy - u * along_x)
        dg = xp.astype(xp.sum(along), g.dtype)  # every row contributes to the one scalar
        return xp.astype(dx, x.dtype), dg


def scale_norm_reference(x: Tensor, normalized_shape: tuple[int, ...], g: Tensor, eps: float = 1e-5) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward.
    (At a tie ``norm == eps``, ``maximum`` splits the gradient; away from it they agree.)"""
    axes = feature_axes(x.ndim, normalized_shape)
    norm = (x * x).sum(axis=axes, keepdims=True).sqrt()
    return g * x / maximum(norm, eps)


def _as_scalar_tensor(name: str, value: Tensor | float, like: Tensor) -> Tensor:
    """A 0-d Tensor for a learnable scalar, or a constant one made from a Python number."""
    if isinstance(value, Tensor):
        check_param(name, value, ())
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number or a 0-d tn.Tensor, got {value!r}")
    return tensor(float(value), dtype=like.dtype, backend_name=like.backend)


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
    g = _as_scalar_tensor("g", g, x)
    eps = check_eps(eps)
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


def _input_away_from_the_kinks(rng: Any, shape: tuple[int, ...]) -> Any:
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
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            "3d": Case({"normalized_shape": (3, 4)}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            "smallest": Case({"normalized_shape": 1}, (3, 1)),
        },
        input_fn=_input_away_from_the_kinks,
    )
)
