"""The norm catalog: one file per norm (or family), each a lesson read top to bottom:
the formula, the forward, the hand-derived backward, the module, the registry entry.

Importing this package registers every norm in ``tinynorm.registry.NORMS``.
"""

from collections.abc import Callable

from ..registry import NORMS
from .layernorm import LayerNorm  # noqa: E402
from .rmsnorm import RMSNorm  # noqa: E402

__all__ = ["LayerNorm", "RMSNorm"]


def functional_forms() -> dict[str, Callable]:
    """Every registered norm's functional form, by its function name."""
    return {spec.functional.__name__: spec.functional for spec in NORMS.values()}
