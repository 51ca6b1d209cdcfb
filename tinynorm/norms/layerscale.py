r"""LayerScale (Touvron, Cord, Sablayrolles, Synnaeve & Jégou 2021, "Going deeper with
Image Transformers", CaiT).

Not a normalization: nothing is computed from the row, and there is no ``eps``. LayerScale
is a learnable per-channel multiplier put on a residual branch, ``x + LayerScale(f(x))``:

    y = weight * x

Learnable parameter:

* ``weight``, shape ``(dim,)``, init ``init_values`` (``1e-5``): each channel's gain.

Why the init is tiny: with ``weight ~ 1e-5`` every residual block starts as (nearly) the
identity, ``x + 1e-5 * f(x)``, so a deep stack of blocks starts as a shallow network and
each block's contribution grows only as training asks for it. The paper reports that this
is what lets vision transformers train at depths where they otherwise diverge; it chose
``init_values`` by depth (0.1 up to 18 blocks, 1e-5 from 24 on, 1e-6 beyond).

Backward (derivation: ``docs/norms/layerscale.md``):

    dx      = weight * dy
    dweight = sum over rows of dy * x

So ``dx`` is as tiny as ``weight`` at init (the branch ``f`` learns slowly at first), while
``dweight`` does not depend on ``weight`` at all: the gains move at full speed from the
first step. Saved for backward: ``x`` and ``weight``.

Numerics: float16 input is computed in float32; the parameter is used in the input's
compute dtype and its gradient comes back in its own.
"""

from __future__ import annotations

from typing import Any

from .. import kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..stats import in_compute_dtype, widen
from ..tensor import Tensor, ones
from ._shared import NormModule, as_rows, as_shape, as_vector, check_input, check_param, check_real, param_grad

__all__ = ["LayerScale"]


# ---- the lesson: forward and backward on rows ``(rows, dim)`` --------------------------------
def layer_scale_forward(x: Any, weight: Any) -> Any:
    """``y`` ``(rows, dim)``."""
    return namespace_of(x).astype(widen(x) * weight, x.dtype)  # float16 -> float32


def layer_scale_backward(dy: Any, x: Any, weight: Any) -> tuple[Any, Any]:
    """``dx`` ``(rows, dim)`` and ``dweight`` ``(dim,)``."""
    xp = namespace_of(x)
    dy, xw = widen(dy), widen(x)
    dx = weight * dy
    dweight = xp.sum(dy * xw, axis=0)  # weight multiplies that channel in every row
    return xp.astype(dx, x.dtype), dweight


class LayerScaleFunction(Function):
    """LayerScale with its hand-derived backward, on the input seen as rows ``(rows, dim)``."""

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, dim: int) -> Any:
        x2, w = as_rows(x, dim), in_compute_dtype(as_vector(weight, dim), x)
        forward, _ = kernels.pick("layerscale", x2, w) or (layer_scale_forward, layer_scale_backward)
        ctx.save_for_backward(x, weight)
        ctx.dim = dim
        return namespace_of(x).reshape(forward(x2, w), x.shape)

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight = ctx.saved_tensors
        x2, dy2 = as_rows(x, ctx.dim), as_rows(dy, ctx.dim)
        w = in_compute_dtype(as_vector(weight, ctx.dim), x)
        _, backward = kernels.pick("layerscale", x2, w) or (layer_scale_forward, layer_scale_backward)
        dx2, dweight = backward(dy2, x2, w)
        return namespace_of(x).reshape(dx2, x.shape), param_grad(dweight, weight)


def layer_scale_reference(x: Tensor, weight: Tensor) -> Tensor:
    """The same forward composed from primitive ops; autograd derives its backward."""
    return x * weight


def layer_scale(x: Tensor, weight: Tensor, impl: str = "explicit") -> Tensor:
    """Functional LayerScale: ``weight * x``, ``weight`` of shape ``(dim,)`` and ``dim`` the
    last dimension of ``x``."""
    if not isinstance(weight, Tensor) or weight.ndim != 1:
        shape = getattr(weight, "shape", type(weight).__name__)
        raise TypeError(f"weight: expected a 1-d tn.Tensor of shape (dim,), got {shape}")
    dim = weight.shape[0]
    check_input("layer_scale", x, (dim,))
    check_param("weight", weight, (dim,), x)
    if impl == "autograd":
        return layer_scale_reference(x, weight)
    return LayerScaleFunction.apply(x, weight, dim=dim)


class LayerScale(NormModule):
    """``tn.nn.LayerScale(dim, init_values=1e-5)``: ``weight * x`` over the last dimension.

    ``weight`` (shape ``(dim,)``, init ``init_values``); see the module docstring for the
    gradient and for why the init is tiny. Not a norm: it normalizes nothing, it scales a
    residual branch. PyTorch has no LayerScale; the names follow the paper's code (timm's
    ``LayerScale`` calls the parameter ``gamma``; tinynorm calls it ``weight``, as its norms do).
    """

    def __init__(self, dim: int, init_values: float = 1e-5, impl: str = "explicit") -> None:
        super().__init__(impl)
        (self.dim,) = as_shape(dim, name="dim")  # one positive int
        self.weight = Parameter(ones(self.dim) * check_real("init_values", init_values))

    def forward(self, x: Tensor) -> Tensor:
        return layer_scale(x, self.weight, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.dim}"


register_norm(
    NormSpec(
        name="layerscale",
        title="LayerScale",
        summary="not a norm: weight * x, a per-channel residual-branch gain, tiny at init (block starts near identity)",
        module=LayerScale,
        functional=layer_scale,
        params=(ParamSpec("weight", "(dim,)", "init_values (1e-5)", "each channel's gain on the residual branch"),),
        doc="docs/norms/layerscale.md",
        cases={
            "2d": Case({"dim": 5}, (3, 5)),
            "3d": Case({"dim": 4}, (2, 3, 4)),
            "batch1": Case({"dim": 6}, (1, 6)),
            "smallest": Case({"dim": 1}, (3, 1)),
            "large": Case({"dim": 257}, (601, 257)),
        },
    )
)
