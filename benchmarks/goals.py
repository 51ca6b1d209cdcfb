"""Section (goals): the performance goals, each checked against the numbers of this run.

The goals are the project's (its performance issue): ratios measured side by side, never
absolute times. Each is looked up at the shape and setting it names; a run that did not
measure there (``--quick``, or no PyTorch, or no GPU) says so instead of guessing.
"""

from __future__ import annotations

from typing import Any

from .harness import ratio, table

SMALL, BIG = [4096, 1024], [8192, 4096]  # the two CPU shapes the PyTorch goals name
GPU_BIG, GPU_SMALL = [32768, 4096], [4096, 1024]


def _find(rows: list[dict[str, Any]], **where: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in where.items())), None)


def _ratio(row: dict[str, Any] | None, a: str, b: str) -> float | None:
    return None if row is None else ratio(row.get(a), row.get(b))


def goals(report: dict[str, Any]) -> list[tuple[str, float | None, str, float]]:
    """``(goal, measured, "<=" or ">=", limit)`` for every goal this report bears on.

    A ``--quick`` run measures at other sizes than the goals name: none is checked.
    """
    out: list[tuple[str, float | None, str, float]] = []
    if report.get("info", {}).get("quick"):
        return out
    for r in report.get("variants", []):
        if "error" in r:
            out.append((f"{r['variant']}: explicit / autograd time", None, "<=", 0.5))
            continue
        out.append((f"{r['variant']}: explicit / autograd time", _ratio(r, "explicit_s", "autograd_s"), "<=", 0.5))
        peak = _ratio(r, "explicit_peak_bytes", "autograd_peak_bytes")
        out.append((f"{r['variant']}: explicit / autograd peak memory", peak, "<=", 0.5))
        if r["variant"] in ("layernorm", "rmsnorm"):
            extra = (r["explicit_peak_bytes"] - 2 * r["input_bytes"]) / r["input_bytes"]
            out.append((f"{r['variant']}: peak extra memory / input", extra, "<=", 1.5))
    torch_rows = report.get("torch_cpu", [])
    for norm, small_limit, huge_limit in (("RMSNorm", 0.5, 0.5), ("LayerNorm", 4.0, 2.0)):
        if not torch_rows:
            break
        small = _find(torch_rows, norm=norm, shape=SMALL, dtype="float32", thp=False)
        huge = _find(torch_rows, norm=norm, shape=BIG, dtype="float32", thp=True)
        small_ratio, huge_ratio = _ratio(small, "tinynorm_s", "torch_s"), _ratio(huge, "tinynorm_s", "torch_s")
        out.append((f"{norm} / PyTorch, 4096x1024 float32, THP off", small_ratio, "<=", small_limit))
        out.append((f"{norm} / PyTorch, 8192x4096 float32, THP on", huge_ratio, "<=", huge_limit))
    for r in report.get("gpu", {}).get("rows", []):
        where = f"{r['norm']} fused, {'x'.join(map(str, r['shape']))} {r['dtype']}"
        if "err_limit" in r:  # measured only beside PyTorch, at every shape
            error = r.get("err_vs_torch")
            out.append((f"{where}: outputs vs PyTorch's, worst relative error", error, "<=", r["err_limit"]))
        if r["shape"] == GPU_BIG:
            out.append((f"{where}: / PyTorch", _ratio(r, "fused", "torch"), "<=", 0.8))
            out.append((f"{where}: share of copy bandwidth", _ratio(r, "bound_s", "fused"), ">=", 0.65))
        elif r["shape"] == GPU_SMALL:
            out.append((f"{where}: / PyTorch", _ratio(r, "fused", "torch"), "<=", 0.5))
    return out


def check(report: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The goals table, and its rows as data: ``met`` is True, False, or None (not measured)."""
    data = []
    for what, value, sense, limit in goals(report):
        met = None if value is None else (value <= limit if sense == "<=" else value >= limit)
        data.append({"goal": what, "measured": value, "limit": f"{sense} {limit:g}", "met": met})
    title = "(goals) the performance goals, as measured in this run"
    if not data:
        return f"{title}\n  none checked: a --quick run, or no section measured at the sizes the goals name\n", data
    verdict = {True: "yes", False: "NO", None: "not measured"}
    rows = [[d["goal"], d["measured"], d["limit"], verdict[d["met"]]] for d in data]
    missed = sum(d["met"] is False for d in data)
    summary = f"{len(data) - missed} of {len(data)} met" + (f"; missed: {missed}" if missed else "") + "\n"
    return table(title, ["goal", "measured", "limit", "met"], rows) + summary, data
