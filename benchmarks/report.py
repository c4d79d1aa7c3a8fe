"""Markdown summary of a core benchmark run, from the pytest-benchmark JSON only.

    python -m benchmarks.report benchmarks/results/core.json

Prints the table (model, path, concurrency, p50, p99, throughput) and the derived figures
against the issue's targets: HTTP overhead at c=1 = p50(mlos http c=1) - p50(raw session.run)
under 0.6 ms, and mlos/naive throughput at c=32 of at least 2.0x.
"""
from __future__ import annotations

import json
import sys

OVERHEAD_TARGET_MS = 0.6
RATIO_TARGET = 2.0
_SERVER_ORDER = {"raw": 0, "mlos": 1, "naive": 2}


def load_rows(path: str) -> tuple[list[dict], dict]:
    with open(path) as f:
        doc = json.load(f)
    rows = []
    for b in doc.get("benchmarks", []):
        x = b.get("extra_info") or {}
        if "model" not in x or "p50_ms" not in x:
            continue
        rows.append(x)
    rows.sort(key=lambda r: (r["model"], _SERVER_ORDER.get(r["server"], 9), r["concurrency"]))
    return rows, doc.get("machine_info") or {}


def _find(rows, model, server, concurrency):
    for r in rows:
        if r["model"] == model and r["server"] == server and r["concurrency"] == concurrency:
            return r
    return None


def _path_label(r: dict) -> str:
    if r["server"] == "raw":
        return "raw session.run"
    return f"{r['server']} v2 JSON/HTTP"


def render(rows: list[dict], machine: dict) -> str:
    out = ["## Core inference benchmark", ""]
    if machine:
        out.append(f"Machine: {machine.get('cpu', {}).get('brand_raw', '?')}, "
                   f"{machine.get('cpu', {}).get('count', '?')} logical CPUs, Python {machine.get('python_version', '?')}")
    args = next((r.get("server_args") for r in rows if r.get("server_args")), None)
    if args:
        out.append(f"mlos-core settings: `{args}`")
    out += ["", "| model | path | concurrency | p50 ms | p99 ms | throughput/s |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['model']} | {_path_label(r)} | {r['concurrency']} | {r['p50_ms']:.3f} | "
                   f"{r['p99_ms']:.3f} | {r['throughput_rps']:,.0f} |")
    out += ["", "### Derived figures vs targets", "",
            "| model | figure | value | target | result |", "|---|---|---:|---:|---|"]
    for model in sorted({r["model"] for r in rows}):
        raw, m1, n1 = _find(rows, model, "raw", 1), _find(rows, model, "mlos", 1), _find(rows, model, "naive", 1)
        m32, n32 = _find(rows, model, "mlos", 32), _find(rows, model, "naive", 32)
        if raw and m1:
            ov = m1["p50_ms"] - raw["p50_ms"]
            verdict = "PASS" if ov < OVERHEAD_TARGET_MS else "MISS"
            out.append(f"| {model} | HTTP overhead at c=1 (p50 mlos - p50 raw) | {ov:.3f} ms | < {OVERHEAD_TARGET_MS} ms | {verdict} |")
            if n1:
                out.append(f"| {model} | (for reference) naive overhead at c=1 | {n1['p50_ms'] - raw['p50_ms']:.3f} ms | | |")
        if m32 and n32:
            ratio = m32["throughput_rps"] / n32["throughput_rps"] if n32["throughput_rps"] else float("inf")
            verdict = "PASS" if ratio >= RATIO_TARGET else "MISS"
            out.append(f"| {model} | throughput at c=32, mlos / naive | {ratio:.2f}x "
                       f"({m32['throughput_rps']:,.0f} / {n32['throughput_rps']:,.0f}) | >= {RATIO_TARGET}x | {verdict} |")
    return "\n".join(out)


def cli(argv: list[str] | None, prog: str, load, render, what: str) -> int:
    """The command line of every report: one pytest-benchmark JSON in, Markdown out."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {prog} RESULTS.json", file=sys.stderr)
        return 2
    found, machine = load(argv[0])
    if not found:
        print(f"{argv[0]}: no {what} results", file=sys.stderr)
        return 1
    print(render(found, machine))
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "benchmarks.report", load_rows, render, "core benchmark")


if __name__ == "__main__":
    sys.exit(main())
