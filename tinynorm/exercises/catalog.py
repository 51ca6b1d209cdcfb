r"""The exercises: what each one asks, which forward it is checked against, on which
shapes, and the common mistakes the checker can recognize.

Each exercise's forward is the package's own (``rms_norm``, ``layer_norm``, ``ops.mul``,
...): a student's backward is checked against the function tinynorm really computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ops
from ..autograd import no_grad
from ..norms.batchnorm import batch_norm
from ..norms.layernorm import layer_norm
from ..norms.rmsnorm import rms_norm
from ..norms.rmsnorm_tanh import rms_norm_tanh
from ..tensor import Tensor, tensor
from . import solutions


@dataclass(frozen=True)
class Mistake:
    """A common mistake: ``name`` is printed in the verdict, ``hint`` explains it."""

    key: str
    name: str
    hint: str


MISTAKES: dict[str, Mistake] = {
    m.key: m
    for m in (
        Mistake(
            "dropped_mean_term",
            "dropped mean term",
            "your dx is the right one without its `- mean(g)` term (g = dy * weight). Subtracting the mean "
            "in the forward lets every x of a row move every output; that path adds -rstd * mean(g) to dx.",
        ),
        Mistake(
            "dropped_projection_term",
            "dropped projection term `xhat * mean(g * xhat)`",
            "your dx misses -rstd * xhat * mean(g * xhat). rstd is computed from every x of the row, so "
            "each x also moves every output through rstd; without that term rstd is treated as a constant.",
        ),
        Mistake(
            "n_minus_1",
            "`N - 1` instead of `N`",
            "you divided by N - 1 somewhere (np.var(x, ddof=1), torch.var's default, or sum / (N - 1)). "
            "The forward uses the biased variance: divide by N, in the statistics and in the backward's means.",
        ),
        Mistake(
            "eps_outside_sqrt",
            "`eps` outside the square root",
            "your gradient is what rstd = 1 / (sqrt(var) + eps) gives; the forward uses 1 / sqrt(var + eps). "
            "For eps = 1e-5 the two barely differ, which is why one case of this check uses eps = 0.5.",
        ),
        Mistake(
            "unsummed_param_grad",
            "forgot to sum the parameter gradient over the batch",
            "a parameter (or a broadcast operand) is used by every row, so its gradient is the sum of the "
            "gradients of all its uses: sum over every axis it was broadcast along (for a weight of shape "
            "(N,): every leading axis, np.sum(..., axis=tuple(range(x.ndim - 1)))). It must have the "
            "parameter's shape.",
        ),
        Mistake(
            "wrong_sign",
            "wrong sign",
            "your gradient, or one of its terms, has the opposite sign. Check each term: the statistics' "
            "terms are subtracted, g - mean(g) - xhat * mean(g * xhat).",
        ),
        Mistake(
            "transposed",
            "transposed shape",
            "your gradient holds the right numbers, transposed (for example you worked on x.T to reuse "
            "code and did not transpose back). A gradient has its input's exact shape and layout.",
        ),
        Mistake(
            "reshaped",
            "right numbers, wrong shape",
            "your values are right but the shape is not the input's (e.g. (1, N) or (N, 1) for (N,), or an "
            "axis of size 1 dropped by a sum without keepdims=True). Return exactly the input's shape.",
        ),
        Mistake(
            "swapped_factors",
            "swapped factors",
            "for y = a * b the gradient of a is dy times the *other* factor: da = dy * b, db = dy * a.",
        ),
        Mistake(
            "forgot_alpha",
            "forgot the factor alpha (chain rule)",
            "the gradient reaching n in tanh(alpha * n) is alpha * (1 - tanh(alpha * n)**2) * dy: "
            "the inner function alpha * n contributes its derivative alpha.",
        ),
        Mistake(
            "tanh_derivative",
            "wrong derivative of tanh",
            "d tanh(z) / dz = 1 - tanh(z)**2, evaluated at z = alpha * n (the argument the forward used).",
        ),
        Mistake(
            "wrong_axis",
            "statistics over the wrong axis",
            "BatchNorm normalizes each channel with statistics over the batch (and length) axes, not over "
            "the features of a row as LayerNorm does; the backward's means run over those same axes.",
        ),
        Mistake(
            "statistics_without_history",
            "statistics without history",
            "your first derivatives are right but their own derivatives are not: rstd was computed from "
            "values that have no history (np.asarray(x), x.data, a number), so differentiating the gradient "
            "treats rstd as a constant and misses its terms. Compute every statistic from x itself with "
            "xp = namespace_of(x): xp.sqrt(xp.mean(x * x, ...) + eps).",
        ),
        Mistake(
            "numpy_escapes_graph",
            "a NumPy call escapes the graph",
            "on Tensors (create_graph=True) your backward called a NumPy function, or one the graph namespace "
            "lacks, so that step was not recorded and the gradient could not be differentiated. Use only "
            "xp = namespace_of(x) and the operators (+, *, /, **): np.sqrt becomes xp.sqrt, np.sum xp.sum.",
        ),
    )
}


@dataclass(frozen=True)
class Case:
    """One set of shapes the check runs: ``shapes`` maps each input to its shape."""

    label: str
    shapes: dict[str, tuple[int, ...]]
    consts: dict[str, float] = field(default_factory=dict)
    x_scale: float = 1.0  # a small x makes a large eps matter


@dataclass(frozen=True)
class Exercise:
    """One exercise. ``kind`` is ``"backward"`` (the student writes a NumPy backward,
    called as ``function(dy, *inputs, *consts)``) or ``"norm"`` (exercise 7: a whole
    norm, checked through its ``NormSpec`` with the generic gradcheck) or ``"double"``
    (exercise 8: a backward written with ``namespace_of``, checked to the third order)."""

    number: int
    name: str
    title: str
    function: str  # the name the student's function must keep: the grader looks it up
    inputs: tuple[str, ...]  # differentiable inputs, in call order; gradient names are "d" + input
    consts: tuple[str, ...]
    forward: Callable[..., Tensor] | None  # the package's forward, on Tensors
    cases: tuple[Case, ...]
    objects: tuple[str, ...]  # what the notebook shows from solutions.py, in order
    task: str  # the notebook's markdown: what to derive
    spec_objects: tuple[str, ...] = ()  # exercise 7: a second cell, shown in full
    kind: str = "backward"

    @property
    def marker(self) -> str:
        """The pytest marker that grades this exercise: ``pytest -m ex_layernorm``."""
        return f"ex_{self.name}"

    @property
    def solution(self) -> Callable[..., Any]:
        return getattr(solutions, self.function)

    @property
    def gradients(self) -> tuple[str, ...]:
        return tuple("d" + name for name in self.inputs)

    @property
    def signature(self) -> str:
        args = ", ".join(("dy",) + self.inputs + self.consts)
        return f"{self.function}({args}) -> ({', '.join(self.gradients)})"

    @property
    def mistakes(self) -> tuple[Mistake, ...]:
        """Every mistake this exercise's checker can name."""
        from .mutants import mutants_of

        keys = dict.fromkeys(key for key, _ in mutants_of(self))
        if self.kind == "backward":  # the shape comparison of exercises 1-6
            keys["reshaped"] = None
        return tuple(MISTAKES[k] for k in keys)

    def sample(self, index: int) -> tuple[list[np.ndarray], list[float], np.ndarray]:
        """Case ``index``'s inputs, constants and upstream gradient, always the same."""
        case = self.cases[index]
        rng = np.random.default_rng(1000 * self.number + index)
        inputs = [_draw(rng, name, case.shapes[name], case.x_scale) for name in self.inputs]
        consts = [case.consts[name] for name in self.consts]
        with no_grad():
            out = self.forward(*(tensor(a) for a in inputs), *consts)
        return inputs, consts, rng.standard_normal(out.shape)


