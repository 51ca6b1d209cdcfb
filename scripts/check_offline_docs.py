"""Fail when a built docs page loads anything from the network.

A reader without a network (a classroom behind a firewall, a train) must get the whole
site, math included, from ``docs/_build/html`` alone. This reads every built ``.html``
page and every ``.css`` file and reports each script, stylesheet, font, image or frame
that is not a file of the site: an ``http(s)://`` or protocol-relative ``//`` address in
``<script src>``, ``<link href>`` (stylesheets, preloads, icons), ``<img src>``,
``<iframe src>``, or a CSS ``url(...)`` / ``@import``. Links a reader clicks (``<a href>``)
are not loads and are allowed.

Usage: ``python scripts/check_offline_docs.py [docs/_build/html]``; exit status 1 and one
line per remote reference when there is any. ``scripts/build_docs.sh`` runs it after
every build.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

REMOTE = re.compile(r"^\s*(https?:)?//", re.IGNORECASE)
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", re.IGNORECASE)
LOADING = {"script": "src", "img": "src", "iframe": "src", "source": "src", "audio": "src", "video": "src"}


class _Loads(HTMLParser):
    """Collects the addresses a page makes the browser load."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (what, address)
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in LOADING and values.get(LOADING[tag]):
            self.found.append((f"<{tag} {LOADING[tag]}>", values[LOADING[tag]]))
        elif tag == "link" and values.get("href"):
            self.found.append((f"<link rel={values.get('rel', '')}>", values["href"]))
        for name, value in values.items():  # inline styles: style="background: url(...)"
            if name == "style":
                self.found += [("inline style url()", u) for u in CSS_URL.findall(value)]
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.found += [("<style> url()", u) for u in CSS_URL.findall(data)]


def remote_references(site: Path) -> list[str]:
    """One line per remote load in the built site ``site``: ``page: what address``."""
    problems = []
    for path in sorted(site.rglob("*")):
        if path.suffix == ".html":
            parser = _Loads()
            parser.feed(path.read_text(encoding="utf-8", errors="replace"))
            loads = parser.found
        elif path.suffix == ".css":
            loads = [("css url()", u) for u in CSS_URL.findall(path.read_text(encoding="utf-8", errors="replace"))]
        else:
            continue
        # <link rel=canonical> and the like name the page's address, they load nothing
        loads = [(what, address) for what, address in loads if not what.startswith("<link rel=canonical")]
        problems += [f"{path.relative_to(site)}: {what} {address}" for what, address in loads if REMOTE.match(address)]
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "docs" / "_build" / "html"
    if not (site / "index.html").is_file():
        print(f"check_offline_docs: no built site at {site} (run scripts/build_docs.sh)", file=sys.stderr)
        return 2
    problems = remote_references(site)
    for line in problems:
        print(f"remote reference: {line}", file=sys.stderr)
    pages = sum(1 for _ in site.rglob("*.html"))
    if problems:
        print(f"check_offline_docs: {len(problems)} remote references in {site}", file=sys.stderr)
        return 1
    print(f"check_offline_docs: {pages} pages, no remote script, stylesheet, font or image")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
