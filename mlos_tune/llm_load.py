"""A streaming LLM load generator for OpenAI-style endpoints, run in its own process.

Every request is streamed (server-sent events, ``stream_options.include_usage``), so that each
one gives its time to first token (TTFT: sent -> first chunk carrying text), its time per output
token (TPOT: first -> last token, over the tokens after the first, from the usage the server
reports) and its end-to-end latency. Load arrives as a closed loop (``--concurrency`` clients, one
request each at a time) or an open loop (``--rate``: Poisson arrivals, latency from the time a
request was due, as in MLPerf LoadGen's Server scenario).

    python -m mlos_tune.llm_load --port 8080 --path /v1/completions --bodies-file bodies.json \\
        --concurrency 2 --duration 20 --warmup 5

``bodies.json`` is a list of request bodies, used in turn (distinct prompts, so that a prompt
cache cannot answer every request from the first one). Prints one JSON object: completed, errors,
tokens, throughput (requests/s and output tokens/s over the measured window), percentiles, and
the samples mlos-tune computes intervals from: ``latencies_ms``, ``ttft_ms``, ``tpot_ms``,
``done_s`` (completions, s into the window) and ``token_done_s``/``token_weight`` (when output
tokens arrived, and how many tokens each chunk stands for).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import time

import aiohttp

from .http_load import arrivals


class _Run:
    def __init__(self, warmup: float, duration: float):
        self.start = time.perf_counter()
        self.measure_from = self.start + warmup
        self.measure_to = self.measure_from + duration
        self.latencies, self.ttft, self.tpot, self.done = [], [], [], []
        self.token_done, self.token_weight = [], []
        self.tokens = 0
        self.prompt_tokens = 0
        self.errors = 0
        self.error_sample = ""
        self.stopping = False

    def error(self, why: str, now: float) -> None:
        if now >= self.measure_from:
            self.errors += 1
        self.error_sample = self.error_sample or why[:300]


def _text_of(chunk: dict, chat: bool) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    c = choices[0]
    return ((c.get("delta") or {}).get("content") or "") if chat else (c.get("text") or "")


async def _one(session: aiohttp.ClientSession, url: str, body: dict, chat: bool, run: _Run, origin: float,
               headers: dict) -> None:
    chunks: list[float] = []
    usage = None
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.read()).decode("utf-8", "replace")
                run.error(f"HTTP {resp.status}: {text[:200]}", time.perf_counter())
                return
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    run.error(f"stream error: {chunk['error']}", time.perf_counter())
                    return
                if _text_of(chunk, chat):
                    chunks.append(time.perf_counter())
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        run.error(f"{type(e).__name__}: {e}", time.perf_counter())
        return
    end = time.perf_counter()
    if not (run.measure_from <= end <= run.measure_to):
        return
    tokens = int((usage or {}).get("completion_tokens") or len(chunks))
    run.latencies.append((end - origin) * 1e3)
    run.done.append(end - run.measure_from)
    run.prompt_tokens += int((usage or {}).get("prompt_tokens") or 0)
    if chunks:
        run.ttft.append((chunks[0] - origin) * 1e3)
        if tokens > 1:
            run.tpot.append((chunks[-1] - chunks[0]) * 1e3 / (tokens - 1))
        weight = tokens / len(chunks)
        for t in chunks:
            if run.measure_from <= t <= run.measure_to:
                run.token_done.append(t - run.measure_from)
                run.token_weight.append(weight)
                run.tokens += weight


async def _main(args) -> dict:
    bodies = json.loads(open(args.bodies_file, "rb").read())
    if not isinstance(bodies, list) or not bodies or not all(isinstance(b, dict) for b in bodies):
        raise SystemExit("bodies file: expected a non-empty JSON list of request bodies")
    chat = "chat" in args.path
    url = f"http://{args.host}:{args.port}{args.path}"
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    run = _Run(args.warmup, args.duration)
    turn = itertools.count()
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    cpu0 = os.times()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        if args.rate is None:
            async def client():
                while time.perf_counter() < run.measure_to:
                    t = time.perf_counter()
                    await _one(session, url, bodies[next(turn) % len(bodies)], chat, run, t, headers)

            await asyncio.gather(*(client() for _ in range(args.concurrency)))
        else:
            tasks = []
            for offset in arrivals(args.rate, args.warmup + args.duration):
                due = run.start + float(offset)
                wait = due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                tasks.append(asyncio.create_task(
                    _one(session, url, bodies[next(turn) % len(bodies)], chat, run, due, headers)))
            await asyncio.sleep(max(0.0, run.measure_to - time.perf_counter()))
            done, pending = await asyncio.wait(tasks, timeout=args.drain) if tasks else (set(), set())
            for t in pending:
                t.cancel()
            run.errors += len(pending)
            if pending:
                run.error_sample = run.error_sample or f"{len(pending)} requests still running {args.drain:g} s after the run"
    cpu1 = os.times()
    window = run.measure_to - run.measure_from
    lat = sorted(run.latencies)

    def pct(v, q):
        v = sorted(v)
        return v[min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))] if v else float("nan")

    return {
        "mode": "closed" if args.rate is None else "open", "concurrency": args.concurrency, "rate": args.rate,
        "completed": len(lat), "errors": run.errors, "error_sample": run.error_sample, "duration_s": window,
        "throughput_rps": len(lat) / window, "tokens": run.tokens, "tokens_per_s": run.tokens / window,
        "prompt_tokens": run.prompt_tokens,
        "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
        "ttft_p50_ms": pct(run.ttft, 50), "tpot_p50_ms": pct(run.tpot, 50),
        "client_cpu_s": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system),
        "latencies_ms": [round(v, 3) for v in run.latencies], "ttft_ms": [round(v, 3) for v in run.ttft],
        "tpot_ms": [round(v, 4) for v in run.tpot], "done_s": [round(v, 4) for v in run.done],
        "token_done_s": [round(v, 4) for v in run.token_done], "token_weight": [round(v, 4) for v in run.token_weight],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True, help="/v1/completions or /v1/chat/completions")
    p.add_argument("--bodies-file", required=True)
    p.add_argument("--header", action="append", default=[], help="an extra header 'Name: value' (repeatable)")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second (default: closed loop)")
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--drain", type=float, default=60.0)
    p.add_argument("--request-timeout", type=float, default=300.0)
    args = p.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("loopback only")
    if any("\r" in h or "\n" in h or ":" not in h for h in args.header):
        p.error("a --header is one 'Name: value' line")
    if not (1 <= args.concurrency <= 1024 and 0 < args.duration <= 3600 and 0 <= args.warmup <= 600):
        p.error("concurrency 1-1024, duration 0-3600 s, warmup 0-600 s")
    if args.rate is not None and not 0 < args.rate <= 10_000:
        p.error("rate 0-10000 per second")
    result = asyncio.run(_main(args))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
