r"""The weight-side norms: a linear layer whose weight is normalized, not its input.

Both layers compute ``y = x @ W.T + bias`` for input ``x`` of shape ``(*, in_features)``
(Linear's own matmul and bias, ``tinynorm.nn.layers.linear``), with ``W`` of shape
``(out_features, in_features)`` computed at every forward from the learnable parameters
below. Each output row of ``W`` (the weights feeding one output feature) is normalized on
its own. One derivation page for both: ``docs/norms/weight_side.md``.

**Weight normalization** (Salimans & Kingma 2016, "Weight Normalization: A Simple
Reparameterization to Accelerate Training of Deep Neural Networks", arXiv 1602.07868),
``tn.nn.WeightNormLinear``, as PyTorch's ``torch.nn.utils.parametrizations.weight_norm``
of a ``torch.nn.Linear`` with ``dim=0``:

    norm = sqrt(sum(v**2))        (per output row of v, over in_features)
    u    = v / norm               (the row's direction)
    W    = g * u                  (g: the row's length)

* ``g``, shape ``(out_features,)``, init ``||v||`` of each row: the length of each output
  row of ``W``. Differs from PyTorch: torch's ``g`` (``parametrizations.weight.original0``)
  has shape ``(out_features, 1)``; tinynorm's is a vector, and a column is refused;
* ``v``, shape ``(out_features, in_features)``, init ``tn.nn.Linear``'s (uniform in
  ``[-1/sqrt(in), 1/sqrt(in)]``): the direction of each row (its own length drops out);
* ``bias``, shape ``(out_features,)``, init ``tn.nn.Linear``'s.

With ``g = ||v||`` at init, ``W`` equals ``v``: the layer starts as the plain Linear drawn
from the same generator state. No ``eps``, as in PyTorch: a zero row of ``v`` has no
direction, and its row of ``W`` is NaN.

Backward, with ``dW`` the gradient the matmul sends to ``W`` (derivation in the page):

    dg = sum(dW * u)                       (per row)
    dv = (g / norm) * (dW - u * dg)        (dW's part orthogonal to the row, scaled)

``dv`` is ScaleNorm's and the hypersphere norm's tangent projection (``scalenorm.sphere_dx``,
``docs/norms/scalenorm.md``), one row at a time: the length of a row of ``W`` is ``g``'s
alone, so ``v`` receives only the tangential part, and each row of ``dv`` is orthogonal to
that row of ``v``.

**Weight Standardization** (Qiao, Wang, Liu, Shen & Yuille 2019, "Micro-Batch Training
with Batch-Channel Normalization and Weight Standardization", arXiv 1903.10520),
``tn.nn.WSLinear``: each output row of ``weight`` centred and divided by its standard
deviation, i.e. LayerNorm without weight and bias, applied to the rows of ``weight``:

    mean = mean(weight)                    (per output row)
    var  = mean((weight - mean)**2)        (biased, as LayerNorm)
    W    = (weight - mean) / sqrt(var + eps)

* ``weight``, shape ``(out_features, in_features)``, and ``bias``, shape ``(out_features,)``,
  both with ``tn.nn.Linear``'s init; ``eps`` 1e-5.

Differs from the paper's code, which divides by the unbiased standard deviation plus eps
(``(w - mean) / (std(w) + eps)``, eps outside the square root): tinynorm uses LayerNorm's
rows (biased variance, eps inside), so a row of ``W`` is exactly ``layer_norm(row)``.

Backward: LayerNorm's ``dx`` (``docs/norms/layernorm.md``) of each row, with ``g = dW``:

    dweight = rstd * (dW - mean(dW) - W * mean(dW * W))     (per row)

Saved for backward: ``g``, ``v`` and the per-row ``norm``; ``weight`` and the per-row
``mean`` and ``rstd``. ``u`` and ``W`` are recomputed.

Numerics: ``W`` is computed in the input's compute dtype (float32 for float16 input; a
float64 parameter does not turn float32 input into float64 work) and used in the input's
dtype; gradients come back in each parameter's own dtype. The row norm (``row_norm``) and
the row statistics (``mean_rstd``) are right for rows of ``v`` or ``weight`` from 1e-30
to 1e30 (``tinynorm/stats.py``).
"""

