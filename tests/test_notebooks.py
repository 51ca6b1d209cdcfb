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

Only the top level of ``notebooks/`` is covered here; ``notebooks/exercises/`` has its own tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
