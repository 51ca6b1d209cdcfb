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
Both passes run on cache-sized blocks of rows, as RMSNorm's do.

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
from ..backend import compute_dtype
from ..nn.module import Parameter
from ..ops import maximum, namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, tensor
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    check_eps,
    check_input,
    check_param,
    feature_axes,
    for_each_row_block,
    in_compute_dtype,
    mul_,
    row_mean_of_product,
    sub_,
    widen,
)

__all__ = ["ScaleNorm"]


def row_norm(x: Any, axes: tuple[int, ...]) -> Any:
    """``sqrt(sum(x**2))`` per row (``keepdims``), without overflow.

    The sum is ``N * mean(x * x)``, a per-row dot product (``row_mean_of_product``).
    ``x**2`` is inf for ``|x| > 1.8e19`` in float32; those rows (and only those: the check
    looks at the per-row sums) are recomputed as ``s * sqrt(sum((x / s)**2))``,
    ``s = max|x|``.
    """
    xp = namespace_of(x)
    n = math.prod(x.shape[ax] for ax in axes)
    norm = xp.sqrt(n * row_mean_of_product(xp, x, x, axes))
    bad = ~xp.isfinite(norm)
    if not bool(xp.any(bad)):
        return norm
    scale = xp.max(xp.abs(x), axis=axes, keepdims=True)
    scale = xp.where(bad, scale, xp.ones_like(scale))
    xs = x / scale
    return xp.where(bad, scale * xp.sqrt(n * row_mean_of_product(xp, xs, xs, axes)), norm)


def clamp(norm: Any, eps: float) -> tuple[Any, Any]:
    """Per row: ``denom = max(norm, eps)``, and ``unclamped = norm >= eps`` (where it is ``norm``)."""
    xp = namespace_of(norm)
    unclamped = norm >= eps
    return xp.where(unclamped, norm, xp.full_like(norm, eps)), unclamped


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def scale_norm_rows(x: Any, g: Any, eps: float, out: Any = None) -> tuple[Any, Any]:
    """Forward on rows ``x`` of shape ``(rows, N)``: ``y`` and the per-row ``norm`` ``(rows, 1)``.

    ``out``, if given, is memory ``y`` may be written into.
    """
    xp = namespace_of(x)
    xw = widen(x)
    norm = row_norm(xw, (1,))
    denom, _ = clamp(norm, eps)
    y = mul_(xw, g / denom, out=out)  # y = g * x / denom: one number per row multiplies x
    return xp.astype(y, x.dtype, copy=False), norm


def scale_norm_backward_rows(dy: Any, x: Any, g: Any, denom: Any, unclamped: Any, out: Any = None) -> tuple[Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx`` and these rows' share of ``dg``."""
    xp = namespace_of(x)
    dy = widen(dy)
    u = widen(x) / denom  # the unit direction of each row (not unit where clamped)
    along = u.shape[1] * row_mean_of_product(xp, dy, u, (1,))  # sum(dy * u), per row
    dg = xp.sum(along)  # every row contributes to the one scalar
    # Where the clamp is active the denominator is the constant eps: no projection term.
    along_x = xp.where(unclamped, along, xp.zeros_like(along))
    # dx = (g / denom) * (dy - u * sum(dy * u)), built in u's memory (not needed after).
    dx = mul_(u, along_x, out=u)
    dx = sub_(dy, dx, out=dx)
    dx = mul_(dx, g / denom, out=out)
    return xp.astype(dx, x.dtype, copy=False), dg


class ScaleNormFunction(Function):
    """ScaleNorm with its hand-derived backward.

    Both passes see the input as ``(rows, N)`` and run the formulas above on blocks of
    rows small enough to stay in cache (``for_each_row_block``), as ``RMSNormFunction`` does.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, g: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        x2, gc = as_rows(x, math.prod(normalized_shape)), in_compute_dtype(g, x)
        y2 = xp.empty(x2.shape, dtype=x.dtype)
        norm = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            rows = slice(start, stop)
            y2[rows, ...], norm[rows, ...] = scale_norm_rows(x2[rows, ...], gc, eps, out=y2[rows, ...])

        for_each_row_block(block, x2)
        denom, unclamped = clamp(norm, eps)
        # Saved as the plain formulas have them: per-row statistics keep x's dimensions.
        axes = feature_axes(x.ndim, normalized_shape)
        row_shape = x.shape[: axes[0]] + (1,) * len(axes)
        ctx.save_for_backward(x, g, xp.reshape(denom, row_shape), xp.reshape(unclamped, row_shape), axes)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, g, denom, unclamped, axes = ctx.saved_tensors
        xp = namespace_of(x)
        n = math.prod(x.shape[axes[0] :])
        x2, dy2, gc = as_rows(x, n), as_rows(dy, n), in_compute_dtype(g, x)
        denom2, unclamped2 = as_rows(denom, 1), as_rows(unclamped, 1)
        dx2 = xp.empty(x2.shape, dtype=x2.dtype)

        def block(start: int, stop: int) -> Any:
            rows = slice(start, stop)
            dx2[rows, ...], dg = scale_norm_backward_rows(
                dy2[rows, ...], x2[rows, ...], gc, denom2[rows, ...], unclamped2[rows, ...], out=dx2[rows, ...]
            )
            return dg

        partials = for_each_row_block(block, x2)
        dg = sum(partials) if partials else xp.zeros((), dtype=gc.dtype)
        return xp.reshape(dx2, x.shape), xp.astype(dg, g.dtype)


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
