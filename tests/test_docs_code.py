"""The derivation pages show the package's own code, so docs and code cannot drift.

* Every ``literalinclude`` names a file that exists and, with ``:pyobject:``, a function
  or class that exists in it.
* Every registered norm's page includes code from its lesson file.
* A fenced ``python`` block that quotes package-style code (it uses ``xp.`` or ``ctx.``)
  must appear line for line in the package: quotations go stale, includes do not.
* An inline reference ``module.name`` to a tinynorm module (``stats.mean_rstd``,
  ``rmsnorm.rms_norm_dx``) must resolve.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from tinynorm.registry import NORMS

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
PAGES = [p for p in PAGES if "_build" not in p.parts and "jupyter_execute" not in p.parts]
INCLUDE = re.compile(r"```\{literalinclude\}\s+(?P<path>\S+)\n(?P<options>(?::[^\n]*\n)*)```")
FENCE = re.compile(r"```python\n(?P<body>.*?)```", re.DOTALL)
INLINE = re.compile(r"`(?P<module>[a-z_]+)\.(?P<name>[A-Za-z_]\w*)`")
MODULES = {
    path.stem: f"tinynorm.{path.parent.name}.{path.stem}" if path.parent.name != "tinynorm" else f"tinynorm.{path.stem}"
    for path in (ROOT / "tinynorm").rglob("*.py")
    if path.stem != "__init__" and path.parent.name in ("tinynorm", "norms", "kernels")
}


def _includes(page: Path) -> list[tuple[Path, str | None]]:
    found = []
    for match in INCLUDE.finditer(page.read_text()):
        options = dict(re.findall(r":(\w+):\s*(\S*)", match["options"]))
        found.append(((page.parent / match["path"]).resolve(), options.get("pyobject")))
    return found


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name for n in tree.body)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_include_names_code_that_exists(page):
    for path, pyobject in _includes(page):
        assert path.is_file(), f"{page.name}: includes {path}, which does not exist"
        if pyobject:
            assert _defines(path, pyobject), f"{page.name}: includes {pyobject} from {path.name}, which has none"


@pytest.mark.parametrize("name", sorted(NORMS))
def test_every_derivation_page_includes_its_lesson(name):
    spec = NORMS[name]
    lesson_file = Path(importlib.import_module(spec.module.__module__).__file__).resolve()
    included = {path for path, _ in _includes(ROOT / spec.doc)}
    assert lesson_file in included, f"{spec.doc} includes no code from its lesson {lesson_file.name}"


def _package_lines() -> set[str]:
    return {line.strip() for path in (ROOT / "tinynorm").rglob("*.py") for line in path.read_text().splitlines()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_quoted_package_code_is_in_the_package(page):
    package = _package_lines()
    for match in FENCE.finditer(page.read_text()):
        lines = [line.strip() for line in match["body"].splitlines() if line.strip()]
        if not any("xp." in line or "ctx." in line for line in lines):
            continue  # an illustration (a shape trap, a session), not a quotation
        missing = [line for line in lines if line not in package and not line.startswith("#")]
        assert not missing, f"{page.name} quotes code the package does not have: {missing[:3]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_inline_references_to_tinynorm_modules_resolve(page):
    for match in INLINE.finditer(page.read_text()):
        module = MODULES.get(match["module"])
        if module is None or match["name"] in ("py", "md"):  # a file name, not a reference
            continue
        assert hasattr(importlib.import_module(module), match["name"]), (
            f"{page.name}: `{match[0][1:-1]}` names nothing in {module}"
        )
