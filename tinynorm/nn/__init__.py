"""``tn.nn``: modules with ``torch.nn``'s names. The norm modules live with their
formulas in ``tinynorm/norms/``; they are gathered here."""

from ..norms import *  # noqa: F403  every norm module class
from ..norms import __all__ as _norm_names
from . import functional
from .functional import cross_entropy
from .layers import Linear, ModuleList, ReLU, Sequential, Tanh
from .module import Module, Parameter  # first: the norm files import it

__all__ = [
    "Linear",
    "Module",
    "ModuleList",
    "Parameter",
    "ReLU",
    "Sequential",
    "Tanh",
    "cross_entropy",
    "functional",
    *_norm_names,
]
