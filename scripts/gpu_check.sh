#!/usr/bin/env bash
# The GPU check: gradcheck every op and norm on CuPy, run the test suite on NumPy and CuPy
# (the fused-kernel tests of tests/test_cupy_kernels.py included), then the GPU benchmark.
#
#   scripts/gpu_check.sh [OUTDIR]     # OUTDIR defaults to $OUT, else benchmarks/results/gpu-<date>
#   PYTHON=/path/to/python scripts/gpu_check.sh ...
#
# For a machine with an NVIDIA GPU and no network that has numpy, cupy and pytest. hypothesis,
# array_api_strict, torch and pytest-xdist are optional: the tests that need the first two
# skip, the benchmark leaves PyTorch's column empty without torch, and xdist runs the tests on
# 8 workers when it is there. It runs tinynorm from this source tree (PYTHONPATH=.): nothing
# is installed, nothing is downloaded.
#
# It writes into OUTDIR: summary.md (machine, date, GPU, CuPy/CUDA/torch versions, each step
# with its exit status and seconds), gpu_benchmark.json, and each step's full output (*.log).
#
# Exit status: 0 when every step passed; 1 when one failed; 2, before any step, when there is
# no usable CUDA GPU (the summary then says why). Each step has a time limit, so that the
# whole check ends within about 8 minutes on an H200 (estimated: it has not run on one yet).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
OUTDIR="${1:-${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUTDIR"
SUMMARY="$OUTDIR/summary.md"

machine() {  # the summary's head: what ran where
    echo "# tinynorm GPU check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- host: $(uname -n), $(uname -sr), $(nproc) cores"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi: not available')"
    "$PYTHON" - <<'EOF'
import importlib
import platform

print(f"- python {platform.python_version()}")
for name in ("numpy", "cupy", "torch", "pytest", "hypothesis", "array_api_strict", "xdist"):
    try:
        print(f"- {name} {importlib.import_module(name).__version__}")
    except Exception:  # noqa: BLE001 (not installed, or broken: either way not used)
        print(f"- {name}: not installed")
try:
    import cupy

    runtime = cupy.cuda.runtime
    print(f"- CUDA runtime {runtime.runtimeGetVersion()}, driver {runtime.driverGetVersion()}, {runtime.getDeviceCount()} device(s)")
except Exception as err:  # noqa: BLE001
    print(f"- CUDA through CuPy: not usable ({type(err).__name__}: {err})")
try:
    import torch

    print(f"- torch CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")
except Exception:  # noqa: BLE001
    pass
EOF
}
machine | tee "$SUMMARY"

# One allocation and one kernel: the driver, the CUDA runtime and NVRTC all work, or say why not.
if ! problem=$("$PYTHON" -c 'import cupy; assert int(cupy.arange(4).sum()) == 6' 2>&1); then
    { echo; echo "**No usable CUDA GPU here, so nothing was run:** $(echo "$problem" | tail -1)"; } | tee -a "$SUMMARY"
    exit 2
fi

{ echo; echo "| step | exit | seconds |"; echo "| --- | --- | --- |"; } >> "$SUMMARY"
failed=0
step() {  # step NAME LIMIT_S COMMAND...: run it with a time limit, log it, add a line to the summary
    local name="$1" limit="$2" log="$OUTDIR/$1.log" began status
    shift 2
    echo
    echo "=== $name (at most ${limit} s): $*"
    began=$(date +%s)
    timeout --signal=INT --kill-after=20 "$limit" "$@" 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    [ "$status" -eq 0 ] || failed=1
    echo "| $name | $status$([ "$status" -eq 124 ] && echo ' (time limit)') | $(($(date +%s) - began)) |" >> "$SUMMARY"
}

workers=()
"$PYTHON" -c "import xdist" 2>/dev/null && workers=(-n 8)
# Time limits (seconds) that add up to 8 minutes; the first CuPy step also compiles kernels.
step check-cupy 90 "$PYTHON" -m tinynorm check --backend cupy
step check-cupy-fast 40 "$PYTHON" -m tinynorm check --backend cupy --fast
# Notebooks are left out: they test the tutorials, not the GPU, and need a Jupyter kernel.
step pytest 240 env TINYNORM_TEST_BACKENDS=numpy,cupy TINYNORM_HYPOTHESIS_EXAMPLES=10 \
    "$PYTHON" -m pytest -q -p no:cacheprovider "${workers[@]}" -m "not notebook" tests
step benchmark 90 "$PYTHON" -m benchmarks --gpu --json "$OUTDIR/gpu_benchmark.json"
# The benchmark's verdicts that are about correctness, not speed, fail the check.
step benchmark-results 20 "$PYTHON" - "$OUTDIR/gpu_benchmark.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
rows = report["gpu"].get("rows", [])
wrong = [g["goal"] for g in report["goals"] if "outputs vs PyTorch" in g["goal"] and g["met"] is False]
unused = [f"{r['norm']} {r['shape']} {r['dtype']}" for r in rows if not r["fused_kernel_used"]]
print(f"{len(rows)} rows; outputs unlike PyTorch's: {wrong or 'none'}; fused kernels not used: {unused or 'none'}")
sys.exit(1 if wrong or unused or not rows else 0)
EOF

{
    echo
    echo "Test counts: $(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed)' "$OUTDIR/pytest.log" | tail -1)"
    echo
    echo "Benchmark output (every number is in gpu_benchmark.json):"
    echo
    echo '```'
    sed -n '/^(gpu)/,$p' "$OUTDIR/benchmark.log"
    echo '```'
} >> "$SUMMARY"
echo
if [ "$failed" -eq 0 ]; then echo "gpu_check: PASS (summary: $SUMMARY)"; else echo "gpu_check: FAIL (summary: $SUMMARY)"; fi
exit "$failed"
