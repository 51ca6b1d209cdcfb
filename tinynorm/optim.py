"""``SGD`` and ``Adam``, with PyTorch's names and update rules, enough to train the
notebooks' MLPs. They update ``p.data`` in place of autograd: an optimizer step is
not part of the graph. Each step counts as an in-place write of the parameter, so a
``backward()`` through a graph built before the step raises, as in PyTorch, instead
of differentiating with the old weights."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

from .nn.module import Parameter


class Optimizer(ABC):
    """Holds the parameters to update; subclasses define ``step``."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("optimizer: got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"lr: expected a positive learning rate, got {lr}")
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @abstractmethod
    def step(self) -> None:
        """Update every parameter that has a gradient."""


class SGD(Optimizer):
    """``v = momentum * v + grad (+ weight_decay * p)``; ``p -= lr * v``."""

    def __init__(
        self, params: Iterable[Parameter], lr: float = 1e-2, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity: list[Any] = [None] * len(self.params)

    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            if self.momentum:
                self.velocity[i] = g if self.velocity[i] is None else self.momentum * self.velocity[i] + g
                g = self.velocity[i]
            p.data = p.data - self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, as ``torch.optim.Adam``."""

    def __init__(
        self,
        params: Iterable[Parameter],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.m: list[Any] = [p.xp.zeros_like(p.data) for p in self.params]
        self.v: list[Any] = [p.xp.zeros_like(p.data) for p in self.params]
        self.t = 0

    def step(self) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad + self.weight_decay * p.data if self.weight_decay else p.grad
            self.m[i] = beta1 * self.m[i] + (1 - beta1) * g
            self.v[i] = beta2 * self.v[i] + (1 - beta2) * g * g
            m_hat = self.m[i] / (1 - beta1**self.t)
            v_hat = self.v[i] / (1 - beta2**self.t)
            p.data = p.data - self.lr * m_hat / (p.xp.sqrt(v_hat) + self.eps)
