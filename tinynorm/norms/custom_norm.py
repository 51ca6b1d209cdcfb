r"""DynamicRangeNorm: the seed document's third extension, "a custom normalization with
learnable parameters, e.g. a parameter that controls the dynamic range", made precise.

The seed sketched a LayerNorm (``(x - mean) / sqrt(var + eps) * gamma + beta``) and left
the "dynamic range" parameter undefined. Here it is defined two ways, both learnable:

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
    gain  = rstd**p = (var + eps)**(-p/2)           (the per-row gain)
    y     = (x - mean) * gain * weight + bias

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

Backward (derivation: ``docs/norms/custom_norm.md``), with ``g = dy * weight``,
``xhat = (x - mean) * rstd`` (LayerNorm's normalized input), ``yhat = (x - mean) * gain``
and the per-row ``proj = sum(g * xhat)``:

    dx       = gain * (g - mean(g) - (p / D) * xhat * proj)
    dweight  = sum over rows of dy * yhat
    dbias    = sum over rows of dy
    dp       = sum over rows of log(rstd) * sum(g * yhat)
    deps     = sum over rows of -(p / 2) * gain * rstd * proj
    deps_raw = sigmoid(eps_raw) * deps

With ``p = 1`` and ``D = N`` the first line is LayerNorm's backward.

Saved for backward: ``x``, the per-row ``mean`` and ``rstd``, and the value of ``p``
(``eps`` is inside ``rstd``); ``xhat`` and ``yhat`` are recomputed.

Numerics: float16 input is normalized in float32; the variance is two-pass; rows
whose statistics overflow are recomputed from ``x / max|x|`` (``_shared.centered_mean_rstd``);
softplus and sigmoid are evaluated in forms that never overflow.

Speed: as LayerNorm's, the formulas below run on blocks of rows small enough to stay in
cache (on both cores for big inputs), writing into memory already allocated where the backend allows it
(``_shared.for_each_row_block``, ``mul_``); ``p`` and ``eps`` enter as Python floats, so
they never promote float32 input to float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd import Context, Function
from ..backend import compute_dtype
from ..nn.module import Parameter
from ..ops import namespace_of
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..tensor import Tensor, ones, tensor, zeros
from ._shared import (
    NormModule,
    add_,
    as_rows,
    as_shape,
    as_vector,
    centered_mean_rstd,
    check_eps,
    check_input,
    check_param,
    column_sums,
    feature_axes,
    for_each_row_block,
    mul_,
    normalize_rows,
    row_mean,
    row_mean_of_product,
    sub_,
    sum_partials,
    widen,
)

__all__ = ["DynamicRangeNorm"]

EPS_MIN = 1e-8


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


# ---- the formulas, on a block of rows ``(rows, N)`` ------------------------------------------
def dynamic_range_norm_rows(
    x: Any, weight: Any, bias: Any, p: float, eps: float, correction: int, out: Any = None
) -> tuple[Any, Any, Any]:
    """Forward on rows ``x`` of shape ``(rows, N)``: ``y`` and the per-row ``mean`` and ``rstd``.

    LayerNorm's forward (``layer_norm_rows``) with the gain ``rstd**p`` in place of ``rstd``.
    ``out``, if given, is memory ``y`` may be written into (the caller's output block).
    """
    xp = namespace_of(x)
    mean, rstd, centered = centered_mean_rstd(widen(x), (1,), eps, correction)  # centered: a new array
    y = normalize_rows(centered, rstd**p, weight, bias, out=out)  # (x - mean) * gain * weight + bias
    return xp.astype(y, x.dtype, copy=False), mean, rstd


def dynamic_range_norm_backward_rows(
    dy: Any, x: Any, weight: Any, mean: Any, rstd: Any, p: float, divisor: int, with_bias: bool, out: Any = None
) -> tuple[Any, Any, Any, Any]:
    """Backward on rows ``(rows, N)``: ``dx``, these rows' shares of ``dweight`` and ``dbias``,
    and the per-row ``proj = sum(g * xhat)``, from which the caller builds ``dp`` and ``deps``.

    ``divisor`` is the variance's ``D``; ``out``, if given, is memory ``dx`` may be written into.
    """
    xp = namespace_of(x)
    dy = widen(dy)
    gain = rstd**p
    xhat = widen(x) - mean  # recomputed: cheaper than storing it
    xhat = mul_(xhat, rstd, out=xhat)  # LayerNorm's normalized input, O(1) even for huge rows
    g = dy * weight if weight is not None else dy
    # dweight sums dy * yhat, yhat = xhat * (gain / rstd): a per-row factor, so a weighted column sum.
    dweight = column_sums(xp, dy * xhat, gain / rstd) if weight is not None else None
    dbias = column_sums(xp, dy) if with_bias else None
    proj = row_mean_of_product(xp, g, xhat, (1,)) * x.shape[1]  # sum(g * xhat)
    # The direct path and the path through the mean give gain * (g - mean(g)); the path through
    # the variance is weighted by p and uses the variance's divisor D:
    #   dx = gain * (g - mean(g) - (p / D) * xhat * proj),  built in xhat's memory (not needed after).
    dx = mul_(xhat, (p / divisor) * proj, out=xhat)
    dx = add_(dx, row_mean(xp, g, (1,)), out=dx)
    dx = sub_(g, dx, out=dx)
    dx = mul_(dx, gain, out=out)
    return xp.astype(dx, x.dtype, copy=False), dweight, dbias, proj


class DynamicRangeNormFunction(Function):
    """DynamicRangeNorm with its hand-derived backward.

    Inputs ``p`` and ``eps_raw`` are 0-d arrays when learnable, ``None`` when fixed (their
    values then come as the keyword arguments ``fixed_p`` and ``fixed_eps``). Both passes
    see the input as ``(rows, N)`` and run the formulas above on blocks of rows, as
    LayerNorm does (``for_each_row_block``).
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
        xp = namespace_of(x)
        # The two scalars as Python floats: they then take the dtype of x in arithmetic.
        p_value = fixed_p if p is None else float(p)
        eps = fixed_eps if eps_raw is None else eps_min + float(softplus(xp, eps_raw))
        n = math.prod(normalized_shape)
        x2, w, b = as_rows(x, n), as_vector(weight, n), as_vector(bias, n)
        y2 = xp.empty(x2.shape, dtype=x.dtype)
        mean = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))
        rstd = xp.empty((x2.shape[0], 1), dtype=compute_dtype(x.dtype, xp))

        def block(start: int, stop: int) -> None:
            rows = slice(start, stop)
            y2[rows, ...], mean[rows, ...], rstd[rows, ...] = dynamic_range_norm_rows(
                x2[rows, ...], w, b, p_value, eps, correction, out=y2[rows, ...]
            )

        for_each_row_block(block, x2)
        params = (weight, None if bias is None else bias.dtype, p, eps_raw)
        ctx.save_for_backward(x, params, mean, rstd, p_value, normalized_shape, correction)
        return xp.reshape(y2, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any, Any, Any, Any]:
        x, (weight, bias_dtype, p, eps_raw), mean, rstd, p_value, normalized_shape, correction = ctx.saved_tensors
        xp = namespace_of(x)
        n = math.prod(normalized_shape)
        x2, dy2, w = as_rows(x, n), as_rows(dy, n), as_vector(weight, n)
        dx2 = xp.empty(x2.shape, dtype=x2.dtype)
        proj = xp.empty(mean.shape, dtype=mean.dtype)

        def block(start: int, stop: int) -> tuple[Any, Any]:
            rows = slice(start, stop)
            dx2[rows, ...], dweight, dbias, proj[rows, ...] = dynamic_range_norm_backward_rows(
                dy2[rows, ...],
                x2[rows, ...],
                w,
                mean[rows, ...],
                rstd[rows, ...],
                p_value,
                n - correction,  # D: N, or N - 1 when unbiased
                bias_dtype is not None,
                out=dx2[rows, ...],
            )
            return dweight, dbias

        partials = for_each_row_block(block, x2)
        dweight = dbias = dp = deps_raw = None
        if weight is not None:
            dweight = sum_partials([q[0] for q in partials], n, x2)
            dweight = xp.reshape(xp.astype(dweight, weight.dtype), normalized_shape)
        if bias_dtype is not None:
            dbias = xp.reshape(xp.astype(sum_partials([q[1] for q in partials], n, x2), bias_dtype), normalized_shape)
        gain = rstd**p_value
        if p is not None:
            # d gain / d p = gain * log(rstd); every row contributes to the one scalar.
            # sum(g * yhat) = proj * gain / rstd, as yhat = xhat * gain / rstd.
            dp = xp.astype(xp.sum(xp.log(rstd) * (proj * gain / rstd)), p.dtype)
        if eps_raw is not None:
            # d gain / d eps = -(p/2) * gain / (var + eps) = -(p/2) * gain * rstd**2, and
            # sum(g * centered) * rstd**2 = proj * rstd.
            deps = xp.sum(-(p_value / 2) * gain * rstd * proj)
            deps_raw = xp.astype(sigmoid(xp, eps_raw) * deps, eps_raw.dtype)
        return xp.reshape(dx2, x.shape), dweight, dbias, dp, deps_raw


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


