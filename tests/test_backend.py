"""The backend: chosen once, switched explicitly, never imported before it is asked for;
the same seed gives the same numbers on every backend. (The command line: test_cli.py.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import tinynorm as tn

needs_array_api_strict = pytest.mark.skipif(
    importlib.util.find_spec("array_api_strict") is None, reason="array_api_strict is not installed"
)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)


# ---- importing ------------------------------------------------------------------------------------------------
def test_import_tinynorm_imports_no_optional_array_library():
    # CuPy's import alone takes seconds and needs CUDA libraries; a student's laptop has neither.
    done = run(
        "-c",
        "import sys, tinynorm; print(sorted(m for m in ('cupy', 'array_api_strict', 'torch') if m in sys.modules))",
    )
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


# ---- choosing the backend ----------------------------------------------------------------------------------
def test_the_default_backend_is_numpy():
    assert tn.get_backend() == "numpy"
    assert tn.tensor([1.0]).backend == "numpy"


@needs_array_api_strict
def test_set_backend_changes_where_new_tensors_live():
    try:
        tn.set_backend("array_api_strict")
        assert tn.get_backend() == "array_api_strict"
        assert tn.zeros(2).backend == "array_api_strict"
        assert tn.tensor([1.0]).backend == "array_api_strict"
    finally:
        tn.set_backend("numpy")
    assert tn.zeros(2).backend == "numpy"


@needs_array_api_strict
def test_use_backend_switches_inside_the_block_and_yields_the_namespace():
    import array_api_strict

    with tn.use_backend("array_api_strict") as xp:
        assert xp is array_api_strict
        assert tn.randn(2).backend == "array_api_strict"
    assert tn.get_backend() == "numpy"


@needs_array_api_strict
def test_use_backend_restores_the_previous_backend_after_an_exception():
    with pytest.raises(KeyError), tn.use_backend("array_api_strict"):
        raise KeyError("inside")
    assert tn.get_backend() == "numpy"


@needs_array_api_strict
def test_use_backend_blocks_nest():
    with tn.use_backend("array_api_strict"):
        with tn.use_backend("numpy"):
            assert tn.get_backend() == "numpy"
        assert tn.get_backend() == "array_api_strict"
    assert tn.get_backend() == "numpy"


@needs_array_api_strict
def test_a_tensor_keeps_its_backend_when_the_current_one_changes():
    x = tn.tensor([1.0, 2.0])
    with tn.use_backend("array_api_strict"):
        assert (x * 2.0).backend == "numpy"


def test_backend_of_names_the_library_of_an_array(backend):
    assert tn.backend.backend_of(tn.zeros(2).data) == backend


def test_backend_of_refuses_a_non_array():
    with pytest.raises(TypeError, match=r"array: expected an array of one of .*, got list"):
        tn.backend.backend_of([1.0])


def test_to_numpy_and_from_numpy_round_trip(backend):
    host = np.array([[1.5, -2.0], [0.0, 3.25]])
    there = tn.backend.from_numpy(host)
    assert tn.backend.backend_of(there) == backend
    back = tn.backend.to_numpy(there)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)


# ---- random numbers ----------------------------------------------------------------------------------------
def _draws(backend_name: str, seed: int) -> list[np.ndarray]:
    with tn.use_backend(backend_name):
        tn.manual_seed(seed)
        return [tn.randn(3, 4).numpy(), tn.rand(5).numpy(), tn.nn.Linear(3, 2).weight.numpy()]


@needs_array_api_strict
def test_a_seed_gives_identical_numbers_on_numpy_and_array_api_strict():
    for on_numpy, on_strict in zip(_draws("numpy", 7), _draws("array_api_strict", 7)):
        np.testing.assert_array_equal(on_numpy, on_strict)


def test_a_seed_gives_identical_numbers_every_time_and_another_seed_different_ones():
    first, again, other = _draws("numpy", 7), _draws("numpy", 7), _draws("numpy", 8)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_float32_random_numbers_are_the_float64_ones_rounded():
    tn.manual_seed(3)
    wide = tn.randn(4).numpy()
    tn.manual_seed(3)
    narrow = tn.randn(4, dtype="float32").numpy()
    assert narrow.dtype == np.float32
    np.testing.assert_array_equal(narrow, wide.astype(np.float32))
