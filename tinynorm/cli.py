"""The command line, ``python -m tinynorm``. Its commands:

* ``check``: gradcheck every registered op and norm (each norm with its
  explicit backward and with its autograd reference) and print a table;
  the exit code is 1 when a check fails. ``--order 2`` checks second derivatives
  (gradgradcheck), ``--order 3`` third derivatives (a directional check).
* ``list``: list the registered ops and norms (``--verbose`` adds their parameters).
* ``exercises``: write the exercise notebooks, for students or with the solutions.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import re
import shutil
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import backend
from .gradcheck import GradcheckResult, GradcheckWarning, gradcheck, higher_order_gradcheck
from .registry import NORMS, OPS, unknown_name

LIST_HINT = "'python -m tinynorm list' lists every op and norm"
CHECK_COLUMNS = """\
Gradcheck every registered op, and every norm with its explicit backward and
with its autograd reference, in float64. Each row of the table gives:
  max abs err, max rel err  the largest errors of the analytical gradients
  atol/rtol                 the tolerances: an element passes when
                            |analytical - numerical| <= atol + rtol * |numerical|
  err/tol                   the worst element's error over what it was allowed:
                            at most 1 when the check passed; the smaller, the safer
The exit code is 1 when a check fails, 2 for a usage error."""


def version() -> str:
    """tinynorm's version: the installed distribution's, or the package's ``__version__``
    when tinynorm runs from a source tree that is not installed."""
    try:
        return importlib.metadata.version("tinynorm")
    except importlib.metadata.PackageNotFoundError:
        from . import __version__

        return __version__


def op_or_norm(name: str) -> str:
    """``name`` when an op or a norm is registered under it; otherwise a ``KeyError`` that
    names the close matches."""
    if name in OPS or name in NORMS:
        return name
    raise KeyError(f"{unknown_name(name, [*OPS, *NORMS])} ({LIST_HINT})")


# ---- check -------------------------------------------------------------------------
def _row(name: str, result: GradcheckResult) -> str:
    status = "PASS" if result.passed else "FAIL"
    tolerance = f"{result.atol:g}/{result.rtol:g}"
    return (
        f"{name:<32} {result.max_abs_error:>12.2e} {result.max_rel_error:>12.2e} "
        f"{tolerance:>12} {result.max_error_ratio:>9.2e}  {status}"
    )


def check(backend_name: str, fast: bool, only: str | None, order: int = 1) -> int:
    """Gradcheck every op and norm, or only the one named ``only``; return the number of failures.

    ``order`` 2 runs gradgradcheck, 3 the third-order check (always in fast mode: one
    directional third derivative per input, against finite differences of the second).
    An unknown ``only`` is a ``KeyError`` naming the close matches (never a table that
    checked nothing).
    """
    if only is not None:
        op_or_norm(only)
    if order not in (1, 2, 3):
        raise ValueError(f"order: expected 1, 2 or 3, got {order!r}")
    backend.namespace(backend_name)  # an unusable backend fails here, before the table header is printed
    fast = fast or order == 3
    what = {1: "", 2: " of second derivatives", 3: " of third derivatives"}[order]

    def run(fn: Any, inputs: Any) -> GradcheckResult:
        if order == 1:
            return gradcheck(fn, inputs, fast=fast, raise_exception=False)
        return higher_order_gradcheck(fn, inputs, order, fast=fast, raise_exception=False)

    print(f"tinynorm check{what} on backend {backend_name!r} ({'fast' if fast else 'full'} mode, float64)")
    print(f"{'name':<32} {'max abs err':>12} {'max rel err':>12} {'atol/rtol':>12} {'err/tol':>9}  result", flush=True)
    failures = 0
    with backend.use_backend(backend_name), warnings.catch_warnings():
        warnings.simplefilter("error", GradcheckWarning)
        for name, op in OPS.items():
            if only and only != name:
                continue
            inputs = op.inputs(np.random.default_rng(0))
            fn = (lambda *a, _op=op: _op.fn(*a, axis=(0, 2))) if op.kind == "reduction" else op.fn
            result = run(fn, inputs)
            failures += not result.passed
            print(_row(f"op {name}", result))
        for name, spec in NORMS.items():
            if only and only != name:
                continue
            for impl in ("explicit", "autograd"):
                module, x = spec.build("3d", impl=impl)
                result = run(module, x)
                failures += not result.passed
                print(_row(f"{name} [{impl}]", result))
                if not result.passed:
                    print("    " + result.report().replace("\n", "\n    "))
    print(f"{failures} failed" if failures else "all passed")
    return failures


# ---- list --------------------------------------------------------------------------
def list_registry(verbose: bool = False, width: int | None = None) -> None:
    """Print the ops and the norms, wrapped at ``width`` (the terminal's, 80 when not a
    terminal); ``verbose`` adds what each norm computes, its parameters and its page."""
    width = max(width or shutil.get_terminal_size().columns, 40)
    fill = functools.partial(textwrap.fill, width=width, break_on_hyphens=False)  # keep "per-dimension" whole
    print(fill("ops: " + ", ".join(OPS), subsequent_indent="     "))
    print("norms:")
    column = max(len(name) for name in NORMS) + 4  # the titles and details start here
    indent = " " * column
    for spec in NORMS.values():
        print(fill(spec.title, initial_indent=f"  {spec.name:<{column - 2}}", subsequent_indent=indent))
        if not verbose:
            continue
        details = [spec.summary]
        details += [f"{p.name} {p.shape}, init {p.init}: {p.meaning}" for p in spec.params] or ["no parameters"]
        details.append(f"derivation: {spec.doc}")
        for text in details:
            print(fill(text, initial_indent=indent, subsequent_indent=indent + "  "))
    if not verbose:
        print(fill("'python -m tinynorm list --verbose' adds what each norm computes and its parameters."))


# ---- exercises ---------------------------------------------------------------------
def exercises(
    student_dir: str | None, solutions_dir: str | None, nbgrader_dir: str | None = None, otter_dir: str | None = None
) -> int:
    from .exercises.classroom import write_nbgrader_course, write_otter_masters
    from .exercises.notebooks import write_notebooks

    if not (student_dir or solutions_dir or nbgrader_dir or otter_dir):
        print("error: exercises needs --student, --solutions, --nbgrader or --otter, with a folder", file=sys.stderr)
        return 2
    for outdir, with_solutions in ((student_dir, False), (solutions_dir, True)):
        if outdir:
            paths = write_notebooks(outdir, with_solutions)
            print(f"wrote {len(paths)} {'solution' if with_solutions else 'student'} notebooks to {outdir}")
    if nbgrader_dir:
        paths = write_nbgrader_course(nbgrader_dir)
        print(f"wrote {len(paths)} nbgrader assignments to {nbgrader_dir}/source ({', '.join(p.stem for p in paths)})")
    if otter_dir:
        paths = write_otter_masters(otter_dir)
        print(f"wrote {len(paths)} Otter master notebooks to {otter_dir} ({', '.join(p.stem for p in paths)})")
    return 0


# ---- the parser --------------------------------------------------------------------
def _plain(text: str) -> str:
    """A docstring as plain text for ``--help``: ````code```` and ``:role:`target``` lose their markup."""
    return re.sub(r"(?::\w+:)?``?([^`]+)``?", r"\1", text)


def _only(name: str) -> str:
    """``--only``'s type: argparse reports the error, with the usage line and exit code 2."""
    try:
        return op_or_norm(name)
    except KeyError as err:
        raise argparse.ArgumentTypeError(err.args[0]) from None


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m tinynorm``."""
    top = argparse.ArgumentParser(
        prog="python -m tinynorm",
        description=_plain(__doc__),
        epilog="'python -m tinynorm COMMAND --help' shows the options of one command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the docstring's lines
    )
    top.add_argument("--version", action="version", version=f"tinynorm {version()}")
    sub = top.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser(
        "check",
        help="gradcheck every registered op and norm, print a table",
        description=CHECK_COLUMNS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p_check.add_argument(
        "--backend",
        default="numpy",
        choices=backend.BACKENDS,
        help=f"the array backend to run on: {', '.join(backend.BACKENDS)} (default: %(default)s; "
        "cupy needs CuPy and an NVIDIA GPU)",
    )
    p_check.add_argument("--fast", action="store_true", help="one random projection instead of the whole Jacobian")
    p_check.add_argument("--only", metavar="NAME", type=_only, help=f"check just this op or norm ({LIST_HINT})")
    p_check.add_argument(
        "--order",
        type=int,
        default=1,
        choices=(1, 2, 3),
        help="1: gradients (default); 2: second derivatives (gradgradcheck); 3: third derivatives (fast mode)",
    )
    p_list = sub.add_parser("list", help="list the registered ops and norms")
    p_list.add_argument(
        "--verbose", "-v", action="store_true", help="add what each norm computes, its parameters and its page"
    )
    p_ex = sub.add_parser("exercises", help="write the exercise notebooks (see tinynorm/exercises/README.md)")
    p_ex.add_argument("--student", metavar="OUTDIR", help="write the student notebooks, solutions replaced by stubs")
    p_ex.add_argument("--solutions", metavar="OUTDIR", help="write the notebooks with the solutions")
    p_ex.add_argument("--nbgrader", metavar="COURSE_DIR", help="write one nbgrader source assignment per exercise")
    p_ex.add_argument("--otter", metavar="OUTDIR", help="write one Otter-Grader master notebook per exercise")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (argparse exits with 2 on a usage error)."""
    args = parser().parse_args(argv)
    if args.command == "list":
        list_registry(verbose=args.verbose)
        return 0
    if args.command == "exercises":
        return exercises(args.student, args.solutions, args.nbgrader, args.otter)
    try:
        return 1 if check(args.backend, args.fast, args.only, args.order) else 0
    except backend.BackendUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
