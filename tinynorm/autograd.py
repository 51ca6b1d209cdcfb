"""Reverse-mode automatic differentiation: ``Function``, its ``ctx``, and the backward walk.

Every operation in tinynorm is a ``Function`` with two static methods that work on raw
backend arrays (never on Tensors):

* ``forward(ctx, *arrays, **kwargs)`` computes the output and stores in ``ctx`` what
  the backward will need (``ctx.save_for_backward(...)``);
* ``backward(ctx, grad)`` receives dL/d(output) and returns dL/d(input) for each
  positional input (``None`` where an input needs no gradient). It must not modify
  ``grad`` in place: the same array may be the caller's, or feed other nodes.

``MyFn.apply(*tensors, **kwargs)`` runs the forward and, when a gradient is wanted,
links the output to its inputs, noting the version (the count of in-place writes, see
``tensor.py``) of each input, and of the output, whose very array the forward saved.
``Tensor.backward()`` then visits that graph in reverse topological order, calling
each backward once. This is PyTorch's ``torch.autograd.Function`` shape; norms use it
to plug in hand-derived backwards.

Before a node's backward runs, those versions are compared: if a saved tensor was
written in place since the forward, the backward would compute the gradient of values
that are no longer there, so it raises PyTorch's ``RuntimeError`` instead. A version is
noted only for the arrays a forward saves as they were given to it (not for views or
copies of them it makes itself). What ``backward`` returns is checked too: one backend
array (not a Tensor) of the input's shape, or ``None``, per input.

Backward twice: like PyTorch, the graph is freed by a backward pass (the saved
arrays are released); a second ``backward()`` through it raises a ``RuntimeError``
unless the first call passed ``retain_graph=True``, in which case gradients
accumulate into ``.grad``, as PyTorch does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import backend
from .tensor import Tensor

_grad_enabled = True


@contextlib.contextmanager
def set_grad_enabled(mode: bool) -> Iterator[None]:
    """Inside ``with tn.set_grad_enabled(mode):`` operations record a graph only if ``mode``."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, bool(mode)
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Inside ``with tn.no_grad():`` operations record no graph (as ``torch.no_grad``)."""
    return set_grad_enabled(False)


def is_grad_enabled() -> bool:
    return _grad_enabled


class Context:
    """What a ``Function``'s forward leaves for its backward."""

    def __init__(self, needs_input_grad: tuple[bool, ...], recomputing: bool = False) -> None:
        self.needs_input_grad = needs_input_grad
        # True when the engine runs the forward again on Tensors (create_graph): skip side effects.
        self.recomputing = recomputing
        self.saved_tensors: tuple[Any, ...] = ()
        self.saved_versions: dict[int, int] = {}  # position among (*inputs, output) -> its version

    def save_for_backward(self, *arrays: Any) -> None:
        self.saved_tensors = arrays


class Function:
    """Base class of every differentiable operation. Subclass and define the two
    static methods ``forward(ctx, *arrays, **kwargs)`` and ``backward(ctx, grad)``.

    A Function whose output is a view of its first input's memory (reshape, slicing)
    sets ``returns_view = True``: the two tensors then share one version counter, so
    a write through either is seen by whatever saved the other."""

    returns_view = False

    @staticmethod
    def forward(ctx: Context, *arrays: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("a Function subclass must define forward(ctx, *arrays)")

    @staticmethod
    def backward(ctx: Context, grad: Any) -> Any:
        raise NotImplementedError("a Function subclass must define backward(ctx, grad)")

    @classmethod
    def apply(cls, *inputs: Tensor | None, **kwargs: Any) -> Tensor:
        """Run ``forward`` on the inputs' arrays and record the graph edge."""
        for i, t in enumerate(inputs):
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"{cls.__name__}.apply: input {i} must be a tn.Tensor or None, got {type(t).__name__}")
        _check_same_backend(cls.__name__, inputs)
        needs = tuple(t is not None and t.requires_grad for t in inputs)
        record = _grad_enabled and any(needs)
        ctx = Context(needs)
        arrays = [None if t is None else t.data for t in inputs]
        out = Tensor(cls.forward(ctx, *arrays, **kwargs))
        if cls.returns_view:
            out._version = inputs[0]._version
        if record:
            out.requires_grad = True
            out._fn, out._ctx, out._parents, out._kwargs = cls, ctx, inputs, kwargs
            saved = {id(a) for item in ctx.saved_tensors for a in (item if isinstance(item, tuple) else (item,))}
            tensors = (*inputs, out)
            ctx.saved_versions = {
                i: t._version[0] for i, t in enumerate(tensors) if t is not None and id(t.data) in saved
            }
        return out


def _check_same_backend(op: str, inputs: tuple[Tensor | None, ...]) -> None:
    names = {t.backend for t in inputs if t is not None}
    if len(names) > 1:
        raise TypeError(
            f"{op}: all tensors must live on one backend, got tensors on {sorted(names)}; "
            "move them with tensor.to(backend)"
        )


