"""The array backend: one place that knows which array library holds the data.

tinynorm follows Chainer's ``xp`` idea. Engine and norm code never write ``numpy.``;
they ask for the namespace ``xp`` of the arrays at hand and call only functions the
Python Array API standard defines (``xp.reshape(x, s)``, ``xp.sum(x, axis=...)``).
The same code then runs on

* ``"numpy"`` (the default), on the CPU;
* ``"cupy"``, on an NVIDIA GPU;
* ``"array_api_strict"``, a CPU namespace that refuses everything outside the
  standard. CI has no GPU, so running the whole suite on it is how we prove, on
  every commit, that nothing NumPy-only slipped into the code.

Nothing here imports CuPy or array_api_strict until they are asked for, so
``import tinynorm`` never needs them.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy", "array_api_strict")
_current = "numpy"


class BackendUnavailableError(RuntimeError):
    """A backend was asked for that this machine cannot run."""


def _check_name(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    return name  # type: ignore[return-value]


def namespace(name: str | None = None) -> ModuleType:
    """Return the array namespace ``xp`` of a backend (the current one by default)."""
    name = _check_name(_current if name is None else name)
    if name == "numpy":
        return np
    if name == "cupy":
        return _import_cupy()
    try:
        return importlib.import_module("array_api_strict")
    except ImportError as err:
        raise BackendUnavailableError(
            "backend 'array_api_strict' needs the package array-api-strict: pip install 'tinynorm[test]'"
        ) from err


def _import_cupy() -> ModuleType:
    try:
        cupy = importlib.import_module("cupy")
    except ImportError as err:
        raise BackendUnavailableError(
            "backend 'cupy' needs CuPy: pip install 'tinynorm[cuda12]' (or [cuda13])"
        ) from err
    # `import cupy` succeeds without a driver; the failure would only come at the
    # first allocation, as CUDARuntimeError. Ask up front so the error says why.
    try:
        usable = cupy.cuda.is_available()
    except Exception as err:  # a broken driver install raises instead of answering
        raise BackendUnavailableError(f"backend 'cupy': CUDA is not usable here ({err})") from err
    if not usable:
        raise BackendUnavailableError(
            "backend 'cupy': CuPy is installed but no usable CUDA GPU was found (cupy.cuda.is_available() is False)"
        )
    return cupy


def get_backend() -> str:
    """Name of the current backend, where new tensors are created."""
    return _current


def set_backend(name: str) -> None:
    """Make ``name`` the backend new tensors are created on.

    Raises ``ValueError`` for an unknown name and ``BackendUnavailableError`` when
    the backend cannot run here; in both cases the current backend is unchanged.
    """
    global _current
    namespace(name)  # fails loudly, before anything changes
    _current = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType]:
    """``with tn.use_backend("cupy") as xp:`` switches the backend inside the block."""
    previous = _current
    set_backend(name)
    try:
        yield namespace(name)
    finally:
        set_backend(previous)


def backend_of(array: Any) -> str:
    """Name of the backend an array belongs to."""
    if isinstance(array, np.ndarray):
        return "numpy"
    module = type(array).__module__.split(".")[0]
    if module in BACKENDS:
        return module
    raise TypeError(f"array: expected an array of one of {BACKENDS}, got {type(array).__name__}")


def namespace_of(array: Any) -> ModuleType:
    """The array namespace (``xp``) an array belongs to: ``numpy``, ``cupy`` or ``array_api_strict``.

    A ``tn.Tensor`` answers with its own (``Tensor.__array_namespace__``, the Array API's hook):
    the same functions, recorded by autograd (``tinynorm/graph_xp.py``). That is how a formula
    written for arrays runs on Tensors when a gradient must itself be differentiable."""
    if isinstance(array, np.ndarray):
        return np
    name = backend_of_or_none(array)
    if name is None and hasattr(array, "__array_namespace__"):
        return array.__array_namespace__()
    return namespace(backend_of(array))


def to_numpy(array: Any) -> np.ndarray:
    """A host NumPy copy of a backend array."""
    name = backend_of(array)
    if name == "numpy":
        return np.array(array, copy=True)
    if name == "cupy":
        return array.get()
    return np.array(np.from_dlpack(array), copy=True)


def from_numpy(array: np.ndarray, name: str | None = None) -> Any:
    """Move a host NumPy array to a backend (the current one by default)."""
    return namespace(name).asarray(array)


def resolve_dtype(dtype: Any, xp: ModuleType) -> Any:
    """Turn ``"float32"``, ``np.float32`` or a backend dtype into ``xp``'s dtype object."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype
    else:
        try:  # NumPy and CuPy dtypes, and scalar types such as np.float32
            name = np.dtype(dtype).name
        except TypeError:  # array_api_strict's dtype objects print as "array_api_strict.float64"
            name = str(dtype).rsplit(".", 1)[-1]
    found = getattr(xp, name, None)
    if found is None:
        raise TypeError(f"dtype: expected a dtype name that {xp.__name__} has, such as 'float64', got {dtype!r}")
    return found


def is_floating(dtype: Any, xp: ModuleType) -> bool:
    """True for the real floating dtypes (array_api_strict has no float16)."""
    return any(dtype == getattr(xp, n, None) for n in ("float16", "float32", "float64"))


def compute_dtype(dtype: Any, xp: ModuleType) -> Any:
    """The dtype statistics are computed in: float16 is widened to float32."""
    return xp.float32 if dtype == getattr(xp, "float16", None) else dtype


def backend_of_or_none(obj: Any) -> str | None:
    """Like ``backend_of``, but ``None`` for Python scalars, lists and other non-arrays."""
    try:
        return backend_of(obj)
    except TypeError:
        return None
