"""The one registry: every primitive op and every norm that tinynorm knows.

The CLI's ``check``, the tests, the notebooks, the docs and the benchmarks all
iterate over ``NORMS`` and ``OPS``; adding a norm means adding one
``register_norm(NormSpec(...))`` call in its own file (``tinynorm/norms/``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import ops
from .tensor import Tensor, tensor

CASES = ("2d", "3d", "batch1", "smallest")
"""Every norm gives one example per case: a 2-D input, a 3-D input, a batch of one,
and the smallest feature size at which the norm is defined. Each also gives a case
``"large"``: a 2-D input with an odd feature size and enough rows to span many row
blocks, on which the kernel contract test (``tests/test_kernels.py``) runs."""


@dataclass(frozen=True)
class ParamSpec:
    """One learnable parameter, as the docs and notebooks describe it."""

    name: str  # attribute name on the module, e.g. "weight"
    shape: str  # e.g. "normalized_shape", "()", "(num_features,)"
    init: str  # e.g. "ones", "zeros", "sqrt(N)"
    meaning: str  # one line: what it does to the output


@dataclass(frozen=True)
class Case:
    """A module configuration and an input shape that goes with it."""

    kwargs: dict[str, Any]
    input_shape: tuple[int, ...]


def row_cases(**kwargs: Any) -> dict[str, Case]:
    """The five cases of a norm over the trailing ``normalized_shape`` axes (LayerNorm's
    convention), ``kwargs`` added to every one: a 2-D input, a 3-D one normalized over its last
    two axes, a batch of one, a single feature, and a large one."""
    return {
        "2d": Case({"normalized_shape": 5, **kwargs}, (3, 5)),
        "3d": Case({"normalized_shape": (3, 4), **kwargs}, (2, 3, 4)),
        "batch1": Case({"normalized_shape": 6, **kwargs}, (1, 6)),
        "smallest": Case({"normalized_shape": 1, **kwargs}, (3, 1)),
        "large": Case({"normalized_shape": 257, **kwargs}, (601, 257)),
    }


def _default_perturb(module: Any, rng: np.random.Generator) -> None:
    """Move every parameter off its initial value: a weight of exactly ones or a bias of
    exactly zeros would hide backward bugs that multiply or add them."""
    for p in module.parameters():
        p.data = p.xp.astype(p.xp.asarray(p.numpy() + 0.5 * rng.standard_normal(p.shape)), p.dtype)


@dataclass(frozen=True)
class NormSpec:
    """Everything the rest of tinynorm needs to know about one norm."""

    name: str  # registry key, e.g. "layernorm"
    title: str  # display name, e.g. "LayerNorm"
    summary: str  # one line
    module: type  # the tn.nn module class
    functional: Callable[..., Tensor]  # the functional form, e.g. tn.nn.functional.layer_norm
    params: tuple[ParamSpec, ...]
    doc: str  # derivation page, relative to the repository root
    cases: dict[str, Case]
    # "standard", or "rmsnorm_extensions": the four learnable RMSNorm extensions (a per-dimension
    # scale, scale and shift, the dynamic-range norm, a learnable activation after the norm)
    family: str = "standard"
    perturb: Callable[[Any, np.random.Generator], None] = _default_perturb
    input_fn: Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] = field(
        default=lambda rng, shape: rng.standard_normal(shape)
    )

    def build(
        self,
        case: str = "2d",
        *,
        dtype: Any = "float64",
        seed: int = 0,
        impl: str = "explicit",
        perturb: bool = True,
        **overrides: Any,
    ) -> tuple[Any, Tensor]:
        """A small module and a matching random input (``requires_grad=True``).

        ``perturb`` moves the parameters off their initial values (what tests want);
        ``overrides`` change the module's keyword arguments.
        """
        if case not in self.cases:
            raise KeyError(f"case: expected one of {sorted(self.cases)}, got {case!r}")
        rng = np.random.default_rng(seed)
        spec = self.cases[case]
        module = self.module(**{**spec.kwargs, **overrides}, impl=impl)
        if perturb:
            self.perturb(module, rng)
        module.to(dtype)
        x = tensor(self.input_fn(rng, spec.input_shape), dtype=dtype, requires_grad=True)
        return module, x


@dataclass(frozen=True)
class OpSpec:
    """A primitive op and how to feed it (``kind`` decides the shapes tests generate)."""

    name: str
    fn: Callable[..., Tensor]
    kind: str  # "unary", "binary", "reduction", "shape" or "matmul"
    domain: str = "real"  # "real", "positive" (log, sqrt, pow's base) or "nonzero" (abs, relu, a divisor)
    example_shapes: tuple[tuple[int, ...], ...] = ((2, 3),)
    min_count: int = 1  # a reduction's fewest values per result (var and std divide by N - 1)

    def inputs(
        self, rng: np.random.Generator, shapes: tuple[tuple[int, ...], ...] | None = None, dtype: Any = "float64"
    ) -> tuple[Tensor, ...]:
        """Random inputs of the given shapes inside the op's domain."""
        out = []
        for i, shape in enumerate(shapes or self.example_shapes):
            out.append(
                tensor(
                    sample(rng, shape, self.domain if i == 0 or self.name == "div" else "real"),
                    dtype=dtype,
                    requires_grad=True,
                )
            )
        return tuple(out)


def sample(rng: np.random.Generator, shape: tuple[int, ...], domain: str) -> np.ndarray:
    """Values away from the points where an op is not differentiable."""
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "nonzero":
        return rng.choice([-1.0, 1.0], shape) * rng.uniform(0.5, 2.0, shape)
    return rng.standard_normal(shape)


NORMS: dict[str, NormSpec] = {}
OPS: dict[str, OpSpec] = {}