def _check_strength(p: Any) -> None:
    if isinstance(p, Tensor):
        check_param("p", p, ())
    elif isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(
            f"p: expected a number in [0, 1] (1 = full normalization, 0 = centering only) or a 0-d tn.Tensor, got {p!r}"
        )


def _check_eps_min(eps_min: float) -> float:
    if not eps_min > 0:
        raise ValueError(f"eps_min: expected a positive floor (it keeps a learnable eps above 0), got {eps_min}")
    return float(eps_min)


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
        Divide the variance by ``N - 1`` (``torch.var``'s default, the seed's ``x.var(1)``)
        instead of ``N`` (LayerNorm's). Needs ``N >= 2``.
    impl
        ``"explicit"`` (hand-derived backward) or ``"autograd"`` (primitive ops).
    """
    normalized_shape = as_shape(normalized_shape)
    check_input("dynamic_range_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    check_param("bias", bias, normalized_shape)
    _check_strength(p)
    correction = _check_divisor(normalized_shape, unbiased)
    if eps_raw is not None and eps is not None:
        raise ValueError("eps, eps_raw: give a fixed eps or a learnable eps_raw, not both")
    if eps_raw is not None:
        check_param("eps_raw", eps_raw, ())
        eps_min = _check_eps_min(eps_min)
    else:
        eps = check_eps(1e-5 if eps is None else eps)
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
    The name is the seed document's: both parameters control how much of each row's
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
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            # The seed's x.var(1) is unbiased: one case exercises that divisor.
            "3d": Case({"normalized_shape": (3, 4), "unbiased": True}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            # N = 1 is defined for the (default) biased variance: the output is the bias.
            "smallest": Case({"normalized_shape": 1}, (3, 1)),
        },
        family="seed",
        perturb=_perturb,
    )
)
