"""Markdown tables of a kernel-path run (benchmarks/test_kernel_path.py), from its JSON only.

    python -m benchmarks.report_kernel benchmarks/results/kernel.json

Medians and percentiles come with 95% bootstrap intervals; a ratio below 1 means the first
path is faster, and a ratio whose interval covers 1.0 is reported as no significant difference.
"""
from __future__ import annotations

import json
import sys

from .report import cli

_SIZE_ORDER = {"4KB": 0, "600KB": 1, "20MB": 2}


def load_rows(path: str) -> tuple[list[dict], dict]:
    with open(path) as f:
        doc = json.load(f)
    rows = [b["extra_info"] for b in doc.get("benchmarks", [])
            if (b.get("extra_info") or {}).get("kind") in ("transport", "priority")]
    rows.sort(key=lambda r: (r["kind"] != "transport", _SIZE_ORDER.get(r.get("size"), 9)))
    return rows, doc.get("machine_info") or {}


def _ci(x: dict, digits: int = 2) -> str:
    return f"{x['value']:.{digits}f} [{x['ci_low']:.{digits}f}, {x['ci_high']:.{digits}f}]"


def _ratio(x: dict) -> str:
    return f"{x['ratio']:.3g}x [{x['ci_low']:.3g}, {x['ci_high']:.3g}] {x['verdict']}"


def render(rows: list[dict], machine: dict) -> str:
    emulated = any(r.get("emulated") for r in rows)
    cpu = (machine.get("cpu") or {}).get("brand_raw", "?")
    out = [f"Machine: {cpu}, {machine.get('python_implementation', '')} {machine.get('python_version', '')}"
           + (" — EMULATED (qemu TCG guest): compare ratios, not milliseconds" if emulated else ""), ""]
    transport = [r for r in rows if r["kind"] == "transport"]
    if transport:
        out += ["| input | zero-copy kernel ms | zero-copy userspace ms | JSON/HTTP ms | kernel / userspace | kernel / JSON |",
                "|---|---|---|---|---|---|"]
        for r in transport:
            m = r["median_ms"]
            out.append(f"| {r['size']} | {_ci(m['zerocopy-kernel'])} | {_ci(m['zerocopy-userspace'])} "
                       f"| {_ci(m['json-http'])} | {_ratio(r['kernel_vs_userspace'])} | {_ratio(r['kernel_vs_json'])} |")
        out += ["", "Medians per call with 95% bootstrap intervals; samples per path: "
                + ", ".join(f"{r['size']} {r['samples']['zerocopy-kernel']}" for r in transport), ""]
    for r in (r for r in rows if r["kind"] == "priority"):
        out += [f"Priority under a CPU hog ({r['hogs']} busy processes, {r['phase_seconds']:.0f} s phases A B A B):", "",
                "| arm | requests | p50 ms | p99 ms |", "|---|---|---|---|"]
        for arm in ("with", "without"):
            out.append(f"| {arm} priority | {r['samples'][arm]} | {_ci(r['p50_ms'][arm])} | {_ci(r['p99_ms'][arm])} |")
        out += ["", f"p99 with / without: {_ratio(r['p99_with_vs_without'])}; "
                f"p50: {_ratio(r['p50_with_vs_without'])}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "benchmarks.report_kernel", load_rows, render, "kernel-path benchmark")


if __name__ == "__main__":
    sys.exit(main())
