"""Sphinx configuration of the tinynorm site.

Build it with ``scripts/build_docs.sh`` (``-W --keep-going``: every warning is an error).
Neither the build nor the built site needs a network: no intersphinx, no extension that
downloads anything, and MathJax is served from the site's own ``_static/mathjax``
(sphinx-mathjax-offline), so the math renders offline; ``scripts/check_offline_docs.py``
fails the build on any page that would load a script or stylesheet from elsewhere.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's tinynorm, even if another one is installed
sys.path.insert(0, str(DOCS / "_ext"))

# The notebooks run in a kernel started by myst-nb: it inherits this environment.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("TINYNORM_FAST", "1")  # the notebooks' short CI configuration
# No MPLBACKEND here: the kernels' own inline backend is what puts the figures into the pages.
os.environ.pop("MPLBACKEND", None)

import tinynorm_docs  # noqa: E402

import tinynorm  # noqa: E402

tinynorm_docs.generate()  # norms/index.md, api/norms.md, _notebooks/ (see that module)

# ---- project -------------------------------------------------------------------------------
project = "tinynorm"
author = "the tinynorm authors"
copyright = "the tinynorm authors, MIT licence"  # noqa: A001 (Sphinx's name)
release = version = tinynorm.__version__

extensions = [
    "myst_nb",  # MyST Markdown pages and executed notebooks (it loads myst_parser itself)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax, mathjax_path pointed at it
]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "_ext",
    "_generated",
    "jupyter_execute",
    ".ipynb_checkpoints",
    "**/.ipynb_checkpoints",
    "README.md",
]

# ---- strictness: broken references are errors -----------------------------------------------
nitpicky = True
# No intersphinx (it would download inventories at build time), so names from other
# libraries cannot resolve; only tinynorm's own references are checked.
nitpick_ignore_regex = [
    (r"py:.*", r"(numpy|np|types|collections\.abc|contextlib|dataclasses|typing|argparse)(\..*)?"),
    (r"py:.*", r"(ModuleType|Callable|Iterator|Iterable|Sequence|Generator|ndarray)"),
]

# ---- MyST -----------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist", "attrs_inline"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# ---- notebooks (myst-nb) --------------------------------------------------------------------
# "force": every notebook read by this build is executed, top to bottom, in a fresh kernel.
# Set TINYNORM_DOCS_EXECUTE=off for a quick prose-only build (no outputs), or =cache.
nb_execution_mode = os.environ.get("TINYNORM_DOCS_EXECUTE", "force")
nb_execution_raise_on_error = True  # a cell that raises fails the build
nb_output_stderr = "error"  # so does a cell that writes to stderr (a warning, a progress bar): -W
nb_execution_show_tb = True
nb_execution_timeout = int(os.environ.get("TINYNORM_DOCS_CELL_TIMEOUT", "300"))  # seconds per cell
nb_merge_streams = True
# myst-nb would load the widget manager (require.js, @jupyter-widgets/html-manager) from a CDN on
# pages with widgets (tqdm's progress bar in notebook 08): none, so that every page works offline.
# The bar is not drawn in the static page; its numbers are printed by the notebook anyway.
nb_ipywidgets_js: dict[str, dict[str, str]] = {}

# ---- API reference (autodoc + napoleon, NumPy-style docstrings) -----------------------------
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
python_use_unqualified_type_names = True

# ---- HTML -----------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"tinynorm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []
html_last_updated_fmt = None


# ---- docstrings -----------------------------------------------------------------------------
def setup(app):
    # Before napoleon (priority 500): see tinynorm_docs.plain_docstring for what it changes.
    app.connect("autodoc-process-docstring", tinynorm_docs.plain_docstring, priority=400)
    app.connect("autodoc-process-docstring", tinynorm_docs.sentence_not_type, priority=600)
    return {"parallel_read_safe": True}
