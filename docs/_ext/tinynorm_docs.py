"""The pages of the docs that come from the code, not from a hand-written file.

``conf.py`` calls :func:`generate` before Sphinx reads any page, and ``tests/test_docs.py``
imports the same functions, so the test checks exactly what the build will contain:

* ``norms/index.md``: the catalog, one row and one toctree entry per registry entry
  (``tinynorm.registry.NORMS``); a new norm needs no docs edit, only its own page
  ``docs/norms/<name>.md`` (its ``NormSpec.doc``).
* ``api/norms.md``: an ``automodule`` for every file in ``tinynorm/norms/``.
* ``_notebooks/``: copies of ``notebooks/*.ipynb`` (myst-nb executes them during the
  build) and ``_notebooks/index.md``, their table of contents.
* ``_generated/exercises.md``: the table of ``tinynorm.exercises``, included by
  ``instructors.md``.

Generated files are written only when their text changes, so an incremental build
does not re-read (and re-execute) pages that did not change. All of them are
gitignored (``docs/.gitignore``).
"""

from __future__ import annotations

import json
import pkgutil
import re
import shutil
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
ROOT = DOCS.parent
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK_COPIES = DOCS / "_notebooks"
GENERATED = DOCS / "_generated"  # fragments that hand-written pages include

FAMILIES = {  # NormSpec.family -> its heading in the catalog (index.md says where the extensions come from)
    "rmsnorm_extensions": "Learnable extensions of RMSNorm",
    "standard": "The norms people meet in practice",
}


# ---- small helpers ---------------------------------------------------------------------
def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it; return whether it was written."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def docname(repo_path: str) -> str:
    """``"docs/norms/layernorm.md"`` -> ``"norms/layernorm"`` (a Sphinx document name)."""
    path = Path(repo_path)
    if path.parts[0] != "docs" or path.suffix not in (".md", ".ipynb"):
        raise ValueError(f"doc: expected a page under docs/ ending in .md, got {repo_path!r}")
    return path.relative_to("docs").with_suffix("").as_posix()


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", r"\|").replace("\n", " ").strip()


def _plain(text: str) -> str:
    """Plain text (a registry summary such as ``(var + eps)**(-p/2)``) shown as written."""
    return _cell(re.sub(r"([*_`\[\]<])", r"\\\1", text))


# ---- docstrings ---------------------------------------------------------------------------
_INTRO = re.compile(r"^(?P<indent>\s*)\S.*[^:]:$")  # a line ending in one colon
_INLINE_LITERAL = re.compile(r"(``.+?``)")
_DOCS_PAGE = re.compile(r"^``docs/([\w/.-]+)\.md``$")  # a page of this site, named by its path


def _doc_role(match: re.Match) -> str:
    return f":doc:`docs/{match[1]}.md </{match[1]}>`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def plain_docstring(app, what, name, obj, options, lines: list[str]) -> None:  # noqa: ARG001
    """Make tinynorm's docstrings, written to read well in ``help()``, valid reStructuredText.

    Connected to ``autodoc-process-docstring`` ahead of napoleon; it changes three things:

    * a formula block, introduced by a line ending in one colon and indented under it
      (``Forward:`` then ``    y = xhat * weight``), becomes a literal block (``::``);
      in reStructuredText it would be a block quote with its lines run together;
    * outside literal blocks and ````code````, ``|`` is escaped: ``|x|`` means an
      absolute value here, not a substitution;
    * ````docs/norms/layernorm.md```` (a page of this site named by its path) becomes a
      link to that page, so a docstring that names a missing page fails the build.
    """
    literal_indent = None  # indentation of the line that opened the current literal block
    for i, line in enumerate(lines):
        if literal_indent is not None:
            if not line.strip() or _indent(line) > literal_indent:
                continue
            literal_indent = None
        match = _INTRO.match(line)
        nxt = lines[i + 2] if i + 2 < len(lines) and not lines[i + 1].strip() else ""
        if (
            match
            and not line.lstrip().startswith(":")
            and nxt.strip()
            and _indent(nxt) > len(match["indent"])
            and not nxt.lstrip().startswith(("* ", "- "))
        ):
            line += ":"
        parts = _INLINE_LITERAL.split(line)
        lines[i] = "".join(
            _DOCS_PAGE.sub(_doc_role, p) if k % 2 else p.replace("|", r"\|") for k, p in enumerate(parts)
        )
        if line.rstrip().endswith("::"):
            literal_indent = _indent(line)


_TYPE_FIELD = re.compile(r"^:type: (?P<text>.*\w \w.*)$")  # two words in a row: prose, not a type


