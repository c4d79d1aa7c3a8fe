"""A low-overhead HTTP/1.1 load generator, run in its own process: closed loop or open loop.

Requests are raw bytes written on an asyncio ``Protocol`` (uvloop when installed); responses are
parsed only as far as the status line and ``Content-Length``, so the client costs a small
fraction of what the server spends per request.

- **Closed loop** (``--concurrency N``): N keep-alive connections each send one pre-encoded POST,
  wait for the whole response, and send the next.
- **Open loop** (``--rate R``): requests arrive at Poisson times at R per second (fixed seed), as
  in MLPerf LoadGen's Server scenario, whether or not earlier ones were answered. Each goes out on
  an idle connection, or on a new one when all are busy (at most ``--max-connections``); its
  latency counts from the time it was due, so a server (or client) falling behind is charged for it.

Timeline: ``warmup`` seconds whose responses are discarded, then ``duration`` seconds measured:
every response completing inside that window counts, its latency (due -> last byte) is kept,
and throughput = completed / window. Then no new request is sent and in-flight ones drain.

    python -m mlos_tune.http_load --port 8080 --path /v2/models/m/infer --body-file body.json \\
        --concurrency 32 --duration 4 --warmup 1 [--samples]

prints one JSON object: completed, errors, throughput_rps, p50_ms, p90_ms, p99_ms, mean_ms,
max_ms, client_cpu_s (this process's user+system CPU in the measured window), and with
``--samples`` every measured latency (``latencies_ms``) and when it completed (``done_s``, seconds
into the window), from which mlos-tune computes its intervals.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time

import numpy as np

_NS = 1_000_000_000
SEED = 20261126


def build_request(host: str, port: int, path: str, body: bytes, headers: list[str] = ()) -> bytes:
    extra = "".join(f"{h.strip()}\r\n" for h in headers)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Run:
    """Shared state of one load run."""

    def __init__(self, request: bytes, warmup_s: float, duration_s: float, closed: bool):
        self.request = request
        self.closed = closed
        self.start_ns = time.perf_counter_ns()
        self.measure_from = self.start_ns + int(warmup_s * _NS)
        self.measure_to = self.measure_from + int(duration_s * _NS)
        self.latencies: list[int] = []
        self.done: list[int] = []
        self.errors = 0
        self.error_sample = ""
        self.stopping = False
        self.in_flight = 0
        self.idle: list[_Client] = []      # open loop: connections waiting for the next arrival
        self.drained: asyncio.Future | None = None

    def note_error(self, why: str) -> None:
        self.errors += 1
        self.error_sample = self.error_sample or why


class _Client(asyncio.Protocol):
    __slots__ = ("run", "transport", "buf", "origin_ns", "need", "status_ok", "busy")

    def __init__(self, run: _Run):
        self.run = run
        self.transport = None
        self.buf = bytearray()
        self.origin_ns = 0
        self.need = -1  # total bytes of the current response once its head is parsed
        self.status_ok = False
        self.busy = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        if self.run.closed:
            self.send(time.perf_counter_ns())

    def send(self, origin_ns: int):
        """One request; its latency counts from ``origin_ns`` (now, or when it was due)."""
        run = self.run
        if run.stopping:
            self._finish()
            return
        run.in_flight += 1
        self.busy = True
        self.origin_ns = origin_ns
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
        self.busy = False
        if run.measure_from <= now <= run.measure_to:
            if ok:
                run.latencies.append(now - self.origin_ns)
                run.done.append(now - run.measure_from)
            else:
                run.errors += 1
        elif not ok:
            run.errors += 1
        if now > run.measure_to and not run.stopping:
            run.stopping = True
        if run.closed:
            self.send(now)
        elif run.stopping:
            self._finish()
        else:
            run.idle.append(self)

    def _fail(self, why: str):
        self.run.note_error(why)
        self.transport.close()

    def connection_lost(self, exc):
        run = self.run
        if self in run.idle:
            run.idle.remove(self)
        if self.busy:
            run.in_flight -= 1
            self.busy = False
        if not run.stopping:
            run.note_error(f"connection lost: {exc}")
        self._finish()


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    k = min(len(sorted_ns) - 1, max(0, int(round(q / 100.0 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[k] / 1e6


def arrivals(rate: float, seconds: float, seed: int = SEED) -> np.ndarray:
    """Poisson arrival offsets (s) at ``rate`` per second covering ``seconds``, from a fixed seed."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds * 1.3) + 16
    t = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while t[-1] < seconds:
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return t[t < seconds]