def register_norm(spec: NormSpec) -> NormSpec:
    missing = set(CASES) - set(spec.cases)
    if missing:
        raise ValueError(f"register_norm({spec.name!r}): cases {sorted(missing)} are missing")
    if spec.name in NORMS:
        raise ValueError(f"register_norm: {spec.name!r} is registered twice")
    NORMS[spec.name] = spec
    return spec


def close_matches(name: str, known: Iterable[str]) -> list[str]:
    """The known names that look like ``name`` (a typo, other capitals), closest first."""
    by_lower = {k.lower(): k for k in known}
    return [by_lower[k] for k in difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=0.6)]


def unknown_name(name: str, known: Iterable[str]) -> str:
    """The start of the error for a name the registry does not hold: it names the close matches."""
    close = [repr(k) for k in close_matches(name, known)]
    if not close:
        return f"unknown name {name!r}, and no registered name is close to it"
    alternatives = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"unknown name {name!r}; did you mean {alternatives}?"


def get_norm(name: str) -> NormSpec:
    """The registry entry of a norm; an unknown name is a ``KeyError`` naming the close matches."""
    try:
        return NORMS[name]
    except KeyError:
        raise KeyError(f"norm: {unknown_name(name, NORMS)} (the norms: {', '.join(sorted(NORMS))})") from None


def _register_op(spec: OpSpec) -> None:
    OPS[spec.name] = spec


def _broadcast_pair(a: Tensor, b: Tensor) -> list[Tensor]:
    """Both operands broadcast to their common shape, with at least one axis (for cat and stack)."""
    shape = np.broadcast_shapes(a.shape, b.shape) or (1,)
    return [ops.broadcast_to(a, shape), ops.broadcast_to(b, shape)]


# The primitive ops, with shapes that exercise broadcasting in the CLI's check.
for _spec in (
    OpSpec("add", ops.add, "binary", example_shapes=((2, 3), (3,))),
    OpSpec("sub", ops.sub, "binary", example_shapes=((2, 3), (2, 1))),
    OpSpec("mul", ops.mul, "binary", example_shapes=((2, 3), (3,))),
    OpSpec("div", ops.div, "binary", domain="nonzero", example_shapes=((2, 3), (2, 1))),
    OpSpec("pow", ops.pow, "binary", domain="positive", example_shapes=((2, 3), (3,))),
    OpSpec("pow_scalar", lambda a: a**3.0, "unary"),
    OpSpec("neg", ops.neg, "unary"),
    OpSpec("matmul", ops.matmul, "matmul", example_shapes=((3, 4), (4, 2))),
    OpSpec("exp", ops.exp, "unary"),
    OpSpec("log", ops.log, "unary", domain="positive"),
    OpSpec("sqrt", ops.sqrt, "unary", domain="positive"),
    OpSpec("tanh", ops.tanh, "unary"),
    OpSpec("erf", ops.erf, "unary"),
    OpSpec("abs", ops.abs, "unary", domain="nonzero"),
    OpSpec("maximum", ops.maximum, "binary", example_shapes=((2, 3), (3,))),
    OpSpec("relu", ops.relu, "unary", domain="nonzero"),
    OpSpec("sigmoid", ops.sigmoid, "unary"),
    OpSpec("clamp", lambda a: ops.clamp(a, min=-0.5, max=0.8), "unary"),
    OpSpec("softmax", lambda a: ops.softmax(a, dim=-1), "unary", example_shapes=((2, 3, 4),)),
    OpSpec("log_softmax", lambda a: ops.log_softmax(a, axis=0), "unary", example_shapes=((2, 3, 4),)),
    OpSpec("where", lambda a, b: ops.where(a.data > 0, a, b), "binary", example_shapes=((2, 3), (3,))),
    OpSpec("sum", ops.sum, "reduction", example_shapes=((2, 3, 4),)),
    OpSpec("mean", ops.mean, "reduction", example_shapes=((2, 3, 4),)),
    OpSpec("max", ops.max, "reduction", example_shapes=((2, 3, 4),)),
    OpSpec("min", ops.min, "reduction", example_shapes=((2, 3, 4),)),
    OpSpec("var", ops.var, "reduction", example_shapes=((2, 3, 4),), min_count=2),
    OpSpec("std", ops.std, "reduction", example_shapes=((2, 3, 4),), min_count=2),
    OpSpec("reshape", lambda a: ops.reshape(a, (-1,)), "shape", example_shapes=((2, 3, 4),)),
    OpSpec("permute", lambda a: ops.permute(a, tuple(reversed(range(a.ndim)))), "shape", example_shapes=((2, 3, 4),)),
    OpSpec("transpose", lambda a: ops.transpose(a, 0, -1) if a.ndim else a * 1.0, "shape", example_shapes=((2, 3, 4),)),
    OpSpec("broadcast_to", lambda a: ops.broadcast_to(a, (2,) + a.shape), "shape", example_shapes=((3, 1),)),
    OpSpec("getitem", lambda a: a[..., ::2] if a.ndim else a[...], "shape", example_shapes=((2, 5),)),
    OpSpec("unsqueeze", lambda a: ops.unsqueeze(a, -1), "shape"),
    OpSpec("squeeze", ops.squeeze, "shape", example_shapes=((2, 1, 3),)),
    OpSpec("flatten", ops.flatten, "shape", example_shapes=((2, 3, 4),)),
    OpSpec("cat", lambda a, b: ops.cat(_broadcast_pair(a, b), dim=-1), "binary", example_shapes=((2, 3), (3,))),
    OpSpec("stack", lambda a, b: ops.stack(_broadcast_pair(a, b), dim=0), "binary", example_shapes=((2, 3), (3,))),
):
    _register_op(_spec)