def sentence_not_type(app, what, name, obj, options, lines: list[str]) -> None:  # noqa: ARG001
    """Undo napoleon reading a constant's docstring ``Every case: a 2-D input`` as ``type: text``.

    Connected after napoleon. Napoleon turns the first line of an attribute's docstring
    that has a colon into a ``:type:`` field; tinynorm's types come from annotations, so a
    "type" made of several words is the start of a sentence, and is put back in front.
    """
    if what not in ("data", "attribute", "property"):
        return
    for i, line in enumerate(lines):
        match = _TYPE_FIELD.match(line)
        if match:
            del lines[i]
            first = next((k for k, text in enumerate(lines) if text.strip()), None)
            if first is None:
                lines.append(match["text"])
            else:
                lines[first] = f"{match['text']}: {lines[first].lstrip()}"
            break


# ---- the norm catalog ------------------------------------------------------------------
def render_norms_index() -> str:
    """``norms/index.md``: every registered norm, grouped by family, and the toctree."""
    from tinynorm.registry import NORMS

    lines = [
        "<!-- Generated by docs/_ext/tinynorm_docs.py from tinynorm.registry.NORMS: do not edit. -->",
        "",
        "# The norm catalog",
        "",
        "One page per registered norm: its forward, its learnable parameters, and the",
        "derivation of the explicit backward that `tinynorm/norms/` implements. Every",
        "entry passes the [gradcheck](../gradcheck.md) with its explicit backward and with",
        "its autograd-composed reference (`python -m tinynorm check`).",
        "",
    ]
    present = {spec.family for spec in NORMS.values()}
    families = [f for f in FAMILIES if f in present] + sorted(present - set(FAMILIES))
    for family in families:
        lines += [f"## {FAMILIES.get(family, family.capitalize())}", ""]
        lines += ["| norm | what it does | learnable parameters (shape, init) |", "| --- | --- | --- |"]
        for spec in NORMS.values():
            if spec.family != family:
                continue
            params = "; ".join(f"`{p.name}` {_plain(p.shape)}, {_plain(p.init)}" for p in spec.params) or "none"
            link = f"[{_plain(spec.title)}](/{docname(spec.doc)}.md) (`{spec.name}`)"
            lines.append(f"| {link} | {_plain(spec.summary)} | {params} |")
        lines.append("")
    lines += ["```{toctree}", ":hidden:", ""]
    # Entries may share a page (weight_norm and weight_std): list each page once, as Sphinx
    # warns on a duplicated toctree entry and the docs build treats warnings as errors.
    lines += ["/" + page for page in dict.fromkeys(docname(spec.doc) for spec in NORMS.values())]
    lines += ["```", ""]
    return "\n".join(lines)


def render_api_norms() -> str:
    """``api/norms.md``: the API of every file in ``tinynorm/norms/``."""
    import tinynorm.norms

    modules = [m.name for m in pkgutil.iter_modules(tinynorm.norms.__path__) if not m.name.startswith("_")]
    lines = [
        "<!-- Generated by docs/_ext/tinynorm_docs.py from tinynorm/norms/: do not edit. -->",
        "",
        "# Norms: `tinynorm.norms`",
        "",
        "```{eval-rst}",
        ".. automodule:: tinynorm.norms",
        "```",
        "",
    ]
    for name in sorted(modules):
        lines += [
            f"## `tinynorm.norms.{name}`",
            "",
            "```{eval-rst}",
            f".. automodule:: tinynorm.norms.{name}",
            "   :members:",
            "```",
            "",
        ]
    return "\n".join(lines)


# ---- the notebooks ---------------------------------------------------------------------
def notebook_sources() -> list[Path]:
    """The tutorials: ``notebooks/*.ipynb`` (not the exercises in subfolders)."""
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _markdown_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
        if c["cell_type"] == "markdown"
    ]


def notebook_summary(path: Path) -> tuple[str, str]:
    """The notebook's title (its first ``# `` heading) and its first paragraph after it."""
    title, summary = path.stem, ""
    for text in _markdown_cells(path):
        for block in re.split(r"\n\s*\n", text.strip()):
            block = block.strip()
            if not block:
                continue
            if block.startswith("# ") and title == path.stem:
                title = block.splitlines()[0][2:].strip()
                rest = "\n".join(block.splitlines()[1:]).strip()
                if rest and not rest.startswith("#"):
                    return title, rest
                continue
            if title != path.stem and not block.startswith(("#", "```", "<", "|", "$$")):
                return title, block
    return title, summary


def sync_notebooks() -> list[Path]:
    """Copy ``notebooks/*.ipynb`` into ``docs/_notebooks/``; remove copies whose source is gone."""
    sources = notebook_sources()
    NOTEBOOK_COPIES.mkdir(exist_ok=True)
    wanted = {p.name for p in sources}
    for stale in NOTEBOOK_COPIES.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for src in sources:
        dst = NOTEBOOK_COPIES / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)
    return sources


