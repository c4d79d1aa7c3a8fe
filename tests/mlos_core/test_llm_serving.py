"""Many clients on one GGUF model through a real core subprocess: concurrent SSE streams each carry
their own text, the context limit is a 400 before any work, reused prompt prefixes show in
``usage`` and in the metrics, the waiting queue is bounded (503 + Retry-After), a client that
hangs up frees its slot, and options that cannot fit are refused at register with the numbers."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from urllib.parse import quote

import pytest

from ..conftest import CoreProcess
from ..hub import repos

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test installs it)")

LLM = "google/gemma-3-270m@Q4_K_M"
SLOTS = 2
OPTIONS = {"parallel": SLOTS, "n_ctx_seq": 256, "n_threads": 2, "max_queue": 3}


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    proc = CoreProcess(tmp_path_factory.mktemp("llm-core") / "data").start()
    status, _, body = proc.call("POST", "/v1/models/register",
                                {"model_id": LLM, "path": str(repos.gemma_gguf()), "options": OPTIONS}, timeout=300)
    assert status == 200, body
    yield proc
    proc.stop()


def _stream(core, prompt: str, max_tokens: int, out: dict, key) -> None:
    """One streamed /v1/completions over its own connection: its events, in order."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", core.port, timeout=300)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(
            {"model": LLM, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
             "stream_options": {"include_usage": True}}), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        events = [json.loads(line[6:]) for line in resp.read().decode().split("\n\n")
                  if line.startswith("data: ") and line != "data: [DONE]"]
    finally:
        conn.close()
    out[key] = events