async def _open_loop(loop, args, run: _Run, conns: list) -> None:
    """Issue requests at their Poisson times until the window ends."""
    total = args.warmup + args.duration
    due = run.start_ns + (arrivals(args.rate, total) * _NS).astype(np.int64)
    i = 0
    while i < len(due) and not run.stopping:
        now = time.perf_counter_ns()
        if due[i] > now:
            await asyncio.sleep((due[i] - now) / _NS)
            continue
        while i < len(due) and due[i] <= time.perf_counter_ns():     # everything due by now
            if run.idle:
                run.idle.pop().send(int(due[i]))
            elif len(conns) < args.max_connections:
                _, proto = await loop.create_connection(lambda: _Client(run), args.host, args.port)
                conns.append(proto)
                proto.send(int(due[i]))
            elif due[i] >= run.measure_from:
                run.note_error(f"more than {args.max_connections} requests in flight: the server fell behind")
            i += 1
    await asyncio.sleep(max(0.0, (run.measure_to - time.perf_counter_ns()) / _NS))


async def _main(args) -> dict:
    loop = asyncio.get_running_loop()
    body = open(args.body_file, "rb").read()
    closed = args.rate is None
    run = _Run(build_request(args.host, args.port, args.path, body, args.header), args.warmup, args.duration, closed)
    run.drained = loop.create_future()
    conns = []
    for _ in range(args.concurrency):
        _, proto = await loop.create_connection(lambda: _Client(run), args.host, args.port)
        conns.append(proto)
        if not closed:
            run.idle.append(proto)
    # CPU of this process over the measured window, to show the client is not the bottleneck.
    cpu = {}

    async def window():
        await asyncio.sleep(max(0.0, (run.measure_from - time.perf_counter_ns()) / _NS))
        t = os.times()
        cpu["from"] = t.user + t.system
        await asyncio.sleep(max(0.0, (run.measure_to - time.perf_counter_ns()) / _NS))
        t = os.times()
        cpu["to"] = t.user + t.system

    if closed:
        await window()
    else:
        await asyncio.gather(window(), _open_loop(loop, args, run, conns))
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
    window_s = (run.measure_to - run.measure_from) / _NS
    out = {
        "mode": "closed" if closed else "open",
        "concurrency": args.concurrency,
        "rate": args.rate,
        "connections": len(conns),
        "completed": len(lat),
        "errors": run.errors,
        "error_sample": run.error_sample,
        "duration_s": window_s,
        "throughput_rps": len(lat) / window_s,
        "p50_ms": _percentile(lat, 50),
        "p90_ms": _percentile(lat, 90),
        "p99_ms": _percentile(lat, 99),
        "mean_ms": (sum(lat) / len(lat) / 1e6) if lat else float("nan"),
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        "client_cpu_s": cpu.get("to", 0.0) - cpu.get("from", 0.0),
    }
    if args.samples:
        out["latencies_ms"] = [round(v / 1e6, 4) for v in run.latencies]
        out["done_s"] = [round(v / _NS, 5) for v in run.done]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--body-file", required=True)
    p.add_argument("--header", action="append", default=[],
                   help="an extra request header 'Name: value' (repeatable), e.g. Inference-Header-Content-Length")
    p.add_argument("--concurrency", type=int, default=1,
                   help="closed loop: connections each with one request at a time; open loop: connections opened up front")
    p.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second (default: closed loop)")
    p.add_argument("--max-connections", type=int, default=1024, help="open loop: at most this many at once")
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--drain", type=float, default=10.0,
                   help="seconds the requests in flight at the end may take before they count as errors")
    p.add_argument("--samples", action="store_true", help="also print every measured latency and completion time")
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    if any("\r" in h or "\n" in h or ":" not in h for h in args.header):
        p.error("a --header is one 'Name: value' line")
    if not (1 <= args.concurrency <= 1024 and 0 < args.duration <= 600 and 0 <= args.warmup <= 120):
        p.error("concurrency 1-1024, duration 0-600 s, warmup 0-120 s")
    if args.rate is not None and not (0 < args.rate <= 1_000_000 and 1 <= args.max_connections <= 4096):
        p.error("rate 0-1e6 per second, max-connections 1-4096")
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
