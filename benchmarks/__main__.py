"""``python -m benchmarks [--json PATH] [--quick] [--gpu]``: print every table, optionally save JSON."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from . import cpu, goals, gpu


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few repeats: a smoke run")
    parser.add_argument("--gpu", action="store_true", help="only the GPU section (needs CuPy and a CUDA GPU)")
    args = parser.parse_args(argv)

    if args.quick:
        big, shapes, repeats, calls = (64, 128), [(8, 32), (64, 128)], 2, 200
        gpu_shapes = [(256, 128)]
    else:
        big, shapes, repeats, calls = (4096, 1024), [(64, 768), (4096, 1024), (8192, 4096)], 7, 5000
        gpu_shapes = [(32768, 4096), (4096, 1024)]
    info = {"cpu": _cpu_model(), "python": sys.version.split()[0], "numpy": np.__version__, "quick": args.quick}
    print(f"tinynorm benchmarks on {info['cpu']}, Python {info['python']}, NumPy {info['numpy']}\n", flush=True)
    report: dict[str, object] = {"info": info}
    started = time.perf_counter()
    if args.gpu:
        sections = [("gpu", lambda: gpu.run(gpu_shapes, ["float32", "float16"], repeats))]
    else:
        sections = [
            ("variants", lambda: cpu.variants(*big, repeats)),
            ("torch_cpu", lambda: cpu.against_torch(shapes, ["float32", "float64"], repeats)),
            ("overhead", lambda: cpu.overhead(calls)),
            ("bandwidth", lambda: cpu.bandwidth(shapes[1:], repeats)),
            ("overflow_check", lambda: cpu.overflow_check_cost(big, repeats)),
            ("default_dtype", lambda: cpu.default_dtype(big, repeats)),
        ]
    for key, section in sections:
        text, data = section()
        print(text, flush=True)
        report[key] = data
    text, report["goals"] = goals.check(report)
    print(text, flush=True)
    print(f"done in {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
