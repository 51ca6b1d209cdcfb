"""The few non-norm layers the notebooks need to train a small MLP, and the containers
``ModuleList`` and ``Sequential``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from .. import backend, ops, random
from ..tensor import Tensor
from .module import Module, Parameter


class Linear(Module):
    """``y = x @ weight.T + bias``, ``weight`` of shape ``(out_features, in_features)``.

    Initialised as ``torch.nn.Linear``: uniform in ``[-1/sqrt(in), 1/sqrt(in)]``,
    drawn from tinynorm's seeded generator (``tn.manual_seed``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = Parameter((random.rand(out_features, in_features, dtype=dtype) * 2 - 1) * bound)
        self.bias = Parameter((random.rand(out_features, dtype=dtype) * 2 - 1) * bound) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        check_linear_input(type(self).__name__, x, self.in_features)
        return linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def check_linear_input(name: str, x: Any, in_features: int) -> None:
    """A floating-point Tensor whose last dimension is ``in_features``; the error names ``name``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: input must be a tn.Tensor, got {type(x).__name__}; wrap it with tn.tensor(...)")
    if not backend.is_floating(x.dtype, x.xp):
        raise TypeError(f"{name}: input must have a floating dtype, got {x.dtype}; convert with x.to('float64')")
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(
            f"{name}: input's last dimension must equal in_features={in_features}, got input of shape {x.shape}"
        )


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ weight.T + bias`` (``torch.nn.functional.linear``): ``Linear``'s matmul and bias,
    shared with the layers that compute their weight (``tinynorm/norms/weight_side.py``)."""
    y = x @ weight.T
    return y + bias if bias is not None else y


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class ModuleList(Module):
    """Modules held in a list, as ``torch.nn.ModuleList``: their parameters are the list's,
    under the names ``"0.weight"``, ``"1.weight"``... It has no ``forward``: the module that
    owns it decides how to call them."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}.append: expected a tn.nn.Module, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        if isinstance(modules, Module) and not isinstance(modules, ModuleList):
            raise TypeError(
                f"{type(self).__name__}.extend: expected an iterable of modules, got one {type(modules).__name__}"
            )
        for module in modules:
            self.append(module)
        return self

    def _index(self, i: int) -> str:
        if not isinstance(i, int) or not -len(self) <= i < len(self):
            raise IndexError(f"{type(self).__name__}: index {i!r} is out of range for {len(self)} modules")
        return str(i % len(self))

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return ModuleList(list(self)[i])
        return getattr(self, self._index(i))

    def __setitem__(self, i: int, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}[{i}] = ...: expected a tn.nn.Module, got {type(module).__name__}")
        setattr(self, self._index(i), module)

    def __len__(self) -> int:
        return sum(1 for _ in self.named_children())

    def __iter__(self) -> Iterator[Module]:
        return (module for _, module in self.named_children())


class Sequential(ModuleList):
    """Layers applied in order; they are found as parameters under the names ``"0"``, ``"1"``...
    (a ``ModuleList`` with a ``forward``)."""

    def __init__(self, *layers: Module) -> None:
        super().__init__(layers)

    def __getitem__(self, i: int | slice) -> Any:
        return Sequential(*super().__getitem__(i)) if isinstance(i, slice) else super().__getitem__(i)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self:
            x = layer(x)
        return x
