"""The few non-norm layers the notebooks need to train a small MLP."""

from __future__ import annotations

import math
from typing import Any

from .. import ops, random
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
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: expected input with last dimension {self.in_features}, got shape {x.shape}")
        y = x @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.relu(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.tanh(x)


class Sequential(Module):
    """Layers applied in order; they are found as parameters under the names ``"0"``, ``"1"``..."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __getitem__(self, i: int) -> Module:
        return list(self.named_children())[i][1]

    def __len__(self) -> int:
        return len(list(self.named_children()))

    def forward(self, x: Tensor) -> Tensor:
        for _, layer in self.named_children():
            x = layer(x)
        return x


def cross_entropy(logits: Tensor, target: Any) -> Tensor:
    """Mean cross-entropy of ``logits`` (N, C) against integer class labels (N,).

    Composed from primitive ops (a log-sum-exp shifted by the row max for stability),
    so autograd derives its gradient.
    """
    xp = logits.xp
    labels = target.data if isinstance(target, Tensor) else xp.asarray(target)
    shifted = logits - logits.max(axis=-1, keepdims=True).detach()
    log_norm = shifted.exp().sum(axis=-1, keepdims=True).log()
    n_classes = logits.shape[-1]
    one_hot = xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(xp.arange(n_classes), (1, -1)), logits.dtype)
    picked = (shifted * Tensor(one_hot)).sum(axis=-1, keepdims=True)
    return (log_norm - picked).mean()
