"""``Module`` and ``Parameter``: the ``torch.nn`` containers, small enough to read.

A module finds its parameters by looking at its attributes: every ``Parameter``
attribute is one, and every ``Module`` attribute contributes its own under a dotted
name (``"0.weight"``). Buffers (running statistics) are plain Tensors registered
with ``register_buffer`` so that ``to()`` moves them and ``state_dict()`` saves them.
``state_dict()`` and ``load_state_dict()`` use PyTorch's names, so a PyTorch model's
state loads into the same tinynorm model (``{k: v.numpy() for k, v in sd.items()}``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

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
        """``(name, module)`` for each direct submodule, in the order they were set (each once)."""
        seen: set[int] = set()
        for name, value in vars(self).items():
            if isinstance(value, Module) and id(value) not in seen:
                seen.add(id(value))
                yield name, value

    def children(self) -> Iterator[Module]:
        """The direct submodules (``named_children`` without the names)."""
        for _, child in self.named_children():
            yield child

    def named_modules(self, memo: set[int] | None = None, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """``("", self)``, then every submodule depth first by dotted name (``"block.linear"``);
        a module reachable along two paths comes once, as in PyTorch (``memo`` holds the ids seen)."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """``(name, parameter)`` pairs, this module's first, then each child's.

        A parameter shared by two modules (tied weights) is listed once, under its first
        name, as in PyTorch: an optimizer must not step it twice. ``remove_duplicate=False``
        lists every name."""
        seen: set[int] = set()
        for name, p in self._named_parameters_with_duplicates(prefix):
            if remove_duplicate and id(p) in seen:
                continue
            seen.add(id(p))
            yield name, p

    def _named_parameters_with_duplicates(self, prefix: str) -> Iterator[tuple[str, Parameter]]:
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named_parameters_with_duplicates(f"{prefix}{name}.")

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
        """This module and every submodule (``named_modules`` without the names)."""
        for _, module in self.named_modules():
            yield module

    # ---- saving and loading ----------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Host NumPy copies of every parameter and buffer, by dotted name (``"0.weight"``,
        ``"norm.running_mean"``), in PyTorch's order: a module's own parameters, then its own
        buffers, then each child's. (PyTorch's values are tensors; these are NumPy arrays.)"""
        return {name: t.numpy() for name, t in self._state_tensors()}

    def _state_tensors(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """The tensors behind ``state_dict``'s keys: what ``load_state_dict`` writes into."""
        for name, value in vars(self).items():
            if isinstance(value, Parameter):
                yield prefix + name, value
        for name, value in self._buffers.items():
            if value is not None:
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._state_tensors(f"{prefix}{name}.")

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy ``state_dict``'s values into the parameters and buffers of the same names, as
        ``torch.nn.Module.load_state_dict``.

        A value may be a NumPy array, a tn Tensor, an array of any backend, or anything
        ``np.asarray`` takes (so ``{k: v.numpy() for k, v in torch_model.state_dict().items()}``
        loads a PyTorch model's state). It is copied into the target's dtype and backend,
        never shared. Every key is checked before anything is written: with ``strict=True``
        missing and unexpected keys are errors; a wrong shape, or a value that is not numbers,
        always is. All of them are reported in one ``RuntimeError``, as PyTorch reports them,
        and a failed load changes nothing. Loading counts as an in-place write of each
        target (see ``tinynorm.tensor``).

        Returns ``(missing_keys, unexpected_keys)``, a named tuple (empty after a strict load).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict: expected a dict of arrays by name, got {type(state_dict).__name__}")
        targets = dict(self._state_tensors())
        missing = [key for key in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in targets]
        errors: list[str] = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{key}"' for key in missing) + ".")
        if strict and unexpected:
            errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{key}"' for key in unexpected) + ".")
        values = {}
        for key, target in targets.items():
            if key in state_dict:
                values[key] = value = _host_array(state_dict[key])
                problem = _load_problem(key, value, target)
                if problem:
                    errors.append(problem)
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for key, value in values.items():
            target = targets[key]
            # astype copies (its default), so the caller's array is never shared.
            target.data = target.xp.astype(backend.from_numpy(value, target.backend), target.dtype)
        return IncompatibleKeys(missing, unexpected)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        children = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        return f"{type(self).__name__}(\n" + "\n".join(children) + "\n)"


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns, as PyTorch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _host_array(value: Any) -> Any:
    """A host NumPy array of a state_dict value, or the exception that converting it raised."""
    try:
        if isinstance(value, Tensor):
            return value.numpy()
        return backend.to_numpy(value) if backend.backend_of_or_none(value) else np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:  # e.g. a CUDA torch tensor, a ragged list
        return err


def _load_problem(key: str, value: Any, target: Tensor) -> str | None:
    """Why ``value`` cannot be loaded into ``target`` (PyTorch's wording for a size mismatch), or None."""
    if isinstance(value, Exception):
        return f"could not read {key} as an array: {type(value).__name__}: {value}"
    if value.dtype.kind not in "biuf":
        return f"dtype mismatch for {key}: expected numbers, got an array of dtype {value.dtype}."
    if value.shape != target.shape:
        return (
            f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
            f"the shape in current model is {target.shape}."
        )
    return None


def _converted(t: Tensor, target: str | Any) -> Any:
    if target in backend.BACKENDS:
        return backend.from_numpy(t.numpy(), target)
    xp = t.xp
    if not backend.is_floating(t.dtype, xp):  # e.g. BatchNorm's integer batch count (PyTorch's rule too)
        return t.data
    return xp.astype(t.data, backend.resolve_dtype(target, xp))