def topological_order(*roots: Tensor) -> list[Tensor]:
    """Nodes that lead to the ``roots``, each after all of its inputs.

    Iterative depth-first search with an explicit stack: a recursive one would
    hit Python's recursion limit on a chain of a few thousand operations.
    """
    order: list[Tensor] = []
    visited: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))  # revisit once every input is ordered
        for parent in node._parents:
            if parent is not None and parent.requires_grad and id(parent) not in visited:
                stack.append((parent, False))
    return order


def backward(
    roots: Sequence[Tensor],
    grads: Sequence[Any],
    retain_graph: bool = False,
    create_graph: bool = False,
    inputs: Sequence[Tensor] | None = None,
) -> dict[int, Any]:
    """Propagate each ``grads[k]`` (dL/d roots[k]) through the graph.

    Without ``inputs`` (``Tensor.backward``) every leaf's ``.grad`` accumulates its
    gradient; with ``inputs`` (``tn.grad``) nothing is written and their gradients come
    back, by ``id``. With ``create_graph=True`` the gradients are Tensors whose own graph is
    recorded (see ``_node_backward``), so they can be differentiated again.
    """
    order = topological_order(*roots)
    for node in order:  # all checked before any .grad changes
        _check_saved_unchanged(node)
    pending: dict[int, Any] = {id(roots[0]): grads[0]}
    for root, g in zip(roots[1:], grads[1:]):  # tn.grad may start from several outputs
        pending[id(root)] = g if id(root) not in pending else pending[id(root)] + g
    wanted = None if inputs is None else {id(t) for t in inputs}
    found: dict[int, Any] = {}
    # A first-order pass runs the backwards on raw arrays, which record nothing: no switch needed
    # (entering tn.set_grad_enabled made a tiny op's backward run 15% more instructions). With
    # create_graph they run on Tensors, and their steps must be recorded.
    with set_grad_enabled(True) if create_graph else contextlib.nullcontext():
        for node in reversed(order):
            g = pending.pop(id(node), None)
            if g is None:
                continue
            if wanted is not None:
                if id(node) in wanted:
                    found[id(node)] = g
            elif node._retains_grad or node.is_leaf:
                node.grad = g if node.grad is None else node.grad + g
            if not node.is_leaf:
                _node_backward(node, g, pending, create_graph)
                if not retain_graph:  # free the saved arrays, as PyTorch does
                    node._ctx, node._parents, node._kwargs = None, (), None
    return found


def _node_backward(node: Tensor, g: Any, pending: dict[int, Any], create_graph: bool) -> None:
    """Run one node's backward and add what it returns to its inputs' pending gradients.

    With ``create_graph`` the node's forward first runs again, on its input Tensors: every
    step is then recorded (``graph_xp.py``), so the statistics the backward uses (mean,
    rstd...) carry their history back to the inputs. The same backward then runs on
    Tensors. Reusing the arrays saved by the first forward instead would treat those
    statistics as constants: the gradient's own derivative would miss their terms
    (``docs/higher_order.md``)."""
    if node._ctx is None:
        raise RuntimeError(
            f"backward through {node._fn.__name__} a second time: the graph was freed by "
            "the first backward(). Pass retain_graph=True to the first call to keep it."
        )
    name, ctx = node._fn.__name__, node._ctx
    if create_graph:
        ctx = Context(node._ctx.needs_input_grad, recomputing=True)
        node._fn.forward(ctx, *node._parents, **node._kwargs)
    input_grads = node._fn.backward(ctx, g)
    if not isinstance(input_grads, tuple):
        input_grads = (input_grads,)
    if len(input_grads) != len(node._parents):
        raise RuntimeError(f"{name}.backward returned {len(input_grads)} gradients for {len(node._parents)} inputs")
    for i, (parent, pg) in enumerate(zip(node._parents, input_grads)):
        if parent is None or not parent.requires_grad or pg is None:
            continue
        if create_graph and not isinstance(pg, Tensor):
            raise TypeError(
                f"{name}.backward returned a {type(pg).__name__} as the gradient of input {i} while building a "
                "differentiable gradient (create_graph=True): a step of the backward left the graph (a NumPy "
                "call, or .data); write it with xp = namespace_of(...) functions, which Tensors record"
            )
        if not create_graph and backend.backend_of_or_none(pg) != parent.backend:
            raise TypeError(
                f"{name}.backward returned a {type(pg).__name__} as the gradient of input {i}; expected a "
                f"{parent.backend} array (a backward works on raw arrays: return t.data, not a tn.Tensor)"
            )
        if tuple(pg.shape) != parent.shape:
            raise RuntimeError(
                f"{name}.backward returned a gradient of shape {tuple(pg.shape)} for an input of shape "
                f"{parent.shape} (input {i})"
            )
        # A gradient has its input's dtype, as in PyTorch (x32 * w64 computes in float64).
        pg = backend.namespace_of(pg).astype(pg, parent.data.dtype, copy=False)
        key = id(parent)
        pending[key] = pg if key not in pending else pending[key] + pg


