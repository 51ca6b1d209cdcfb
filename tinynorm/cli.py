"""``python -m tinynorm``: ``check`` gradchecks every registered op and norm; ``list`` lists them;
``exercises`` writes the exercise notebooks."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

import numpy as np

from . import backend
from .gradcheck import GradcheckResult, GradcheckWarning, gradcheck
from .registry import NORMS, OPS


def _row(name: str, result: GradcheckResult) -> str:
    status = "PASS" if result.passed else "FAIL"
    return f"{name:<32} {result.max_abs_error:>12.2e} {result.max_rel_error:>12.2e}  {status}"


def check(backend_name: str, fast: bool, only: str | None) -> int:
    """Gradcheck every op and norm; return the number of failures."""
    backend.namespace(backend_name)  # an unusable backend fails here, before the table header is printed
    print(f"tinynorm check on backend {backend_name!r} ({'fast' if fast else 'full'} mode, float64)")
    print(f"{'name':<32} {'max abs err':>12} {'max rel err':>12}  result", flush=True)
    failures = 0
    with backend.use_backend(backend_name), warnings.catch_warnings():
        warnings.simplefilter("error", GradcheckWarning)
        for name, op in OPS.items():
            if only and only != name:
                continue
            inputs = op.inputs(np.random.default_rng(0))
            fn = (lambda *a, _op=op: _op.fn(*a, axis=(0, 2))) if op.kind == "reduction" else op.fn
            result = gradcheck(fn, inputs, fast=fast, raise_exception=False)
            failures += not result.passed
            print(_row(f"op {name}", result))
        for name, spec in NORMS.items():
            if only and only != name:
                continue
            for impl in ("explicit", "autograd"):
                module, x = spec.build("3d", impl=impl)
                result = gradcheck(module, x, fast=fast, raise_exception=False)
                failures += not result.passed
                print(_row(f"{name} [{impl}]", result))
                if not result.passed:
                    print("    " + result.report().replace("\n", "\n    "))
    print(f"{failures} failed" if failures else "all passed")
    return failures


def list_registry() -> None:
    print("ops:   " + ", ".join(OPS))
    print("norms:")
    for spec in NORMS.values():
        params = ", ".join(f"{p.name} {p.shape} ({p.init})" for p in spec.params) or "no parameters"
        print(f"  {spec.name:<22} {spec.title}: {spec.summary}; {params}")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinynorm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="gradcheck every registered op and norm, print a table")
    p_check.add_argument("--backend", default="numpy", choices=backend.BACKENDS)
    p_check.add_argument("--fast", action="store_true", help="one random projection instead of the whole Jacobian")
    p_check.add_argument("--only", help="check just this op or norm")
    sub.add_parser("list", help="list the registered ops and norms")
    p_ex = sub.add_parser("exercises", help="write the exercise notebooks (see tinynorm/exercises/README.md)")
    p_ex.add_argument("--student", metavar="OUTDIR", help="write the student notebooks, solutions replaced by stubs")
    p_ex.add_argument("--solutions", metavar="OUTDIR", help="write the notebooks with the solutions")
    p_ex.add_argument("--nbgrader", metavar="COURSE_DIR", help="write one nbgrader source assignment per exercise")
    p_ex.add_argument("--otter", metavar="OUTDIR", help="write one Otter-Grader master notebook per exercise")
    args = parser.parse_args(argv)
    if args.command == "list":
        list_registry()
        return 0
    if args.command == "exercises":
        return exercises(args.student, args.solutions, args.nbgrader, args.otter)
    try:
        return 1 if check(args.backend, args.fast, args.only) else 0
    except backend.BackendUnavailableError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
