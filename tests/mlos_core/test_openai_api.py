"""The stock ``openai`` client against a real core subprocess: chat (streamed and not),
completions, embeddings, models; OpenAI-shaped errors; the model keeps serving after each."""
from __future__ import annotations

import base64
import json
import urllib.request

import numpy as np
import pytest

from mlos_core.demo import minilm_dir

from ..conftest import CoreProcess
from ..hub import repos

openai = pytest.importorskip("openai")
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test installs it)")

EMB = "sentence-transformers/all-MiniLM-L6-v2@latest"
LLM = "google/gemma-3-270m@Q4_K_M"


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    d = tmp_path_factory.mktemp("openai-core")
    proc = CoreProcess(d / "data").start()
    for model_id, path in ((EMB, minilm_dir()), (LLM, repos.gemma_gguf())):
        status, _, body = proc.call("POST", "/v1/models/register", {"model_id": model_id, "path": str(path)}, timeout=300)
        assert status == 200, body
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(core):
    return openai.OpenAI(base_url=core.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert {EMB, LLM} <= ids


def test_chat_non_streaming_and_streaming_agree(client):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}]
    full = client.chat.completions.create(model=LLM, messages=messages, max_tokens=12, temperature=0, seed=1)
    choice = full.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert 0 < full.usage.completion_tokens <= 12 and full.usage.prompt_tokens > 5
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    stream = client.chat.completions.create(model=LLM, messages=messages, max_tokens=12, temperature=0, seed=1,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0] and chunks[-1].choices == []
    assert usage_chunks[0].usage.completion_tokens == full.usage.completion_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [choice.finish_reason]


def test_stream_ends_with_done_after_one_usage_chunk(core):
    body = json.dumps({"model": LLM, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                       "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}).encode()
    req = urllib.request.Request(core.url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.read().decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 5
    assert all("usage" not in json.loads(e) for e in events[:-2])


def test_completions(client):
    out = client.completions.create(model=LLM, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert out.object == "text_completion" and out.choices[0].text and out.usage.completion_tokens <= 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=LLM, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == out.choices[0].text


def test_embeddings_match_sentence_transformers(client):
    from sentence_transformers import SentenceTransformer

    sentences = ["MLOS serves every model format.", "A cat sits on the mat.", "Serving models in one runtime."]
    out = client.embeddings.create(model=EMB, input=sentences)
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    ref = SentenceTransformer(str(minilm_dir()), device="cpu").encode(sentences, normalize_embeddings=True)
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert got.shape == (3, 384) and cos.min() >= 0.9999, cos
    assert out.usage.prompt_tokens > 10
    one = client.embeddings.create(model=EMB, input="A cat sits on the mat.", encoding_format="base64")
    raw = one.data[0].embedding
    vec = np.frombuffer(base64.b64decode(raw), dtype="<f4") if isinstance(raw, str) else np.array(raw, np.float32)
    np.testing.assert_allclose(vec, got[1], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "wizard"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, "context"),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "text"),
])
def test_bad_chat_requests_are_clear_400s(client, kwargs, message):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=LLM, **kwargs)
    assert message in str(e.value)
    ok = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert ok.choices[0].message.content is not None


def test_unknown_model_and_unsupported_task(client, core):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nobody/nothing@1", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=EMB, messages=[{"role": "user", "content": "hi"}])
    assert "does not do chat" in str(e.value)
    status, _, body = core.call("POST", "/v1/embeddings", {"model": EMB, "input": []})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_non_utf8_body_is_refused(core):
    status, _, body = core.call("POST", "/v1/completions", raw=b'{"model": "x", "prompt": "\xff\xfe"}')
    assert status == 400 and "error" in body
    assert core.call("GET", "/v2/health/live")[0] == 200


def test_mlos_task_level_inference(core):
    from urllib.parse import quote

    status, _, body = core.call("POST", f"/v1/models/{quote(EMB, safe='')}/inference", {"text": "hello world"})
    assert status == 200 and body["task"] == "embed" and len(body["outputs"]["embeddings"][0]) == 384
    status, _, body = core.call("POST", f"/v1/models/{quote(LLM, safe='')}/inference",
                                {"input": "Once upon a time", "max_length": 6, "temperature": 0})
    assert status == 200 and body["task"] == "generate" and body["outputs"]["generated_text"]
    assert body["inference_time_us"] > 0 and body["output_size"] <= 6


def _status_row(core, model_id):
    return next(r for r in core.call("GET", "/status")[2]["models"] if r["id"] == model_id)


def test_a_gguf_runs_one_request_per_slot_and_disconnected_streams_stop(core):
    """A GGUF model runs as many generations as it has slots (the next one waits in the visible
    queue), and clients that hang up mid-stream stop their generations and free the slots."""
    import socket
    import time

    slots = _status_row(core, LLM)["llm"]["slots_total"]
    body = json.dumps({"model": LLM, "prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0.8,
                       "stream": True}).encode()
    request = (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    socks = []
    for _ in range(slots + 1):
        s = socket.create_connection(("127.0.0.1", core.port))
        s.sendall(request)
        socks.append(s)
    socks[0].settimeout(60)
    received = b""
    while b"data: " not in received:  # the headers may come alone first
        part = socks[0].recv(4096)
        assert part, received
        received += part
    assert received.startswith(b"HTTP/1.1 200")  # the first stream is producing
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = _status_row(core, LLM)
        if row["queued"] >= 1 and row["llm"]["slots_busy"] == slots:
            break
        time.sleep(0.05)
    assert row["running"] == slots and row["queued"] == 1 and row["llm"]["slots_busy"] == slots, row
    start = time.monotonic()
    for s in socks:
        s.close()  # every client hangs up
    while time.monotonic() - start < 20 and _status_row(core, LLM)["pending"]:
        time.sleep(0.1)
    stopped_after = time.monotonic() - start
    assert _status_row(core, LLM)["pending"] == 0 and _status_row(core, LLM)["llm"]["slots_busy"] == 0
    assert stopped_after < 10, f"generations went on {stopped_after:.1f}s after the clients left"
    metrics = core.call("GET", "/metrics")[2]
    assert f'mlos_inference_pending_request_count{{model="{LLM}"}} 0.0' in metrics
    assert f'mlos_llm_slots_busy{{model="{LLM}"}} 0.0' in metrics
    # and the model serves the next client at once
    ok = core.call("POST", "/v1/completions", {"model": LLM, "prompt": "Hi", "max_tokens": 2})
    assert ok[0] == 200
