r"""DynamicRangeNorm: the third of the learnable RMSNorm extensions in ``docs/index.md``,
"a custom normalization with learnable parameters, e.g. a parameter that controls the
dynamic range", made precise.

The proposal sketched a LayerNorm (``(x - mean) / sqrt(var + eps) * gamma + beta``) and
left the "dynamic range" parameter undefined. Here it is defined two ways, both learnable:

* a normalization **strength** ``p``: rows are divided by ``std**p`` instead of ``std``.
  ``p = 1`` is LayerNorm, ``p = 0`` only centres, in between a row keeps part of its
  spread: the output's dynamic range is interpolated between the input's and none;
* a learnable, positive **epsilon** (as Filter Response Normalization learns its
  epsilon, Singh & Krishnan 2019): rows whose variance is far below ``eps`` are no
  longer blown up to unit scale, so ``eps`` sets the smallest spread that gets amplified.

Forward, over the last ``len(normalized_shape)`` axes (``N`` features per row):

    mean  = mean(x)                                 (per row)
    var   = sum((x - mean)**2) / D                  (D = N, biased; D = N - 1 with unbiased=True)
    eps   = eps_min + softplus(eps_raw)             (always > 0; a plain float when fixed)
    rstd  = 1 / sqrt(var + eps)                     (LayerNorm's rstd)
    xhat  = (x - mean) * rstd                       (LayerNorm's output)
    gain  = rstd**p = (var + eps)**(-p/2)           (the per-row gain)
    yhat  = (x - mean) * gain = xhat * rstd**(p - 1)
    y     = yhat * weight + bias

``yhat`` is computed as ``xhat * rstd**(p - 1)``: for a row of 1e30 in float32 and a
``p`` that training moved above 1, ``gain`` itself is below float32's smallest normal
number and would take most of ``yhat``'s digits with it.

Learnable parameters:

* ``weight``, shape ``normalized_shape``, init ones: rescales each feature;
* ``bias``, shape ``normalized_shape``, init zeros: shifts each feature;
* ``eps_raw``, shape ``()``, init ``log(expm1(eps - eps_min))`` so that the epsilon
  starts at ``eps`` (1e-5): the unconstrained value behind the positive epsilon
  (``learnable_eps=False`` makes ``eps`` a plain float instead);
* ``p``, shape ``()``, init 1.0 (full normalization): the strength
  (``learnable_p=False`` makes it a plain float instead).

Why softplus plus a floor: softplus keeps ``eps`` positive whatever value gradient
descent gives ``eps_raw``, and ``eps_min`` (1e-8) keeps it positive in floating
point too: ``softplus(-800)`` underflows to exactly 0 in float64, and a constant row
would then divide by ``0**(p/2)``.

The range of ``p``: a fixed ``p``, and the initial value of a learnable one, must lie in
``[0, 1]``, between centering only and full normalization. Training may move a
learnable ``p`` outside that range; the formula stays finite for every real ``p``
(``var + eps > 0``), it just over-normalizes (``p > 1``) or amplifies spread (``p < 0``).

Backward (derivation: ``docs/norms/custom_norm.md``), with ``g = dy * weight`` and the
per-row ``proj = sum(g * xhat)``:

    dx       = gain * (g - mean(g) - (p / D) * xhat * proj)
    dweight  = sum over rows of dy * yhat
    dbias    = sum over rows of dy
    dp       = sum over rows of log(rstd) * sum(g * yhat)       (sum(g * yhat) = proj * rstd**(p - 1))
    deps     = sum over rows of -(p / 2) * (proj * rstd) * gain
    deps_raw = sigmoid(eps_raw) * deps

With ``p = 1`` and ``D = N`` the first line is LayerNorm's backward. ``proj * rstd`` is
taken before the gain: for a tiny row with a tiny ``eps``, ``rstd`` is huge and
``rstd * gain`` would overflow float32 where ``deps`` does not.

Saved for backward: ``x``, the parameters and the per-row ``mean`` and ``rstd``
(``eps`` is inside ``rstd``); ``xhat`` and ``yhat`` are recomputed.

Numerics (``tinynorm/stats.py``): float16 input is normalized in float32; the variance
is two-pass; rows whose statistics overflow are recomputed from ``x / max|x|``;
softplus and sigmoid are evaluated in forms that never overflow. ``p`` and ``eps`` enter
the formulas as Python floats, and the parameters in the input's compute dtype, so
float32 input is computed in float32; the gradients come back in the parameters' dtype.

Speed: ``dynamic_range_norm_forward`` and ``dynamic_range_norm_backward`` below are the
plain formulas and the source of truth; on NumPy a faster kernel with the same results
runs instead (``tinynorm/kernels/``; ``docs/performance.md``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import Case, NormSpec, ParamSpec, register_norm, row_cases
from ..stats import in_compute_dtype, mean_rstd, widen
from ..tensor import Tensor, ones, tensor, zeros
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
    scalar_value,
)

__all__ = ["DynamicRangeNorm"]

EPS_MIN = 1e-8


# ---- the lesson: forward and backward on rows ``(rows, N)`` ----------------------------------
def dynamic_range_norm_forward(
    x: Any, weight: Any, bias: Any, p: float, eps: float, correction: int
) -> tuple[Any, Any, Any]:
    """``y`` ``(rows, N)`` and the per-row ``mean`` and ``rstd`` ``(rows, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)  # float16 -> float32 for the statistics
    mean, rstd = mean_rstd(xw, eps, correction)  # LayerNorm's (correction=1: the unbiased variance)
    xhat = (xw - mean) * rstd
    yhat = xhat * rstd ** (p - 1)  # = (x - mean) * rstd**p
    y = yhat if weight is None else yhat * weight
    y = y if bias is None else y + bias
    return xp.astype(y, x.dtype), mean, rstd


