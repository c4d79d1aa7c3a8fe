"""Tables of a gRPC-vs-HTTP benchmark run, from its JSON only.

    python -m benchmarks.report_grpc [benchmarks/results/grpc.json]

Per (model, rows, clients, server, path): the median over rounds of p50, p99 and items/s; then the
ratios the issue asks for: mlos-core's gRPC against its HTTP binary and JSON paths, and against
Triton's gRPC endpoint.
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict

_SERVERS = {"mlos": "mlos-core", "triton": "Triton (PyTriton)", "null": "null system (fixed answer)"}
_PATHS = {"json": 0, "binary": 1, "grpc": 2}
_INPUT = {"resnet50": "{r}x3x224x224", "matmul": "{r}x64 (MatMul)"}


def summarize(doc: dict) -> dict:
    groups = defaultdict(list)
    for r in doc["points"]:
        groups[(r["model"], r["rows"], r["concurrency"], r["server"], r["path"])].append(r)
    out = {}
    for key, rows in groups.items():
        done = [r for r in rows if r["completed"]]
        out[key] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in done) if done else float("nan"),
            "p99_ms": statistics.median(r["p99_ms"] for r in done) if done else float("nan"),
            "items_per_s": statistics.median(r["items_per_s"] for r in rows),
            "client_cpu_s": statistics.median(r["client_cpu_s"] for r in rows),
            # the server's process tree over warm-up, window and drain, per request answered in the
            # window: rough, but far less sensitive than latency to CPU taken by neighbours
            "server_cpu_ms_per_request": statistics.median(
                r["server_cpu_s"] * 1e3 / (r["throughput_rps"] * (r["duration_s"] + r.get("warmup_s", 0)))
                for r in done) if done else float("nan"),
            "completed": sum(r["completed"] for r in rows),
        }
    return out


def _order(key):
    model, rows, conc, server, path = key
    return (model != "resnet50", rows, conc, {"mlos": 0, "triton": 1, "null": 2}[server], _PATHS[path])


def render(doc: dict) -> str:
    s = summarize(doc)
    lines = ["| input | clients | server | path | p50 ms | p99 ms | items/s | server CPU ms/request | requests |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for key in sorted(s, key=_order):
        model, rows, conc, server, path = key
        v = s[key]
        lines.append(f"| {_INPUT[model].format(r=rows)} | {conc} | {_SERVERS[server]} | {path} | {v['p50_ms']:.2f} | "
                     f"{v['p99_ms']:.2f} | {v['items_per_s']:.1f} | {v['server_cpu_ms_per_request']:.2f} | {v['completed']} |")
    lines += ["", "| input | clients | mlos gRPC / mlos HTTP binary | mlos gRPC / mlos HTTP JSON | "
                  "mlos gRPC / Triton gRPC | mlos HTTP binary / Triton HTTP binary |",
              "|---|---:|---:|---:|---:|---:|"]
    points = sorted({k[:3] for k in s}, key=lambda k: (k[0] != "resnet50", k[1], k[2]))

    def ratio(a, b):
        x, y = s.get(a), s.get(b)
        return (f"{x['items_per_s'] / y['items_per_s']:.2f}x" if x and y and x["completed"] and y["completed"]
                else "n/a")

    for model, rows, conc in points:
        k = (model, rows, conc)
        lines.append(f"| {_INPUT[model].format(r=rows)} | {conc} | {ratio((*k, 'mlos', 'grpc'), (*k, 'mlos', 'binary'))} | "
                     f"{ratio((*k, 'mlos', 'grpc'), (*k, 'mlos', 'json'))} | "
                     f"{ratio((*k, 'mlos', 'grpc'), (*k, 'triton', 'grpc'))} | "
                     f"{ratio((*k, 'mlos', 'binary'), (*k, 'triton', 'binary'))} |")
    notes = [f"- {k}: {v}" for k, v in doc.get("skipped", {}).items()]
    notes += [f"- {_INPUT[k[0]].format(r=k[1])}, {k[2]} clients, {_SERVERS[k[3]]} {k[4]}: no request completed "
              "inside the window (each took longer than the window; lengthen MLOS_BENCH_GRPC_DURATION)"
              for k, v in s.items() if not v["completed"]]
    head = (f"{doc['when']}, commit {doc['commit']}, {doc['machine']['cpus']} CPUs, {doc['rounds']} rounds, "
            f"load average at the end {', '.join(f'{x:.2f}' for x in doc['machine']['load_avg_at_end'])}")
    return "\n".join([head, "", *lines, *(["", "Not measured:", *notes] if notes else [])])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0] if argv else "benchmarks/results/grpc.json") as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