def _check_saved_unchanged(node: Tensor) -> None:
    """Refuse to backpropagate through data written in place after the forward saved it."""
    if node._ctx is None:  # a leaf, or a node already freed (backward reports that)
        return
    tensors = (*node._parents, node)
    for i, version in node._ctx.saved_versions.items():
        now = tensors[i]._version[0]
        if now != version:
            which = "its output" if i == len(node._parents) else f"its input {i}"
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an inplace "
                f"operation: {which} (shape {tensors[i].shape}), saved by {node._fn.__name__}, is at version "
                f"{now}; expected version {version} instead. Do the in-place write after backward(), or on a copy"
            )


def grad(
    outputs: Tensor | Sequence[Tensor],
    inputs: Tensor | Sequence[Tensor],
    grad_outputs: Any = None,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Tensor | None, ...]:
    """The gradients of ``outputs`` with respect to ``inputs``, as ``torch.autograd.grad``.

    ``grad_outputs`` holds dL/d(output) for each output (``None`` for a one-element output:
    ones). Returns one Tensor per input and writes no ``.grad``. An input the outputs do not
    depend on is an error, or ``None`` with ``allow_unused=True``. With ``create_graph=True``
    the gradients carry their own graph and can be differentiated again (a Tensor given in
    ``grad_outputs`` stays in that graph too); ``retain_graph`` defaults to ``create_graph``.
    """
    outputs, inputs = _tensors("outputs", outputs), _tensors("inputs", inputs)
    upstream_given = list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs] * len(outputs)
    if len(upstream_given) != len(outputs):
        raise ValueError(f"grad: {len(upstream_given)} grad_outputs for {len(outputs)} outputs")
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad")
    grads = [upstream(out, g, create_graph) for out, g in zip(outputs, upstream_given)]
    retain = create_graph if retain_graph is None else retain_graph
    found = backward(outputs, grads, retain, create_graph, inputs)
    result: list[Tensor | None] = []
    for i, t in enumerate(inputs):
        g = found.get(id(t))
        if g is None and not allow_unused:
            raise RuntimeError(
                f"grad: inputs[{i}] (shape {t.shape}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
        result.append(g if g is None or isinstance(g, Tensor) else Tensor(g))
    return tuple(result)


def _tensors(name: str, value: Any) -> list[Tensor]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for i, t in enumerate(items):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: {name}[{i}] must be a tn.Tensor, got {type(t).__name__}")
    if not items:
        raise ValueError(f"grad: {name} is empty")
    for t in items if name == "outputs" else ():
        if not t.requires_grad:
            raise RuntimeError(f"grad: an output (shape {t.shape}) does not require grad: it has no graph")
    return items


def upstream(root: Tensor, grad: Any, create_graph: bool) -> Any:
    """The upstream gradient a backward starts from: a backend array, or with ``create_graph`` a
    Tensor (the caller's own, when it is one, so that gradients can be taken with respect to it)."""
    array = as_backend_grad(root, grad)
    if not create_graph:
        return array
    if isinstance(grad, Tensor):
        from .ops import cast  # ops needs this module: imported late

        return grad if grad.dtype == root.dtype else cast(grad, root.dtype)
    return Tensor(array)


def as_backend_grad(root: Tensor, grad: Any) -> Any:
    """Check a user-given upstream gradient and return it as an array of root's backend."""
    if grad is None:
        if root.size != 1:
            raise RuntimeError(
                f"backward: grad can be omitted only for a scalar output, but the output has "
                f"shape {root.shape}; pass grad, an array of that shape (dL/d output)"
            )
        xp = root.xp
        return xp.ones(root.data.shape, dtype=root.data.dtype)
    if isinstance(grad, Tensor):
        if grad.backend != root.backend:
            raise TypeError(f"backward: grad lives on backend {grad.backend!r}, the output on {root.backend!r}")
        grad = grad.data
    elif backend.backend_of_or_none(grad) != root.backend:
        host = np.asarray(backend.to_numpy(grad) if backend.backend_of_or_none(grad) else grad)
        grad = root.xp.asarray(host) if host.dtype.kind == "f" else host
    if not backend.is_floating(grad.dtype, backend.namespace_of(grad)):
        raise TypeError(f"backward: grad must have a real floating dtype (float16, float32, float64), got {grad.dtype}")
    if tuple(grad.shape) != root.shape:
        raise ValueError(f"backward: grad must have the output's shape {root.shape}, got {tuple(grad.shape)}")
    # No copy when the dtype already matches: a backward never writes into its upstream
    # gradient (a rule every Function here keeps), so sharing the caller's array is safe.
    return root.xp.astype(grad, root.data.dtype, copy=False)