def dynamic_range_norm_backward(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, p: float, correction: int, with_bias: bool
) -> tuple[Any, Any, Any, Any, Any]:
    """``dx`` ``(rows, N)``, ``dweight`` and ``dbias`` ``(N,)`` (``None`` where there is none),
    and ``dp`` and ``deps`` (shape ``()``), the gradients of the strength and of the epsilon."""
    xp = namespace_of(x)
    dy = widen(dy)
    xhat = (widen(x) - mean) * rstd  # recomputed from the saved statistics
    gain, to_yhat = rstd**p, rstd ** (p - 1)  # yhat = xhat * to_yhat
    g = dy if weight is None else dy * weight  # the gradient reaching yhat
    proj = xp.sum(g * xhat, axis=-1, keepdims=True)
    # The direct path and the path through the mean give gain * (g - mean(g)); the path
    # through the variance is weighted by p, with the variance's divisor D = N - correction.
    divisor = x.shape[1] - correction
    dx = gain * (g - xp.mean(g, axis=-1, keepdims=True) - (p / divisor) * xhat * proj)
    dweight = None if weight is None else xp.sum(dy * xhat * to_yhat, axis=0)
    dbias = xp.sum(dy, axis=0) if with_bias else None
    dp = xp.sum(xp.log(rstd) * (proj * to_yhat))  # d gain / d p = gain * log(rstd)
    deps = xp.sum(-(p / 2) * (proj * rstd) * gain)  # d gain / d eps = -(p/2) * gain * rstd**2
    return xp.astype(dx, x.dtype), dweight, dbias, dp, deps


# ---- the two scalar maps behind the learnable epsilon ----------------------------------
def softplus(xp: Any, r: Any) -> Any:
    """``log(1 + exp(r))`` as ``max(r, 0) + log1p(exp(-|r|))``: ``exp`` only ever sees
    a value <= 0, so it cannot overflow, and ``log1p`` keeps the digits of tiny results."""
    return xp.maximum(r, 0.0) + xp.log1p(xp.exp(-xp.abs(r)))


def sigmoid(xp: Any, r: Any) -> Any:
    """The derivative of softplus, ``1 / (1 + exp(-r))``, as ``exp(r - softplus(r))``:
    the exponent ``r - softplus(r) = -softplus(-r)`` is never positive, so no overflow."""
    return xp.exp(r - softplus(xp, r))


