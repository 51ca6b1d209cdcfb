r"""The common mistakes, each written as a *mutant*: the backward a student would have
written with exactly that mistake.

The checker never reads a student's code. When a gradient is wrong, it runs every
mutant on the same inputs and compares numbers: if the student's gradient equals the
mutant's (and the mutant's differs from the right one), the mistake is named.

A mutant is ``(mistake key, backward)``, called like the student's function,
``backward(dy, *inputs, *consts)``, and returns all the gradients; only the ones it
gets wrong matter. Three kinds:

* generic ones, derived from the solution's output: a gradient negated, transposed;
* "forgot to sum": a parameter's gradient left elementwise, or summed over one axis;
* the norms' own, from ``_normalized`` below: the solution's formula with one knob
  turned (a term dropped, ``N - 1`` for ``N``, ``eps`` outside the root, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import namespace_of
from ..ops import sum_to
from ..tensor import Tensor
from .catalog import Exercise

Backward = Callable[..., tuple[Any, ...]]
Mutant = tuple[str, Backward]


def _normalized(
    dy: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    eps: float,
    *,
    axes: tuple[int, ...],
    column: tuple[int, ...],
    center: bool,
    mean_term: int = 1,
    projection: int = 1,
    ddof_var: int = 0,
    ddof_mean: int = 0,
    eps_inside: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``dx`` and the elementwise ``dy * xhat`` of a centring (LayerNorm, BatchNorm) or
    non-centring (RMSNorm) norm over ``axes``, with knobs: ``mean_term`` and ``projection``
    are the signs of the two statistics' terms (0 drops the term), ``ddof_*`` turn ``N``
    into ``N - 1`` in the variance or in the backward's means."""
    n = math.prod(x.shape[a] for a in axes)
    centered = x - np.mean(x, axis=axes, keepdims=True) if center else x
    var = np.sum(centered**2, axis=axes, keepdims=True) / (n - ddof_var)
    rstd = 1 / np.sqrt(var + eps) if eps_inside else 1 / (np.sqrt(var) + eps)
    xhat = centered * rstd
    g = dy if weight is None else dy * np.reshape(weight, column)

    def average(values: np.ndarray) -> np.ndarray:
        return np.sum(values, axis=axes, keepdims=True) / (n - ddof_mean)

    dx = g - projection * xhat * average(g * xhat)
    if center:
        dx = dx - mean_term * average(g)
    return rstd * dx, dy * xhat


# Which axes a norm's statistics use, which axes its parameters sum over, and how a
# parameter is shaped to broadcast against x.
def _rows(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    return (x.ndim - 1,), tuple(range(x.ndim - 1)), (-1,)


def _channels(x: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    axes = (0,) + tuple(range(2, x.ndim))
    return axes, axes, (1, -1) + (1,) * (x.ndim - 2)


def _unsummed(grad: np.ndarray, axes: tuple[int, ...]) -> list[np.ndarray]:
    """The ways a sum over ``axes`` is forgotten: not summed at all, summed over the first only."""
    out = [grad]
    if len(axes) > 1 or (axes and grad.ndim > 2):
        out.append(np.sum(grad, axis=axes[0]))
    return out


def _norm_mutants(ex: Exercise, layout: Callable[[np.ndarray], Any], center: bool) -> list[Mutant]:
    """Mutants of RMSNorm / LayerNorm / BatchNorm backwards, called ``(dy, x, weight[, bias], eps)``."""
    with_bias = "bias" in ex.inputs

    def knobs(key: str, stats: Callable[[np.ndarray], Any] = layout, **turned: Any) -> Mutant:
        def backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, *rest: Any) -> tuple[Any, ...]:
            eps = rest[-1]
            axes, _, column = stats(x)
            _, param_axes, _ = layout(x)
            dx, dweight = _normalized(dy, x, weight, eps, axes=axes, column=column, center=center, **turned)
            grads = (dx, np.sum(dweight, axis=param_axes))
            return grads + ((np.sum(dy, axis=param_axes),) if with_bias else ())

        return key, backward

    mutants = [
        knobs("dropped_projection_term", projection=0),
        knobs("wrong_sign", projection=-1),
        knobs("eps_outside_sqrt", eps_inside=False),
    ]
    if center:
        mutants += [
            knobs("dropped_mean_term", mean_term=0),
            knobs("wrong_sign", mean_term=-1),
            knobs("n_minus_1", ddof_var=1),
            knobs("n_minus_1", ddof_mean=1),
            knobs("n_minus_1", ddof_var=1, ddof_mean=1),
        ]
    if layout is _channels:  # LayerNorm's axes where BatchNorm's belong
        mutants += [
            knobs("wrong_axis", stats=lambda x: ((x.ndim - 1,), None, (1, -1) + (1,) * (x.ndim - 2))),
            knobs("wrong_axis", stats=lambda x: ((1,), None, (1, -1) + (1,) * (x.ndim - 2))),
        ]

    def unsummed(position: int, how: int) -> Mutant:
        def backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, *rest: Any) -> tuple[Any, ...]:
            axes, param_axes, column = layout(x)
            dx, dweight = _normalized(dy, x, weight, rest[-1], axes=axes, column=column, center=center)
            grads = [dx, dweight, dy][: len(ex.inputs)]
            grads = [g if i == 0 else np.sum(g, axis=param_axes) for i, g in enumerate(grads)]
            forgotten = _unsummed([dweight, dy][position - 1], param_axes)
            grads[position] = forgotten[min(how, len(forgotten) - 1)]
            return tuple(grads)

        return "unsummed_param_grad", backward

    mutants += [unsummed(p, how) for p in range(1, len(ex.inputs)) for how in (0, 1)]
    return mutants


