"""The command line, ``python -m tinynorm``: each command does what its help says, an
unknown name or backend is a usage error (exit code 2) that says what was meant, and
what it prints is plain text that fits the terminal."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tinynorm as tn
from tinynorm import cli
from tinynorm.cli import main


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m tinynorm ARGS`` in a fresh process, its output a pipe (not a terminal)."""
    environ = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | env
    return subprocess.run(
        [sys.executable, "-m", "tinynorm", *args], capture_output=True, text=True, timeout=300, env=environ
    )


def exit_code(argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse exits (``--help``, ``--version``, a usage error)."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


# ---- check ---------------------------------------------------------------------------------------
def test_check_fast_passes_and_exits_0():
    done = run("check", "--fast")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "fast mode" in done.stdout
    assert done.stdout.strip().endswith("all passed")
    assert "op matmul" in done.stdout and "layernorm [explicit]" in done.stdout


@pytest.mark.parametrize(("order", "what"), [("2", "second derivatives"), ("3", "third derivatives")])
def test_check_order_2_and_3_run_every_op_and_norm_and_pass(order, what, capsys):
    assert exit_code(["check", "--order", order, "--fast"]) == 0
    out = capsys.readouterr().out
    assert what in out and out.strip().endswith("all passed")
    assert "op getitem" in out and "layernorm [explicit]" in out and "batchnorm2d [autograd]" in out


def test_check_order_3_fails_and_names_the_input_when_statistics_have_no_history(monkeypatch, capsys):
    from tinynorm.norms import rmsnorm
    from tinynorm.tensor import Tensor

    forward = rmsnorm.RMSNormFunction.forward

    def planted(ctx, *args, **kwargs):  # run again for create_graph, rstd is saved as a constant
        y = forward(ctx, *args, **kwargs)
        if ctx.recomputing:
            *rest, rstd = ctx.saved_tensors
            ctx.saved_tensors = (*rest, Tensor(rstd.data))
        return y

    monkeypatch.setattr(rmsnorm.RMSNormFunction, "forward", staticmethod(planted))
    assert exit_code(["check", "--order", "3", "--only", "rmsnorm"]) == 1
    out = capsys.readouterr().out
    assert "rmsnorm [explicit]" in out and "third-order check failed" in out and "'input 0'" in out
    assert "1 failed" in out  # the autograd reference, composed from ops, is still right


def test_check_only_one_op_in_full_mode_exits_0():
    done = run("check", "--only", "matmul")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "op matmul" in done.stdout and "op add" not in done.stdout


def test_check_only_a_misspelt_name_exits_2_naming_the_close_matches():
    done = run("check", "--only", "rmsnrom")
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""  # nothing checked, no "all passed"
    assert "argument --only: unknown name 'rmsnrom'; did you mean 'rmsnorm'" in done.stderr
    assert "'python -m tinynorm list' lists every op and norm" in done.stderr
    assert done.stderr.startswith("usage: python -m tinynorm check")


@pytest.mark.parametrize(
    ("typo", "meant"), [("matmull", "'matmul'"), ("LayerNorm", "'layernorm'"), ("batchnorm", "'batchnorm1d'")]
)
def test_check_only_names_the_op_or_norm_that_was_meant(typo, meant, capsys):
    assert exit_code(["check", "--only", typo]) == 2
    suggestion = capsys.readouterr().err.split(f"unknown name {typo!r}; did you mean ")[1].split("?")[0]
    assert meant in suggestion


def test_check_only_a_name_close_to_nothing_says_so(capsys):
    assert exit_code(["check", "--only", "xyzzy"]) == 2
    assert "unknown name 'xyzzy', and no registered name is close to it" in capsys.readouterr().err


def test_the_check_function_refuses_an_unknown_name_before_printing(capsys):
    with pytest.raises(KeyError, match="unknown name 'rmsnrom'; did you mean 'rmsnorm'"):
        cli.check("numpy", fast=True, only="rmsnrom")
    assert capsys.readouterr().out == ""


def test_check_table_shows_the_tolerance_and_the_error_over_it(capsys):
    assert main(["check", "--only", "rmsnorm"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "tinynorm check on backend 'numpy' (full mode, float64)"
    header = lines[1]
    assert header.split() == ["name", "max", "abs", "err", "max", "rel", "err", "atol/rtol", "err/tol", "result"]
    rows = [line.split() for line in lines if line.startswith("rmsnorm [")]
    assert [row[:2] for row in rows] == [["rmsnorm", "[explicit]"], ["rmsnorm", "[autograd]"]]
    for _, _, abs_err, _, tolerance, ratio, status in rows:
        assert tolerance == "1e-05/0.001" and status == "PASS"
        # the worst element's error over its allowance atol + rtol*|n| is at most abs_err / atol
        assert 0 < float(ratio) <= float(abs_err) / 1e-5 * (1 + 1e-2)


class Twice(tn.Function):
    """y = 2x, with a backward that is off by the factor ``scale`` (1 is right)."""

    scale = 1.0

    @staticmethod
    def forward(ctx, x):
        return 2 * x

    @classmethod
    def backward(cls, ctx, grad):
        return 2 * cls.scale * grad


@pytest.mark.parametrize(("scale", "passes"), [(1.0, True), (1.0005, True), (1.002, False), (1.01, False)])
def test_the_error_ratio_is_at_most_1_exactly_when_the_gradcheck_passes(scale, passes):
    # Jacobian entries n = 2: the error 2 * (scale - 1) against an allowance 1e-5 + 1e-3 * 2.
    wrong = type("Wrong", (Twice,), {"scale": scale})
    x = tn.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    result = tn.gradcheck(wrong.apply, x, raise_exception=False)
    assert bool(result) is passes
    assert (result.max_error_ratio <= 1) is passes
    jacobian_ratio = 2 * (scale - 1) / (1e-5 + 2e-3)
    assert result.max_error_ratio >= jacobian_ratio * (1 - 1e-6)  # the random upstream check can only add


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_check_on_cupy_without_cupy_exits_2_with_the_reason():
    done = run("check", "--backend", "cupy")
    assert done.returncode == 2
    assert "error: backend 'cupy' needs CuPy" in done.stderr
    assert done.stdout == ""  # no table header before the error


def test_check_refuses_an_unknown_backend_with_exit_2():
    done = run("check", "--backend", "jax")
    assert done.returncode == 2
    assert "invalid choice: 'jax'" in done.stderr


# ---- help and version ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["list", "--help"], ["exercises", "--help"]])
def test_help_is_plain_text_without_markup(argv, capsys):
    assert exit_code(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tinynorm")
    assert "`" not in out and not re.search(r":\w+:", out), out


def test_top_level_help_names_every_command(capsys):
    assert exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    for line in ("* check: gradcheck every registered op", "* list: list the registered", "* exercises: write the"):
        assert line in out


def test_check_help_says_what_the_columns_mean(capsys):
    assert exit_code(["check", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "an element passes when |analytical - numerical| <= atol + rtol * |numerical|" in help_text
    assert "err/tol the worst element's error over what it was allowed: at most 1 when the check passed" in help_text


def test_backend_option_has_help_listing_the_choices(capsys):
    assert exit_code(["check", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "the array backend to run on: numpy, cupy, array_api_strict (default: numpy;" in help_text


def test_version_is_the_installed_distributions(monkeypatch, capsys):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"tinynorm": "9.8.7"}[name])
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out == "tinynorm 9.8.7\n"


def test_version_falls_back_to_the_package_when_not_installed(monkeypatch, capsys):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert exit_code(["--version"]) == 0
    assert capsys.readouterr().out == f"tinynorm {tn.__version__}\n"


# ---- list --------------------------------------------------------------------------------------------
def test_list_names_every_op_and_norm_in_lines_of_80_when_not_a_terminal():
    done = run("list")
    assert done.returncode == 0, done.stderr
    for name in [*tn.registry.OPS, *tn.registry.NORMS]:
        assert re.search(rf"\b{name}\b", done.stdout), name
    assert max(map(len, done.stdout.splitlines())) <= 80
    assert "list --verbose" in done.stdout


@pytest.mark.parametrize("columns", [60, 100])
@pytest.mark.parametrize("verbose", [False, True])
def test_list_wraps_at_the_terminal_width(columns, verbose, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", str(columns))  # what shutil.get_terminal_size reads first
    assert main(["list", "--verbose"] if verbose else ["list"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= columns
    words = " ".join(out.split())
    for spec in tn.registry.NORMS.values():
        assert f"{spec.name} {spec.title}" in words
        assert (" ".join(spec.summary.split()) in words) is verbose
        assert all((f"{p.name} {p.shape}, init {p.init}: " in words) is verbose for p in spec.params)
        assert (f"derivation: {spec.doc}" in words) is verbose


def test_list_verbose_gives_each_norm_its_summary_parameters_and_page(capsys):
    cli.list_registry(verbose=True, width=80)
    out = capsys.readouterr().out
    spec = tn.registry.NORMS["layernorm"]
    block = out[out.index("  layernorm ") : out.index(f"derivation: {spec.doc}")]
    assert "LayerNorm" in block
    for p in spec.params:
        assert f"{p.name} {p.shape}, init {p.init}: {' '.join(p.meaning.split())}" in " ".join(block.split())
