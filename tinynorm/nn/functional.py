"""``tn.nn.functional``: the functional form of every norm (``F.layer_norm(x, ...)``), and the few
other functions ``torch.nn.functional`` users reach for first: ``relu``, ``sigmoid``, ``softmax``,
``log_softmax`` (the ops of ``tinynorm.ops``) and ``cross_entropy``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..norms import functional_forms as _forms
from ..ops import log_softmax, relu, sigmoid, softmax  # noqa: F401 (re-exported)
from ..tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002 (torch's name)
    """``torch.nn.functional.cross_entropy`` for integer class targets.

    ``input`` holds unnormalized scores (logits): shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``,
    classes on axis 1 (axis 0 for 1-D input). ``target`` holds class indices in ``[0, C)``,
    of the input's shape without the class axis (a Tensor, an array or a list). Each loss is
    ``-log_softmax(input)[target]``, the negative log-probability of the right class;
    ``reduction`` is ``"mean"`` (over every loss), ``"sum"`` or ``"none"`` (one loss per target).

    Composed from primitives (``log_softmax`` is stable for large logits), so autograd derives
    its gradient. Not supported, unlike PyTorch: class-probability targets, ``weight``,
    ``ignore_index`` and ``label_smoothing``.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"cross_entropy: input must be a tn.Tensor of logits, got {type(input).__name__}")
    if not backend.is_floating(input.dtype, input.xp) or input.ndim == 0:
        raise TypeError(
            f"cross_entropy: input must be floating logits with a class axis, got {input.dtype} {input.shape}"
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    class_axis = 1 if input.ndim > 1 else 0
    num_classes = input.shape[class_axis]
    labels = _class_indices(target, input.shape[:class_axis] + input.shape[class_axis + 1 :], num_classes)
    xp = input.xp
    labels = backend.from_numpy(labels, input.backend)
    classes = xp.reshape(xp.arange(num_classes), (num_classes,) + (1,) * (input.ndim - 1 - class_axis))
    one_hot = xp.astype(xp.expand_dims(labels, axis=class_axis) == classes, input.dtype)
    losses = -(log_softmax(input, axis=class_axis) * Tensor(one_hot)).sum(axis=class_axis)
    return losses if reduction == "none" else losses.mean() if reduction == "mean" else losses.sum()


def _class_indices(target: Any, shape: tuple[int, ...], num_classes: int) -> np.ndarray:
    """``target`` as a host array of class indices, checked against the expected shape and range."""
    if isinstance(target, Tensor):
        target = target.data
    host = backend.to_numpy(target) if backend.backend_of_or_none(target) else np.asarray(target)
    if host.dtype.kind not in "iu":
        raise TypeError(
            f"cross_entropy: target must hold integer class indices, got dtype {host.dtype} "
            "(class-probability targets are not supported)"
        )
    if host.shape != shape:
        raise ValueError(
            f"cross_entropy: target must have shape {shape} (input's without the class axis), got {host.shape}"
        )
    outside = (host < 0) | (host >= num_classes)
    if outside.any():
        raise ValueError(
            f"cross_entropy: target {host[outside][0]} is out of bounds: classes are 0 to {num_classes - 1}"
        )
    return host


globals().update(_forms())
__all__ = sorted([*_forms(), "cross_entropy", "log_softmax", "relu", "sigmoid", "softmax"])
