"""CPU kernels for the channel norms (GroupNorm, InstanceNorm, BatchNorm): the lessons'
formulas on blocks of samples or channels (see ``cpu_rows`` for the savings)."""

from __future__ import annotations
