"""A low-overhead closed-loop HTTP/1.1 load generator, run in its own process.

``concurrency`` keep-alive connections each send one pre-encoded POST, wait for the whole
response, and send the next (closed loop). Requests are raw bytes written on an asyncio
``Protocol`` (uvloop when installed); responses are parsed only as far as the status line and
``Content-Length``, so the client costs a small fraction of what the server spends per request.

Timeline: ``warmup`` seconds whose responses are discarded, then ``duration`` seconds measured:
every response completing inside that window counts, its latency (send -> last byte) is kept,
and throughput = completed / window. Then no new request is sent and in-flight ones drain.

    python -m benchmarks.loadgen --port 8080 --path /v2/models/m/infer --body-file body.json \
        --concurrency 32 --duration 4 --warmup 1

prints one JSON object: completed, errors, throughput_rps, p50_ms, p90_ms, p99_ms, mean_ms,
max_ms, client_cpu_s (this process's user+system CPU in the measured window).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time

_NS = 1_000_000_000


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str] = ()) -> bytes:
    extra = "".join(f"{h.strip()}\r\n" for h in headers)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Run:
    """Shared state of one load run."""

    def __init__(self, request: bytes, warmup_s: float, duration_s: float):
        self.request = request
        self.start_ns = time.perf_counter_ns()
        self.measure_from = self.start_ns + int(warmup_s * _NS)
        self.measure_to = self.measure_from + int(duration_s * _NS)
        self.latencies: list[int] = []
        self.errors = 0
        self.error_sample = ""
        self.stopping = False
        self.in_flight = 0
        self.drained: asyncio.Future | None = None
        self.cpu_from = self.cpu_to = None


class _Client(asyncio.Protocol):
    __slots__ = ("run", "transport", "buf", "sent_ns", "need", "status_ok")

    def __init__(self, run: _Run):
        self.run = run
        self.transport = None
        self.buf = bytearray()
        self.sent_ns = 0
        self.need = -1  # total bytes of the current response once its head is parsed
        self.status_ok = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        self._send()

    def _send(self):
        run = self.run
        if run.stopping:
            self._finish()
            return
        run.in_flight += 1
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(run.request)

    def _finish(self):
        run = self.run
        if run.in_flight == 0 and run.drained is not None and not run.drained.done():
            run.drained.set_result(None)

    def data_received(self, data):
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                status = head[9:12]
                i = head.find(b"\ncontent-length:")
                if i < 0:
                    self._fail("response without Content-Length")
                    return
                j = head.find(b"\r", i + 16)
                length = int(head[i + 16 : j if j >= 0 else len(head)])
                self.need = end + 4 + length
                self.status_ok = status == b"200"
                if not self.status_ok and not self.run.error_sample:
                    self.run.error_sample = head[:200].decode("latin-1")
            if len(buf) < self.need:
                return
            del buf[: self.need]
            self.need = -1
            self._complete(self.status_ok)
            if not buf:
                return

    def _complete(self, ok: bool):
        now = time.perf_counter_ns()
        run = self.run
        run.in_flight -= 1
        if run.measure_from <= now <= run.measure_to:
            if ok:
                run.latencies.append(now - self.sent_ns)
            else:
                run.errors += 1
        elif not ok:
            run.errors += 1
        if now > run.measure_to and not run.stopping:
            run.stopping = True
        self._send()

    def _fail(self, why: str):
        self.run.errors += 1
        self.run.error_sample = self.run.error_sample or why
        self.transport.close()

    def connection_lost(self, exc):
        run = self.run
        if not run.stopping:
            run.errors += 1
            run.error_sample = run.error_sample or f"connection lost: {exc}"
        self._finish()


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, int(round(q / 100.0 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[k] / 1e6


async def _main(args) -> dict:
    loop = asyncio.get_running_loop()
    body = open(args.body_file, "rb").read()
    run = _Run(build_request(args.host, args.port, args.path, body, args.header), args.warmup, args.duration)
    run.drained = loop.create_future()
    conns = []
    for _ in range(args.concurrency):
        _, proto = await loop.create_connection(lambda: _Client(run), args.host, args.port)
        conns.append(proto)
    # CPU of this process over the measured window, to show the client is not the bottleneck.
    wait_s = max(0.0, (run.measure_from - time.perf_counter_ns()) / _NS)
    await asyncio.sleep(wait_s)
    t = os.times()
    cpu0 = t.user + t.system
    await asyncio.sleep(max(0.0, (run.measure_to - time.perf_counter_ns()) / _NS))
    t = os.times()
    cpu1 = t.user + t.system
    # Idle connections (should not happen in a closed loop) must not keep the run open.
    run.stopping = True
    if run.in_flight:
        try:
            await asyncio.wait_for(asyncio.shield(run.drained), timeout=args.drain)
        except asyncio.TimeoutError:
            run.errors += run.in_flight
            run.error_sample = run.error_sample or f"requests still in flight {args.drain:g} s after the run"
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    lat = sorted(run.latencies)
    window = (run.measure_to - run.measure_from) / _NS
    return {
        "concurrency": args.concurrency,
        "completed": len(lat),
        "errors": run.errors,
        "error_sample": run.error_sample,
        "duration_s": window,
        "throughput_rps": len(lat) / window,
        "p50_ms": _percentile(lat, 50),
        "p90_ms": _percentile(lat, 90),
        "p99_ms": _percentile(lat, 99),
        "mean_ms": (sum(lat) / len(lat) / 1e6) if lat else float("nan"),
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        "client_cpu_s": cpu1 - cpu0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append", default=[],
                   help="an extra request header 'Name: value' (repeatable), e.g. Inference-Header-Content-Length")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--drain", type=float, default=10.0,
                   help="seconds the requests in flight at the end may take before they count as errors")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    if any("\r" in h or "\n" in h or ":" not in h for h in args.header):
        p.error("a --header is one 'Name: value' line")
    if not (1 <= args.concurrency <= 1024 and 0 < args.duration <= 120 and 0 <= args.warmup <= 60):
        p.error("concurrency 1-1024, duration 0-120 s, warmup 0-60 s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_main(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
