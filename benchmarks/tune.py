"""Sweep mlos-core settings at concurrency 32 against the naive baseline, in one run.

    python -m benchmarks.tune [--duration 3] [--model matmul] [--model silero]

Each configuration gets a fresh mlos-core; the naive server is measured before and after the
sweep (the machine is noisy: compare ratios, not absolute figures). Prints one line per point.
"""
from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

from .conftest import build_cases, run_load, start_mlos, start_naive

CONFIGS = [
    "--max-batch-size 64 --max-batch-delay-us 0 --instances 1 --intra-op-threads 1",
    "--max-batch-size 64 --max-batch-delay-us 200 --instances 1 --intra-op-threads 1",
    "--max-batch-size 64 --max-batch-delay-us 500 --instances 1 --intra-op-threads 1",
    "--max-batch-size 64 --max-batch-delay-us 0 --instances 2 --intra-op-threads 1",
    "--max-batch-size 64 --max-batch-delay-us 0 --instances 1 --intra-op-threads 0",
    "--max-batch-size 64 --max-batch-delay-us 0 --instances 2 --intra-op-threads 0",
    "--max-batch-size 1 --max-batch-delay-us 0 --instances 2 --intra-op-threads 1",
]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--model", action="append")
    p.add_argument("--config", action="append", help="mlos-core flags; repeatable (default: the built-in sweep)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = build_cases(tmp)
        models = args.model or list(cases)

        def point(server, label):
            for m in models:
                r = run_load(server, cases[m], 32, duration=args.duration, warmup=1.0)
                print(f"{m:7s} {label:85s} {r['throughput_rps']:9,.0f}/s p50 {r['p50_ms']:7.3f} p99 {r['p99_ms']:7.3f}"
                      f" srv_cpu {r['server_cpu_s']:.2f}s cli_cpu {r['client_cpu_s']:.2f}s err {r['errors']}", flush=True)

        naive = start_naive(cases, tmp / "naive")
        try:
            point(naive, "naive (before)")
            for i, cfg in enumerate(args.config or CONFIGS):
                d = tmp / f"mlos{i}"
                s = start_mlos(cases, d, shlex.split(cfg))
                try:
                    point(s, "mlos " + cfg)
                finally:
                    s.stop()
            point(naive, "naive (after)")
        finally:
            naive.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