def render_notebooks_index(sources: list[Path]) -> str:
    lines = [
        "<!-- Generated by docs/_ext/tinynorm_docs.py from notebooks/*.ipynb: do not edit. -->",
        "",
        "# Notebooks",
        "",
        "The tutorials in `notebooks/`, executed while these pages were built, so every",
        "output below comes from the code in this version of tinynorm. Open them in",
        'Jupyter to run and change them (`pip install -e ".[notebooks]"`, then `jupyter lab notebooks/`).',
        "",
    ]
    if not sources:
        return "\n".join(lines + ["There are no notebooks yet.", ""])
    lines += ["| notebook | what it covers |", "| --- | --- |"]
    for src in sources:
        title, summary = notebook_summary(src)
        lines.append(f"| [{_cell(title)}]({src.name}) | {_cell(summary)} |")
    lines += ["", "```{toctree}", ":hidden:", ""]
    lines += [src.stem for src in sources]
    lines += ["```", ""]
    return "\n".join(lines)


# ---- the exercises -----------------------------------------------------------------------
def render_exercises_table() -> str:
    """A table of ``tinynorm.exercises.EXERCISES`` for ``instructors.md`` (an include)."""
    from tinynorm.exercises import EXERCISES

    lines = [
        "<!-- Generated by docs/_ext/tinynorm_docs.py from tinynorm.exercises.EXERCISES: do not edit. -->",
        "",
        "| # | exercise | the student writes | graded by | mistakes the checker can name |",
        "| --- | --- | --- | --- | --- |",
    ]
    for ex in sorted(EXERCISES.values(), key=lambda e: e.number):
        writes = f"`{ex.signature}`" if ex.kind == "backward" else f"`{ex.function}()`, returning a `NormSpec`"
        mistakes = "; ".join(_plain(m.name.replace("`", "")) for m in ex.mistakes) or "none"
        if ex.kind == "norm":
            mistakes = "none by name: the generic gradcheck of every case of the student's `NormSpec`"
        lines.append(f"| {ex.number} | {_plain(ex.title)} | {writes} | `-m {ex.marker}` | {mistakes} |")
    return "\n".join(lines + [""])


def generate() -> None:
    """Write every generated page (called by ``conf.py`` before the build)."""
    write_if_changed(DOCS / "norms" / "index.md", render_norms_index())
    write_if_changed(DOCS / "api" / "norms.md", render_api_norms())
    write_if_changed(NOTEBOOK_COPIES / "index.md", render_notebooks_index(sync_notebooks()))
    write_if_changed(GENERATED / "exercises.md", render_exercises_table())


# ---- what the toctrees reach (for tests/test_docs.py) ----------------------------------
_TOCTREE = re.compile(r"^(`{3,}|:{3,})\{toctree\}[^\n]*\n(.*?)^\1\s*$", re.S | re.M)


def toctree_entries(text: str, current: str) -> list[str]:
    """Document names listed by the ``{toctree}`` blocks of one MyST page ``current``."""
    base = current.rsplit("/", 1)[0] if "/" in current else ""
    found = []
    for _, body in _TOCTREE.findall(text):
        for line in body.splitlines():
            entry = line.strip()
            if not entry or entry.startswith(":"):
                continue
            match = re.match(r".*<(.+)>$", entry)  # "Title <target>"
            target = (match.group(1) if match else entry).removesuffix(".md").removesuffix(".ipynb")
            if target.startswith("/"):
                found.append(target[1:])
            else:
                found.append(str(Path(base, target).as_posix()).lstrip("./") if base else target)
    return found


def reachable(pages: dict[str, str], root: str = "index") -> set[str]:
    """Every document reachable from ``root`` through toctrees; ``pages`` maps name -> text."""
    seen, todo = set(), [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in pages:
            continue
        seen.add(name)
        todo += toctree_entries(pages[name], name)
    return seen


def source_pages() -> dict[str, str]:
    """The MyST pages of the site as the build sees them: files on disk plus the generated ones."""
    pages = {
        p.relative_to(DOCS).with_suffix("").as_posix(): p.read_text(encoding="utf-8")
        for p in DOCS.rglob("*.md")
        if "_build" not in p.parts and "_notebooks" not in p.parts
    }
    pages["norms/index"] = render_norms_index()
    pages["api/norms"] = render_api_norms()
    sources = notebook_sources()
    pages["_notebooks/index"] = render_notebooks_index(sources)
    pages.update({f"_notebooks/{p.stem}": "" for p in sources})
    return pages
