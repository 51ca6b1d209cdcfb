r"""Filter Response Normalization with a Thresholded Linear Unit (Singh & Krishnan, CVPR 2020).

Input ``(N, C, *)``, seen as ``(N, C, L)`` with ``L = prod(*)`` (1 for ``(N, C)``, where
``nu2 = x**2`` and ``y`` is about ``weight * sign(x)``). Per sample and per channel, over
the ``L`` positions, with no centering:

    nu2  = mean(x**2)                      (per sample, per channel)
    rstd = 1 / sqrt(nu2 + eps)             (eps = eps_min + |eps_learned| when learnable)
    xhat = x * rstd
    z    = weight * xhat + bias            (weight, bias per channel)
    y    = max(z, tau)                     (the TLU, tau per channel)

Learnable parameters, each of shape ``(C,)``: ``weight`` (ones), ``bias`` (zeros), ``tau``
(zeros, the learned threshold of the TLU). With ``learnable_eps=True`` also ``eps_learned``,
shape ``()``, init ``1e-4``: the epsilon becomes ``eps + |eps_learned|``, the fixed ``eps``
a floor it never goes below. The paper learns the epsilon for layers whose maps are 1x1
(``L = 1``: there ``xhat = x / sqrt(x**2 + eps)`` is a soft ``sign(x)`` whose softness
``eps`` sets). The form ``eps + |eps_learned|`` and the init ``1e-4`` are those of
TensorFlow Addons' ``FilterResponseNormalization(learned_epsilon=True)``.

Backward (derivation: ``docs/norms/frn.md``), with ``on = z > tau``:

    dz      = dy where on, else 0;   dtau = sum over N and L of dy where not on
    g       = dz * weight
    dx      = rstd * (g - xhat * mean(g * xhat))     (RMSNorm's dx over the L positions)
    dweight = sum over N and L of dz * xhat;  dbias = sum over N and L of dz
    deps    = sum over N, C and L of -g * xhat * rstd**2 / 2      (d rstd / d eps = -rstd**3 / 2)
    deps_learned = sign(eps_learned) * deps

The tie ``z == tau`` follows tinynorm's ``relu``: ``max(z, tau) = tau + relu(z - tau)``
and ``relu``'s gradient at 0 is 0, so there the whole gradient goes to ``tau``.

Saved for backward: ``x`` and the per-channel ``rstd`` ``(N * C, 1)``.
"""

from __future__ import annotations

from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..ops import relu
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..stats import in_compute_dtype, rms_rstd, widen
from ..tensor import Tensor, ones, tensor, zeros
from ._shared import (
    NormModule,
    as_ncl,
    channel_shape,
    check_eps,
    check_input,
    check_param,
    check_positive_int,
    eps_for,
    param_grad,
    per_channel,
    scalar_value,
)
from .rmsnorm import rms_norm_dx

__all__ = ["FilterResponseNorm"]

EPS_LEARNED_INIT = 1e-4  # the learnable part of the epsilon starts here (TensorFlow Addons' choice)


# ---- the lesson: forward and backward on ``(N, C, L)`` --------------------------------------
def frn_forward(x: Any, weight: Any, bias: Any, tau: Any, eps: float) -> tuple[Any, Any]:
    """``y`` ``(N, C, L)`` and the per-channel ``rstd`` ``(N * C, 1)`` it saves."""
    xp = namespace_of(x)
    xw = widen(x)
    rows = xp.reshape(xw, (x.shape[0] * x.shape[1], x.shape[2]))  # one row per sample and channel
    rstd = rms_rstd(rows, eps)  # 1 / sqrt(mean(x**2) + eps)
    xhat = xp.reshape(rows * rstd, x.shape)
    z = xhat * weight + bias
    return xp.astype(xp.where(z > tau, z, tau * xp.ones_like(z)), x.dtype), rstd


def frn_backward(dy: Any, x: Any, weight: Any, bias: Any, tau: Any, rstd: Any) -> tuple[Any, ...]:
    """``dx`` ``(N, C, L)``, ``dweight``, ``dbias`` and ``dtau`` ``(C,)``, and ``deps`` ``()``."""
    xp = namespace_of(x)
    dy = widen(dy)
    shape = (x.shape[0] * x.shape[1], x.shape[2])
    xhat = xp.reshape(xp.reshape(widen(x), shape) * rstd, x.shape)  # recomputed
    on = (xhat * weight + bias) > tau  # where the TLU passes z; at a tie, tau takes the gradient
    dz = xp.where(on, dy, xp.zeros_like(dy))
    dtau = xp.sum(dy - dz, axis=(0, 2))
    g, xhat_rows = xp.reshape(dz * weight, shape), xp.reshape(xhat, shape)
    dx = rms_norm_dx(g, xhat_rows, rstd)  # RMSNorm's dx, over each row's L positions
    dweight, dbias = xp.sum(dz * xhat, axis=(0, 2)), xp.sum(dz, axis=(0, 2))
    deps = xp.sum(g * xhat_rows * rstd**2) * -0.5  # eps is inside every row's rstd
    return xp.astype(xp.reshape(dx, x.shape), x.dtype), dweight, dbias, dtau, deps


