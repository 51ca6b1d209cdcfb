"""Section (b): tinynorm against PyTorch on the CPU, fwd+bwd, run in a subprocess.

PyTorch reads ``THP_MEM_ALLOC_ENABLE`` (back its big CPU allocations by transparent huge
pages) once, when it is imported, so each setting needs its own process:
``python -m benchmarks.torch_side --thp 1 ...`` prints one JSON list of results.
tinynorm is timed in the same process, interleaved with PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from tinynorm.registry import NORMS

from .harness import interleaved_medians
from .variants import build, fwd_bwd_step

# benchmark name -> registry name; the PyTorch side is built in _torch_step
COMPARED = {"LayerNorm": "layernorm", "RMSNorm": "rmsnorm", "GroupNorm": "groupnorm", "BatchNorm": "batchnorm1d"}


def _torch_step(torch: Any, name: str, module: Any, x_np: np.ndarray, dy_np: np.ndarray) -> Any:
    F = torch.nn.functional
    x = torch.from_numpy(x_np).requires_grad_(True)
    dy = torch.from_numpy(dy_np)
    params = {n: torch.from_numpy(p.numpy()).requires_grad_(True) for n, p in module.named_parameters()}
    w, b = params.get("weight"), params.get("bias")
    forward = {
        "LayerNorm": lambda: F.layer_norm(x, module.normalized_shape, w, b, module.eps),
        "RMSNorm": lambda: F.rms_norm(x, module.normalized_shape, w, module.eps),
        "GroupNorm": lambda: F.group_norm(x, module.num_groups, w, b, module.eps),
        "BatchNorm": lambda: F.batch_norm(x, None, None, w, b, training=True, eps=module.eps),
    }[name]

    def step() -> None:
        x.grad = None
        for p in params.values():
            p.grad = None
        forward().backward(dy)

    return step


def run(shapes: list[tuple[int, int]], dtypes: list[str], repeats: int, threads: int) -> list[dict[str, Any]]:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    results = []
    for shape in shapes:
        for dtype in dtypes:
            for name, key in COMPARED.items():
                if key not in NORMS:
                    continue
                module, x = build(NORMS[key], shape, dtype, "explicit")
                dy_np = np.random.default_rng(1).standard_normal(shape).astype(dtype)
                steps = {"tinynorm": fwd_bwd_step(module, x, dy_np)}
                if torch is not None:
                    steps["torch"] = _torch_step(torch, name, module, x.numpy(), dy_np)
                med = interleaved_medians(steps, repeats)
                results.append(
                    {
                        "norm": name,
                        "shape": list(shape),
                        "dtype": dtype,
                        "thp": os.environ.get("THP_MEM_ALLOC_ENABLE") == "1",
                        "tinynorm_s": med["tinynorm"],
                        "torch_s": med.get("torch"),
                        "torch_version": None if torch is None else torch.__version__,
                    }
                )
                del module, x, steps
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", required=True, help="e.g. 64x768,4096x1024")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    print(json.dumps(run(shapes, args.dtypes.split(","), args.repeats, args.threads)))


if __name__ == "__main__":
    main()
