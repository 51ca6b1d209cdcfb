r"""RMSNorm followed by a learnable tanh: the seed document's fourth extension,
"a learnable activation after the norm".

Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    rstd = 1 / sqrt(mean(x**2) + eps)
    n    = x * rstd                  (RMSNorm without a weight of its own)
    y    = weight * tanh(alpha * n)

The RMSNorm inside has no weight: ``weight`` after the tanh is the only scale. A
weight inside as well would only be confounded with ``alpha`` (for a scalar alpha,
``alpha * (w * n)`` is ``(alpha * w) * n``), two parameters for one degree of freedom.

Learnable parameters:

* ``alpha``, init 1.0: the slope of the tanh, i.e. how much of the normalized range
  stays in tanh's linear part (small alpha: nearly linear, ``y ~ weight * alpha * n``;
  large alpha: a soft clip to ``+-weight``). Its shape is chosen by ``alpha_shape``:

  - ``"scalar"`` (default): shape ``()``, one slope for all features. The seed wrote
    ``alpha = ones(1)``, PyTorch's habit for a learnable scalar; but shape ``(1,)``
    reads like a per-feature vector of length one and only works by broadcasting,
    a silent trap when it meets a real ``(N,)`` shape (PyG issue 4030). A 0-d array
    says "one number" and its gradient is simply the sum over everything.
  - ``"per_dim"``: shape ``normalized_shape``, one slope per feature.

* ``weight`` (with ``elementwise_affine=True``, the default), shape ``normalized_shape``,
  init ones: the per-dimension scale after the tanh (the seed had none, so its output
  was stuck inside ``(-1, 1)``).

Backward (derivation: ``docs/norms/rmsnorm_tanh.md``), with ``u = tanh(alpha * n)``:

    dweight = sum over rows of dy * u
    t       = (1 - u**2) * dy * weight       (the gradient reaching alpha * n)
    dalpha  = sum of n * t                   (over everything, or over rows for per_dim)
    dn      = alpha * t
    dx      = rstd * (dn - n * mean(dn * n)) (RMSNorm's backward with g = dn)

Saved for backward: ``x``, ``alpha``, ``weight`` and the per-row ``rstd``; ``n`` and
``u`` are recomputed (saving ``u`` would spare one tanh at the cost of a full-size array).
Both passes run on cache-sized blocks of rows, as RMSNorm's do, and ``dx`` is RMSNorm's
own formula (``rmsnorm.rms_norm_dx``).

Relative: DyT (``dyt.py``, Zhu et al. 2025) keeps ``weight * tanh(alpha * x) + bias``
and drops the normalization altogether; this layer keeps both.
"""

from __future__ import annotations

import math
from typing import Any

from ..autograd import Context, Function
from ..backend import compute_dtype
from ..nn.module import Parameter
from ..ops import namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, tensor
from ._shared import (
    NormModule,
    as_rows,
    as_shape,
    as_vector,
    check_eps,
    check_input,
    check_param,
    column_sums,
    feature_axes,
    for_each_row_block,
    in_compute_dtype,
    mul_,
    rms_rstd,
    sum_partials,
    tanh_,
    widen,
)
from ._shared import rms_norm_dx

__all__ = ["RMSNormTanh"]

ALPHA_SHAPES = ("scalar", "per_dim")


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def rms_norm_tanh_rows(x: Any, alpha: Any, weight: Any, eps: float, out: Any = None) -> tuple[Any, Any]:
    """Forward on rows ``x`` of shape ``(rows, N)``: ``y`` and the per-row ``rstd`` ``(rows, 1)``.

    ``alpha`` is ``()`` or ``(N,)``; ``out``, if given, is memory ``y`` may be written into.
    """
    xp = namespace_of(x)
    xw = widen(x)
    rstd = rms_rstd(xw, (1,), eps)
    n = mul_(xw, rstd, out=out)  # n = x * rstd
    y = mul_(n, alpha, out=n)
    y = tanh_(y, out=y)  # tanh(alpha * n)
    if weight is not None:
        y = mul_(y, weight, out=y)
    return xp.astype(y, x.dtype, copy=False), rstd