def _draw(rng: np.random.Generator, name: str, shape: tuple[int, ...], x_scale: float) -> np.ndarray:
    """Inputs off the parameters' initial values: a weight of exactly ones or a bias of
    exactly zeros would hide mistakes that multiply or add them."""
    if name == "weight":
        return 1 + 0.5 * rng.standard_normal(shape)
    if name == "bias":
        return 0.5 * rng.standard_normal(shape)
    if name == "alpha":
        return rng.uniform(0.5, 1.5, shape)
    return x_scale * rng.standard_normal(shape)


# ---- the forwards ------------------------------------------------------------------
def _rmsnorm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return rms_norm(x, x.shape[-1:], weight, eps)


def _rmsnorm_affine(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return rms_norm(x, x.shape[-1:], weight, eps, bias=bias)


def _layernorm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return layer_norm(x, x.shape[-1:], weight, bias, eps)


def _tanh_alpha(x: Tensor, alpha: Tensor, eps: float) -> Tensor:
    return rms_norm_tanh(x, x.shape[-1:], alpha, None, eps)  # weight * tanh(alpha * n), without the weight


def _batchnorm(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return batch_norm(x, None, None, weight, bias, training=True, eps=eps)


# ---- the shapes ------------------------------------------------------------------------
BIG_EPS = 0.5  # large enough that eps inside or outside the root makes a visible difference


def _row_cases(n_param: str | None = "weight", bias: bool = False) -> tuple[Case, ...]:
    """Cases for a norm over the last axis of x (N features)."""

    def shapes(x_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        out = {"x": x_shape}
        if n_param == "alpha":
            out["alpha"] = ()
        elif n_param:
            out[n_param] = x_shape[-1:]
        if bias:
            out["bias"] = x_shape[-1:]
        return out

    return (
        Case("2-D input of shape (3, 5)", shapes((3, 5)), {"eps": 1e-5}),
        Case("3-D input of shape (2, 3, 4)", shapes((2, 3, 4)), {"eps": 1e-5}),
        Case("a batch of one, shape (1, 6)", shapes((1, 6)), {"eps": 1e-5}),
        Case(f"eps = {BIG_EPS} and small inputs, shape (4, 3)", shapes((4, 3)), {"eps": BIG_EPS}, x_scale=0.3),
    )


def _batch_cases() -> tuple[Case, ...]:
    def shapes(x_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        return {"x": x_shape, "weight": x_shape[1:2], "bias": x_shape[1:2]}

    return (
        Case("input of shape (4, 3): batch 4, 3 channels", shapes((4, 3)), {"eps": 1e-5}),
        Case("input of shape (2, 3, 5): batch 2, 3 channels, length 5", shapes((2, 3, 5)), {"eps": 1e-5}),
        Case("a batch of one, shape (1, 2, 6)", shapes((1, 2, 6)), {"eps": 1e-5}),
        Case(f"eps = {BIG_EPS} and small inputs, shape (5, 4)", shapes((5, 4)), {"eps": BIG_EPS}, x_scale=0.3),
    )


_MUL_CASES = (
    Case("a (3, 4) times b (4,): b broadcast over the rows", {"a": (3, 4), "b": (4,)}),
    Case("a (3, 4) times b (3, 1): b stretched along the columns", {"a": (3, 4), "b": (3, 1)}),
    Case("a (2, 3, 4) times b (3, 1)", {"a": (2, 3, 4), "b": (3, 1)}),
    Case("a (4,) times b (2, 4): now a is the broadcast one", {"a": (4,), "b": (2, 4)}),
    Case("a batch of one: a (1, 4) times b (4,)", {"a": (1, 4), "b": (4,)}),
    Case("a (2, 3) times a scalar b of shape ()", {"a": (2, 3), "b": ()}),
)

CONVENTIONS = (
    "Your function receives NumPy float64 arrays and returns a tuple of NumPy arrays, one "
    "gradient per input, each of its input's shape. `check` compares it with finite differences "
    "of tinynorm's own forward on several shapes (a batch of one and a large `eps` included), tells "
    "you which gradient is wrong and where, and names the mistake when yours matches a common one. "
    "Keep the function's name: the grader finds it by name."
)

EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in (
        Exercise(
            1,
            "mul_broadcast",
            "The backward of a primitive op with broadcasting",
            "mul_backward",
            ("a", "b"),
            (),
            ops.mul,
            _MUL_CASES,
            ("unbroadcast", "mul_backward"),
            "`y = a * b` where `a` and `b` broadcast against each other, as NumPy does: a `(4,)` array "
            "acts as if copied onto every row of a `(3, 4)` one.\n\n"
            "1. Elementwise, `dL/da = dy * b` and `dL/db = dy * a`, but these have the shape of `y`.\n"
            "2. Every copy made by broadcasting is a use of the same value, and the gradient of a value "
            "used several times is the **sum** over its uses. Write `unbroadcast(grad, shape)`: sum over "
            "the axes broadcasting prepended, and over the axes of size 1 it stretched (keeping them).\n"
            "3. Use it in `mul_backward`. (tinynorm's own version is `tinynorm.ops.sum_to`: one "
            "unbroadcast that every op uses.)",
        ),
        Exercise(
            2,
            "rmsnorm",
            "RMSNorm backward (input and weight)",
            "rmsnorm_backward",
            ("x", "weight"),
            ("eps",),
            _rmsnorm,
            _row_cases(),
            ("rmsnorm_backward",),
            "RMSNorm normalizes each row (the last axis, `N` features) by its root mean square:\n\n"
            "    rstd = 1 / sqrt(mean(x**2) + eps),   xhat = x * rstd,   y = xhat * weight\n\n"
            "1. With `g = dy * weight`, the gradient reaching `xhat` is `g`.\n"
            "2. `xhat_i = x_i * rstd` depends on `x_j` twice: directly (when `i == j`), and through "
            "`rstd`, which every `x_j` of the row moves. Differentiate `rstd` with respect to `x_j`.\n"
            "3. Collect the terms per row; you should find `dx = rstd * (g - xhat * mean(g * xhat))`. "
            "Convince yourself of the second term before you write it.\n"
            "4. `weight` is shared by every row: `dweight` sums `dy * xhat` over every leading axis.\n\n"
            "The derivation, written out: `docs/norms/rmsnorm.md`.",
        ),
        Exercise(
            3,
            "rmsnorm_affine",
            "RMSNorm with a learnable scale and shift",
            "rmsnorm_affine_backward",
            ("x", "weight", "bias"),
            ("eps",),
            _rmsnorm_affine,
            _row_cases(bias=True),
            ("rmsnorm_affine_backward",),
            "RMSNorm with two learnable vectors: a per-dimension scale and a shift, both "
            "of shape `(N,)` (not `(N, 1)` columns, which broadcast to an `(N, N)` result):\n\n"
            "    y = x / sqrt(mean(x**2) + eps) * weight + bias\n\n"
            "`dx` and `dweight` are exercise 2's; the new part is `dbias`. Which axes does it sum over?",
        ),
        Exercise(
            4,
            "layernorm",
            "LayerNorm backward",
            "layernorm_backward",
            ("x", "weight", "bias"),
            ("eps",),
            _layernorm,
            _row_cases(bias=True),
            ("layernorm_backward",),
            "LayerNorm centres each row before scaling it (biased variance, `eps` inside the root):\n\n"
            "    mean = mean(x),  var = mean((x - mean)**2),  rstd = 1 / sqrt(var + eps)\n"
            "    xhat = (x - mean) * rstd,   y = xhat * weight + bias\n\n"
            "Each `x_j` now reaches `xhat_i` three ways: directly, through `mean`, and through `rstd`. "
            "Work out each path's term (with `g = dy * weight`), then check that the rows of your `dx` "
            "sum to zero: shifting a row by a constant does not change LayerNorm's output, so its "
            "gradient cannot have a component along `(1, ..., 1)`.\n\n"
            "The derivation, written out: `docs/norms/layernorm.md`.",
        ),
        Exercise(
            5,
            "tanh_alpha",
            "A learnable tanh after RMSNorm: the gradient of alpha",
            "tanh_alpha_backward",
            ("x", "alpha"),
            ("eps",),
            _tanh_alpha,
            _row_cases(n_param="alpha"),
            ("tanh_alpha_backward",),
            "A learnable activation after the norm, RMSNorm followed by a tanh whose steepness is learned:\n\n"
            "    n = x / sqrt(mean(x**2) + eps)   (RMSNorm, no weight),   y = tanh(alpha * n)\n\n"
            "with a single learnable `alpha` (shape `()`), which sets how soon the curve saturates.\n\n"
            "1. Let `t` be the gradient reaching `z = alpha * n`: `t = (1 - tanh(z)**2) * dy`.\n"
            "2. `z = alpha * n` is a product: `dalpha` and `dn` follow as in exercise 1. `alpha` is one "
            "number used by every element, so what shape is `dalpha`?\n"
            "3. Pass `dn` through RMSNorm's backward (exercise 2, with weight 1) to get `dx`.",
        ),
        Exercise(
            6,
            "batchnorm",
            "BatchNorm backward, training mode",
            "batchnorm_backward",
            ("x", "weight", "bias"),
            ("eps",),
            _batchnorm,
            _batch_cases(),
            ("batchnorm_backward",),
            "In training mode, BatchNorm normalizes each **channel** with the mean and (biased) "
            "variance of the current batch. For `x` of shape `(B, C)` the statistics of channel `c` are "
            "over `x[:, c]`; for `(B, C, L)`, over `x[:, c, :]`. Then `y = xhat * weight[c] + bias[c]`.\n\n"
            "It is LayerNorm with the roles of the axes exchanged: find which axes the means of "
            "exercise 4's backward now run over, and how to broadcast the `(C,)` parameters against "
            "`x`. (The running statistics used in eval mode have no gradient: they are not part of "
            "this backward.)",
        ),
        Exercise(
            7,
            "own_norm",
            "A norm of your own, registered in the catalog",
            "my_norm_spec",
            ("x",),
            (),
            None,
            (),
            ("MeanAbsNormFunction", "mean_abs_norm_reference", "mean_abs_norm", "MeanAbsNorm"),
            "Derive and implement a variant of your own, the way every file in `tinynorm/norms/` is "
            "written: a `Function` with a hand-derived backward, the same forward composed from "
            "primitive ops (autograd derives its gradient independently), a functional form, a module, "
            "and a `NormSpec` that describes it to the rest of tinynorm.\n\n"
            "The cells below are filled in for one example variant, the *mean-absolute norm* "
            "`y = x / (mean(|x|) + eps) * weight`, except its backward. Derive and write that backward, "
            "or replace the forward by your own variant (a learnable `eps`, a strength `p` in "
            "`(x - mean) * (var + eps)**(-p/2)`, a `(1 + weight)` scale, ...) and derive its backward.\n\n"
            '`check("own_norm", my_norm_spec)` runs the generic gradcheck on every case of your '
            "`NormSpec` (2-D, 3-D, a batch of one, the smallest size), for the explicit backward and "
            "the autograd reference, and checks that the two agree.\n\n"
            "**Registering it.** `register(spec)` adds it to `tinynorm.registry.NORMS` in this "
            "session, so `tn.registry.get_norm(spec.name)` and everything that iterates over the catalog "
            "see it (re-running the cell replaces it). To make it part of tinynorm for good, save the "
            "code as `tinynorm/norms/<name>.py`, end the file with `register_norm(my_norm_spec())`, and "
            "list the module class in the file's `__all__`: the package imports every file there, so "
            "`python -m tinynorm check --only <name>` and the test suite then cover it.",
            spec_objects=("my_norm_spec",),
            kind="norm",
        ),
        Exercise(
            8,
            "rmsnorm_double",
            "Make your backward differentiable: RMSNorm's second derivatives",
            "rmsnorm_double_backward",
            ("x", "weight"),
            ("eps",),
            _rmsnorm,
            _row_cases()[:2] + _row_cases()[3:],
            ("rmsnorm_double_backward",),
            "Exercise 2's backward, written so that it can itself be differentiated (for a gradient "
            "penalty, a Hessian-vector product, a meta-gradient). With `create_graph=True` tinynorm "
            "calls your backward on **Tensors**: `namespace_of(x)` then returns a namespace whose "
            "`xp.sum`, `xp.sqrt`, `xp.mean`... are recorded ops, and the gradient you return has a graph.\n\n"
            "1. Write `xp = namespace_of(x)` and use only `xp.*` and the operators: no `np.` call, no "
            "`.data`, no `np.asarray`.\n"
            "2. The forward saves only `x` and `weight`: recompute `rstd` from `x` in the backward, so it "
            "carries its history (a statistic computed from a constant copy of `x` gives right first "
            "derivatives and wrong second ones).\n"
            "3. `dweight` sums over every leading axis: reshape to `(-1, N)` and sum over axis 0.\n\n"
            "`check` runs `tn.gradcheck`, `tn.gradgradcheck` and the third-order check "
            "(`tn.higher_order_gradcheck(..., order=3, fast=True)`) on RMSNorm with your backward.",
            kind="double",
        ),
    )
}


def get_exercise(name: str) -> Exercise:
    try:
        return EXERCISES[name]
    except KeyError:
        raise KeyError(f"exercise: unknown name {name!r}; the exercises are {', '.join(EXERCISES)}") from None


__all__ = ["CONVENTIONS", "EXERCISES", "MISTAKES", "Case", "Exercise", "Mistake", "get_exercise"]