class FRNFunction(Function):
    """FRN + TLU with its hand-derived backward, on the input seen as ``(N, C, L)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, bias: Any, tau: Any, eps_learned: Any, eps: float) -> Any:
        x3 = as_ncl(x)
        w, b, t = (in_compute_dtype(per_channel(p), x) for p in (weight, bias, tau))
        if eps_learned is not None:  # a float, or a 0-d Tensor when a backward is differentiated
            eps = eps + scalar_value(namespace_of(eps_learned).abs(eps_learned))
        forward, _ = kernels.pick("frn", x3, w, b, t) or (frn_forward, frn_backward)
        y3, rstd = forward(x3, w, b, t, eps)
        ctx.save_for_backward(x, weight, bias, tau, eps_learned, rstd)
        return namespace_of(x).reshape(y3, x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, ...]:
        x, weight, bias, tau, eps_learned, rstd = ctx.saved_tensors
        x3, dy3 = as_ncl(x), as_ncl(dy)
        w, b, t = (in_compute_dtype(per_channel(p), x) for p in (weight, bias, tau))
        _, backward = kernels.pick("frn", x3, w, b, t) or (frn_forward, frn_backward)
        dx3, dweight, dbias, dtau, deps = backward(dy3, x3, w, b, t, rstd)
        # eps = eps_min + |eps_learned|: d eps / d eps_learned = sign(eps_learned), as tinynorm's abs.
        deps_learned = None if eps_learned is None else namespace_of(eps_learned).sign(eps_learned) * deps
        grads = (param_grad(dweight, weight), param_grad(dbias, bias), param_grad(dtau, tau))
        return (namespace_of(x).reshape(dx3, x.shape), *grads, param_grad(deps_learned, eps_learned))


def frn_reference(
    x: Tensor, weight: Tensor, bias: Tensor, tau: Tensor, eps: float = 1e-6, eps_learned: Tensor | None = None
) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward.
    ``max(z, tau)`` is written ``tau + relu(z - tau)``: the same tie rule as the explicit one."""
    axes = tuple(range(2, x.ndim))
    nu2 = (x * x).mean(axis=axes, keepdims=True) if axes else x * x
    if eps_learned is not None:
        eps = eps_learned.abs() + eps
    shape = channel_shape(x.shape)
    z = x / (nu2 + eps).sqrt() * weight.reshape(shape) + bias.reshape(shape)
    t = tau.reshape(shape)
    return t + relu(z - t)


def frn(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    tau: Tensor,
    eps: float = 1e-6,
    eps_learned: Tensor | None = None,
    impl: str = "explicit",
) -> Tensor:
    """Functional FRN + TLU: ``max(weight * x / sqrt(mean(x**2) + eps) + bias, tau)``.

    ``x`` has shape ``(N, C, *)``; ``weight``, ``bias`` and ``tau`` shape ``(C,)``;
    ``eps_learned``, shape ``()``, when given, makes the epsilon ``eps + |eps_learned|``.
    PyTorch has no FRN; names follow the paper (``gamma``, ``beta``, ``tau`` there).
    """
    check_input("frn", x)
    if x.ndim < 2:
        raise ValueError(f"frn: expected input of shape (N, C, *) with at least 2 dimensions, got {x.shape}")
    for name, param in (("weight", weight), ("bias", bias), ("tau", tau)):
        if param is None:
            raise TypeError(f"frn: {name} must be a tn.Tensor of shape ({x.shape[1]},), got None")
        check_param(name, param, (x.shape[1],), x)
    check_param("eps_learned", eps_learned, (), x)
    eps = eps_for(check_eps(eps), x)
    if impl == "autograd":
        return frn_reference(x, weight, bias, tau, eps, eps_learned)
    return FRNFunction.apply(x, weight, bias, tau, eps_learned, eps=eps)


class FilterResponseNorm(NormModule):
    """``tn.nn.FilterResponseNorm(num_features, eps=1e-6, learnable_eps=False)``: FRN
    followed by the TLU.

    ``weight`` (ones), ``bias`` (zeros) and ``tau`` (zeros) have shape ``(num_features,)``.
    ``learnable_eps=True`` adds ``eps_learned``, shape ``()``, init ``1e-4``: the epsilon
    is then ``eps + |eps_learned|``.
    """

    def __init__(
        self, num_features: int, eps: float = 1e-6, learnable_eps: bool = False, impl: str = "explicit"
    ) -> None:
        super().__init__(impl)
        self.num_features = check_positive_int("num_features", num_features)
        self.eps = check_eps(eps)
        self.weight = Parameter(ones(self.num_features))
        self.bias = Parameter(zeros(self.num_features))
        self.tau = Parameter(zeros(self.num_features))
        self.eps_learned = Parameter(tensor(EPS_LEARNED_INIT)) if learnable_eps else None

    def forward(self, x: Tensor) -> Tensor:
        check_input("FilterResponseNorm", x)
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"FilterResponseNorm: expected input of shape (N, {self.num_features}, *), got input of shape {x.shape}"
            )
        return frn(x, self.weight, self.bias, self.tau, self.eps, self.eps_learned, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, learnable_eps={self.eps_learned is not None}"


register_norm(
    NormSpec(
        name="frn",
        title="Filter Response Normalization with TLU",
        summary="divide each channel by its root mean square over the positions, scale, shift, then max with tau",
        module=FilterResponseNorm,
        functional=frn,
        params=(
            ParamSpec("weight", "(num_features,)", "ones", "the per-channel scale"),
            ParamSpec("bias", "(num_features,)", "zeros", "the per-channel shift"),
            ParamSpec("tau", "(num_features,)", "zeros", "the per-channel threshold of the TLU"),
            ParamSpec("eps_learned", "()", "1e-4", "with learnable_eps=True: the epsilon is eps + |eps_learned|"),
        ),
        doc="docs/norms/frn.md",
        cases={
            # (N, C) input is where the paper learns the epsilon: the 2-D cases learn it.
            "2d": Case({"num_features": 5, "learnable_eps": True}, (3, 5)),
            "3d": Case({"num_features": 3, "learnable_eps": True}, (2, 3, 4)),
            "batch1": Case({"num_features": 3}, (1, 3, 6)),
            "smallest": Case({"num_features": 1}, (1, 1, 1)),
            "large": Case({"num_features": 32}, (16, 32, 257)),
        },
    )
)
