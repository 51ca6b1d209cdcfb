"""Random numbers: drawn by NumPy on the host from one seeded generator, then moved
to the backend, so a seed gives the same numbers on NumPy, CuPy and array_api_strict."""

from __future__ import annotations

from typing import Any

import numpy as np

from .tensor import DEFAULT_DTYPE, Tensor, tensor

_generator = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed the generator behind ``randn``, ``rand`` and parameter initialisation."""
    global _generator
    _generator = np.random.default_rng(seed)


def generator() -> np.random.Generator:
    return _generator


def randn(*shape: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples of the given shape (float64 unless ``dtype`` says otherwise)."""
    return tensor(_generator.standard_normal(shape), requires_grad=requires_grad, dtype=dtype or DEFAULT_DTYPE)


def rand(*shape: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    return tensor(_generator.random(shape), requires_grad=requires_grad, dtype=dtype or DEFAULT_DTYPE)