from __future__ import annotations

from typing import Any

from .. import backend, kernels
from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.layers import Linear, check_linear_input, linear
from ..nn.module import Parameter
from ..ops import cast
from ..registry import Case, NormSpec, ParamSpec, register_norm
from ..stats import row_norm, row_sum_of_product
from ..tensor import Tensor
from ._shared import NormModule, check_eps, check_impl, check_param, check_positive_int, eps_for, param_grad
from .layernorm import layer_norm_backward, layer_norm_forward, layer_norm_reference
from .scalenorm import sphere_dx

__all__ = ["WSLinear", "WeightNormLinear"]


# ---- the lessons: the weight ``(out, in)`` from its parameters, and back ---------------------
def weight_norm_forward(g: Any, v: Any) -> tuple[Any, Any]:
    """``W`` ``(out, in)`` and the per-row ``norm`` ``(out, 1)`` it saves (``g`` and ``v`` come
    in the compute dtype: the Function casts them)."""
    xp = namespace_of(v)
    norm = row_norm(v)  # sqrt(sum(v**2)) per row, safe from underflow and overflow
    weight = xp.reshape(g, (g.shape[0], 1)) * (v / norm)
    return weight, norm


def weight_norm_backward(dweight: Any, g: Any, v: Any, norm: Any) -> tuple[Any, Any]:
    """``dg`` ``(out,)`` and ``dv`` ``(out, in)`` from ``dweight``, the gradient reaching ``W``."""
    xp = namespace_of(v)
    u = v / norm  # recomputed from the saved norm
    dg = xp.reshape(row_sum_of_product(dweight, u), (g.shape[0],))  # dW's component along each row
    # W = g * u: the gradient reaching u is g * dW, and u = v / ||v|| is ScaleNorm's and the
    # hypersphere norm's direction, so dv is their tangent projection (no clamp here: every
    # row with a finite norm projects; the others are NaN anyway).
    du = xp.reshape(g, (g.shape[0], 1)) * dweight
    dv = sphere_dx(du, u, norm, xp.isfinite(norm))
    return dg, dv


def weight_std_forward(weight: Any, eps: float) -> tuple[Any, Any, Any]:
    """``W`` ``(out, in)`` and the per-row ``mean`` and ``rstd`` ``(out, 1)`` it saves:
    LayerNorm, without weight or bias, of each output row of ``weight``."""
    return layer_norm_forward(weight, None, None, eps)


def weight_std_backward(dweight_hat: Any, weight: Any, mean: Any, rstd: Any) -> Any:
    """``dweight`` ``(out, in)`` from ``dweight_hat``, the gradient reaching ``W``: LayerNorm's
    ``dx`` of each row, with ``g = dweight_hat`` (there is no LayerNorm weight to multiply)."""
    dweight, _, _ = layer_norm_backward(dweight_hat, weight, None, mean, rstd, with_bias=False)
    return dweight


def _in_compute_dtype(dtype: Any, *arrays: Any) -> list[Any]:
    """The arrays in the dtype an input of ``dtype`` is computed in (float32 for float16)."""
    xp = namespace_of(arrays[0])
    return [xp.astype(a, backend.compute_dtype(dtype, xp), copy=False) for a in arrays]