def eps_raw_for(eps: float, eps_min: float = EPS_MIN) -> float:
    """The ``eps_raw`` that gives epsilon ``eps``: the inverse of ``eps_min + softplus``."""
    return math.log(math.expm1(eps - eps_min))


class DynamicRangeNormFunction(Function):
    """DynamicRangeNorm with its hand-derived backward, on the input seen as rows ``(rows, N)``.

    Inputs ``p`` and ``eps_raw`` are 0-d arrays when learnable, ``None`` when fixed (their
    values then come as the keyword arguments ``fixed_p`` and ``fixed_eps``).
    """

    @staticmethod
    def forward(
        ctx: Context,
        x: Any,
        weight: Any,
        bias: Any,
        p: Any,
        eps_raw: Any,
        normalized_shape: tuple[int, ...],
        fixed_p: float | None,
        fixed_eps: float | None,
        eps_min: float,
        correction: int,
    ) -> Any:
        # The two scalars as Python floats: they then take the dtype of x in arithmetic. Run again on
        # Tensors (create_graph), they stay Tensors, so that the gradient's dependence on them is kept.
        p_value = fixed_p if p is None else scalar_value(p)
        eps = fixed_eps if eps_raw is None else eps_min + scalar_value(softplus(namespace_of(eps_raw), eps_raw))
        n = math.prod(normalized_shape)
        x2 = as_rows(x, n)
        w, b = (in_compute_dtype(as_vector(q, n), x) for q in (weight, bias))
        lesson = (dynamic_range_norm_forward, dynamic_range_norm_backward)
        forward, _ = kernels.pick("dynamic_range_norm", x2, w, b) or lesson
        y2, mean, rstd = forward(x2, w, b, p_value, eps, correction)
        ctx.save_for_backward(x, weight, bias, p, eps_raw, mean, rstd)
        ctx.n, ctx.p, ctx.correction = n, p_value, correction
        return namespace_of(x).reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, Any, Any]:
        x, weight, bias, p, eps_raw, mean, rstd = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.n), as_rows(dy, ctx.n)
        w = in_compute_dtype(as_vector(weight, ctx.n), x)
        lesson = (dynamic_range_norm_forward, dynamic_range_norm_backward)
        _, backward = kernels.pick("dynamic_range_norm", x2, w) or lesson
        dx2, dweight, dbias, dp, deps = backward(dy2, x2, w, mean, rstd, ctx.p, ctx.correction, bias is not None)
        # eps = eps_min + softplus(eps_raw): d eps / d eps_raw = sigmoid(eps_raw).
        deps_raw = None if eps_raw is None else sigmoid(namespace_of(eps_raw), eps_raw) * deps
        grads = (param_grad(dweight, weight), param_grad(dbias, bias), param_grad(dp, p), param_grad(deps_raw, eps_raw))
        return (namespace_of(x).reshape(dx2, x.shape), *grads)


