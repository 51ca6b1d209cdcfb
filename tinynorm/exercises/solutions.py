r"""The model answers of the exercises: the one place they are written.

The student notebooks in ``notebooks/exercises/`` are generated from this file
(``python -m tinynorm exercises --student OUTDIR``): every region between the comment
lines ``BEGIN SOLUTION`` and ``END SOLUTION`` becomes ``raise NotImplementedError(...)``,
and everything outside the regions (signatures, docstrings) is what students see.
``--solutions OUTDIR`` writes the same notebooks with the regions kept.

Conventions, the same for exercises 1 to 6: a backward takes the upstream gradient
``dy`` first, then the forward's inputs as NumPy float64 arrays, then its constants
(``eps``), and returns a tuple with one gradient per input, in the order of the
inputs, each of its input's shape. Exercise 7 is a whole norm, written the way the
files in ``tinynorm/norms/`` are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Context, Function
from ..backend import namespace_of
from ..nn.module import Parameter
from ..norms._shared import NormModule, as_shape, check_eps, check_input, check_param, feature_axes
from ..ops import sum_to
from ..registry import Case, NormSpec, ParamSpec, sample
from ..tensor import Tensor, ones


# ---- exercise 1: a primitive op with broadcasting ----------------------------------
def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting.

    Broadcasting (1) prepends axes and (2) stretches axes of size 1 to the other
    operand's size. Returns an array of exactly ``shape``.
    """
    # BEGIN SOLUTION
    # A broadcast value is used once per copy: its gradient is the sum over the copies.
    while grad.ndim > len(shape):  # the prepended axes
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):  # the stretched axes, kept with size 1
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad
    # END SOLUTION


def mul_backward(dy, a, b):
    """Gradients of ``y = a * b``, where ``a`` and ``b`` broadcast against each other.

    ``dy`` has the shape of ``y``. Returns ``(da, db)``, with ``da.shape == a.shape``
    and ``db.shape == b.shape``.
    """
    # BEGIN SOLUTION
    da = unbroadcast(dy * b, a.shape)
    db = unbroadcast(dy * a, b.shape)
    return da, db
    # END SOLUTION


# ---- exercises 2 to 6: the lessons' own backwards -------------------------------------
# The model answers are the package's lessons (tinynorm/norms/rmsnorm.py, layernorm.py,
# rmsnorm_tanh.py, batchnorm.py), imported inside the solution (students do not see the
# import) and called on the exercise's arrays seen in the lesson's layout (rows, or
# (B, C, L) for BatchNorm): the repository has one plain backward per norm, and the
# exercises are graded against it.
def rmsnorm_backward(dy, x, weight, eps):
    """Gradients of RMSNorm over the last axis, ``y = x / sqrt(mean(x**2) + eps) * weight``.

    ``x`` has shape ``(..., N)`` (any number of leading batch axes), ``weight`` shape
    ``(N,)``. Returns ``(dx, dweight)``.
    """
    # BEGIN SOLUTION
    from tinynorm.norms.rmsnorm import rms_norm_backward, rms_norm_forward

    # The lesson: dx = rstd * (g - xhat * mean(g * xhat)), dweight = sum over rows of dy * xhat.
    n = x.shape[-1]
    x_rows, dy_rows = np.reshape(x, (-1, n)), np.reshape(dy, (-1, n))  # (..., N) seen as rows (rows, N)
    _, rstd = rms_norm_forward(x_rows, weight, None, eps)
    dx, dweight, _ = rms_norm_backward(dy_rows, x_rows, weight, rstd, False)
    return np.reshape(dx, x.shape), dweight
    # END SOLUTION


# ---- exercise 3: RMSNorm with scale and shift ---------------------------------------
def rmsnorm_affine_backward(dy, x, weight, bias, eps):
    """Gradients of ``y = x / sqrt(mean(x**2) + eps) * weight + bias`` (over the last axis).

    ``x`` has shape ``(..., N)``; ``weight`` and ``bias`` shape ``(N,)``.
    Returns ``(dx, dweight, dbias)``.
    """
    # BEGIN SOLUTION
    from tinynorm.norms.rmsnorm import rms_norm_backward, rms_norm_forward

    # The same lesson; the shift adds dy to every row, so dbias = sum over rows of dy.
    n = x.shape[-1]
    x_rows, dy_rows = np.reshape(x, (-1, n)), np.reshape(dy, (-1, n))  # (..., N) seen as rows (rows, N)
    _, rstd = rms_norm_forward(x_rows, weight, bias, eps)
    dx, dweight, dbias = rms_norm_backward(dy_rows, x_rows, weight, rstd, True)
    return np.reshape(dx, x.shape), dweight, dbias
    # END SOLUTION