def _tanh_mutants() -> list[Mutant]:
    """Mutants of exercise 5's ``(dy, x, alpha, eps) -> (dx, dalpha)``."""

    def variant(key: str, derivative: str = "exact", with_alpha: bool = True, forgot_sum: int = -1, **turned: Any):
        def backward(dy: np.ndarray, x: np.ndarray, alpha: np.ndarray, eps: float) -> tuple[Any, ...]:
            rstd = 1 / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)
            if not turned.get("eps_inside", True):
                rstd = 1 / (np.sqrt(np.mean(x**2, axis=-1, keepdims=True)) + eps)
            n = x * rstd
            slope = {
                "exact": 1 - np.tanh(alpha * n) ** 2,
                "no square": 1 - np.tanh(alpha * n),
                "without alpha": 1 - np.tanh(n) ** 2,
            }[derivative]
            t = slope * dy
            dn = alpha * t if with_alpha else t
            dx, _ = _normalized(dn, x, None, eps, axes=(x.ndim - 1,), column=(-1,), center=False, **turned)
            dalpha = n * t
            sums = [dalpha, np.sum(dalpha, axis=0), np.sum(dalpha, axis=tuple(range(x.ndim - 1)))]
            return dx, sums[forgot_sum] if forgot_sum >= 0 else np.sum(dalpha)

        return key, backward

    return [
        variant("dropped_projection_term", projection=0),
        variant("wrong_sign", projection=-1),
        variant("eps_outside_sqrt", eps_inside=False),
        variant("forgot_alpha", with_alpha=False),
        variant("tanh_derivative", derivative="no square"),
        variant("tanh_derivative", derivative="without alpha"),
        *(variant("unsummed_param_grad", forgot_sum=k) for k in range(3)),
    ]


def _mul_mutants() -> list[Mutant]:
    """Mutants of exercise 1's ``(dy, a, b) -> (da, db)``."""
    return [
        ("unsummed_param_grad", lambda dy, a, b: (dy * b, sum_to(dy * a, b.shape))),
        ("unsummed_param_grad", lambda dy, a, b: (sum_to(dy * b, a.shape), dy * a)),
        ("swapped_factors", lambda dy, a, b: (sum_to(dy * a, a.shape), sum_to(dy * b, b.shape))),
    ]


def _generic(solution: Backward, n_grads: int) -> list[Mutant]:
    """Each gradient of the solution negated, and transposed (when it has two axes or more)."""

    def changed(k: int, change: Callable[[np.ndarray], np.ndarray]) -> Backward:
        def backward(*args: Any) -> tuple[Any, ...]:
            grads = [np.asarray(g) for g in solution(*args)]
            grads[k] = change(grads[k])
            return tuple(grads)

        return backward

    mutants: list[Mutant] = []
    for k in range(n_grads):
        mutants.append(("wrong_sign", changed(k, np.negative)))
        mutants.append(("transposed", changed(k, lambda g: g.T if g.ndim >= 2 else g)))
        mutants.append(("transposed", changed(k, lambda g: np.swapaxes(g, -1, -2) if g.ndim >= 3 else g)))
    return mutants


def _double_mutants() -> list[Mutant]:
    """Exercise 8's two mistakes, ``(dy, x, weight, eps) -> (dx, dweight)``: the checker
    recognizes them by the check that fails (gradgradcheck alone, or the graph refusing a step)."""

    def backward(dy: Any, x: Any, weight: Any, eps: float, *, stats_from: Callable, sqrt: Callable) -> tuple:
        xp = namespace_of(x)
        rstd = 1 / sqrt(xp.mean(stats_from(x) ** 2, axis=-1, keepdims=True) + eps)
        xhat, g = x * rstd, dy * weight
        dx = rstd * (g - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))
        return dx, xp.sum(xp.reshape(dy * xhat, (-1, x.shape[-1])), axis=0)

    def constant(x: Any) -> Any:
        return x.data if isinstance(x, Tensor) else x  # a copy of x without its history

    return [
        ("statistics_without_history", lambda *a: backward(*a, stats_from=constant, sqrt=lambda v: v**0.5)),
        ("numpy_escapes_graph", lambda *a: backward(*a, stats_from=lambda x: x, sqrt=np.sqrt)),
    ]


def mutants_of(ex: Exercise) -> list[Mutant]:
    """Every mutant the checker compares a wrong gradient of exercise ``ex`` with."""
    if ex.kind == "double":
        return _double_mutants()
    if ex.kind != "backward":
        return []
    own = {
        "mul_broadcast": _mul_mutants,
        "rmsnorm": lambda: _norm_mutants(ex, _rows, center=False),
        "rmsnorm_affine": lambda: _norm_mutants(ex, _rows, center=False),
        "layernorm": lambda: _norm_mutants(ex, _rows, center=True),
        "batchnorm": lambda: _norm_mutants(ex, _channels, center=True),
        "tanh_alpha": _tanh_mutants,
    }[ex.name]()
    return own + _generic(ex.solution, len(ex.inputs))
