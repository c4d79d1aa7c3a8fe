"""Many clients on one LLM: mlos-core's continuous batching next to llama.cpp's own ``llama-server``
and llama-cpp-python called directly, Gemma 3 270M Q4_K_M, one run.

(1) Scaling: 1, 2, 4 and 8 concurrent clients, each sending ``MLOS_BENCH_SCALE_N`` streamed
    ``/v1/completions`` of 64 greedy tokens one after the other (distinct prompts). The two servers
    get the same client (benchmarks/llm_load.py, one separate process) and the same configuration:
    4 slots (``-np 4`` / ``parallel``), 2 threads, a 4096-token context. llama-cpp-python direct is
    one ``Llama`` shared by the clients' threads under a lock (benchmarks/llm_direct.py; one sequence:
    what the core did before continuous batching; its own process, stock settings). Figures: aggregate tokens/s (tokens of all
    requests / wall time of the point), TTFT p50/p90 (request sent -> first text).
    Targets: 4 clients >= 1.0x llama-server's aggregate tok/s and TTFT p50 <= 1.5x its; 1 client
    >= 0.95x.
(2) Repeated prefix: one client, ``MLOS_BENCH_PREFIX_N`` requests sharing a ~500-token system
    prompt, each with its own question (16 tokens out), with and without ``cache_prompt`` on both
    servers. Target: mlos-core's TTFT p50 with the cache >= 3x better than without.

llama-server is built the first time from the llama.cpp sources vendored in the sdist of the
installed llama-cpp-python (benchmarks/peers/llama_server.py; about 12 minutes on 2 cores), then
cached under ~/.cache/mlos-bench. Run with ``make bench-llm``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from validation.core_proc import free_port

from .conftest import ROOT, Server, launch_mlos

MODEL_ID = "bench/gemma-3-270m@q4km"
SLOTS, THREADS, N_CTX = 4, 2, 4096
MAX_TOKENS = 64
SCALE_CLIENTS = tuple(int(c) for c in os.environ.get("MLOS_BENCH_SCALE_CLIENTS", "1,2,4,8").split(","))
SCALE_N = int(os.environ.get("MLOS_BENCH_SCALE_N", "3"))
PREFIX_N = int(os.environ.get("MLOS_BENCH_PREFIX_N", "6"))
NAMES = ["Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj",
         "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoe"]
TOPICS = ["the sea", "mountains", "robots", "bread", "trains", "owls", "rivers", "clocks", "bees", "castles"]


def scale_prompts() -> list[str]:
    return [f"Tell {n} a fun fact about {t}, then explain why it is true." for t in TOPICS for n in NAMES]


def system_prompt() -> str:
    """About 500 tokens of a fixed assistant brief (words, not repeated blocks)."""
    words = ("You are the help desk assistant of a small public library in a river town. The library opens at "
             "nine in the morning and closes at six in the evening from Tuesday to Saturday. It lends books, "
             "magazines, films and board games, runs a reading club for children on Wednesdays and a chess "
             "club on Saturdays, offers free internet access on eight computers, and has a quiet study room "
             "that can be booked for two hours at a time. Members may borrow up to twelve items for three "
             "weeks and renew them twice unless another member reserved them. Late returns cost ten cents a "
             "day per item. Lost cards are replaced for two euros. Answer questions from visitors politely, "
             "in one or two short sentences, and never invent services the library does not offer.").split()
    return " ".join(words[i % len(words)] for i in range(452)) + "\n\n"  # 501 tokens with BOS (Gemma 3)


QUESTIONS = ["When does the library open on Saturday?", "How many items can I borrow?", "Is there a chess club?",
             "What does a lost card cost?", "Can I book the study room?", "Do you lend films?",
             "How long can I keep a book?", "Is the internet free?", "Are you open on Monday?",
             "What happens if I return a book late?"]


# ---- servers ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_path():
    from tests.hub.repos import gemma_gguf

    try:
        return gemma_gguf()
    except Exception as e:
        pytest.skip(f"Gemma 3 270M GGUF not available: {e}")


@pytest.fixture(scope="module")
def llama_server_binary():
    from .peers.llama_server import ensure_llama_server

    try:
        return ensure_llama_server()
    except Exception as e:  # no compiler, no network for the sdist...
        pytest.skip(f"llama-server could not be built: {e}")


def _wait_health(server: Server, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(server.url("/health"), timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} not healthy after {timeout} s:\n{server.log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def servers(gemma_path, llama_server_binary, tmp_path_factory):
    """Both servers, loaded and warm; each runs only while it is measured (see _measure)."""
    d = tmp_path_factory.mktemp("llm-serving")
    # each server picks its kernels itself: llama-server its defaults, the core its own setting (the
    # core's plugin, imported in this process by other benchmarks, may have set it here)
    os.environ.pop("GGML_CPU_TILED_MM", None)
    port = free_port()
    peer = Server("llama-server", [str(llama_server_binary), "-m", str(gemma_path), "--host", "127.0.0.1",
                                   "--port", str(port), "-t", str(THREADS), "-tb", str(THREADS), "-c", str(N_CTX),
                                   "-np", str(SLOTS), "-b", "512", "-ub", "512", "--no-webui"],
                  d / "peer", ready="listening on", timeout=300)
    core = None
    try:
        _wait_health(peer)
        core = launch_mlos(d / "core")
        core.register(MODEL_ID, gemma_path, {"parallel": SLOTS, "n_ctx": N_CTX, "n_threads": THREADS})
        info = json.dumps(core.get(f"/v1/models/{MODEL_ID}"))
        assert '"parallel": 4' in info and f'"n_threads": {THREADS}' in info, info[:600]
        yield {"llama-server": peer, "mlos-core": core}
    finally:
        peer.stop()
        if core is not None:
            core.stop()


def _load(server: Server, model: str, clients: int, requests: int, max_tokens: int, prompts: list[str],
          tmp, cache_prompt: bool = True) -> dict:
    f = tmp / f"prompts-{len(prompts)}-{abs(hash(prompts[0])) % 10**6}.json"
    f.write_text(json.dumps(prompts))
    cmd = [sys.executable, "-m", "benchmarks.llm_load", "--url", server.url(""), "--model", model,
           "--clients", str(clients), "--requests", str(requests), "--max-tokens", str(max_tokens),
           "--prompts", str(f)] + ([] if cache_prompt else ["--no-cache-prompt"])
    cpu0 = server.cpu_seconds()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"llm_load failed: {out.stderr.decode()[-2000:]}")
    result = json.loads(out.stdout)
    result["server_cpu_s"] = server.cpu_seconds() - cpu0
    return result


def _direct(gemma_path, clients: int, requests: int, max_tokens: int, prompts: list[str], tmp) -> dict:
    """llama-cpp-python called directly, in its own process with stock settings (llm_direct.py)."""
    f = tmp / "direct-prompts.json"
    f.write_text(json.dumps(prompts))
    env = {k: v for k, v in os.environ.items() if k != "GGML_CPU_TILED_MM"}
    out = subprocess.run([sys.executable, "-m", "benchmarks.llm_direct", "--model-path", str(gemma_path),
                          "--clients", str(clients), "--requests", str(requests), "--max-tokens", str(max_tokens),
                          "--prompts", str(f), "--threads", str(THREADS)],
                         cwd=ROOT, capture_output=True, timeout=3600, check=False, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"llm_direct failed: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout)


def summarize(run: dict) -> dict:
    reqs = run["requests"]
    ttft = [r["ttft_s"] * 1e3 for r in reqs if r["ttft_s"] is not None]
    tokens = sum(r["tokens"] for r in reqs)
    return {"clients": run["clients"], "requests": len(reqs), "tokens": tokens, "wall_s": run["wall_s"],
            "aggregate_tps": tokens / run["wall_s"],
            "ttft_ms_p50": float(np.percentile(ttft, 50)) if ttft else float("nan"),
            "ttft_ms_p90": float(np.percentile(ttft, 90)) if ttft else float("nan"),
            "latency_ms_p50": float(np.percentile([r["total_s"] * 1e3 for r in reqs], 50)),
            "server_cpu_s": run.get("server_cpu_s")}


# ---- (1) scaling -------------------------------------------------------------------------------------

def _scaling(servers, gemma_path, tmp) -> dict:
    prompts = scale_prompts()
    out: dict[str, dict[int, dict]] = {"llama-server": {}, "mlos-core": {}, "llama-cpp-python": {}}
    for name, server in servers.items():  # warm-up: both hold the model's pages, their threads spun up
        _load(server, MODEL_ID, 1, 1, 8, prompts, tmp)
    for k, clients in enumerate(SCALE_CLIENTS):
        order = ["llama-server", "mlos-core", "llama-cpp-python"]
        if k % 2:
            order.reverse()  # no order bias across the points
        for name in order:
            if name == "llama-cpp-python":
                run = _direct(gemma_path, clients, SCALE_N, MAX_TOKENS, prompts, tmp)
            else:
                run = _load(servers[name], MODEL_ID, clients, SCALE_N, MAX_TOKENS, prompts, tmp)
            out[name][clients] = summarize(run)
    return out


def test_llm_scaling(benchmark, servers, gemma_path, tmp_path):
    benchmark.group = "llm-serving"
    r = benchmark.pedantic(_scaling, args=(servers, gemma_path, tmp_path), rounds=1, iterations=1)
    for name, points in r.items():
        for clients, s in points.items():
            assert s["requests"] == clients * SCALE_N and s["tokens"] > 0, (name, clients, s)
    ratios = {c: {"tps": r["mlos-core"][c]["aggregate_tps"] / r["llama-server"][c]["aggregate_tps"],
                  "ttft_p50": r["mlos-core"][c]["ttft_ms_p50"] / r["llama-server"][c]["ttft_ms_p50"]}
              for c in SCALE_CLIENTS}
    benchmark.extra_info.update({
        "bench": "llm_scaling", "slots": SLOTS, "threads": THREADS, "n_ctx": N_CTX, "max_tokens": MAX_TOKENS,
        "requests_per_client": SCALE_N, "clients": list(SCALE_CLIENTS),
        "points": {name: {str(c): s for c, s in pts.items()} for name, pts in r.items()},
        "core_vs_llama_server": {str(c): v for c, v in ratios.items()},
        "load_average": os.getloadavg(),
    })


# ---- (2) repeated 500-token system prompt -------------------------------------------------------------

def _prefix(servers, gemma_path, tmp) -> dict:
    import llama_cpp

    system = system_prompt()
    llm = llama_cpp.Llama(str(gemma_path), vocab_only=True, verbose=False)
    n_system = len(llm.tokenize(system.encode()))
    llm.close()
    out = {}
    for cache in (True, False):
        for name in ("mlos-core", "llama-server"):
            prompts = [system + f"Q: {q}\nA:" for q in QUESTIONS[:PREFIX_N]]
            _load(servers[name], MODEL_ID, 1, 1, 4, [system + "Q: Hello?\nA:"], tmp, cache)  # holds the prefix
            run = _load(servers[name], MODEL_ID, 1, len(prompts), 16, prompts, tmp, cache)
            out[f"{name}/{'cache' if cache else 'no-cache'}"] = {
                **summarize(run), "cached_tokens": [x.get("cached_tokens") for x in run["requests"]]}
    out["system_tokens"] = n_system
    return out


def test_llm_repeated_prefix_ttft(benchmark, servers, gemma_path, tmp_path):
    benchmark.group = "llm-serving"
    r = benchmark.pedantic(_prefix, args=(servers, gemma_path, tmp_path), rounds=1, iterations=1)
    gain = r["mlos-core/no-cache"]["ttft_ms_p50"] / r["mlos-core/cache"]["ttft_ms_p50"]
    peer_gain = r["llama-server/no-cache"]["ttft_ms_p50"] / r["llama-server/cache"]["ttft_ms_p50"]
    benchmark.extra_info.update({"bench": "llm_prefix", "requests": PREFIX_N, "system_tokens": r["system_tokens"],
                                 "runs": {k: v for k, v in r.items() if k != "system_tokens"},
                                 "core_cache_gain": gain, "llama_server_cache_gain": peer_gain,
                                 "load_average": os.getloadavg()})
    # the core reused the system prompt on every cached request, and on none without the cache
    assert min(r["mlos-core/cache"]["cached_tokens"]) >= r["system_tokens"] - 2, r["mlos-core/cache"]["cached_tokens"]
    assert set(r["mlos-core/no-cache"]["cached_tokens"]) == {0}