def rms_norm_tanh_backward_rows(
    dy: Any, x: Any, alpha: Any, weight: Any, rstd: Any, out: Any = None
) -> tuple[Any, Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx`` and these rows' shares of ``dalpha`` and ``dweight``.

    Both shares are sums over the rows, shape ``(N,)``: the caller adds up the blocks'
    and, for a ``()`` alpha, sums that over the features too.
    """
    xp = namespace_of(x)
    dy = widen(dy)
    n = widen(x) * rstd  # recomputed: cheaper than storing it
    u = mul_(n, alpha, out=out)
    u = tanh_(u, out=u)  # tanh(alpha * n); dx's memory is free until the end
    dweight = column_sums(xp, dy * u) if weight is not None else None
    # Back through the weight and the tanh: t is the gradient of the tanh's argument, alpha * n.
    t = 1 - mul_(u, u, out=u)  # tanh' = 1 - u**2
    t = mul_(t, dy, out=t)
    if weight is not None:
        t = mul_(t, weight, out=t)  # t = (1 - u**2) * dy * weight
    dalpha = column_sums(xp, n * t)
    dn = mul_(t, alpha, out=t)
    # RMSNorm's backward with g = dn: rstd * (dn - n * mean(dn * n)).
    dx = rms_norm_dx(dn, n, rstd, out=out)
    return xp.astype(dx, x.dtype, copy=False), dalpha, dweight


def _per_feature(param: Any, features: int, x: Any) -> Any:
    """A ``()`` or ``normalized_shape`` parameter as the rows see it: ``()`` or ``(features,)``,
    in the compute dtype (``in_compute_dtype``)."""
    param = in_compute_dtype(param, x)
    return param if param is None or param.ndim == 0 else as_vector(param, features)


class RMSNormTanhFunction(Function):
    """``weight * tanh(alpha * rms_norm(x))`` with its hand-derived backward.

    Both passes see the input as ``(rows, N)`` and run the formulas above on blocks of
    rows small enough to stay in cache (``for_each_row_block``), as ``RMSNormFunction`` does.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, alpha: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        features = math.prod(normalized_shape)
        x2, a, w = as_rows(x, features), _per_feature(alpha, features, x), _per_feature(weight, features, x)
        y2 = xp.empty(x2.shape, dtype=x.dtype)
        rstd = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            rows = slice(start, stop)
            y2[rows, ...], rstd[rows, ...] = rms_norm_tanh_rows(x2[rows, ...], a, w, eps, out=y2[rows, ...])

        for_each_row_block(block, x2)
        axes = feature_axes(x.ndim, normalized_shape)
        rstd = xp.reshape(rstd, x.shape[: axes[0]] + (1,) * len(axes))  # keeps x's dimensions
        ctx.save_for_backward(x, alpha, weight, rstd, axes)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, alpha, weight, rstd, axes = ctx.saved_tensors
        xp = namespace_of(x)
        features = math.prod(x.shape[axes[0] :])
        x2, dy2, rstd2 = as_rows(x, features), as_rows(dy, features), as_rows(rstd, 1)
        a, w = _per_feature(alpha, features, x), _per_feature(weight, features, x)
        dx2 = xp.empty(x2.shape, dtype=x2.dtype)

        def block(start: int, stop: int) -> tuple[Any, Any]:
            rows = slice(start, stop)
            dx2[rows, ...], dalpha, dweight = rms_norm_tanh_backward_rows(
                dy2[rows, ...], x2[rows, ...], a, w, rstd2[rows, ...], out=dx2[rows, ...]
            )
            return dalpha, dweight

        partials = for_each_row_block(block, x2)
        dalpha = sum_partials([p[0] for p in partials], features, x2)  # per feature: the sum over rows of n * t
        if alpha.ndim == 0:
            dalpha = xp.sum(dalpha)  # one slope for every feature: the sum over the features too
        dalpha = xp.reshape(xp.astype(dalpha, alpha.dtype), alpha.shape)
        dweight = None
        if weight is not None:
            dweight = sum_partials([p[1] for p in partials], features, x2)
            dweight = xp.reshape(xp.astype(dweight, weight.dtype), weight.shape)
        return xp.reshape(dx2, x.shape), dalpha, dweight


def rms_norm_tanh_reference(
    x: Tensor, normalized_shape: tuple[int, ...], alpha: Tensor, weight: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    n = x / ((x * x).mean(axis=axes, keepdims=True) + eps).sqrt()
    y = (alpha * n).tanh()
    return y * weight if weight is not None else y


def _check_alpha(alpha: Any, normalized_shape: tuple[int, ...]) -> None:
    """``alpha`` is one number (shape ``()``) or one per feature (``normalized_shape``)."""
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha: expected a tn.Tensor of shape () or {normalized_shape}, got {type(alpha).__name__}")
    if alpha.shape in ((), normalized_shape):
        return
    hint = ""
    if alpha.size == 1:
        hint = ". For one slope shared by every feature use a 0-d tensor, shape (), not the seed's (1,)"
    raise ValueError(f"alpha: expected shape () or {normalized_shape}, got {alpha.shape}{hint}")


def rms_norm_tanh(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    alpha: Tensor,
    weight: Tensor | None = None,
    eps: float = 1e-6,
    impl: str = "explicit",
) -> Tensor:
    """Functional form: ``weight * tanh(alpha * rms_norm(x, normalized_shape))``.

    Parameters
    ----------
    x
        Input whose trailing shape is ``normalized_shape``.
    normalized_shape
        The trailing axes normalized together.
    alpha
        The tanh's slope: shape ``()`` (one for all features) or ``normalized_shape``.
    weight
        Per-dimension scale after the tanh, shape ``normalized_shape``, or ``None``.
    eps
        Added to the mean square inside the square root.
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (composed from primitive ops).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("rms_norm_tanh", x, normalized_shape)
    _check_alpha(alpha, normalized_shape)
    check_param("weight", weight, normalized_shape)
    eps = check_eps(eps)
    if impl == "autograd":
        return rms_norm_tanh_reference(x, normalized_shape, alpha, weight, eps)
    return RMSNormTanhFunction.apply(x, alpha, weight, normalized_shape=normalized_shape, eps=eps)


class RMSNormTanh(NormModule):
    """``tn.nn.RMSNormTanh(normalized_shape, eps=1e-6, alpha_shape="scalar", elementwise_affine=True)``.

    ``y = weight * tanh(alpha * rms_norm(x))``; ``alpha`` (init 1.0) has shape ``()`` or,
    with ``alpha_shape="per_dim"``, ``normalized_shape``; ``weight`` (ones) has shape
    ``normalized_shape``. No PyTorch counterpart; formulas in the module docstring.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-6,
        alpha_shape: str = "scalar",
        elementwise_affine: bool = True,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        if alpha_shape not in ALPHA_SHAPES:
            raise ValueError(f"alpha_shape: expected one of {ALPHA_SHAPES}, got {alpha_shape!r}")
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.alpha_shape = alpha_shape
        self.alpha = Parameter(tensor(1.0) if alpha_shape == "scalar" else ones(*self.normalized_shape))
        self.weight = Parameter(ones(*self.normalized_shape)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm_tanh(x, self.normalized_shape, self.alpha, self.weight, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        affine = self.weight is not None
        return f"{self.normalized_shape}, eps={self.eps}, alpha_shape={self.alpha_shape!r}, elementwise_affine={affine}"


register_norm(
    NormSpec(
        name="rmsnorm_tanh",
        title="RMSNorm with a learnable tanh",
        summary="RMSNorm (no weight) followed by weight * tanh(alpha * .), alpha scalar or per-dimension",
        module=RMSNormTanh,
        functional=rms_norm_tanh,
        params=(
            ParamSpec("alpha", "() or normalized_shape", "1.0", "the tanh's slope: how hard normalized values clip"),
            ParamSpec("weight", "normalized_shape", "ones", "the per-dimension scale after the tanh"),
        ),
        doc="docs/norms/rmsnorm_tanh.md",
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            "3d": Case({"normalized_shape": (3, 4), "alpha_shape": "per_dim"}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            "smallest": Case({"normalized_shape": 1, "alpha_shape": "per_dim"}, (3, 1)),
        },
        family="seed",
    )
)