def _metric(text: str, name: str, model: str = LLM) -> float:
    m = re.search(rf'^{re.escape(name)}{{model="{re.escape(model)}"}} (\S+)$', text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def _llm_row(core) -> dict:
    return next(r for r in core.call("GET", "/status")[2]["models"] if r["id"] == LLM)["llm"]


def test_concurrent_streams_never_mix(core):
    # three: both slots busy and one waiting, the most this model's max_queue (3) admits
    prompts = [f"Tell {name} a short story about a {thing}." for name, thing in
               (("Alice", "lighthouse"), ("Bob", "volcano"), ("Carol", "robot"))]
    solo = [core.call("POST", "/v1/completions", {"model": LLM, "prompt": p, "max_tokens": 24, "temperature": 0,
                                                  "cache_prompt": False}, timeout=300)[2] for p in prompts]
    out: dict = {}
    threads = [threading.Thread(target=_stream, args=(core, p, 24, out, i)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = set()
    for i, ref in enumerate(solo):
        events = out[i]
        stream_ids = {e["id"] for e in events}
        assert len(stream_ids) == 1, "one stream carries chunks of another"
        ids |= stream_ids
        text = "".join(c["text"] for e in events for c in e["choices"])
        assert text == ref["choices"][0]["text"] and len(text) > 10
        assert events[-1]["usage"]["completion_tokens"] == ref["usage"]["completion_tokens"]
    assert len(ids) == len(prompts)
    row = _llm_row(core)
    assert row["slots_total"] == SLOTS and row["slots_busy"] == 0 and row["busy_slots_per_step"] > 1.0


def test_context_overflow_is_a_400_before_any_work(core):
    steps = _llm_row(core)["decode_steps"]
    status, _, body = core.call("POST", "/v1/completions",
                                {"model": LLM, "prompt": "The capital of France is", "max_tokens": 251})
    assert status == 400
    assert body["error"]["message"] == (
        "the prompt takes 6 tokens and max_tokens is 251: together 257, more than this model's context of 256 "
        "tokens (n_ctx 512 over 2 slots)")
    assert _llm_row(core)["decode_steps"] == steps


def test_cached_prompt_tokens_in_usage_and_metrics(core):
    client = openai.OpenAI(base_url=core.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    system = "You answer questions about the solar system in one short sentence, precisely and politely. " * 4
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Which planet is largest?"}]
    cold = client.chat.completions.create(model=LLM, messages=messages, max_tokens=8, temperature=0,
                                          extra_body={"cache_prompt": False})
    warm = client.chat.completions.create(model=LLM, messages=messages, max_tokens=8, temperature=0)
    assert cold.usage.prompt_tokens_details.cached_tokens == 0
    assert warm.usage.prompt_tokens_details.cached_tokens == warm.usage.prompt_tokens - 1
    assert warm.choices[0].message.content == cold.choices[0].message.content
    # the MLOS task route reports it too
    status, _, body = core.call("POST", f"/v1/models/{quote(LLM, safe='')}/inference",
                                {"messages": messages, "max_tokens": 8, "temperature": 0})
    assert status == 200
    usage = body["outputs"]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
    metrics = core.call("GET", "/metrics")[2]
    assert _metric(metrics, "mlos_llm_slots_total") == SLOTS
    assert _metric(metrics, "mlos_llm_prefix_cache_hits_total") >= 2 * (usage["prompt_tokens"] - 1)
    assert _metric(metrics, "mlos_llm_prefix_cache_queries_total") > _metric(metrics, "mlos_llm_prefix_cache_hits_total")
    assert _metric(metrics, "mlos_inter_token_latency_seconds_count") > 10
    assert _metric(metrics, "mlos_llm_iteration_tokens_count") == _metric(metrics, "mlos_llm_n_decode_total")
    assert _metric(metrics, "mlos_request_queue_time_seconds_count") >= 3
    row = _llm_row(core)
    assert row["prompt_cache_hit_requests"] >= 2 and row["inter_token_latency_ms_mean"] > 0


def _open_stream(core, prompt: str) -> socket.socket:
    body = json.dumps({"model": LLM, "prompt": prompt, "max_tokens": 200, "temperature": 0.8,
                       "stream": True}).encode()
    s = socket.create_connection(("127.0.0.1", core.port))
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return s


def _first_bytes(s: socket.socket) -> bytes:
    s.settimeout(120)
    got = b""
    while b"data: " not in got and b"\r\n\r\n{" not in got:
        part = s.recv(4096)
        if not part:
            break
        got += part
    return got


def test_queue_bound_503_and_disconnects_free_slots(core):
    """Slots run, one request waits (max_queue 3 = 2 running + 1 waiting), the next is refused;
    when every client hangs up, the slots are free again within a step or two."""
    socks = [_open_stream(core, f"Story number {i}: once upon a time") for i in range(SLOTS)]
    for s in socks:
        assert _first_bytes(s).startswith(b"HTTP/1.1 200")
    socks.append(_open_stream(core, "A waiting request"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = next(r for r in core.call("GET", "/status")[2]["models"] if r["id"] == LLM)
        if row["queued"] == 1:
            break
        time.sleep(0.05)
    assert row["running"] == SLOTS and row["queued"] == 1 and row["llm"]["slots_busy"] == SLOTS, row
    status, headers, body = core.call("POST", "/v1/completions", {"model": LLM, "prompt": "one more", "max_tokens": 4})
    assert status == 503 and headers.get("Retry-After") == "1", (status, body)
    start = time.monotonic()
    for s in socks:
        s.close()
    while time.monotonic() - start < 20 and (_llm_row(core)["slots_busy"] or
                                             next(r for r in core.call("GET", "/status")[2]["models"]
                                                  if r["id"] == LLM)["pending"]):
        time.sleep(0.05)
    assert _llm_row(core)["slots_busy"] == 0
    assert time.monotonic() - start < 10
    assert _llm_row(core)["cancelled"] >= SLOTS
    ok = core.call("POST", "/v1/completions", {"model": LLM, "prompt": "Hi", "max_tokens": 2})
    assert ok[0] == 200 and ok[2]["usage"]["completion_tokens"] == 2


def test_options_that_cannot_fit_are_refused_at_register(core):
    status, _, body = core.call("POST", "/v1/models/register", {
        "model_id": "test/too-small@1", "path": str(repos.gemma_gguf()),
        "options": {"parallel": 4, "n_ctx_seq": 1024, "n_ctx": 2048}})
    assert status == 400, body
    assert "n_ctx 2048 is too small for parallel 4 x n_ctx_seq 1024 = 4096 tokens: raise n_ctx to 4096, " \
           "or lower parallel to 2 or n_ctx_seq to 512" in json.dumps(body)
    assert core.call("GET", f"/v1/models/{quote('test/too-small@1', safe='')}")[0] == 404
    status, _, body = core.call("POST", "/v1/models/register", {
        "model_id": "test/too-small@1", "path": str(repos.gemma_gguf()), "options": {"parallel": 8, "n_ctx": 256}})
    assert status == 400 and "n_ctx 256 over parallel 8 slots leaves 32 tokens per sequence" in json.dumps(body)
