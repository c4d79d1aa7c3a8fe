"""The LLM load generator: N concurrent clients, each sending its requests one after the other as
streamed OpenAI ``/v1/completions`` (greedy), to any server that speaks it (mlos-core, llama.cpp's
``llama-server``). One process, one aiohttp session per client that closes the connection after
each stream (llama-server closes streamed connections itself). Prints one JSON document:
``{"wall_s", "requests": [{"client", "i", "start_s", "ttft_s", "total_s", "tokens", "cached_tokens",
"text"}]}`` (``cached_tokens``: the server's usage.prompt_tokens_details, when it reports it).

    python -m benchmarks.llm_load --url http://127.0.0.1:8080 --model M --clients 4 --requests 3 \\
        --max-tokens 64 --prompts prompts.json [--no-cache-prompt]

``--prompts`` is a JSON list of strings; client c's request i sends prompt ``(c * requests + i) % len``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import aiohttp


async def one(session: aiohttp.ClientSession, url: str, body: dict, t0: float) -> dict:
    start = time.perf_counter()
    ttft = None
    tokens = chunks = 0
    cached = None
    parts = []
    async with session.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:300]}")
        buf = b""
        async for data in resp.content.iter_any():
            buf += data
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    obj = json.loads(line[6:])
                    if obj.get("usage"):
                        tokens = obj["usage"].get("completion_tokens", tokens)
                        cached = (obj["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", cached)
                    for choice in obj.get("choices") or []:
                        text = choice.get("text") or ""
                        if text:
                            chunks += 1
                            parts.append(text)
                            if ttft is None:
                                ttft = time.perf_counter() - start
    end = time.perf_counter()
    return {"start_s": start - t0, "ttft_s": ttft, "total_s": end - start, "tokens": tokens or chunks,
            "cached_tokens": cached, "text": "".join(parts)}


async def run(args) -> dict:
    prompts = json.loads(open(args.prompts).read())
    results: list[dict] = []
    t0 = time.perf_counter()
    start = asyncio.Event()

    async def client(c: int) -> None:
        connector = aiohttp.TCPConnector(force_close=True, limit=1)
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await start.wait()
            for i in range(args.requests):
                body = {"model": args.model, "prompt": prompts[(c * args.requests + i) % len(prompts)],
                        "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                        "stream_options": {"include_usage": True}}
                if not args.cache_prompt:
                    body["cache_prompt"] = False
                r = await one(session, args.url, body, t0)
                results.append({"client": c, "i": i, **r})

    tasks = [asyncio.create_task(client(c)) for c in range(args.clients)]
    await asyncio.sleep(0.05)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return {"wall_s": time.perf_counter() - t0, "clients": args.clients, "requests": results}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.llm_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests", type=int, default=1, help="requests per client, one after the other")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompts", required=True, help="a JSON file holding a list of prompts")
    p.add_argument("--no-cache-prompt", dest="cache_prompt", action="store_false")
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args(argv)
    json.dump(asyncio.run(run(args)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
