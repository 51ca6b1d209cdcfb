#!/usr/bin/env bash
# Build the documentation site into docs/_build/html, strictly:
#   -W --keep-going  every warning is an error (all of them are reported before it fails);
#   -n               nitpicky: a cross-reference that does not resolve is a warning;
#   notebooks        executed by myst-nb; a cell that raises, or writes to stderr, fails the
#                    build (docs/conf.py);
#   offline          then scripts/check_offline_docs.py fails it if any page would load a
#                    script, stylesheet, font or image from the network (MathJax is local).
# It needs no network. Run it from a virtual environment with the docs extra:
#   .venv/bin/pip install -e ".[docs]" && scripts/build_docs.sh
# PYTHON picks the interpreter (default: .venv/bin/python if it exists, else python3).
# Extra arguments go to sphinx-build (e.g. -E to rebuild every page).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export TINYNORM_FAST="${TINYNORM_FAST:-1}"   # the notebooks' short CI configuration
export PYDEVD_DISABLE_FILE_VALIDATION=1      # quiets a debugger warning from the notebook kernels

out=docs/_build/html
start=$(date +%s)
"$PYTHON" -m sphinx -b html -W --keep-going -n -j 1 docs "$out" "$@"
elapsed=$(( $(date +%s) - start ))
pages=$(find "$out" -name '*.html' -not -path "$out/_modules/*" -not -name 'genindex.html' \
    -not -name 'search.html' -not -name 'py-modindex.html' | wc -l)
echo "docs built in ${elapsed}s: ${pages} pages in ${out}/index.html"
"$PYTHON" scripts/check_offline_docs.py "$out"
