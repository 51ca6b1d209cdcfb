"""``Module`` and ``Parameter``: the ``torch.nn`` containers, small enough to read.

A module finds its parameters by looking at its attributes: every ``Parameter``
attribute is one, and every ``Module`` attribute contributes its own under a dotted
name (``"0.weight"``). Buffers (running statistics) are plain Tensors registered
with ``register_buffer`` so that ``to()`` moves them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .. import backend
from ..tensor import Tensor, tensor


class Parameter(Tensor):
    """A leaf Tensor that a module learns; ``requires_grad`` is on by default."""

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Tensor):
            data = data.data
        elif backend.backend_of_or_none(data) is None:
            data = tensor(data).data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of layers: subclasses set parameters in ``__init__`` and define ``forward``."""

    training: bool = True

    def __init__(self) -> None:
        self.training = True
        self._buffers: dict[str, Tensor | None] = {}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # ---- parameters and submodules ----------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs, this module's first, then each child's."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_parameters(prefix=f"{prefix}{name}.")

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self.named_parameters():
            yield p

    def register_buffer(self, name: str, value: Tensor | None) -> None:
        """A tensor that is state but not learned (e.g. BatchNorm's running mean)."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_buffers" in vars(self) and name in self._buffers:
            self._buffers[name] = value
        object.__setattr__(self, name, value)

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        for name, value in self._buffers.items():
            if value is not None:
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child.named_buffers(prefix=f"{prefix}{name}.")

    def zero_grad(self) -> None:
        """Forget accumulated gradients (``.grad = None``, as PyTorch's default)."""
        for p in self.parameters():
            p.grad = None

    # ---- modes and placement ------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        self.training = mode
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, target: str | Any) -> Module:
        """Move every parameter and buffer to a backend (``"cupy"``) or cast them (``"float32"``)."""
        for module in self.modules():
            for name, value in vars(module).items():
                if isinstance(value, Parameter):
                    object.__setattr__(module, name, Parameter(_converted(value, target), value.requires_grad))
            for name, value in list(module._buffers.items()):
                if value is not None:
                    setattr(module, name, Tensor(_converted(value, target)))
        return self

    def double(self) -> Module:
        return self.to("float64")

    def float(self) -> Module:
        return self.to("float32")

    def modules(self) -> Iterator[Module]:
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of every parameter and buffer, by dotted name."""
        state = {name: p.numpy() for name, p in self.named_parameters()}
        state.update({name: b.numpy() for name, b in self.named_buffers()})
        return state

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n" + "\n".join(children) + "\n)"


def _converted(t: Tensor, target: str | Any) -> Any:
    if target in backend.BACKENDS:
        return backend.from_numpy(t.numpy(), target)
    xp = t.xp
    if not backend.is_floating(t.dtype, xp):  # e.g. BatchNorm's integer batch count (PyTorch's rule too)
        return t.data
    return xp.astype(t.data, backend.resolve_dtype(target, xp))
