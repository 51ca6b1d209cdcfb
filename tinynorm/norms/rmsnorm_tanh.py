r"""RMSNorm followed by a learnable tanh: the fourth of the learnable RMSNorm extensions
in ``docs/index.md``, "a learnable activation after the norm".

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

  - ``"scalar"`` (default): shape ``()``, one slope for all features. The note that
    proposed this layer wrote ``alpha = ones(1)``, PyTorch's habit for a learnable
    scalar; but shape ``(1,)`` reads like a per-feature vector of length one and only
    works by broadcasting, a silent trap when it meets a real ``(N,)`` shape (PyG issue
    4030). A 0-d array says "one number" and its gradient is simply the sum over everything.
  - ``"per_dim"``: shape ``normalized_shape``, one slope per feature.

* ``weight`` (with ``elementwise_affine=True``, the default), shape ``normalized_shape``,
  init ones: the per-dimension scale after the tanh (the note had none, so its output
  was stuck inside ``(-1, 1)``).

Backward (derivation: ``docs/norms/rmsnorm_tanh.md``), with ``u = tanh(alpha * n)``:

    dweight = sum over rows of dy * u
    t       = (1 - u**2) * dy * weight       (the gradient reaching alpha * n)
    dalpha  = sum of n * t                   (over everything, or over rows for per_dim)
    dn      = alpha * t
    dx      = rstd * (dn - n * mean(dn * n)) (RMSNorm's backward with g = dn)

Saved for backward: ``x``, ``alpha``, ``weight`` and the per-row ``rstd``; ``n`` and
``u`` are recomputed (saving ``u`` would spare one tanh at the cost of a full-size array).
``dx`` is RMSNorm's own formula (``rmsnorm.rms_norm_dx``).

Numerics (``tinynorm/stats.py``): as RMSNorm's (float16 widened to float32; rows whose
mean square overflows rescued by ``x / max|x|``). Parameters are used in the input's
compute dtype; their gradients come back in their own.

Speed: ``rms_norm_tanh_forward`` and ``rms_norm_tanh_backward`` below are the plain
formulas and the source of truth; on NumPy a faster kernel with the same results runs
instead (``tinynorm/kernels/``; ``docs/performance.md``).

Relative: DyT (``dyt.py``, Zhu et al. 2025) keeps ``weight * tanh(alpha * x) + bias``
and drops the normalization altogether; this layer keeps both.
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
from ..tensor import Tensor, ones, tensor
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
    param_grad,
)
from .rmsnorm import rms_norm_dx

__all__ = ["RMSNormTanh"]

ALPHA_SHAPES = ("scalar", "per_dim")


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def rms_norm_tanh_forward(x: Any, alpha: Any, weight: Any, eps: float) -> tuple[Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``rstd`` ``(rows, 1)`` it saves; ``alpha`` is ``()`` or ``(N,)``."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    rstd = rms_rstd(xw, eps)
    n = xw * rstd  # RMSNorm without a weight of its own
    y = xp.tanh(alpha * n)
    y = y if weight is None else y * weight
    return xp.astype(y, x.dtype), rstd


def rms_norm_tanh_backward(dy: Any, x: Any, alpha: Any, weight: Any, rstd: Any) -> tuple[Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dalpha`` (``alpha``'s shape) and ``dweight`` ``(N,)`` (``None`` without a weight)."""
    xp = namespace_of(x)
    dy = widen(dy)
    n = widen(x) * rstd  # recomputed from the saved statistic
    u = xp.tanh(alpha * n)
    dweight = None if weight is None else xp.sum(dy * u, axis=0)
    # Back through the weight and the tanh: t is the gradient reaching alpha * n.
    t = (1 - u * u) * (dy if weight is None else dy * weight)
    dalpha = xp.sum(n * t, axis=0)  # one slope per feature: summed over the rows ...
    dalpha = xp.sum(dalpha) if alpha.ndim == 0 else dalpha  # ... one for all: over the features too
    dx = rms_norm_dx(alpha * t, n, rstd)  # RMSNorm's backward with g = dn = alpha * t
    return xp.astype(dx, x.dtype), dalpha, dweight


def _per_feature(param: Any, features: int, x: Any) -> Any:
    """A ``()`` or ``normalized_shape`` parameter as the rows see it: ``()`` or ``(features,)``,
    in the compute dtype (``in_compute_dtype``)."""
    param = in_compute_dtype(param, x)
    return param if param is None or param.ndim == 0 else as_vector(param, features)


class RMSNormTanhFunction(Function):
    """``weight * tanh(alpha * rms_norm(x))`` with its hand-derived backward, on rows ``(rows, N)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, alpha: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        features = math.prod(normalized_shape)
        x2, a, w = as_rows(x, features), _per_feature(alpha, features, x), _per_feature(weight, features, x)
        forward, _ = kernels.pick("rms_norm_tanh", x2, a, w) or (rms_norm_tanh_forward, rms_norm_tanh_backward)
        y2, rstd = forward(x2, a, w, eps)
        ctx.save_for_backward(x, alpha, weight, rstd)
        ctx.features = features
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any]:
        x, alpha, weight, rstd = ctx.saved_tensors
        features = ctx.features
        x2, dy2 = as_rows(x, features), as_rows(dy, features)
        a, w = _per_feature(alpha, features, x), _per_feature(weight, features, x)
        _, backward = kernels.pick("rms_norm_tanh", x2, a, w) or (rms_norm_tanh_forward, rms_norm_tanh_backward)
        dx2, dalpha, dweight = backward(dy2, x2, a, w, rstd)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dalpha, alpha), param_grad(dweight, weight)


def rms_norm_tanh_reference(
    x: Tensor, normalized_shape: tuple[int, ...], alpha: Tensor, weight: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    n = x / ((x * x).mean(axis=axes, keepdims=True) + eps).sqrt()
    y = (alpha * n).tanh()
    return y * weight if weight is not None else y


def _check_alpha(alpha: Any, normalized_shape: tuple[int, ...], x: Tensor) -> None:
    """``alpha`` is one number (shape ``()``) or one per feature (``normalized_shape``)."""
    if not isinstance(alpha, Tensor):
        raise TypeError(f"alpha: expected a tn.Tensor of shape () or {normalized_shape}, got {type(alpha).__name__}")
    if alpha.shape not in ((), normalized_shape):
        hint = ". For one slope shared by every feature use a 0-d tensor, shape (), not (1,)" if alpha.size == 1 else ""
        raise ValueError(f"alpha: expected shape () or {normalized_shape}, got {alpha.shape}{hint}")
    check_param("alpha", alpha, alpha.shape, x)  # a floating dtype, on x's backend


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
    _check_alpha(alpha, normalized_shape, x)
    check_param("weight", weight, normalized_shape, x)
    eps = eps_for(check_eps(eps), x)
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
            "large": Case({"normalized_shape": 257}, (601, 257)),
        },
        family="rmsnorm_extensions",
    )
)
