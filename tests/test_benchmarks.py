"""The benchmark harness does not rot: its quick mode runs, its goal checker judges
reports right, and its GPU mode says it skipped where there is no GPU. Nothing here times
anything; ``python -m benchmarks`` does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tinynorm as tn
from tinynorm.registry import NORMS

ROOT = Path(__file__).resolve().parent.parent


# ---- the benchmark harness does not rot ------------------------------------------------------------
def test_benchmarks_quick_smoke_run(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert {r["variant"] for r in report["variants"]} == set(NORMS)
    assert "(e) overflow-safe statistics" in done.stdout
    assert report["goals"] == [] and "none checked" in done.stdout  # --quick measures at other sizes


def test_compare_checkouts_gives_a_ratio_for_every_norm_and_overhead_row(tmp_path):
    out = tmp_path / "ratios.json"
    command = [sys.executable, "-m", "benchmarks.compare_checkouts", str(ROOT), str(ROOT), "--rounds", "1"]
    done = subprocess.run(
        [*command, "--quick", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    assert {r["row"] for r in results if r["section"] == "variants"} == set(NORMS)
    assert {r["row"] for r in results if r["section"] == "overhead"} >= {"add fwd+bwd", "add, no grad"}
    assert all(r["min"] <= r["median"] <= r["max"] and r["median"] > 0 for r in results)
    assert "after / before" in done.stdout


def _report(explicit_s, torch_s, fused_s, bound_s):
    """A full run's report, cut down to one row per goal kind, with these times."""
    variant = {"variant": "layernorm", "shape": [4096, 1024], "input_bytes": 100}
    variant |= {"explicit_s": explicit_s, "autograd_s": 1.0, "explicit_peak_bytes": 300, "autograd_peak_bytes": 900}
    torch_rows = [
        {"norm": norm, "shape": shape, "dtype": "float32", "thp": thp, "tinynorm_s": 1.0, "torch_s": torch_s}
        for norm in ("RMSNorm", "LayerNorm")
        for shape, thp in (([4096, 1024], False), ([8192, 4096], True))
    ]
    gpu = {"norm": "LayerNorm", "shape": [32768, 4096], "dtype": "float16", "bound_s": bound_s, "fused": fused_s}
    gpu["torch"] = 1.0
    return {"info": {"quick": False}, "variants": [variant], "torch_cpu": torch_rows, "gpu": {"rows": [gpu]}}


def test_benchmark_goals_are_checked_against_their_limits():
    from benchmarks import goals

    met = {g["goal"]: g["met"] for g in goals.check(_report(0.4, 2.1, 0.7, 0.5))[1]}
    assert met["layernorm: explicit / autograd time"] is True  # 0.4 <= 0.5
    assert met["layernorm: explicit / autograd peak memory"] is True  # 300 / 900
    assert met["layernorm: peak extra memory / input"] is True  # (300 - 2 * 100) / 100 = 1 <= 1.5
    assert met["RMSNorm / PyTorch, 4096x1024 float32, THP off"] is True  # 1 / 2.1 <= 0.5
    assert met["LayerNorm / PyTorch, 8192x4096 float32, THP on"] is True  # 0.48 <= 2
    assert met["LayerNorm fused, 32768x4096 float16: / PyTorch"] is True  # 0.7 <= 0.8
    assert met["LayerNorm fused, 32768x4096 float16: share of copy bandwidth"] is True  # 0.5 / 0.7 >= 0.65

    text, rows = goals.check(_report(0.6, 0.9, 0.9, 0.5))
    met = {g["goal"]: g["met"] for g in rows}
    assert met["layernorm: explicit / autograd time"] is False
    assert met["RMSNorm / PyTorch, 4096x1024 float32, THP off"] is False  # 1 / 0.9
    assert met["LayerNorm / PyTorch, 4096x1024 float32, THP off"] is True  # 1.1 <= 4
    assert met["LayerNorm fused, 32768x4096 float16: / PyTorch"] is False
    assert met["LayerNorm fused, 32768x4096 float16: share of copy bandwidth"] is False  # 0.56
    assert f"missed: {sum(m is False for m in met.values())}" in text

    without_torch = goals.check(_report(0.4, None, 0.7, 0.5))[1]
    assert {g["met"] for g in without_torch if "PyTorch, " in g["goal"]} == {None}  # "not measured", not "met"


def test_benchmarks_gpu_mode_skips_cleanly_without_cupy(tmp_path):
    pytest.importorskip("numpy")
    try:
        tn.backend.namespace("cupy")
        pytest.skip("CuPy works here: the GPU benchmark would really run")
    except tn.BackendUnavailableError:
        pass
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--gpu", "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "(gpu) skipped" in done.stdout
