"""Kernels: everything in tinynorm that exists only for speed.

A norm's file in ``tinynorm/norms/`` is its lesson: a plain forward and a plain
backward, written with the array namespace alone, which are the source of truth. A
kernel here computes the same thing faster, for one backend, with the same signature
and the same results (up to rounding): NumPy row blocks that stay in cache, on both
cores, with results written into memory already allocated (``cpu_rows``,
``cpu_channels``, driven by ``blocks``), or fused CUDA kernels on CuPy (``cupy_fused``).
``tests/test_kernels.py`` holds every registered kernel to its lesson.

A norm's ``Function`` makes one choice::

    forward, backward = kernels.pick("layernorm", x2, w, b) or (layer_norm_forward, layer_norm_backward)

and ``with tn.kernels.disabled():`` turns every kernel off, so the lesson's code runs
(like ``torch.backends.cudnn.enabled = False``): a student can step through it, time it
against the kernel, and see that the numbers agree.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import backend


@dataclass(frozen=True)
class Kernel:
    """A fast forward/backward pair for one lesson on one backend.

    ``forward`` and ``backward`` take the arguments of the lesson's two functions
    (``lesson``) and return what they return. ``supports(*arrays)`` says whether the
    kernel handles these particular arrays (dtype, shape, size); the lesson runs where
    it does not.
    """

    name: str  # what the norm's Function asks pick() for, e.g. "layer_norm"
    backend: str
    forward: Callable[..., Any]
    backward: Callable[..., Any]
    lesson: tuple[Callable[..., Any], Callable[..., Any]]
    supports: Callable[..., bool] = lambda *arrays: True


KERNELS: dict[tuple[str, str], Kernel] = {}
"""Every kernel, by ``(kernel name, backend name)``."""

_enabled = contextvars.ContextVar("tinynorm_kernels_enabled", default=True)


def register(kernel: Kernel) -> Kernel:
    key = (kernel.name, kernel.backend)
    if key in KERNELS:
        raise ValueError(f"kernels.register: a kernel for {key} is registered twice")
    KERNELS[key] = kernel
    return kernel


def pick(name: str, x: Any, *arrays: Any) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """The kernel ``name``'s ``(forward, backward)`` on ``x``'s backend, or ``None``.

    ``None`` (the lesson runs) when kernels are disabled, when no such kernel is
    registered for this backend, or when the kernel does not handle these arrays. Kernels
    are first-order only: given Tensors (a backward differentiated with ``create_graph=True``)
    the answer is ``None``, and the lesson's plain formulas run on the Tensors.
    """
    if not _enabled.get():
        return None
    if any(a is not None and backend.backend_of_or_none(a) is None for a in (x, *arrays)):
        return None  # Tensors: a backward being differentiated runs the lesson
    _load(backend.backend_of(x))
    kernel = KERNELS.get((name, backend.backend_of(x)))
    if kernel is None or not kernel.supports(x, *arrays):
        return None
    chosen = _chosen.get()
    if chosen is not None:
        chosen.append((kernel.name, kernel.backend))
    return kernel.forward, kernel.backward


def enabled() -> bool:
    """Whether ``pick`` may choose kernels here (see ``disabled``)."""
    return _enabled.get()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Inside ``with tn.kernels.disabled():`` every norm runs its lesson's plain code."""
    token = _enabled.set(False)
    try:
        yield
    finally:
        _enabled.reset(token)


_chosen: contextvars.ContextVar[list[tuple[str, str]] | None] = contextvars.ContextVar(
    "tinynorm_kernels_chosen", default=None
)


@contextlib.contextmanager
def record() -> Iterator[list[tuple[str, str]]]:
    """``with tn.kernels.record() as chosen:`` lists each ``(kernel, backend)`` that ``pick``
    chose inside the block, once per forward or backward: proof that a kernel ran."""
    chosen: list[tuple[str, str]] = []
    token = _chosen.set(chosen)
    try:
        yield chosen
    finally:
        _chosen.reset(token)


_loaded: set[str] = set()


def _load(name: str) -> None:
    """Import the kernel modules for a backend the first time it is used (CuPy's
    kernels are compiled lazily; NumPy's register as their modules are imported)."""
    if name in _loaded:
        return
    _loaded.add(name)
    if name == "numpy":
        from . import cpu_channels, cpu_rows  # noqa: F401
    elif name == "cupy":
        _register_cupy()


def _register_cupy() -> None:
    from ..norms import layernorm, rmsnorm
    from . import cupy_fused

    for name, fused, lesson in (
        ("layer_norm", (cupy_fused.layer_norm_forward, cupy_fused.layer_norm_backward), layernorm),
        ("rms_norm", (cupy_fused.rms_norm_forward, cupy_fused.rms_norm_backward), rmsnorm),
    ):
        plain = (getattr(lesson, f"{name}_forward"), getattr(lesson, f"{name}_backward"))
        register(Kernel(name, "cupy", *fused, lesson=plain, supports=cupy_fused.supports))


def load_all() -> None:
    """Register every kernel this machine could run (for the contract test and ``list``)."""
    for name in ("numpy", "cupy"):
        _load(name)
