"""The fused CUDA kernels compile the way CuPy will compile them on a GPU machine: with
NVRTC, CuPy's options (``-ftz=true`` included) and a Hopper target, for float16, float32
and float64 and every pack width the launchers pick, without a single warning.

No GPU is needed: NVRTC is a compiler library, loaded here with ``ctypes`` from its PyPI
wheel (``pip install 'tinynorm[nvrtc]'``) or a CUDA toolkit; without it these tests skip.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re

import pytest

from tinynorm.kernels import cupy_fused

ARCH = "sm_90"  # H100 / H200
CUPY_OPTIONS = (*cupy_fused.NVRTC_OPTIONS, "-ftz=true", f"-arch={ARCH}", "--device-as-default-execution-space", "--pch")
"""What CuPy 14's ``RawModule`` hands NVRTC: ours, then what it appends (``-ftz=true`` last of
its own, so ours cannot undo it)."""


def _library_paths() -> list[str]:
    paths = []
    try:
        import nvidia  # the namespace package of NVIDIA's wheels: nvidia/cu13/lib, nvidia/cuda_nvrtc/lib

        for base in nvidia.__path__:
            paths += sorted(glob.glob(os.path.join(base, "*", "lib", "libnvrtc.so*")), reverse=True)
    except ImportError:
        pass
    found = ctypes.util.find_library("nvrtc")
    paths += [found] if found else []
    return paths + sorted(glob.glob("/usr/local/cuda/lib64/libnvrtc.so*"), reverse=True)


@pytest.fixture(scope="module")
def nvrtc() -> ctypes.CDLL:
    for path in _library_paths():
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    pytest.skip("NVRTC is not installed: pip install 'tinynorm[nvrtc]'")


def _compile(nvrtc: ctypes.CDLL, code: str, options: tuple[str, ...]) -> tuple[int, str, str]:
    """``(status, log, ptx)`` of one NVRTC compilation (status 0 is success)."""
    program = ctypes.c_void_p()
    assert nvrtc.nvrtcCreateProgram(ctypes.byref(program), code.encode(), b"tinynorm.cu", 0, None, None) == 0
    try:
        argv = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
        status = nvrtc.nvrtcCompileProgram(program, len(options), argv)
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        ptx = b""
        if status == 0 and nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)) == 0:
            buffer = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetPTX(program, buffer)
            ptx = buffer.value
        return status, log.value.decode(), ptx.decode()
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def _variants() -> list[tuple[str, int]]:
    """Every (dtype, pack width) a launcher can pick: packs of one, the backward's, the forward's."""
    return [
        (dtype, vec)
        for dtype in sorted(cupy_fused.STORAGE_TYPES)
        for vec in sorted({1, cupy_fused.vector_width(dtype, backward=True), cupy_fused.vector_width(dtype)})
    ]


@pytest.mark.parametrize(("dtype", "vec"), _variants())
def test_kernels_compile_with_cupys_options_without_a_warning(nvrtc, dtype, vec):
    status, log, ptx = _compile(nvrtc, cupy_fused.source(dtype, vec), CUPY_OPTIONS)
    assert status == 0, log
    messages = [line for line in log.splitlines() if line.strip() and "precompiled header" not in line]
    assert messages == [], log  # --pch reports the header it made or used; nothing else may be said
    assert all(f".entry {name}(" in ptx for name in cupy_fused.KERNEL_NAMES)
    # -ftz=true flushes float32 arithmetic (its PTX carries .ftz), but not the one conversion
    # that saves a row's rstd below FLT_MIN: a plain cvt.rn.f32.f64 from inline PTX.
    if dtype == "float32":
        assert "mul.ftz.f32" in ptx or "fma.rn.ftz.f32" in ptx
        assert re.search(r"cvt\.rn\.f32\.f64\s", ptx)


@pytest.mark.parametrize(("dtype", "vec"), [v for v in _variants() if v[0] != "float64"])
def test_float16_and_float32_kernels_fit_in_registers(nvrtc, dtype, vec):
    """Every kernel may run 1024 threads a block (``__launch_bounds__(1024)``): 64 registers
    each. float16 and float32 need no more, parameter-gradient shares included, at every
    width a launcher runs them with (the backward never gets float16 packs of 8); float64,
    the checking dtype, spills a little to (cached) local memory and is left out here."""
    status, log, _ = _compile(nvrtc, cupy_fused.source(dtype, vec), (*CUPY_OPTIONS[:-1], "-Xptxas=-v"))
    assert status == 0, log
    spills = dict(
        (name, (stores, loads))
        for name, stores, loads in re.findall(
            r"entry function '(\w+)'.*?(\d+) bytes spill stores, (\d+) bytes spill loads", log, re.S
        )
    )
    assert sorted(spills) == sorted(cupy_fused.KERNEL_NAMES), log
    backward_width = cupy_fused.vector_width(dtype, backward=True)
    launched = [name for name in spills if vec <= backward_width or name.endswith("_forward")]
    assert {name: spills[name] for name in launched} == {name: ("0", "0") for name in launched}, log
