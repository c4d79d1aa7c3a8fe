"""A closed-loop gRPC load generator for ``inference.GRPCInferenceService/ModelInfer``, run in its
own process: the HTTP ``benchmarks/loadgen.py``'s twin, with the same timeline and the same JSON.

``concurrency`` callers share one channel (HTTP/2 multiplexes them on one connection, as gRPC
clients do); each sends one pre-serialised ``ModelInferRequest`` (bytes in, bytes out: no
protobuf work in the loop), waits for the whole answer and sends the next.

    python -m benchmarks.grpc_loadgen --port 8001 --body-file request.pb --concurrency 4 --duration 4 --warmup 1

prints one JSON object: completed, errors, throughput_rps, p50_ms, p90_ms, p99_ms, mean_ms,
max_ms, client_cpu_s.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from .loadgen import _percentile

METHOD = "/inference.GRPCInferenceService/ModelInfer"
_NS = 1_000_000_000


async def _main(args) -> dict:
    import grpc

    request = open(args.body_file, "rb").read()
    options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
    latencies: list[int] = []
    errors = 0
    error_sample = ""
    start = time.perf_counter_ns()
    measure_from = start + int(args.warmup * _NS)
    measure_to = measure_from + int(args.duration * _NS)
    async with grpc.aio.insecure_channel(f"{args.host}:{args.port}", options=options) as channel:
        call = channel.unary_unary(METHOD)  # no serializers: the request and the answer stay bytes
        await call(request, timeout=300)  # connected before the clock starts

        async def caller():
            nonlocal errors, error_sample
            while True:
                sent = time.perf_counter_ns()
                if sent > measure_to:
                    return
                try:
                    await call(request, timeout=300)
                    ok = True
                except grpc.aio.AioRpcError as e:
                    ok = False
                    error_sample = error_sample or f"{e.code()}: {e.details()}"[:300]
                done = time.perf_counter_ns()
                if measure_from <= done <= measure_to:
                    if ok:
                        latencies.append(done - sent)
                    else:
                        errors += 1
                elif not ok:
                    errors += 1

        async def cpu_window():
            await asyncio.sleep(max(0.0, (measure_from - time.perf_counter_ns()) / _NS))
            t = os.times()
            cpu0 = t.user + t.system
            await asyncio.sleep(max(0.0, (measure_to - time.perf_counter_ns()) / _NS))
            t = os.times()
            return t.user + t.system - cpu0

        results = await asyncio.gather(cpu_window(), *(caller() for _ in range(args.concurrency)))
    lat = sorted(latencies)
    window = (measure_to - measure_from) / _NS
    return {
        "concurrency": args.concurrency, "completed": len(lat), "errors": errors, "error_sample": error_sample,
        "duration_s": window, "throughput_rps": len(lat) / window,
        "p50_ms": _percentile(lat, 50), "p90_ms": _percentile(lat, 90), "p99_ms": _percentile(lat, 99),
        "mean_ms": (sum(lat) / len(lat) / 1e6) if lat else float("nan"),
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"), "client_cpu_s": results[0],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--body-file", required=True, help="a serialised inference.ModelInferRequest")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    if not (1 <= args.concurrency <= 1024 and 0 < args.duration <= 120 and 0 <= args.warmup <= 60):
        p.error("concurrency 1-1024, duration 0-120 s, warmup 0-60 s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    json.dump(asyncio.run(_main(args)), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