class WeightNormFunction(Function):
    """``W = g * v / ||v||`` with its hand-derived backward, returned in ``dtype`` (the input's)."""

    @staticmethod
    def forward(ctx: Context, g: Any, v: Any, dtype: Any) -> Any:
        gc, vc = _in_compute_dtype(dtype, g, v)
        forward, _ = kernels.pick("weight_norm", vc, gc) or (weight_norm_forward, weight_norm_backward)
        weight, norm = forward(gc, vc)
        ctx.save_for_backward(g, v, norm)
        ctx.dtype = dtype
        return namespace_of(v).astype(weight, dtype)

    @staticmethod
    def backward(ctx: Context, dweight: Any) -> tuple[Any, Any]:
        g, v, norm = ctx.saved_tensors
        dweight, gc, vc = _in_compute_dtype(ctx.dtype, dweight, g, v)
        _, backward = kernels.pick("weight_norm", vc, gc) or (weight_norm_forward, weight_norm_backward)
        dg, dv = backward(dweight, gc, vc, norm)
        return param_grad(dg, g), param_grad(dv, v)


class WeightStdFunction(Function):
    """``W`` = LayerNorm of each row of ``weight``, with its hand-derived backward, in ``dtype``."""

    @staticmethod
    def forward(ctx: Context, weight: Any, eps: float, dtype: Any) -> Any:
        (wc,) = _in_compute_dtype(dtype, weight)
        forward, _ = kernels.pick("weight_std", wc) or (weight_std_forward, weight_std_backward)
        weight_hat, mean, rstd = forward(wc, eps)
        ctx.save_for_backward(weight, mean, rstd)
        ctx.dtype = dtype
        return namespace_of(weight).astype(weight_hat, dtype)

    @staticmethod
    def backward(ctx: Context, dweight_hat: Any) -> Any:
        weight, mean, rstd = ctx.saved_tensors
        dweight_hat, wc = _in_compute_dtype(ctx.dtype, dweight_hat, weight)
        _, backward = kernels.pick("weight_std", wc) or (weight_std_forward, weight_std_backward)
        return param_grad(backward(dweight_hat, wc, mean, rstd), weight)


# ---- the autograd references: the same weights from primitive ops ---------------------------
def _to(t: Tensor | None, dtype: Any) -> Tensor | None:
    """``t`` cast to ``dtype`` (differentiably), or ``t`` itself where it already is."""
    return t if t is None or t.dtype == dtype else cast(t, dtype)


def weight_norm_reference(g: Tensor, v: Tensor, dtype: Any) -> Tensor:
    """``W = g * v / ||v||`` composed from primitive ops; autograd derives its backward."""
    compute = backend.compute_dtype(dtype, v.xp)
    g, v = _to(g, compute), _to(v, compute)
    weight = g.reshape(g.shape[0], 1) * v / (v * v).sum(axis=-1, keepdims=True).sqrt()
    return _to(weight, dtype)


def weight_std_reference(weight: Tensor, eps: float, dtype: Any) -> Tensor:
    """LayerNorm's reference applied to the rows of ``weight``; autograd derives its backward."""
    w = _to(weight, backend.compute_dtype(dtype, weight.xp))
    return _to(layer_norm_reference(w, (w.shape[1],), eps=eps), dtype)


# ---- the functional forms ---------------------------------------------------------------------
def _check_matrix(name: str, param: Any) -> tuple[int, int]:
    """``param`` is a 2-D Tensor ``(out_features, in_features)``; its shape."""
    if not isinstance(param, Tensor) or param.ndim != 2:
        shape = getattr(param, "shape", type(param).__name__)
        raise TypeError(f"{name}: expected a 2-d tn.Tensor of shape (out_features, in_features), got {shape}")
    return param.shape


def _check_vector(name: str, param: Any, out_features: int, x: Tensor, required: bool) -> None:
    """A per-output-row vector ``(out_features,)``; torch's ``(out_features, 1)`` column is named."""
    if param is None and required:
        raise TypeError(f"{name}: expected a tn.Tensor of shape ({out_features},), got None")
    if isinstance(param, Tensor) and param.shape == (out_features, 1):
        raise ValueError(
            f"{name}: expected shape ({out_features},), got {param.shape}. PyTorch's weight_norm keeps g as an "
            f"(out_features, 1) column; tinynorm's {name} has one value per output row, as a vector: "
            f"pass {name}.reshape({out_features})"
        )
    check_param(name, param, (out_features,), x)


