"""Tables of an Open Inference Protocol benchmark run, from its JSON only.

    python -m benchmarks.report_oip [benchmarks/results/oip.json]

Per (images per request, clients, server, path): the median over rounds of p50, p99 and
images/s; then the ratios the issue sets a target for: mlos-core's binary and shared-memory
paths against Triton's same paths (target: >= 1.0x images/s, p50 no worse).
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

_SERVERS = {"mlos": "mlos-core", "triton": "Triton (PyTriton)", "mlserver": "MLServer"}
_ORDER = {"mlos": 0, "triton": 1, "mlserver": 2}
_PATHS = {"json": 0, "binary": 1, "shm": 2}


def summarize(doc: dict) -> dict:
    groups = defaultdict(list)
    for r in doc["points"]:
        groups[(r["batch"], r["concurrency"], r["server"], r["path"])].append(r)
    out = {}
    for key, rows in groups.items():
        done = [r for r in rows if r["completed"]]
        out[key] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in done) if done else float("nan"),
            "p99_ms": statistics.median(r["p99_ms"] for r in done) if done else float("nan"),
            "images_per_s": statistics.median(r["images_per_s"] for r in rows),
            # the server's whole process tree, over warm-up, window and drain, per image answered
            # in the window: rough, but far less sensitive than latency to CPU taken by neighbours
            "cpu_ms_per_image": statistics.median(
                r["server_cpu_s"] * 1e3 / max(1e-9, r["images_per_s"] * (r["duration_s"] + r.get("warmup_s", 0)))
                for r in rows),
            "rounds": len(rows),
            "completed": sum(r["completed"] for r in rows),
        }
    return out


def render(doc: dict) -> str:
    s = summarize(doc)
    lines = ["| input | clients | server | path | p50 ms | p99 ms | images/s | server CPU ms/image | requests measured |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for (b, c, server, path), v in sorted(s.items(), key=lambda kv: (kv[0][0], kv[0][1], _ORDER[kv[0][2]], _PATHS[kv[0][3]])):
        lines.append(f"| {b}x3x224x224 | {c} | {_SERVERS[server]} | {path} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | "
                     f"{v['images_per_s']:.1f} | {v['cpu_ms_per_image']:.0f} | {v['completed']} |")
    lines += ["", "| input | clients | path | mlos-core / Triton images/s | Triton p50 / mlos-core p50 |", "|---|---:|---|---:|---:|"]
    for (b, c, server, path), v in sorted(s.items()):
        if server != "mlos" or path == "json":
            continue
        t = s.get((b, c, "triton", path))
        if t and t["images_per_s"]:
            lines.append(f"| {b}x3x224x224 | {c} | {path} | {v['images_per_s'] / t['images_per_s']:.2f}x | "
                         f"{t['p50_ms'] / v['p50_ms']:.2f}x |")
    notes = [f"- {k}: {v}" for k, v in {**doc.get("skipped", {}), **doc.get("unsupported", {})}.items()]
    head = (f"{doc['when']}, commit {doc['commit']}, {doc['machine']['cpus']} CPUs, {doc['rounds']} rounds, "
            f"load average at the end {', '.join(f'{x:.2f}' for x in doc['machine']['load_avg_at_end'])}")
    return "\n".join([head, "", *lines, *(["", "Not measured:", *notes] if notes else [])])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0] if argv else "benchmarks/results/oip.json") as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
