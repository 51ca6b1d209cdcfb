"""``tn.nn.functional``: the functional form of every norm (``F.layer_norm(x, ...)``)."""

from ..norms import functional_forms as _forms

globals().update(_forms())
__all__ = sorted(_forms())