# ---- exercise 4: LayerNorm -----------------------------------------------------------------
def layernorm_backward(dy, x, weight, bias, eps):
    """Gradients of LayerNorm over the last axis (biased variance, ``eps`` inside the root):

        xhat = (x - mean(x)) / sqrt(var(x) + eps),    y = xhat * weight + bias

    ``x`` has shape ``(..., N)``; ``weight`` and ``bias`` shape ``(N,)``.
    Returns ``(dx, dweight, dbias)``.
    """
    # BEGIN SOLUTION
    from tinynorm.norms.layernorm import layer_norm_backward, layer_norm_forward

    # The lesson: three paths from x to xhat (direct, through the mean, through rstd):
    # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)).
    n = x.shape[-1]
    x_rows, dy_rows = np.reshape(x, (-1, n)), np.reshape(dy, (-1, n))  # (..., N) seen as rows (rows, N)
    _, mean, rstd = layer_norm_forward(x_rows, weight, bias, eps)
    dx, dweight, dbias = layer_norm_backward(dy_rows, x_rows, weight, mean, rstd, True)
    return np.reshape(dx, x.shape), dweight, dbias
    # END SOLUTION


# ---- exercise 5: a learnable tanh after RMSNorm ------------------------------------------
def tanh_alpha_backward(dy, x, alpha, eps):
    """Gradients of ``y = tanh(alpha * n)`` with ``n = x / sqrt(mean(x**2) + eps)``
    (RMSNorm over the last axis, no weight) and a learnable scalar ``alpha`` (shape ``()``).

    Returns ``(dx, dalpha)``; ``dalpha`` has shape ``()`` (a 0-d array or a float).
    """
    # BEGIN SOLUTION
    from tinynorm.norms.rmsnorm_tanh import rms_norm_tanh_backward, rms_norm_tanh_forward

    # The lesson: t = (1 - tanh(alpha * n)**2) * dy reaches alpha * n; dalpha = sum of n * t
    # (alpha is used by every element); dx is RMSNorm's backward with g = dn = alpha * t.
    features = x.shape[-1]
    x_rows, dy_rows = np.reshape(x, (-1, features)), np.reshape(dy, (-1, features))  # (..., N) seen as rows
    _, rstd = rms_norm_tanh_forward(x_rows, alpha, None, eps)
    dx, dalpha, _ = rms_norm_tanh_backward(dy_rows, x_rows, alpha, None, rstd)
    return np.reshape(dx, x.shape), dalpha
    # END SOLUTION


# ---- exercise 6: BatchNorm, training mode ---------------------------------------------------
def batchnorm_backward(dy, x, weight, bias, eps):
    """Gradients of BatchNorm in training mode (batch statistics, biased variance).

    ``x`` has shape ``(B, C)`` or ``(B, C, L)``; each channel ``c`` is normalized with the
    mean and variance of ``x[:, c]`` (over the batch and length axes), then
    ``y = xhat * weight[c] + bias[c]``; ``weight`` and ``bias`` have shape ``(C,)``.
    Returns ``(dx, dweight, dbias)``.
    """
    # BEGIN SOLUTION
    from tinynorm.norms.batchnorm import batch_norm_backward, batch_norm_forward

    # The lesson: each channel's B * L values laid out as one row, and LayerNorm's backward on
    # those rows: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), the means over the batch.
    x3, dy3 = np.reshape(x, x.shape[:2] + (-1,)), np.reshape(dy, x.shape[:2] + (-1,))  # (B, C, L); L = 1 for (B, C)
    w, b = weight[:, None], bias[:, None]  # the (C,) parameters as the lesson's (C, 1) columns
    _, mean, rstd = batch_norm_forward(x3, w, b, eps)
    dx, dweight, dbias = batch_norm_backward(dy3, x3, w, mean, rstd, True)
    return np.reshape(dx, x.shape), dweight, dbias
    # END SOLUTION


