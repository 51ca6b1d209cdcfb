"""The array namespace of Tensors: how one backward formula gives differentiable gradients.

Every forward and backward in tinynorm is written against an array namespace ``xp``
(``xp = namespace_of(x)``, then ``xp.sum``, ``xp.sqrt``...). Given raw arrays, that is
NumPy, CuPy or array_api_strict, and nothing is recorded. Given Tensors, it is the
namespace below: the same Array API names, each implemented by a tinynorm op, so every
step is recorded in the graph. This is what ``backward(create_graph=True)`` relies on
(Chainer's idea of one ``_compute`` written for ``xp`` or ``F``): the engine runs a node's
forward again on its input Tensors, so that the statistics it saves (mean, rstd...)
carry their history, then runs the node's own backward on Tensors. The gradient that
comes out is a Tensor with a graph, which can be differentiated again, to any order.

What has no derivative is a constant: booleans (comparisons, ``isfinite``...) come back as
raw arrays, to be combined with ``&`` and used as ``where``'s condition; numbers (``sign``,
``zeros_like``, ``arange``, a function given no Tensor at all) come back as constant Tensors,
so that ``constant * tensor`` works with the constant on either side, on every backend.

A formula that needs a function missing here gets an ``AttributeError`` saying so, rather
than a gradient that silently leaves the graph. Add the function here, built from ops.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

from . import backend, ops
from .tensor import Tensor

# Array API names that give Tensors, recorded in the graph: name -> (op, how to call it).
_RECORDED = {
    "reshape": lambda x, shape, copy=None: ops.reshape(x, tuple(shape)),
    "sum": lambda x, axis=None, keepdims=False, dtype=None: ops.sum(x, axis=axis, keepdims=keepdims),
    "mean": lambda x, axis=None, keepdims=False: ops.mean(x, axis=axis, keepdims=keepdims),
    "max": lambda x, axis=None, keepdims=False: ops.max(x, axis=axis, keepdims=keepdims),
    "sqrt": ops.sqrt,
    "exp": ops.exp,
    "log": ops.log,
    "log1p": ops.log1p,
    "tanh": ops.tanh,
    "erf": ops.erf,  # not in the Array API standard: NumPy has none (see ops.erf_of)
    "abs": ops.abs,
    "pow": ops.pow,
    "maximum": ops.maximum,
    "matmul": ops.matmul,
    "matrix_transpose": lambda x: ops.transpose(x, -2, -1),
    "permute_dims": lambda x, axes: ops.permute(x, tuple(axes)),
    "expand_dims": lambda x, axis=0: ops.unsqueeze(x, axis),
    "broadcast_to": lambda x, shape: ops.broadcast_to(x, tuple(shape)),
    "vecdot": lambda a, b, axis=-1: ops.sum(a * b, axis=axis),
    "clip": lambda x, min=None, max=None: ops.clamp(x, min=min, max=max),  # noqa: A002 (the standard's names)
    "concat": lambda arrays, axis=0: ops.cat(list(arrays), axis=axis),
    "concatenate": lambda arrays, axis=0: ops.cat(list(arrays), axis=axis),
    "where": lambda condition, a, b: ops.where(condition, a, b),
    "astype": lambda x, dtype, copy=True: x if x.dtype == dtype and not copy else ops.cast(x, dtype),
    "asarray": lambda x, dtype=None, copy=None: x if dtype is None or x.dtype == dtype else ops.cast(x, dtype),
}

# Names whose results have no derivative: computed on the data, returned as raw arrays.
_CONSTANT = (
    "isfinite isnan isinf sign equal not_equal greater less greater_equal less_equal any all "
    "zeros_like ones_like full_like empty_like argmax argmin"
).split()
# Names that make new arrays from shapes, and names that give no array at all (the backend's own).
_PASSED = "zeros ones full empty arange eye linspace".split()
_NOT_ARRAYS = "finfo iinfo isdtype result_type".split()


class GraphNamespace:
    """The Array API of one backend, on Tensors (see the module docstring)."""

    def __init__(self, xp: ModuleType) -> None:
        self._xp = xp
        self.__name__ = f"tinynorm graph namespace over {xp.__name__}"

    def __repr__(self) -> str:
        return f"<{self.__name__}>"

    def __getattr__(self, name: str) -> Any:
        raw = getattr(self._xp, name, None)
        if name in _RECORDED:
            return _either(_RECORDED[name], raw)
        if name in _CONSTANT or name in _PASSED and name not in _NOT_ARRAYS:
            return lambda *args, **kwargs: _constant(
                raw(*(_data(a) for a in args), **{k: _data(v) for k, v in kwargs.items()})
            )
        if name in _NOT_ARRAYS or (raw is not None and (isinstance(raw, type) or not callable(raw))):  # dtypes, pi
            return raw
        raise AttributeError(
            f"xp.{name}: tinynorm's graph namespace has no {name!r}, so a formula that calls it cannot run on "
            "Tensors (backward with create_graph=True); add it to tinynorm/graph_xp.py, built from tinynorm ops"
        )


def _either(recorded: Any, raw: Any) -> Any:
    """Run the op when any argument is a Tensor, the backend's function otherwise."""

    def call(*args: Any, **kwargs: Any) -> Any:
        flat = [*args, *kwargs.values()]
        flat += [a for arg in args if isinstance(arg, (list, tuple)) for a in arg]
        if any(isinstance(a, Tensor) for a in flat):
            return recorded(*args, **kwargs)
        return _constant(raw(*args, **kwargs))

    return call


def _constant(array: Any) -> Any:
    """A floating array as a constant Tensor (no history); booleans and integers stay raw."""
    name = backend.backend_of_or_none(array)
    if name is not None and backend.is_floating(array.dtype, backend.namespace(name)):
        return Tensor(array)
    return array


def _data(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else value


@cache
def namespace_for(backend_name: str) -> GraphNamespace:
    """The graph namespace of Tensors on ``backend_name`` (what ``namespace_of(tensor)`` returns)."""
    return GraphNamespace(backend.namespace(backend_name))
