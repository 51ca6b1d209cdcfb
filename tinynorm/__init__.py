"""tinynorm: normalization layers and their gradients, from scratch, on NumPy.

import tinynorm as tn
x = tn.randn(4, 8, requires_grad=True)
y = tn.nn.RMSNorm(8)(x)
y.backward(tn.randn(4, 8))
tn.gradcheck(tn.nn.RMSNorm(8), x)
"""

from . import backend, kernels, nn, ops, optim, registry  # noqa: E402,F401,I001  (nn registers the norms)
from .autograd import Context, Function, grad, is_grad_enabled, no_grad, set_grad_enabled
from .backend import BackendUnavailableError, get_backend, set_backend, use_backend
from .gradcheck import (
    GradcheckError,
    GradcheckResult,
    GradcheckWarning,
    analytical_jacobian,
    gradcheck,
    gradgradcheck,
    higher_order_gradcheck,
    numerical_jacobian,
)
from .ops import (
    abs,
    broadcast_to,
    cat,
    clamp,
    erf,
    exp,
    flatten,
    log,
    log_softmax,
    matmul,
    max,
    maximum,
    mean,
    min,
    permute,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    squeeze,
    stack,
    std,
    sum,
    sum_to,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)
from .random import manual_seed, rand, randn
from .tensor import Tensor, as_tensor, from_numpy, ones, tensor, zeros

float16, float32, float64 = "float16", "float32", "float64"


def __getattr__(name: str) -> object:
    # tn.exercises is imported on first use, so a plain `import tinynorm` stays light.
    if name == "exercises":
        import importlib

        return importlib.import_module(".exercises", __name__)
    raise AttributeError(f"module 'tinynorm' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "Context",
    "Function",
    "GradcheckError",
    "GradcheckResult",
    "GradcheckWarning",
    "Tensor",
    "abs",
    "analytical_jacobian",
    "as_tensor",
    "backend",
    "broadcast_to",
    "cat",
    "clamp",
    "erf",
    "exp",
    "flatten",
    "float16",
    "float32",
    "float64",
    "from_numpy",
    "get_backend",
    "grad",
    "gradcheck",
    "gradgradcheck",
    "higher_order_gradcheck",
    "is_grad_enabled",
    "log",
    "log1p",
    "log_softmax",
    "manual_seed",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "nn",
    "no_grad",
    "numerical_jacobian",
    "ones",
    "ops",
    "optim",
    "permute",
    "rand",
    "randn",
    "registry",
    "relu",
    "reshape",
    "set_backend",
    "set_grad_enabled",
    "sigmoid",
    "softmax",
    "sqrt",
    "squeeze",
    "stack",
    "std",
    "sum",
    "sum_to",
    "tanh",
    "tensor",
    "transpose",
    "unsqueeze",
    "use_backend",
    "var",
    "where",
    "zeros",
]
