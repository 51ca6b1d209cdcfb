"""``Tensor``: a backend array plus what autograd needs to know about it.

A Tensor holds ``data`` (a NumPy, CuPy or array_api_strict array), a flag
``requires_grad``, and, once ``backward`` has run, ``grad`` (an array of the same
shape: a backend array, not a Tensor as in PyTorch). A Tensor made by an operation
also remembers the ``Function`` that made it, that function's ``ctx`` and its input
Tensors: these links are the graph.

The arithmetic operators and methods below only forward to the ``Function``
classes in ``ops.py``, where each forward sits next to its backward. Methods that
are an ``ops`` function as it stands (``t.sum(axis=0)`` is ``tn.sum(t, axis=0)``;
also ``exp``, ``log``, ``sqrt``, ``tanh``, ``abs``, ``relu``, ``sigmoid``, ``softmax``,
``log_softmax``, ``clamp``, ``mean``, ``max``, ``min``, ``var``, ``std``, ``unsqueeze``,
``squeeze``, ``flatten``) are that function itself, attached at the end of ``ops.py``:
one signature and one docstring for both spellings.

In-place writes are counted, as PyTorch counts them: every tensor has a version
counter, which ``t[index] = value`` and ``t.data = array`` (optimizer steps,
``load_state_dict``) increase. A ``Function`` that saved an input (or its output)
for backward notes its version, and the backward refuses to run on data that
changed since (``RuntimeError: one of the variables needed for gradient
computation has been modified by an inplace operation``) instead of returning
gradients of values that are no longer there. Writes into the raw array
(``t.data[...] = v``, or into the NumPy array given to ``from_numpy``) go around
tinynorm and are not seen, as with PyTorch's ``.data``.

NumPy on the left: ``ndarray + t`` and ``ndarray @ t`` give Tensors (NumPy defers to
the Tensor's reflected operators, see ``__array_ufunc__``); ``np.asarray(t)`` gives
a host copy of the data.

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

    # NumPy's operators would otherwise apply their ufunc to each element of a Tensor on the right
    # and return an object array of scalar Tensors. None makes them return NotImplemented, so Python
    # calls the Tensor's reflected operator (``__radd__``, ``__rmatmul__``...) and a Tensor comes back.
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self._data = data
        # In-place writes so far, in a one-element list shared with the tensors that see the same
        # memory (``detach()``, and the outputs of view ops such as reshape and slicing).
        self._version = [0]
        self.grad: Any = None
        self.requires_grad = False
        self._fn: type | None = None  # the Function that made this tensor
        self._ctx: Any = None  # that Function's saved state, freed by backward
        self._parents: tuple[Tensor | None, ...] = ()
        self._kwargs: dict[str, Any] | None = None  # the Function's keyword arguments, to run its forward again
        self._retains_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ---- what a tensor is -------------------------------------------------
    @property
    def data(self) -> Any:
        """The backend array. Assigning ``t.data = array`` counts as an in-place write; writing into
        the array (``t.data[...] = v``) is invisible to the version check: use ``t[...] = v``.

        Why ``t.data[...]`` writes are not caught: ``.data`` is the raw array every op and norm
        computes with, and it is handed out as it is (no copy, no wrapper, no read-only flag that
        would also freeze arrays shared with the caller through ``from_numpy``). PyTorch's ``.data``
        makes the same trade."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value
        self._version[0] += 1

    @property
    def backend(self) -> str:
        return backend.backend_of(self.data)

    def __array_namespace__(self, api_version: str | None = None) -> Any:
        """The Array API hook: the namespace whose functions, given Tensors, record the graph
        (``tinynorm/graph_xp.py``). ``namespace_of(t)`` returns it."""
        from .graph_xp import namespace_for

        return namespace_for(self.backend)

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

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(t)``: a host copy of the data, as ``t.numpy()`` (graph and gradient left behind)."""
        if copy is False:
            raise ValueError("np.asarray(tensor, copy=False): a Tensor's data always comes back as a host copy")
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def detach(self) -> Tensor:
        """The same data, cut from the graph (writes to either are counted for both)."""
        out = Tensor(self.data)
        out._version = self._version
        return out

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
    def backward(self, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False) -> None:
        """Compute d(self)/d(leaf), weighted by ``grad``, into every leaf's ``.grad``.

        ``grad`` is dL/d(self): it may be left out only when self has one element.
        Gradients accumulate (``+=``) into ``.grad``, as in PyTorch: call
        ``zero_grad()`` (or set ``.grad = None``) between steps. ``retain_graph``
        keeps the graph for another backward (default: ``create_graph``).

        ``create_graph=True`` records the backward itself, so the gradients can be
        differentiated again (as PyTorch): ``.grad`` is then a Tensor with a graph, not
        a backend array. See ``tn.grad`` and ``docs/higher_order.md``.
        """
        if not self.requires_grad:
            raise RuntimeError(
                "backward: this tensor does not require grad (no input of the computation "
                "had requires_grad=True, or it was computed under tn.no_grad())"
            )
        retain = create_graph if retain_graph is None else retain_graph
        autograd.backward([self], [autograd.upstream(self, grad, create_graph)], retain, create_graph)

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

    def __rmatmul__(self, other: Any) -> Tensor:
        return ops.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return ops.getitem(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        """``t[index] = value``, in place. Autograd does not record it, so it is refused where a
        gradient would be lost (outside ``tn.no_grad()``, on or from a tensor that requires grad)."""
        if autograd.is_grad_enabled() and (self.requires_grad or getattr(value, "requires_grad", False)):
            raise RuntimeError(
                "t[index] = value: in-place writes are not recorded by autograd, and here a tensor requires "
                "grad; write under tn.no_grad() (e.g. to initialise a parameter), or build a new tensor (tn.where)"
            )
        self.data[index] = _raw(value)
        self._version[0] += 1

    # Comparisons give plain boolean arrays: they have no gradient.
    def __gt__(self, other: Any) -> Any:
        return self.data > _raw(other)

    def __ge__(self, other: Any) -> Any:
        return self.data >= _raw(other)

    def __lt__(self, other: Any) -> Any:
        return self.data < _raw(other)

    def __le__(self, other: Any) -> Any:
        return self.data <= _raw(other)

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
    any backend (put on ``backend_name``, the current backend by default). The data
    is always copied, as ``torch.tensor`` copies: changing the source array later
    changes nothing here (``from_numpy`` and ``as_tensor`` share memory instead).
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
    array = xp.asarray(host, dtype=backend.resolve_dtype(dtype, xp), copy=True)
    return Tensor(array, requires_grad=requires_grad)


def from_numpy(array: np.ndarray) -> Tensor:
    """A NumPy-backend tensor that shares memory with ``array`` (as ``torch.from_numpy``): a write to
    either shows in both. Writes through ``array`` go around tinynorm, so the version check cannot see
    them (see the module's docstring); ``tn.tensor(array)`` copies instead."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iubf":
        raise TypeError(
            f"from_numpy: expected a NumPy array of numbers, got {type(array).__name__} {getattr(array, 'dtype', '')}"
        )
    return Tensor(array)


def as_tensor(data: Any, dtype: Any = None, backend_name: str | None = None) -> Tensor:
    """``data`` as a tensor, sharing its memory when it already is an array (or tensor) of the wanted
    backend and dtype, copying as ``tensor`` does otherwise (``torch.as_tensor``'s rule)."""
    name = backend_name or backend.get_backend()
    array = data.data if isinstance(data, Tensor) else data
    xp = backend.namespace(name)
    if backend.backend_of_or_none(array) != name or (dtype and array.dtype != backend.resolve_dtype(dtype, xp)):
        return tensor(array, dtype=dtype, backend_name=name)
    return data if isinstance(data, Tensor) else from_numpy(array) if name == "numpy" else Tensor(array)


def zeros(*shape: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros on the current backend (float64 unless ``dtype`` says otherwise)."""
    return tensor(np.zeros(shape), requires_grad=requires_grad, dtype=dtype or DEFAULT_DTYPE)


def ones(*shape: int, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of ones on the current backend (float64 unless ``dtype`` says otherwise)."""
    return tensor(np.ones(shape), requires_grad=requires_grad, dtype=dtype or DEFAULT_DTYPE)


from . import autograd, ops  # noqa: E402  (both need Tensor; Tensor's methods need them)