def weight_norm_linear(x: Tensor, g: Tensor, v: Tensor, bias: Tensor | None = None, impl: str = "explicit") -> Tensor:
    """Functional WeightNormLinear: ``x @ (g * v / ||v||).T + bias``, each row of ``v`` normalized.

    ``g`` ``(out_features,)`` (torch's is ``(out_features, 1)``), ``v`` ``(out_features,
    in_features)``, ``bias`` ``(out_features,)`` or None; ``x`` ``(*, in_features)``.
    """
    out_features, in_features = _check_matrix("v", v)
    check_linear_input("weight_norm_linear", x, in_features)
    check_param("v", v, (out_features, in_features), x)
    _check_vector("g", g, out_features, x, required=True)
    _check_vector("bias", bias, out_features, x, required=False)
    if check_impl(impl) == "autograd":
        weight = weight_norm_reference(g, v, x.dtype)
    else:
        weight = WeightNormFunction.apply(g, v, dtype=x.dtype)
    return linear(x, weight, _to(bias, x.dtype))


def ws_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, eps: float = 1e-5, impl: str = "explicit"
) -> Tensor:
    """Functional WSLinear: ``x @ W.T + bias`` with ``W`` each row of ``weight`` standardized
    (biased variance, ``eps`` inside the square root). ``weight`` ``(out_features,
    in_features)``, ``bias`` ``(out_features,)`` or None; ``x`` ``(*, in_features)``."""
    out_features, in_features = _check_matrix("weight", weight)
    check_linear_input("ws_linear", x, in_features)
    check_param("weight", weight, (out_features, in_features), x)
    _check_vector("bias", bias, out_features, x, required=False)
    eps = eps_for(check_eps(eps), x)
    if check_impl(impl) == "autograd":
        weight_hat = weight_std_reference(weight, eps, x.dtype)
    else:
        weight_hat = WeightStdFunction.apply(weight, eps=eps, dtype=x.dtype)
    return linear(x, weight_hat, _to(bias, x.dtype))


