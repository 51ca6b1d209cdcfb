r"""SeeDNorm, Self-Rescaled Dynamic Normalization (Cai, Zhu, Liu & Min 2025, arXiv 2510.22777,
ICLR 2026): RMSNorm whose per-dimension scale depends on the row it scales.

RMSNorm divides each row by its root mean square, so it forgets how large the row was, and
its scale ``weight`` is the same for every row. SeeDNorm adds a second scale, ``alpha``, gated
by one number per row computed from the row itself: its dot product with a learnable vector
``beta``, squashed by tanh. That number keeps some of the row's norm (``x . beta`` grows with
``x``) and lets the scale differ from row to row. Per row ``x`` of ``N`` features (the last
``len(normalized_shape)`` axes, flattened):

    rstd  = 1 / sqrt(mean(x**2) + eps)     (RMSNorm's statistic; eps inside the sqrt)
    xhat  = x * rstd
    t     = tanh(x . beta)                 (one number per row: beta projects x to a scalar)
    scale = alpha * t + weight             (N values, different for every row)
    y     = scale * xhat

The paper writes ``SeeDNorm(x) = [sigma(x . beta^T) . alpha + gamma] * x / RMS(x)`` with
``RMS(x) = sqrt(mean(x**2) + eps)``, ``sigma = tanh``, and ``alpha``, ``beta``, ``gamma`` of
shape ``(1, D)``. Names here: ``gamma`` is ``weight`` (the role RMSNorm's ``weight`` has in
PyTorch); ``alpha`` and ``beta`` keep the paper's names, as no PyTorch layer has them.
Sources: the paper's abstract page gives its title, authors and arXiv id; the formula, shapes
and inits are as two summaries of the paper and two public PyTorch implementations give them,
all in agreement. The paper's method section itself, and so its equation number, could not be
read here: none is cited (``docs/norms/seednorm.md`` says what was checked against what).

Learnable parameters, each of shape ``normalized_shape``:

* ``weight`` (the paper's gamma), init ones: the static scale, as in RMSNorm;
* ``alpha``, init ``alpha_init`` (1.0, the paper's choice for language models; 0.1 and 10 are
  reported worse): how far the input-dependent part moves the scale, per dimension;
* ``beta``, init zeros: the projection ``x . beta`` that decides, per row, how much of
  ``alpha`` is added. At init ``t = tanh(0) = 0``: SeeDNorm starts as exactly RMSNorm with
  ``weight``, and ``dalpha = 0`` until ``beta`` has moved (see the notebook).

With ``alpha = 0`` (or ``beta = 0``) it is RMSNorm with weight ``weight``; with ``weight = 0``
the scale is ``alpha * tanh(x . beta)`` alone.

Backward (derivation: ``docs/norms/seednorm.md``). ``y`` depends on ``x`` through ``xhat`` (as
in RMSNorm) and through ``t``: the scale depends on the input, so ``dx`` has a second term.
With ``g = dy * scale`` (the gradient reaching ``xhat``):

    dweight = sum over rows of dy * xhat
    dalpha  = sum over rows of t * dy * xhat
    ds      = (1 - t**2) * sum(dy * alpha * xhat)  (per row: the gradient reaching s = x . beta)
    dbeta   = sum over rows of ds * x
    dx      = rstd * (g - xhat * mean(g * xhat))   (RMSNorm's dx, rmsnorm.rms_norm_dx)
              + ds * beta                          (the path through t)

Saved for backward: ``x``, and per row ``rstd`` and ``t`` (``(rows, 1)`` each); ``xhat`` is
recomputed.

Numerics (``tinynorm/stats.py``): float16 input is computed in float32; ``rstd`` comes from
``rms_rstd``, which rescues rows whose mean square overflows. ``x . beta`` is a plain dot
product: in float32 it overflows only for rows near ``3e38 / (N * max|beta|)``, beyond the
1e-30..1e30 rows the tests cover; an overflow to +-inf still gives ``t = +-1``, but products
overflowing with both signs would sum to NaN (not rescued, unlike ``rstd``). For
``|x . beta| > ~9`` (float32) or ``~19`` (float64) ``t`` is exactly +-1 and ``ds = 0``.

Not implemented, from the paper: the multi-head form (``x`` and ``beta`` split into ``n``
slices, one ``tanh`` per slice; the paper uses it for vision models, where it reports one head
does not converge), AdaSeeDNorm for DiT's AdaLN, and the vision-only extras (dropout on the
dynamic term, dividing ``alpha * beta`` by the dimension). The paper also applies weight decay
to ``alpha`` and ``beta``: an optimizer setting, not part of the layer.
"""

from __future__ import annotations

import math
from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype, rms_rstd, row_sum_of_product, widen
from ..tensor import Tensor, ones, zeros
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
    feature_axes,
    param_grad,
)
from .rmsnorm import rms_norm_dx

__all__ = ["SeeDNorm"]


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def seed_norm_forward(x: Any, alpha: Any, beta: Any, weight: Any, eps: float) -> tuple[Any, Any, Any]:
    """``y`` ``(rows, N)`` and what it saves: the per-row ``rstd`` and ``t``, ``(rows, 1)`` each."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    rstd = rms_rstd(xw, eps)  # 1 / sqrt(mean(x**2) + eps)
    t = xp.tanh(row_sum_of_product(xw, beta))  # tanh(x . beta): one number per row
    scale = alpha * t + weight  # (rows, N): each row gets its own per-dimension scale
    return xp.astype(scale * (xw * rstd), x.dtype), rstd, t


def seed_norm_backward(
    dy: Any, x: Any, alpha: Any, beta: Any, weight: Any, rstd: Any, t: Any
) -> tuple[Any, Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dalpha``, ``dbeta`` and ``dweight`` ``(N,)``."""
    xp = namespace_of(x)
    dy, xw = widen(dy), widen(x)
    xhat = xw * rstd  # recomputed from the saved statistic
    dy_xhat = dy * xhat
    dweight = xp.sum(dy_xhat, axis=0)
    dalpha = xp.sum(t * dy_xhat, axis=0)  # alpha's share of the scale is t, row by row
    # The scale's second path: dL/dt = sum(dy * alpha * xhat), then through the tanh.
    ds = (1 - t * t) * row_sum_of_product(dy_xhat, alpha)  # (rows, 1): the gradient reaching x . beta
    dbeta = xp.sum(ds * xw, axis=0)
    dx = rms_norm_dx(dy * (alpha * t + weight), xhat, rstd) + ds * beta  # via xhat, then via t
    return xp.astype(dx, x.dtype), dalpha, dbeta, dweight


