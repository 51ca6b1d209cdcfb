"""Every norm of the RMSNorm and LayerNorm families is right for float32 rows of any magnitude
from 1e-30 to 1e30 (PyTorch 2.13's CPU rms_norm returns 0 and layer_norm NaN near 1e20)."""

from __future__ import annotations

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.registry import NORMS

# Norms whose statistics are taken per row (per sample and group for GroupNorm), so a row's
# magnitude is its own: a row of 1e30 beside a row of 1e-30 must both come out right.
ROW_NORMS = [
    "layernorm", "rmsnorm", "rmsnorm_bias", "rmsnorm_matrix", "gemma_rmsnorm", "partial_rmsnorm",
    "rmsnorm_tanh", "custom_norm", "groupnorm", "instancenorm1d", "l2norm",
]  # fmt: skip

MAGNITUDES = 10.0 ** np.arange(-30, 31, 6)


def _rows_of_every_magnitude(spec, rng):
    module, x = spec.build("3d", dtype="float32")
    shape = (len(MAGNITUDES),) + x.shape[1:]
    scale = MAGNITUDES.reshape((-1,) + (1,) * (len(shape) - 1))
    return module, (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("name", ROW_NORMS)
def test_float32_rows_of_any_magnitude_match_float64(name):
    module, x = _rows_of_every_magnitude(NORMS[name], np.random.default_rng(0))
    y32 = module(tn.tensor(x)).numpy()
    y64 = module.to("float64")(tn.tensor(x.astype(np.float64))).numpy()
    assert np.all(np.isfinite(y32)), f"{name}: non-finite output"
    per_row = np.abs(y32 - y64).reshape(len(MAGNITUDES), -1).max(-1)
    size = np.abs(y64).reshape(len(MAGNITUDES), -1).max(-1)
    np.testing.assert_array_less(per_row, 1e-5 * size + 1e-30, err_msg=name)
