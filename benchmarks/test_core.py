"""Core inference benchmark: raw ``session.run`` vs v2 JSON over HTTP, mlos-core vs a naive server.

For each model (a 1x64 float32 MatMul, the real Silero VAD): (a) raw ``session.run`` in this
process, (b) v2 JSON infer over HTTP at concurrency 1 and (c) 32 with keep-alive, each against
mlos-core and against the naive aiohttp baseline (``benchmarks/naive_server.py``), measured in
the same run with the same client (``benchmarks/loadgen.py``, its own process).

Run with ``make bench-core``; ``python -m benchmarks.report benchmarks/results/core.json``
turns the JSON into the table and the pass/miss figures.
"""
from __future__ import annotations

import os
import statistics

import numpy as np
import pytest

from .conftest import DURATION_S, SERVER_ARGS, WARMUP_S, run_load, server_flag

MODELS = ["matmul", "silero"]
RAW_ROUNDS = int(os.environ.get("MLOS_BENCH_RAW_ROUNDS", "20000"))


def _case(model_cases, key):
    if key not in model_cases:
        pytest.skip(f"{key}: model not available (silero-vad wheel not installed?)")
    return model_cases[key]


@pytest.mark.parametrize("model", MODELS)
def test_raw_session_run(benchmark, model_cases, model):
    """(a) ``session.run`` in-process, with the session options mlos-core uses (same intra-op
    thread count, spinning off), so p50(http c=1) - p50(raw) is the serving overhead."""
    import onnxruntime as ort

    case = _case(model_cases, model)
    so = ort.SessionOptions()
    so.intra_op_num_threads = server_flag("--intra-op-threads", 0)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(case.path), so, providers=["CPUExecutionProvider"])
    feed = case.feed
    run = session.run
    benchmark.group = model
    benchmark.pedantic(run, args=(None, feed), rounds=RAW_ROUNDS, iterations=1, warmup_rounds=500)
    data = np.asarray(benchmark.stats.stats.data)  # seconds per call, one per round
    benchmark.extra_info.update({
        "model": model, "server": "raw", "path": "session.run", "concurrency": 1,
        "p50_ms": float(np.percentile(data, 50) * 1e3),
        "p99_ms": float(np.percentile(data, 99) * 1e3),
        "throughput_rps": float(1.0 / statistics.fmean(data)),
        "intra_op_threads": so.intra_op_num_threads,
    })


@pytest.mark.parametrize("concurrency", [1, 32], ids=lambda c: f"c{c}")
@pytest.mark.parametrize("server", ["mlos", "naive"])
@pytest.mark.parametrize("model", MODELS)
def test_http_v2_infer(benchmark, request, model_cases, model, server, concurrency):
    """(b)/(c) closed-loop v2 JSON infer over keep-alive HTTP/1.1."""
    case = _case(model_cases, model)
    srv = request.getfixturevalue("mlos_server" if server == "mlos" else "naive_server")
    benchmark.group = model
    result = benchmark.pedantic(run_load, args=(srv, case, concurrency), rounds=1, iterations=1)
    assert result["errors"] == 0, f"{result['errors']} failed requests, e.g. {result['error_sample']}"
    assert result["completed"] > 0
    wall = DURATION_S + WARMUP_S
    benchmark.extra_info.update({
        "model": model, "server": server, "path": "http v2 json", "concurrency": concurrency,
        "p50_ms": result["p50_ms"], "p90_ms": result["p90_ms"], "p99_ms": result["p99_ms"],
        "mean_ms": result["mean_ms"], "throughput_rps": result["throughput_rps"],
        "completed": result["completed"], "duration_s": result["duration_s"],
        "client_cpu_s": result["client_cpu_s"], "server_cpu_s": result["server_cpu_s"],
        # rough: server CPU over warm-up + window, per request at the measured rate
        "server_cpu_us_per_req": result["server_cpu_s"] / max(1.0, result["throughput_rps"] * wall) * 1e6,
        "server_args": " ".join(SERVER_ARGS) if server == "mlos" else "",
    })