class SeeDNormFunction(Function):
    """SeeDNorm with its hand-derived backward, on rows ``(rows, N)``."""

    @staticmethod
    def forward(
        ctx: Context, x: Any, alpha: Any, beta: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float
    ) -> Any:
        n = math.prod(normalized_shape)
        x2 = as_rows(x, n)
        a, b, w = (in_compute_dtype(as_vector(p, n), x) for p in (alpha, beta, weight))
        forward, _ = kernels.pick("seed_norm", x2, a, b, w) or (seed_norm_forward, seed_norm_backward)
        y2, rstd, t = forward(x2, a, b, w, eps)
        ctx.save_for_backward(x, alpha, beta, weight, rstd, t)
        ctx.n = n
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, Any]:
        x, alpha, beta, weight, rstd, t = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        a, b, w = (in_compute_dtype(as_vector(p, ctx.n), x) for p in (alpha, beta, weight))
        _, backward = kernels.pick("seed_norm", x2, a, b, w) or (seed_norm_forward, seed_norm_backward)
        dx2, dalpha, dbeta, dweight = backward(dy2, x2, a, b, w, rstd, t)
        grads = (param_grad(dalpha, alpha), param_grad(dbeta, beta), param_grad(dweight, weight))
        return (namespace_of(x).reshape(dx2, x.shape), *grads)


def seed_norm_reference(
    x: Tensor, normalized_shape: tuple[int, ...], alpha: Tensor, beta: Tensor, weight: Tensor, eps: float = 1e-6
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    axes = feature_axes(x.ndim, normalized_shape)
    xhat = x / ((x * x).mean(axis=axes, keepdims=True) + eps).sqrt()
    t = (x * beta).sum(axis=axes, keepdims=True).tanh()
    return (alpha * t + weight) * xhat


def seed_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    alpha: Tensor,
    beta: Tensor,
    weight: Tensor,
    eps: float = 1e-6,
    impl: str = "explicit",
) -> Tensor:
    """Functional SeeDNorm: ``(alpha * tanh(x . beta) + weight) * x / sqrt(mean(x**2) + eps)``.

    Parameters
    ----------
    x
        Input whose trailing shape is ``normalized_shape``.
    normalized_shape
        The trailing axes normalized together (and projected by ``beta``).
    alpha, beta, weight
        Tensors of shape ``normalized_shape``: the paper's alpha, beta and gamma. All three
        are required (the layer is defined with all three).
    eps
        Added to the mean square inside the square root.
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (composed from primitive ops).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("seed_norm", x, normalized_shape)
    for name, param in (("alpha", alpha), ("beta", beta), ("weight", weight)):
        if param is None:
            raise TypeError(f"seed_norm: {name} must be a tn.Tensor of shape {normalized_shape}, got None")
        check_param(name, param, normalized_shape, x)
    eps = eps_for(check_eps(eps), x)
    if impl == "autograd":
        return seed_norm_reference(x, normalized_shape, alpha, beta, weight, eps)
    return SeeDNormFunction.apply(x, alpha, beta, weight, normalized_shape=normalized_shape, eps=eps)


class SeeDNorm(NormModule):
    """``tn.nn.SeeDNorm(normalized_shape, eps=1e-6, alpha_init=1.0)``.

    ``y = (alpha * tanh(x . beta) + weight) * x / sqrt(mean(x**2) + eps)``, over the last
    ``len(normalized_shape)`` axes. ``weight`` (ones; the paper's gamma), ``alpha``
    (``alpha_init``) and ``beta`` (zeros) all have shape ``normalized_shape``; at init the
    layer is RMSNorm. PyTorch has no SeeDNorm; ``eps`` defaults to 1e-6 as tinynorm's RMSNorm.
    Formulas in the module docstring, derivation in ``docs/norms/seednorm.md``.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-6,
        alpha_init: float = 1.0,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.alpha = Parameter(ones(*self.normalized_shape) * check_real("alpha_init", alpha_init))
        self.beta = Parameter(zeros(*self.normalized_shape))
        self.weight = Parameter(ones(*self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return seed_norm(x, self.normalized_shape, self.alpha, self.beta, self.weight, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


register_norm(
    NormSpec(
        name="seednorm",
        title="SeeDNorm (self-rescaled dynamic normalization)",
        summary="RMSNorm whose per-dimension scale is weight + alpha * tanh(x . beta): it depends on the row",
        module=SeeDNorm,
        functional=seed_norm,
        params=(
            ParamSpec("alpha", "normalized_shape", "alpha_init (1.0)", "the input-dependent part of the scale"),
            ParamSpec("beta", "normalized_shape", "zeros", "projects each row to the scalar x . beta that gates alpha"),
            ParamSpec("weight", "normalized_shape", "ones", "the static per-dimension scale (the paper's gamma)"),
        ),
        doc="docs/norms/seednorm.md",
        cases=row_cases(),
    )
)
