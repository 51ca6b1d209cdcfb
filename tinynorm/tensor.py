"""``Tensor``: a backend array plus what autograd needs to know about it.

A Tensor holds ``data`` (a NumPy, CuPy or array_api_strict array), a flag
``requires_grad``, and, once ``backward`` has run, ``grad`` (an array of the same
shape). A Tensor made by an operation also remembers the ``Function`` that made
it, that function's ``ctx`` and its input Tensors: these links are the graph.

The arithmetic operators and methods below only forward to the ``Function``
classes in ``ops.py``, where each forward sits next to its backward.

Deliberate difference from PyTorch: data without a dtype (Python floats, lists)
becomes float64, as in NumPy, not float32. tinynorm is about checking gradients,
and finite differences need float64.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from . import backend

DEFAULT_DTYPE = "float64"


class Tensor:
    """An n-dimensional array that can record the operations applied to it."""

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data = data
        self.grad: Any = None
        self.requires_grad = False
        self._fn: type | None = None  # the Function that made this tensor
        self._ctx: Any = None  # that Function's saved state, freed by backward
        self._parents: tuple[Tensor | None, ...] = ()
        self._retains_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ---- what a tensor is -------------------------------------------------
    @property
    def backend(self) -> str:
        return backend.backend_of(self.data)

    @property
    def xp(self) -> ModuleType:
        """The array namespace of this tensor's data."""
        return backend.namespace(self.backend)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user rather than by an operation."""
        return self._fn is None

    def requires_grad_(self, flag: bool = True) -> Tensor:
        if flag and not backend.is_floating(self.data.dtype, self.xp):
            raise TypeError(
                f"requires_grad: only floating-point tensors can require gradients, "
                f"got dtype {self.data.dtype}; create it with dtype='float64'"
            )
        if not self.is_leaf:
            raise RuntimeError("requires_grad_: only leaf tensors can change requires_grad")
        self.requires_grad = flag
        return self

    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` on this non-leaf tensor too (for looking inside a graph)."""
        self._retains_grad = True
        return self

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({backend.to_numpy(self.data)!r}{grad}, backend={self.backend!r})"

    def __len__(self) -> int:
        return self.shape[0]

    def __bool__(self) -> bool:
        return bool(self.data)

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item: expected a tensor with one element, got shape {self.shape}")
        return backend.to_numpy(self.data).reshape(()).item()

    # ---- moving and copying -----------------------------------------------
    def numpy(self) -> np.ndarray:
        """A host NumPy copy of the data (never shares memory with the tensor)."""
        return backend.to_numpy(self.data)

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, target: str | Any) -> Tensor:
        """``t.to("cupy")`` moves to a backend; ``t.to("float32")`` casts (differentiably)."""
        if target in backend.BACKENDS:
            if target == self.backend:
                return self
            return Tensor(backend.from_numpy(self.numpy(), target), requires_grad=self.requires_grad)
        if isinstance(target, str) and getattr(self.xp, target, None) is None:
            raise ValueError(
                f"to: expected a backend name {backend.BACKENDS} or a dtype name such as 'float32', got {target!r}"
            )
        return ops.cast(self, target)

    def double(self) -> Tensor:
        return self.to("float64")

    def float(self) -> Tensor:
        return self.to("float32")

    def half(self) -> Tensor:
        return self.to("float16")

    # ---- autograd -----------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Compute d(self)/d(leaf), weighted by ``grad``, into every leaf's ``.grad``.

        ``grad`` is dL/d(self): it may be left out only when self has one element.
        Gradients accumulate (``+=``) into ``.grad``, as in PyTorch: call
        ``zero_grad()`` (or set ``.grad = None``) between steps.
        """
        from . import autograd

        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad (no input of the computation "
                "had requires_grad=True, or it was computed under tn.no_grad())"
            )
        autograd.backward(self, autograd.as_backend_grad(self, grad), retain_graph)

    # ---- operators: each forwards to a Function in ops.py -------------------
    def __add__(self, other: Any) -> Tensor:
        return ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return ops.div(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return ops.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return ops.pow(other, self)

    def __neg__(self) -> Tensor:
        return ops.neg(self)

    def __matmul__(self, other: Any) -> Tensor:
        return ops.matmul(self, other)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index)

    # Comparisons give plain boolean arrays: they have no gradient.
    def __gt__(self, other: Any) -> Any:
        return self.data > _raw(other)

    def __ge__(self, other: Any) -> Any:
        return self.data >= _raw(other)

    def __lt__(self, other: Any) -> Any:
        return self.data < _raw(other)

    def __le__(self, other: Any) -> Any:
        return self.data <= _raw(other)

    def exp(self) -> Tensor:
        return ops.exp(self)

    def log(self) -> Tensor:
        return ops.log(self)

    def sqrt(self) -> Tensor:
        return ops.sqrt(self)

    def tanh(self) -> Tensor:
        return ops.tanh(self)

    def abs(self) -> Tensor:
        return ops.abs(self)

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return ops.max(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        return ops.reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape)

    def permute(self, *axes: Any) -> Tensor:
        return ops.permute(self, axes[0] if len(axes) == 1 and isinstance(axes[0], tuple) else axes)

    def transpose(self, dim0: int = -2, dim1: int = -1) -> Tensor:
        return ops.transpose(self, dim0, dim1)

    @property
    def T(self) -> Tensor:  # noqa: N802 (PyTorch's name)
        return ops.permute(self, tuple(reversed(range(self.ndim))))

    def broadcast_to(self, shape: tuple[int, ...]) -> Tensor:
        return ops.broadcast_to(self, shape)


def _raw(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None, backend_name: str | None = None) -> Tensor:
    """Create a tensor on the current backend (``tn.tensor([[1., 2.]], requires_grad=True)``).

    ``data`` may be a Python number or nested list, a NumPy array, or an array of
    any backend (copied to ``backend_name``, the current backend by default).
    Data without a floating dtype of its own (Python floats) becomes float64;
    integer data stays integer and then cannot require grad.
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.namespace(backend_name)
    if backend.backend_of_or_none(data) not in (None, "numpy"):
        data = backend.to_numpy(data)
    host = np.asarray(data)
    if dtype is None and host.dtype.kind == "f":
        dtype = host.dtype.name
    elif dtype is None and host.dtype.kind not in "iub":
        raise TypeError(f"tensor: expected numbers, got data of dtype {host.dtype}")
    array = xp.asarray(host, dtype=backend.resolve_dtype(dtype, xp))
    return Tensor(array, requires_grad=requires_grad)


def zeros(*shape: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros on the current backend (float64 unless ``dtype`` says otherwise)."""
    return tensor(np.zeros(shape), requires_grad=requires_grad, dtype=dtype or DEFAULT_DTYPE)


def ones(*shape: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of ones on the current backend (float64 unless ``dtype`` says otherwise)."""
    return tensor(np.ones(shape), requires_grad=requires_grad, dtype=dtype or DEFAULT_DTYPE)


from . import ops  # noqa: E402  (ops needs Tensor, Tensor's operators need ops)
