"""The norm catalog: one file per norm (or small family), each a lesson read top to
bottom: the formula, the forward, the hand-derived backward, the autograd reference,
the functional form, the module, and its registry entry.

Importing this package imports every file in it (files starting with ``_`` are
helpers), which registers each norm in ``tinynorm.registry.NORMS``. A new norm is a
new file here: nothing else needs to be edited.
"""

import importlib
import pkgutil
from collections.abc import Callable

from ..registry import NORMS

__all__: list[str] = []
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:  # each norm file lists its module classes
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)


def functional_forms() -> dict[str, Callable]:
    """Every registered norm's functional form, by its function name."""
    return {spec.functional.__name__: spec.functional for spec in NORMS.values()}
