"""Shared fixtures: every backend test runs on NumPy and on array_api_strict (the
proof, without a GPU, that the code uses only the Array API standard); CuPy joins
when TINYNORM_TEST_BACKENDS includes it (scripts/gpu_check.sh). A run that grades
exercises ends by saying whose answers it graded.

hypothesis and array_api_strict are optional: on a machine without them (a bare GPU
machine) the tests that need them skip, and every other test runs."""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys
import types
from collections.abc import Callable, Iterator

import numpy as np
import pytest

import tinynorm as tn
from tinynorm.exercises import grading


class _AnyStrategy:
    """Stands for every strategy when hypothesis is missing: each attribute and call gives one more."""

    def __getattr__(self, name: str) -> _AnyStrategy:
        return self

    def __call__(self, *args: object, **kwargs: object) -> _AnyStrategy:
        return self


def _stand_in_for_hypothesis() -> None:
    """Modules named like hypothesis's, so that test modules import as they are: ``@given``
    marks its test skipped, other decorators (``@settings``, ``@example``) leave the test as it
    is, and the strategies are placeholders that are never drawn from."""

    def given(*args: object, **kwargs: object) -> pytest.MarkDecorator:
        return pytest.mark.skip(reason="hypothesis is not installed")

    def decorator(*args: object, **kwargs: object) -> object:
        return lambda test: test

    def attributes(make: Callable[[], object]) -> Callable[[str], object]:
        def getattr_(name: str) -> object:
            if name.startswith("__"):  # __file__, __path__ ...: what inspect and importlib ask a module
                raise AttributeError(name)
            return make()

        return getattr_

    def module(name: str, make: Callable[[], object]) -> types.ModuleType:
        stand_in = types.ModuleType(name)
        stand_in.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec asks for it
        stand_in.__getattr__ = attributes(make)
        sys.modules[name] = stand_in
        return stand_in

    top = module("hypothesis", lambda: decorator)
    top.given = given
    for name in ("hypothesis.strategies", "hypothesis.extra", "hypothesis.extra.numpy"):
        module(name, _AnyStrategy)
    top.strategies, top.extra = sys.modules["hypothesis.strategies"], sys.modules["hypothesis.extra"]
    top.extra.numpy = sys.modules["hypothesis.extra.numpy"]


try:
    from hypothesis import HealthCheck, settings
except ImportError:
    _stand_in_for_hypothesis()
else:
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
    with current_backend_or_skip(request.param):
        yield request.param


@contextlib.contextmanager
def current_backend_or_skip(name: str) -> Iterator[None]:
    """``name`` as the current backend inside the block; the test skips where it cannot run."""
    try:
        tn.backend.namespace(name)
    except tn.BackendUnavailableError as err:
        pytest.skip(str(err))
    with tn.use_backend(name):
        yield


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
