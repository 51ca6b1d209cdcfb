"""Building any registry variant at a benchmark-sized shape.

The registry describes each norm by small example cases (``spec.cases``), not by a
shape-agnostic constructor, so the size-carrying keyword arguments are found by matching
values against the case's input shape:

* channel-last norms (LayerNorm, RMSNorm, ...): a kwarg equal to the last dimension of the
  ``"2d"`` case (or to its trailing dimensions, as a tuple) becomes the new last dimension;
  their big shape is ``(rows, features)``, e.g. ``(4096, 1024)``;
* channel-first norms (BatchNorm, GroupNorm, ...), recognised because a kwarg of the
  ``"3d"`` case equals dimension 1 and none equals the trailing ones: that kwarg becomes the
  new channel count; their big shape is ``(N, C, L)`` with as many elements as the
  channel-last one, ``(32, 128, 1024)``, or ``(N, C)`` where a 2-D shape is asked for
  (``(N, C, 32, 32)`` for the norms of images, whose cases are all 4-D);
* every other kwarg (``eps``, ``num_groups``, flags) keeps its case value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import tinynorm as tn
from tinynorm.registry import NormSpec


def _size_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if not isinstance(v, bool) and isinstance(v, (int, tuple))}


def is_channel_first(spec: NormSpec) -> bool:
    case = spec.cases["3d"]
    shape = case.input_shape
    sizes = _size_kwargs(case.kwargs).values()
    channel_last = any(v == shape[-1] or (isinstance(v, tuple) and v == shape[len(shape) - len(v) :]) for v in sizes)
    return not channel_last and any(v == shape[1] for v in sizes)


def big_shape(spec: NormSpec, rows: int, features: int) -> tuple[int, ...]:
    """The (4096, 1024)-like benchmark shape for this variant (see the module docstring)."""
    if is_channel_first(spec):
        images = len(spec.cases["3d"].input_shape) == 4  # BatchNorm2d, InstanceNorm2d: (N, C, H, W) only
        if features < 128 and not images:
            return (rows, features)
        channels = min(128, features)
        return (max(1, rows * features // (channels * 1024)), channels, *((32, 32) if images else (1024,)))
    return (rows, features)


def scaled_kwargs(spec: NormSpec, shape: tuple[int, ...]) -> dict[str, Any]:
    """The case's module kwargs with the size-carrying ones changed to fit ``shape``."""
    channel_first = is_channel_first(spec)
    case = spec.cases["3d" if channel_first else "2d"]
    base = case.input_shape
    kwargs = dict(case.kwargs)
    for k, v in _size_kwargs(case.kwargs).items():
        if channel_first and v == base[1]:
            kwargs[k] = shape[1]
        elif not channel_first and (v == base[-1] or v == (base[-1],)):
            kwargs[k] = shape[-1] if isinstance(v, int) else (shape[-1],)
    return kwargs


def build(spec: NormSpec, shape: tuple[int, ...], dtype: str, impl: str, seed: int = 0) -> tuple[Any, tn.Tensor]:
    """A module of this variant (parameters moved off their init) and a random input of ``shape``."""
    rng = np.random.default_rng(seed)
    module = spec.module(**scaled_kwargs(spec, shape), impl=impl)
    spec.perturb(module, rng)
    module.to(dtype)
    x = tn.tensor(np.asarray(spec.input_fn(rng, shape), dtype=np.float64), dtype=dtype, requires_grad=True)
    return module, x


def fwd_bwd_step(module: Any, x: tn.Tensor, dy: Any) -> Any:
    """One forward and backward, the gradients cleared first (the step a benchmark times)."""
    params = list(module.parameters())

    def step() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        module(x).backward(dy)

    return step