# ---- exercise 8: a backward that can be differentiated again -------------------------------
def rmsnorm_double_backward(dy, x, weight, eps):
    """Exercise 2's gradients, written with ``xp = namespace_of(x)`` only (no NumPy), so that
    it also runs on Tensors and its result can be differentiated again.

    ``x`` has shape ``(..., N)``, ``weight`` shape ``(N,)``. Returns ``(dx, dweight)``.
    """
    # BEGIN SOLUTION
    xp = namespace_of(x)
    n = x.shape[-1]
    # rstd recomputed from x itself: on Tensors it carries x's history into the gradient.
    rstd = 1 / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps)
    xhat = x * rstd
    g = dy * weight
    dx = rstd * (g - xhat * xp.mean(g * xhat, axis=-1, keepdims=True))
    dweight = xp.sum(xp.reshape(dy * xhat, (-1, n)), axis=0)
    return dx, dweight
    # END SOLUTION


# ---- exercise 7: a norm of your own, registered in the catalog ---------------------------
class MeanAbsNormFunction(Function):
    """``y = x / (mean(|x|) + eps) * weight`` over the last axes, with its backward.

    An example of a variant: it divides by the mean absolute value instead of the
    root mean square. ``|x|`` has a kink at 0, so its gradcheck samples inputs away from 0.
    """

    @staticmethod
    def forward(ctx: Context, x: Any, weight: Any, normalized_shape: tuple[int, ...], eps: float) -> Any:
        xp = namespace_of(x)
        axes = feature_axes(x.ndim, normalized_shape)
        scale = xp.mean(xp.abs(x), axis=axes, keepdims=True) + eps
        ctx.save_for_backward(x, weight, scale, axes)
        return x / scale * weight

    @staticmethod
    def backward(ctx: Context, dy: Any) -> tuple[Any, Any]:
        x, weight, scale, axes = ctx.saved_tensors
        # BEGIN SOLUTION
        xp = namespace_of(x)
        xhat = x / scale
        g = dy * weight
        # d scale / d x_j = sign(x_j) / N: the path through the scale gives the second term.
        dx = (g - xp.sign(x) * xp.mean(g * xhat, axis=axes, keepdims=True)) / scale
        dweight = sum_to(dy * xhat, tuple(weight.shape))
        return dx, dweight
        # END SOLUTION


def mean_abs_norm_reference(x: Tensor, normalized_shape: tuple[int, ...], weight: Tensor, eps: float) -> Tensor:
    """The same forward from primitive ops: autograd derives the gradient to compare with."""
    axes = feature_axes(x.ndim, normalized_shape)
    return x / (x.abs().mean(axis=axes, keepdims=True) + eps) * weight


def mean_abs_norm(
    x: Tensor, normalized_shape: int | tuple[int, ...], weight: Tensor, eps: float = 1e-5, impl: str = "explicit"
) -> Tensor:
    """Functional form: checks the arguments, then runs the explicit or the autograd version."""
    normalized_shape = as_shape(normalized_shape)
    check_input("mean_abs_norm", x, normalized_shape)
    check_param("weight", weight, normalized_shape)
    eps = check_eps(eps)
    if impl == "autograd":
        return mean_abs_norm_reference(x, normalized_shape, weight, eps)
    return MeanAbsNormFunction.apply(x, weight, normalized_shape=normalized_shape, eps=eps)


class MeanAbsNorm(NormModule):
    """The module: ``weight`` (ones, shape ``normalized_shape``) is a per-feature scale."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, impl: str = "explicit") -> None:
        super().__init__(impl)
        self.normalized_shape = as_shape(normalized_shape)
        self.eps = check_eps(eps)
        self.weight = Parameter(ones(*self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return mean_abs_norm(x, self.normalized_shape, self.weight, self.eps, impl=self.impl)


def my_norm_spec() -> NormSpec:
    """The registry entry: what ``register_norm`` (and the check) need to know about the norm."""
    return NormSpec(
        name="mean_abs_norm",
        title="Mean-absolute norm",
        summary="scale each row by its mean absolute value, then by a learnable per-feature weight",
        module=MeanAbsNorm,
        functional=mean_abs_norm,
        params=(ParamSpec("weight", "normalized_shape", "ones", "rescales each normalized feature"),),
        doc="notebooks/exercises/07_own_norm.ipynb",  # where its derivation is written
        cases={
            "2d": Case({"normalized_shape": 5}, (3, 5)),
            "3d": Case({"normalized_shape": (3, 4)}, (2, 3, 4)),
            "batch1": Case({"normalized_shape": 6}, (1, 6)),
            "smallest": Case({"normalized_shape": 1}, (3, 1)),
        },
        # |x| is not differentiable at 0: keep every input at least 0.5 away from it.
        input_fn=lambda rng, shape: sample(rng, shape, "nonzero"),
    )
