#!/usr/bin/env bash
# The GPU check: gradcheck every op and norm on CuPy, then run the test suite on NumPy and CuPy.
#
# For a machine with an NVIDIA GPU and no network that already has numpy, cupy, pytest and
# hypothesis (array_api_strict, torch and nbmake are optional: the tests that need them skip).
# It runs tinynorm from this source tree (PYTHONPATH=.), so nothing needs to be installed.
#
#   scripts/gpu_check.sh            # PYTHON=/path/to/python scripts/gpu_check.sh to pick an interpreter
#
# Every step runs even when an earlier one fails; the last line sums them up, and the exit
# status is 0 only when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"

passed=()
failed=()
step() {  # step NAME COMMAND...: run a command, remember whether it passed
    local name="$1"
    shift
    echo
    echo "=== $name: $*"
    if "$@"; then passed+=("$name"); else failed+=("$name (exit $?)"); fi
}

echo "=== machine"
nvidia-smi -L || echo "nvidia-smi: not available"
"$PYTHON" - <<'EOF'
import importlib
import platform

print(f"python {platform.python_version()} ({platform.python_implementation()})")
for name in ("numpy", "cupy", "pytest", "hypothesis", "array_api_strict", "torch", "nbmake"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except ImportError:
        print(f"{name} not installed")
try:
    import cupy

    print(f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, {cupy.cuda.runtime.getDeviceCount()} device(s)")
except Exception as err:  # noqa: BLE001 (report whatever stops CuPy, then let the checks fail)
    print(f"cupy: CUDA not usable ({err})")
EOF

step "check cupy (full)" "$PYTHON" -m tinynorm check --backend cupy
step "check cupy (fast)" "$PYTHON" -m tinynorm check --backend cupy --fast
# Notebooks are left out: they test the tutorials, not the GPU, and need a Jupyter kernel.
step "pytest numpy,cupy" env TINYNORM_TEST_BACKENDS=numpy,cupy \
    "$PYTHON" -m pytest -q -p no:cacheprovider --ignore=notebooks -m "not notebook" tests

# ---- GPU benchmarks: run only once the benchmarks package exists ------------------------------------
# (an empty benchmarks/ folder imports as a namespace package, hence the __main__.py test)
if [ -d benchmarks ] && [ -f benchmarks/__main__.py ] && "$PYTHON" -c "import benchmarks"; then
    step "benchmarks --gpu" "$PYTHON" -m benchmarks --gpu
fi

joined() {  # joined A B C -> "A, B, C"
    local out="" item
    for item in "$@"; do out+="${out:+, }$item"; done
    echo "$out"
}
echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: PASS, ${#passed[@]} steps: $(joined "${passed[@]}")"
    exit 0
fi
echo "gpu_check: FAIL, ${#failed[@]} of $((${#passed[@]} + ${#failed[@]})) steps failed: $(joined "${failed[@]}")"
exit 1
