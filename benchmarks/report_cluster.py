"""Markdown summary of ``make bench-cluster``, from its pytest-benchmark JSON only.

    python -m benchmarks.report_cluster benchmarks/results/cluster.json

Prints the throughput of the compute-bound model (single process, 1 and 2 replicas), the
2-vs-1 replica ratio against the target (1.7x on a quiet 2-core machine), and the cluster
path's overhead at one client (p50 and p99 differences against the single-process server).
"""
from __future__ import annotations

import json
import sys

RATIO_TARGET = 1.7


def load_rows(path: str) -> tuple[list[dict], dict]:
    with open(path) as f:
        doc = json.load(f)
    rows = [b["extra_info"] for b in doc.get("benchmarks", []) if "figure" in (b.get("extra_info") or {})]
    return rows, doc.get("machine_info") or {}


def render(rows: list[dict], machine: dict) -> str:
    out = ["## Cluster benchmark (Ray Serve, a head and two worker nodes of one CPU each, on one machine)", ""]
    if machine:
        cpu = machine.get("cpu", {})
        out.append(f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical CPUs")
    out += ["", "| figure | path | clients | throughput/s | p50 ms | p99 ms | served on |",
            "|---|---|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: (r["figure"], r.get("replicas", 0))):
        nodes = ", ".join(sorted(set((r.get("serving_nodes") or {}).values()))) or "-"
        out.append(f"| {r['figure']} | {r['path']} | {r['concurrency']} | {r['throughput_rps']:.2f} | "
                   f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {nodes} |")
    compute = {r.get("replicas"): r for r in rows if r["figure"] == "compute"}
    out += ["", "| derived | value | target |", "|---|---:|---:|"]
    if 1 in compute and 2 in compute:
        ratio = compute[2]["throughput_rps"] / compute[1]["throughput_rps"]
        out.append(f"| throughput, 2 replicas / 1 replica | {ratio:.2f}x | >= {RATIO_TARGET}x |")
    if 0 in compute and 1 in compute:
        out.append(f"| throughput, 1 replica / single process | "
                   f"{compute[1]['throughput_rps'] / compute[0]['throughput_rps']:.2f}x | - |")
    over = {r["path"]: r for r in rows if r["figure"] == "overhead"}
    single, door = over.get("single process"), over.get("cluster front door")
    if single and door:
        for q in ("p50", "p99"):
            out.append(f"| overhead at 1 client, {q} (front door - single process) | "
                       f"{door[q + '_ms'] - single[q + '_ms']:+.2f} ms | - |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(render(*load_rows(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
