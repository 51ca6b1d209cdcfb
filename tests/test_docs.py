"""The docs cover the catalog: every registered norm has a derivation page that the site's
toctree reaches and that its source names. These tests read files and need no Sphinx; the
build itself is ``scripts/build_docs.sh`` (warnings are errors there)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from tinynorm.registry import NORMS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
tinynorm_docs = importlib.import_module("tinynorm_docs")
_spec = importlib.util.spec_from_file_location("check_offline_docs", ROOT / "scripts" / "check_offline_docs.py")
check_offline_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_offline_docs)
BUILT = DOCS / "_build" / "html"

ENTRIES = sorted(NORMS)


@pytest.fixture(scope="module")
def reachable_pages() -> set[str]:
    return tinynorm_docs.reachable(tinynorm_docs.source_pages())


@pytest.mark.parametrize("name", ENTRIES)
def test_every_norm_has_a_derivation_page(name):
    doc = NORMS[name].doc
    assert (ROOT / doc).is_file(), f"{name}: its derivation page {doc} (NormSpec.doc) does not exist"


@pytest.mark.parametrize("name", ENTRIES)
def test_every_derivation_page_is_reachable_from_the_toctree(name, reachable_pages):
    assert tinynorm_docs.docname(NORMS[name].doc) in reachable_pages


@pytest.mark.parametrize("name", ENTRIES)
def test_norm_source_names_its_derivation_page(name):
    spec = NORMS[name]
    module_doc = sys.modules[spec.module.__module__].__doc__ or ""
    class_doc = spec.module.__doc__ or ""
    assert spec.doc in module_doc + class_doc, (
        f"{name}: neither the docstring of {spec.module.__module__} nor that of {spec.module.__name__} "
        f"names its derivation page {spec.doc}"
    )


@pytest.mark.parametrize("name", ENTRIES)
def test_every_derivation_page_says_how_its_backward_is_differentiated_again(name):
    page = (ROOT / NORMS[name].doc).read_text(encoding="utf-8")
    assert "\n## Differentiated again\n" in page, f"{NORMS[name].doc}: no '## Differentiated again' section"
    assert "higher_order.md" in page.split("## Differentiated again", 1)[1], "it should link the higher-order page"


@pytest.mark.parametrize("name", ENTRIES)
def test_every_norm_file_is_in_the_api_reference(name):
    assert f".. automodule:: {NORMS[name].module.__module__}\n" in tinynorm_docs.render_api_norms()


def test_every_derivation_page_belongs_to_a_registered_norm():
    registered = {spec.doc for spec in NORMS.values()}
    pages = {p.relative_to(ROOT).as_posix() for p in (DOCS / "norms").glob("*.md") if p.name != "index.md"}
    assert pages <= registered, f"pages without a registry entry: {sorted(pages - registered)}"


def test_every_notebook_is_reachable_from_the_toctree(reachable_pages):
    notebooks = {f"_notebooks/{p.stem}" for p in tinynorm_docs.notebook_sources()}
    assert notebooks <= reachable_pages


def test_every_handwritten_page_is_reachable_from_the_toctree(reachable_pages):
    pages = {name for name in tinynorm_docs.source_pages() if not name.startswith("_")}
    assert pages <= reachable_pages, f"orphan pages: {sorted(pages - reachable_pages)}"


def test_install_page_has_the_readme_commands_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    install = (DOCS / "install.md").read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert len(commands) == 2
    for command in commands:
        assert f"```bash\n{command}```" in install


# "seed" for the four learnable RMSNorm extensions means nothing to a reader (a random seed is fine).
SEED_AS_A_NAME = re.compile(r"seed document|\bthe seed(?:'s)?\b(?! of\b)|\bseed's\b|[\"']seed[\"']", re.I)
REWORDED = (
    "README.md",
    "docs/*.md",
    "docs/api/*.md",
    "docs/_ext/*.py",
    "tinynorm/*.py",
    "tinynorm/exercises/grading.py",
)


def test_the_extensions_are_named_on_their_own_terms_not_seed():
    said = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for pattern in REWORDED
        for path in sorted(ROOT.glob(pattern))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SEED_AS_A_NAME.search(line)
    ]
    assert not said, "\n".join(said)
    assert "seed" not in " ".join([*tinynorm_docs.FAMILIES, *tinynorm_docs.FAMILIES.values()]).lower()


def test_the_docs_say_once_where_the_extensions_come_from():
    pages = {p.relative_to(DOCS).as_posix(): p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md")}
    origin = "a short note proposing four learnable RMSNorm extensions"
    assert [name for name, text in pages.items() if origin in " ".join(text.split())] == ["index.md"]


def test_catalog_lists_every_norm_once():
    catalog = tinynorm_docs.render_norms_index()
    for spec in NORMS.values():
        assert catalog.count(f"(`{spec.name}`)") == 1


# ---- the docstring preprocessing (what autodoc shows) ----------------------------------------
def _processed(text: str, what: str = "module") -> list[str]:
    lines = text.splitlines()
    tinynorm_docs.plain_docstring(None, what, "name", None, {}, lines)
    return lines


def test_a_formula_block_after_a_colon_becomes_a_literal_block():
    lines = _processed("Forward, per row:\n\n    rstd = 1 / sqrt(mean(x**2) + eps)\n    y = x * rstd\n\nAfter.")
    assert lines[0] == "Forward, per row::"
    assert lines[2:4] == ["    rstd = 1 / sqrt(mean(x**2) + eps)", "    y = x * rstd"]


def test_a_list_after_a_colon_stays_a_list():
    lines = _processed("Two modes:\n\n* full\n* fast")
    assert lines[0] == "Two modes:"


def test_bars_are_escaped_in_prose_but_not_in_code():
    lines = _processed("rows with |x| > 1e19, ``max|x|``\n\nBlock::\n\n    |a - n| <= atol")
    assert lines[0] == r"rows with \|x\| > 1e19, ``max|x|``"
    assert lines[4] == "    |a - n| <= atol"


def test_a_docs_page_named_in_a_docstring_becomes_a_link():
    lines = _processed("Derivation: ``docs/norms/layernorm.md``.")
    assert lines[0] == "Derivation: :doc:`docs/norms/layernorm.md </norms/layernorm>`."


def test_a_sentence_napoleon_read_as_a_type_is_put_back():
    lines = ["", "a 2-D input.", "", ":type: Every norm gives one example per case"]
    tinynorm_docs.sentence_not_type(None, "data", "CASES", None, {}, lines)
    assert lines == ["", "Every norm gives one example per case: a 2-D input.", ""]


def test_a_real_type_field_is_kept():
    lines = ["The norms.", "", ":type: dict[str, NormSpec]"]
    tinynorm_docs.sentence_not_type(None, "data", "NORMS", None, {}, lines)
    assert lines[-1] == ":type: dict[str, NormSpec]"


def test_every_registry_family_has_a_heading_in_the_catalog():
    assert {spec.family for spec in NORMS.values()} <= set(tinynorm_docs.FAMILIES)


# ---- the built site works offline (scripts/check_offline_docs.py, run by build_docs.sh) ------
def test_a_page_loading_a_remote_script_or_stylesheet_is_reported(tmp_path):
    (tmp_path / "_static").mkdir()
    (tmp_path / "index.html").write_text(
        '<link rel="stylesheet" href="_static/local.css">'
        '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'  # Sphinx's default
        '<link rel="stylesheet" href="//fonts.example.org/font.css">'
        '<a href="https://github.com/numpy/numpy/issues/13307">a link, clicked, not loaded</a>'
        '<img src="_static/figure.png">'
    )
    (tmp_path / "_static" / "local.css").write_text("@import 'https://fonts.example.org/more.css'; a {}")
    found = check_offline_docs.remote_references(tmp_path)
    assert found == [
        "_static/local.css: css url() https://fonts.example.org/more.css",
        "index.html: <script src> https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js",
        "index.html: <link rel=stylesheet> //fonts.example.org/font.css",
    ]
    assert check_offline_docs.main([str(tmp_path)]) == 1


@pytest.mark.skipif(not (BUILT / "index.html").is_file(), reason="docs not built (scripts/build_docs.sh)")
def test_the_built_site_loads_nothing_remote_and_serves_its_own_mathjax():
    assert check_offline_docs.remote_references(BUILT) == []
    assert (BUILT / "_static" / "mathjax" / "tex-chtml.js").is_file()
    page = (BUILT / "norms" / "layernorm.html").read_text(encoding="utf-8")
    assert 'src="../_static/mathjax/tex-chtml.js' in page
