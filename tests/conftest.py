"""Shared fixtures: every backend test runs on NumPy and on array_api_strict (the
proof, without a GPU, that the code uses only the Array API standard); CuPy joins
when TINYNORM_TEST_BACKENDS includes it (scripts/gpu_check.sh). A run that grades
exercises ends by saying whose answers it graded."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinynorm as tn
from tinynorm.exercises import grading

settings.register_profile(
    "tinynorm",
    max_examples=int(os.environ.get("TINYNORM_HYPOTHESIS_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("tinynorm")

BACKENDS = [name.strip() for name in os.environ.get("TINYNORM_TEST_BACKENDS", "numpy,array_api_strict").split(",")]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Run the test with this backend current; restores the previous one after.

    A backend this machine cannot run (array_api_strict not installed on the GPU
    machine, CuPy without a GPU) skips the test; a misspelt name still errors."""
    try:
        tn.backend.namespace(request.param)
    except tn.BackendUnavailableError as err:
        pytest.skip(str(err))
    with tn.use_backend(request.param):
        yield request.param


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """After a run that graded exercises, say whose answers they were (even with ``-q``,
    and next to the verdict): "passed" means nothing about a student when the model
    answers were graded because TINYNORM_STUDENT was unset or misspelt."""
    reports = (r for rs in terminalreporter.stats.values() for r in rs if isinstance(r, pytest.TestReport))
    if any("test_exercises.py::test_grade[" in r.nodeid for r in reports):
        for line in grading.report():
            terminalreporter.write_line(line, yellow=line.startswith("warning"), bold=True)
