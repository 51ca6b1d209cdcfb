"""``python -m benchmarks.compare_checkouts BEFORE AFTER [--rounds N]``: first-order speed of two
checkouts of tinynorm, side by side.

Each round runs one fresh process per checkout (the order alternates from round to round, so
that a machine getting busier or quieter does not favour one side), and each process measures
two tables of ``benchmarks.cpu``: the fixed overhead per op on tiny tensors and every norm's
explicit forward + backward at 4096x1024 float32. The table printed at the end gives, for each
row, the median over the rounds of the per-round ratio after / before, and its range: the
spread is part of the result on a shared machine.

``BEFORE`` and ``AFTER`` are directories holding a checkout (``git worktree add DIR COMMIT``);
this file's own checkout provides the harness only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .harness import table

_MEASURE = (
    "import json, sys, benchmarks.cpu as cpu\n"
    "calls, rows, features, repeats = (200, 64, 128, 1) if sys.argv[1:] == ['quick'] else (20000, 4096, 1024, 5)\n"
    "overhead = cpu.overhead(calls)[1]\n"
    "variants = cpu.variants(rows, features, repeats)[1]\n"
    "print(json.dumps({'overhead': {r['op']: r['tinynorm_us'] for r in overhead},\n"
    "                  'variants': {r['variant']: r['explicit_s'] for r in variants}}))\n"
)


def measure(checkout: Path, quick: bool = False) -> dict[str, dict[str, float]]:
    """One process in ``checkout``: its overhead (microseconds) and norm (seconds) timings.
    ``quick``: tiny sizes, a smoke run whose ratios mean nothing."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-c", _MEASURE, *(["quick"] if quick else [])]
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(before: Path, after: Path, rounds: int, quick: bool = False) -> tuple[str, list[dict[str, object]]]:
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"before": [], "after": []}
    for i in range(rounds):
        sides = [("before", before), ("after", after)]
        for side, checkout in sides if i % 2 == 0 else sides[::-1]:
            runs[side].append(measure(checkout, quick))
            print(f"round {i + 1}/{rounds}: {side} measured", file=sys.stderr, flush=True)
    results, rows = [], []
    for section in ("overhead", "variants"):
        for name in runs["before"][0][section]:
            if name not in runs["after"][0][section]:
                continue  # a norm only one side has
            ratios = [a[section][name] / b[section][name] for a, b in zip(runs["after"], runs["before"])]
            median = statistics.median(ratios)
            results.append({"section": section, "row": name, "median": median, "min": min(ratios), "max": max(ratios)})
            rows.append([section, name, median, min(ratios), max(ratios)])
    title = f"first-order time, after / before, median of {rounds} rounds (one process per side per round)"
    return table(title, ["table", "row", "median", "min", "max"], rows), results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare_checkouts", description=__doc__)
    parser.add_argument("before", type=Path, help="directory of the checkout measured as 'before'")
    parser.add_argument("after", type=Path, help="directory of the checkout measured as 'after'")
    parser.add_argument("--rounds", type=int, default=6, help="rounds (each measures both sides once)")
    parser.add_argument("--json", type=Path, help="also write every ratio to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few calls: a smoke run")
    args = parser.parse_args(argv)
    text, results = compare(args.before.resolve(), args.after.resolve(), args.rounds, args.quick)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