# ---- the modules ------------------------------------------------------------------------------
class WeightNormLinear(NormModule):
    """``tn.nn.WeightNormLinear(in_features, out_features, bias=True)``: a Linear whose weight
    is ``W = g * v / ||v||`` per output row (``docs/norms/weight_side.md``).

    ``g`` ``(out_features,)``, init ``||v||`` per row; ``v`` ``(out_features, in_features)`` and
    ``bias`` ``(out_features,)``, init ``tn.nn.Linear``'s, so ``W`` equals the plain Linear's
    weight at init. PyTorch spells it ``weight_norm(torch.nn.Linear(...), dim=0)``, with
    ``g`` of shape ``(out_features, 1)`` and the computed ``W`` as ``layer.weight``; here
    ``W`` is ``layer.normalized_weight()``. Not a subclass of ``tn.nn.Linear``: it has no
    ``weight`` parameter, and code that reads every Linear's ``weight`` must not meet one without.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: Any = None, impl: str = "explicit"
    ) -> None:
        super().__init__(impl)
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        init = Linear(self.in_features, self.out_features, bias, dtype)  # tn.nn.Linear's init, drawn as it draws
        self.g = Parameter(namespace_of(init.weight.data).reshape(row_norm(init.weight.data), (self.out_features,)))
        self.v = init.weight  # the direction of each row; W is computed from g and v, not learned itself
        self.bias = init.bias

    def normalized_weight(self) -> Tensor:
        """``W = g * v / ||v||``, the weight the matmul uses."""
        return WeightNormFunction.apply(self.g, self.v, dtype=self.v.dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_linear_input(type(self).__name__, x, self.in_features)
        return weight_norm_linear(x, self.g, self.v, self.bias, impl=self.impl)

    def extra_repr(self) -> str:
        return Linear.extra_repr(self)


class WSLinear(NormModule):
    """``tn.nn.WSLinear(in_features, out_features, bias=True, eps=1e-5)``: a Linear whose
    weight's output rows are standardized before use (``docs/norms/weight_side.md``).

    ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)``, init
    ``tn.nn.Linear``'s. PyTorch has no WSLinear; the paper's code divides by the unbiased
    std plus eps, tinynorm by ``sqrt(biased var + eps)`` (LayerNorm's rows). Not a subclass of
    ``tn.nn.Linear`` (as ``WeightNormLinear``): its ``weight`` is not the weight it multiplies by.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        eps: float = 1e-5,
        dtype: Any = None,
        impl: str = "explicit",
    ) -> None:
        super().__init__(impl)
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.eps = check_eps(eps)
        init = Linear(self.in_features, self.out_features, bias, dtype)  # tn.nn.Linear's init, drawn as it draws
        self.weight, self.bias = init.weight, init.bias

    def normalized_weight(self) -> Tensor:
        """``W``: each output row of ``weight`` standardized, the weight the matmul uses."""
        return WeightStdFunction.apply(self.weight, eps=eps_for(self.eps, self.weight), dtype=self.weight.dtype)

    def forward(self, x: Tensor) -> Tensor:
        check_linear_input(type(self).__name__, x, self.in_features)
        return ws_linear(x, self.weight, self.bias, self.eps, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{Linear.extra_repr(self)}, eps={self.eps}"


def _cases() -> dict[str, Case]:
    """The layer's input ``x`` ``(*, in_features)``; ``out_features != in_features`` in every
    case, so a transposed ``W`` cannot pass. (Notebook 08 probes each entry
    for a ``(batch, 64) -> (batch, 64)`` map to train after each hidden layer; these layers
    change the width, so it leaves them out: they are layers, not norms of the activations.)"""
    return {
        "2d": Case({"in_features": 5, "out_features": 4}, (3, 5)),
        "3d": Case({"in_features": 4, "out_features": 3}, (2, 3, 4)),
        "batch1": Case({"in_features": 6, "out_features": 2}, (1, 6)),
        "smallest": Case({"in_features": 1, "out_features": 2}, (3, 1)),
        "large": Case({"in_features": 257, "out_features": 64}, (601, 257)),
    }


def _drawn_from_the_build(module: Any, rng: Any) -> None:
    """Every parameter drawn from the build's generator: ``tn.nn.Linear``'s init draws from
    tinynorm's global one (``tn.manual_seed``), so two builds with the same ``seed`` (the
    explicit module and its autograd reference) would otherwise differ."""
    for p in module.parameters():
        p.data = p.xp.astype(p.xp.asarray(rng.standard_normal(p.shape)), p.dtype)


_LINEAR_BIAS = ParamSpec("bias", "(out_features,)", "Linear's: uniform in ±1/sqrt(in)", "each output feature's shift")

register_norm(
    NormSpec(
        name="weight_norm",
        title="Weight normalization (WeightNormLinear)",
        summary="a Linear whose weight rows are g * v / ||v||: each row's length g is learned apart from its direction",
        module=WeightNormLinear,
        functional=weight_norm_linear,
        params=(
            ParamSpec("g", "(out_features,)", "||v|| per row", "the length of each output row of W"),
            ParamSpec(
                "v", "(out_features, in_features)", "Linear's: uniform in ±1/sqrt(in)", "the direction of each row"
            ),
            _LINEAR_BIAS,
        ),
        doc="docs/norms/weight_side.md",
        cases=_cases(),
        perturb=_drawn_from_the_build,
    )
)

register_norm(
    NormSpec(
        name="weight_std",
        title="Weight Standardization (WSLinear)",
        summary="a Linear layer whose weight rows are centred and divided by their standard deviation before use",
        module=WSLinear,
        functional=ws_linear,
        params=(
            ParamSpec("weight", "(out_features, in_features)", "Linear's: uniform in ±1/sqrt(in)", "the raw weight"),
            _LINEAR_BIAS,
        ),
        doc="docs/norms/weight_side.md",
        cases=_cases(),
        perturb=_drawn_from_the_build,
    )
)
