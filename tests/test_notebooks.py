"""The notebooks are part of the specification.

* Each notebook in ``notebooks/`` runs top to bottom in a fresh ``python3`` kernel, in
  its fast configuration (``TINYNORM_FAST=1``: the training notebook trains a smaller
  model for fewer epochs and asserts its own accuracy figure). Deselect these slow
  tests with ``-m "not notebook"``; ``pytest --nbmake notebooks/*.ipynb`` runs the same
  notebooks in their full configuration.
* Every learnable parameter of every registered norm has a section: a Markdown heading
  that names the parameter and the norm's registry name, both in backticks, e.g.
  ``### `weight` — RMSNorm (`rmsnorm`)``.
* Notebooks are committed with their outputs stripped.
* Each starts (its first code cell) with the same setup cell, for Colab and JupyterHub:
  it installs tinynorm only where it does not import, and stays on NumPy where CuPy is
  installed but no GPU is usable.

Only the top level of ``notebooks/`` is covered here; ``notebooks/exercises/`` has its own tests.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

import tinynorm as tn
from tinynorm.registry import NORMS

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _headings() -> list[str]:
    """Every Markdown heading line of every notebook."""
    lines = []
    for path in NOTEBOOKS:
        for cell in _read(path).cells:
            if cell.cell_type == "markdown":
                lines += [line for line in cell.source.splitlines() if line.lstrip().startswith("#")]
    return lines


def test_the_notebooks_exist() -> None:
    assert len(NOTEBOOKS) >= 8, [p.name for p in NOTEBOOKS]


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("TINYNORM_FAST", "1")
    # The kernel imports this checkout's tinynorm, whatever is installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    notebook = _read(path)  # executed in memory: the file on disk keeps no outputs
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()


def test_every_learnable_parameter_of_every_norm_has_a_section() -> None:
    headings = _headings()
    missing = [
        f"{spec.name}.{param.name}"
        for spec in NORMS.values()
        for param in spec.params
        if not any(f"`{param.name}`" in h and f"`{spec.name}`" in h for h in headings)
    ]
    assert not missing, (
        "no notebook section (a Markdown heading naming `param` and `registry name`, e.g. "
        f"'### `weight` — RMSNorm (`rmsnorm`)') for: {', '.join(missing)}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = _read(path)
    dirty = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or an execution count; strip them before committing"
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", "use the standard 'python3' kernel"


# ---- the first code cell: install when missing, NumPy when CuPy cannot run ---------------------
def _first_code_cell(path: Path) -> str:
    return next(c.source for c in _read(path).cells if c.cell_type == "code")


def test_every_notebook_starts_with_the_same_setup_cell() -> None:
    cells = {path.name: _first_code_cell(path) for path in NOTEBOOKS}
    first = cells[NOTEBOOKS[0].name]
    assert "%pip install --quiet tinynorm" in first and "except ModuleNotFoundError:" in first
    assert all(source == first for source in cells.values()), [n for n, s in cells.items() if s != first]


def _run_setup_cell(monkeypatch: pytest.MonkeyPatch, *, installed: bool) -> tuple[list[tuple[str, str]], str]:
    """Run the setup cell as IPython would (its %pip line transformed); return the magics it
    ran and the backend it left current. ``installed=False`` hides tinynorm until %pip runs."""
    transform = pytest.importorskip("IPython.core.inputtransformer2").TransformerManager().transform_cell
    magics: list[tuple[str, str]] = []

    def run_line_magic(name: str, line: str) -> None:
        magics.append((name, line))
        monkeypatch.setitem(sys.modules, "tinynorm", tn)  # the install made it importable

    if not installed:
        monkeypatch.setitem(sys.modules, "tinynorm", None)  # import tinynorm -> ModuleNotFoundError
    shell = types.SimpleNamespace(run_line_magic=run_line_magic)
    namespace = {"get_ipython": lambda: shell}
    with tn.use_backend("numpy"):
        exec(transform(_first_code_cell(NOTEBOOKS[0])), namespace)
        return magics, tn.get_backend()


def test_the_setup_cell_installs_nothing_where_tinynorm_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYNORM_BACKEND", raising=False)
    assert _run_setup_cell(monkeypatch, installed=True) == ([], "numpy")


def test_the_setup_cell_installs_tinynorm_where_it_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TINYNORM_BACKEND", raising=False)
    magics, _ = _run_setup_cell(monkeypatch, installed=False)
    assert magics == [("pip", "install --quiet tinynorm")]


@pytest.mark.parametrize("no_gpu", ["is_available is False", "the driver raises"])
def test_the_setup_cell_falls_back_to_numpy_when_cupy_has_no_gpu(
    no_gpu: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Colab's CPU runtimes have CuPy; asking it for a device raises cudaErrorInsufficientDriver."""

    def is_available() -> bool:
        if no_gpu == "the driver raises":
            raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")
        return False

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(is_available=is_available)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setenv("TINYNORM_BACKEND", "cupy")
    assert _run_setup_cell(monkeypatch, installed=True) == ([], "numpy")
    assert "running on NumPy" in capsys.readouterr().out