def dynamic_range_norm_reference(
    x: Tensor,
    normalized_shape: tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    p: Tensor | float = 1.0,
    eps: float | None = 1e-5,
    eps_raw: Tensor | None = None,
    eps_min: float = EPS_MIN,
    correction: int = 0,
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward.

    ``softplus`` is written plainly as ``log(1 + exp(eps_raw))``: fine while ``eps_raw``
    stays moderate (it overflows above ~709 in float64, where the explicit path does not).
    """
    axes = feature_axes(x.ndim, normalized_shape)
    n = math.prod(normalized_shape)
    centered = x - x.mean(axis=axes, keepdims=True)
    var = (centered * centered).sum(axis=axes, keepdims=True) / (n - correction)
    if eps_raw is not None:
        eps = eps_min + (1 + eps_raw.exp()).log()
    y = centered * (var + eps) ** (p * -0.5)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _check_strength(p: Any, x: Tensor | None = None) -> None:
    """``p``: a 0-d Tensor (learnable, checked as every parameter) or a number in ``[0, 1]`` (fixed)."""
    if isinstance(p, Tensor):
        check_param("p", p, (), x)
        return
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p: expected a number in [0, 1] or a 0-d tn.Tensor, got {type(p).__name__}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(
            f"p: expected a number in [0, 1] (1 = full normalization, 0 = centering only) or a 0-d tn.Tensor, got {p!r}"
        )


def _check_eps_min(eps_min: Any) -> float:
    eps_min = check_real("eps_min", eps_min)
    if not eps_min > 0:
        raise ValueError(f"eps_min: expected a positive floor (it keeps a learnable eps above 0), got {eps_min}")
    return eps_min


def _check_divisor(normalized_shape: tuple[int, ...], unbiased: bool) -> int:
    """The variance's correction: 0 (divide by N) or 1 (unbiased, divide by N - 1)."""
    if unbiased and math.prod(normalized_shape) == 1:
        raise ValueError(
            f"unbiased: the unbiased variance divides by N - 1 = 0 for normalized_shape {normalized_shape} "
            "(N = 1 feature); use unbiased=False or normalize over N >= 2 features"
        )
    return int(bool(unbiased))


def dynamic_range_norm(
    x: Tensor,
    normalized_shape: int | tuple[int, ...],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    p: Tensor | float = 1.0,
    eps: float | None = None,
    eps_raw: Tensor | None = None,
    eps_min: float = EPS_MIN,
    unbiased: bool = False,
    impl: str = "explicit",
) -> Tensor:
    """Functional DynamicRangeNorm (see the module docstring for the formulas).

    Parameters
    ----------
    x
        Input whose trailing shape is ``normalized_shape``.
    normalized_shape
        The trailing dimensions to normalize over (``N`` is their product).
    weight, bias
        Optional affine parameters of shape ``normalized_shape``.
    p
        Normalization strength: a number in ``[0, 1]`` (fixed) or a 0-d Tensor (learnable).
    eps
        A fixed positive epsilon (1e-5 when neither ``eps`` nor ``eps_raw`` is given).
    eps_raw
        A 0-d Tensor for a learnable epsilon, ``eps = eps_min + softplus(eps_raw)``.
        Give ``eps`` or ``eps_raw``, not both.
    eps_min
        The positive floor under a learnable epsilon.
    unbiased
        Divide the variance by ``N - 1`` (``torch.var``'s default, the proposal's ``x.var(1)``)
        instead of ``N`` (LayerNorm's). Needs ``N >= 2``.
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (primitive ops).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("dynamic_range_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape, x)
    check_param("bias", bias, normalized_shape, x)
    _check_strength(p, x)
    correction = _check_divisor(normalized_shape, unbiased)
    if eps_raw is not None and eps is not None:
        raise ValueError("eps, eps_raw: give a fixed eps or a learnable eps_raw, not both")
    if eps_raw is not None:
        check_param("eps_raw", eps_raw, (), x)
        eps_min = eps_for(_check_eps_min(eps_min), x)  # the floor must survive in the compute dtype
    else:
        eps = eps_for(check_eps(1e-5 if eps is None else eps), x)
    if impl == "autograd":
        return dynamic_range_norm_reference(x, normalized_shape, weight, bias, p, eps, eps_raw, eps_min, correction)
    p_tensor = p if isinstance(p, Tensor) else None
    return DynamicRangeNormFunction.apply(
        x,
        weight,
        bias,
        p_tensor,
        eps_raw,
        normalized_shape=normalized_shape,
        fixed_p=None if p_tensor is not None else float(p),
        fixed_eps=eps,
        eps_min=eps_min,
        correction=correction,
    )


class DynamicRangeNorm(NormModule):
    """``tn.nn.DynamicRangeNorm(normalized_shape, eps=1e-5, p=1.0, unbiased=False,
    learnable_eps=True, learnable_p=True, eps_min=1e-8)``.

    LayerNorm with a learnable normalization strength ``p`` and a learnable positive
    epsilon; see the module docstring for the formulas and ``docs/norms/custom_norm.md``
    for the derivation. ``eps`` and ``p`` are the initial values of the learnable
    parameters, or the fixed values when ``learnable_eps`` / ``learnable_p`` is False.
    The name says what both parameters control: how much of each row's
    dynamic range (its spread) survives the normalization. No PyTorch counterpart.
    """

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        p: float = 1.0,
        unbiased: bool = False,
        learnable_eps: bool = True,
        learnable_p: bool = True,
        eps_min: float = EPS_MIN,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.unbiased = unbiased
        _check_divisor(self.normalized_shape, unbiased)
        _check_strength(p)
        eps = check_eps(eps)
        self.weight = Parameter(ones(*self.normalized_shape))
        self.bias = Parameter(zeros(*self.normalized_shape))
        self.eps_min = _check_eps_min(eps_min)
        if learnable_eps and not eps > self.eps_min:
            raise ValueError(f"eps: a learnable eps must start above eps_min={self.eps_min}, got {eps}")
        self.eps_raw = Parameter(tensor(eps_raw_for(eps, self.eps_min))) if learnable_eps else None
        self.fixed_eps = None if learnable_eps else eps
        self.p = Parameter(tensor(float(p))) if learnable_p else float(p)

    @property
    def eps(self) -> float:
        """The epsilon in use now (``eps_min + softplus(eps_raw)`` when learnable)."""
        if self.eps_raw is None:
            return self.fixed_eps
        return self.eps_min + float(softplus(self.eps_raw.xp, self.eps_raw.data))

    def forward(self, x: Tensor) -> Tensor:
        return dynamic_range_norm(
            x,
            self.normalized_shape,
            self.weight,
            self.bias,
            p=self.p,
            eps=self.fixed_eps,
            eps_raw=self.eps_raw,
            eps_min=self.eps_min,
            unbiased=self.unbiased,
            impl=self.impl,
        )

    def extra_repr(self) -> str:
        p = self.p.item() if isinstance(self.p, Tensor) else self.p
        return (
            f"{self.normalized_shape}, eps={self.eps:.3g} ({'learnable' if self.eps_raw is not None else 'fixed'}), "
            f"p={p:.3g} ({'learnable' if isinstance(self.p, Tensor) else 'fixed'}), unbiased={self.unbiased}"
        )


def _perturb(module: DynamicRangeNorm, rng: np.random.Generator) -> None:
    """Move the parameters to where a gradcheck means something: a tiny eps has a
    gradient of ~0 and p = 1 exactly hides a missing p factor, so p goes into
    (0.3, 0.9) and eps to about 0.1, comparable to the variance of the test input."""
    for p in (module.weight, module.bias):
        p.data = p.xp.astype(p.xp.asarray(p.numpy() + 0.5 * rng.standard_normal(p.shape)), p.dtype)
    if isinstance(module.p, Tensor):
        module.p.data = module.p.xp.asarray(rng.uniform(0.3, 0.9), dtype=module.p.dtype)
    if module.eps_raw is not None:
        raw = eps_raw_for(0.1, module.eps_min) + 0.2 * rng.standard_normal()
        module.eps_raw.data = module.eps_raw.xp.asarray(raw, dtype=module.eps_raw.dtype)


register_norm(
    NormSpec(
        name="custom_norm",
        title="DynamicRangeNorm (learnable strength p and epsilon)",
        summary="LayerNorm whose strength p and positive epsilon are learned: (x - mean) * (var + eps)**(-p/2)",
        module=DynamicRangeNorm,
        functional=dynamic_range_norm,
        params=(
            ParamSpec("weight", "normalized_shape", "ones", "rescales each feature"),
            ParamSpec("bias", "normalized_shape", "zeros", "shifts each feature"),
            ParamSpec("eps_raw", "()", "log(expm1(1e-5 - 1e-8))", "eps = 1e-8 + softplus(eps_raw) > 0"),
            ParamSpec("p", "()", "1.0", "normalization strength: 1 full normalization, 0 centering only"),
        ),
        doc="docs/norms/custom_norm.md",
        # The proposal's x.var(1) is unbiased: one case exercises that divisor. N = 1 ("smallest")
        # is defined for the (default) biased variance: the output is the bias.
        cases={**row_cases(), "3d": Case({"normalized_shape": (3, 4), "unbiased": True}, (2, 3, 4))},
        family="rmsnorm_extensions",
        perturb=_perturb,
    )
)
