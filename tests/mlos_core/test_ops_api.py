"""Operations endpoints: /health, /status, /metrics, /v1/system/resources."""
from __future__ import annotations

import asyncio
import os

import numpy as np
import onnxruntime
from prometheus_client.parser import text_string_to_metric_families

from mlos_core import resources

MM, TOK = "test/matmul@1", "test/tokens@1"
MM_Q, TOK_Q = "test%2Fmatmul%401", "test%2Ftokens%401"


async def scrape(client) -> dict[tuple[str, tuple], float]:
    """The /metrics samples as {(name, sorted labels): value}."""
    r = await client.get("/metrics")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(await r.text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples, name, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_health(serving, models):
    client = await serving({MM: models.matmul})
    r = await client.get("/health")
    body = await r.json()
    assert r.status == 200
    assert body["status"] == "healthy"
    assert body["backends"]["onnx"]["available"] is True
    assert body["backends"]["onnx"]["plugin"] == "onnxruntime"
    assert body["backends"]["onnx"]["version"] == onnxruntime.__version__
    # the in-process apps of these tests run without the zero-copy path (tests/mlos_core/zerocopy has it)
    assert body["kernel"]["mode"] == "off" and "not running" in body["kernel"]["reason"]
    assert body["kernel"]["available"] is os.path.exists("/dev/mlos-ml")
    assert body["models"] == {"registered": 1, "ready": 1, "failed": 0}
    assert body["uptime_seconds"] >= 0


async def test_status_rows(serving, models):
    client = await serving({MM: models.matmul, TOK: models.tokens})
    await client.post(f"/v2/repository/models/{TOK_Q}/unload")
    body = await (await client.get("/status")).json()
    assert body["loaded_models"] == [MM]
    rows = {row["id"]: row for row in body["models"]}
    assert set(rows) == {MM, TOK}
    mm = rows[MM]
    assert mm["state"] == "ready"
    assert mm["pending"] == 0 and mm["queued"] == 0
    assert mm["memory_bytes"] == models.matmul.stat().st_size
    assert mm["batching"] is True
    assert rows[TOK]["state"] == "unloaded" and rows[TOK]["memory_bytes"] == 0
    assert body["memory"]["models_bytes"] == models.matmul.stat().st_size
    assert body["memory"]["budget_bytes"] is None
    assert body["memory"]["process_rss_bytes"] > 0


async def test_metrics_counters(serving, models):
    client = await serving({MM: models.matmul, TOK: models.tokens})
    before = await scrape(client)
    assert sample(before, "mlos_models_loaded") == 2
    assert sample(before, "mlos_inference_request_success_total", model=MM) == 0  # exported from load on

    n_ok, n_bad_tensor, n_bad_dtype = 5, 2, 1
    rng = np.random.default_rng(0)
    for _ in range(n_ok):
        x = rng.standard_normal((1, 64)).astype(np.float32)
        assert (await client.post(f"/v1/models/{MM_Q}/inference", json={"x": x.tolist()})).status == 200
    for _ in range(n_bad_tensor):
        assert (await client.post(f"/v1/models/{MM_Q}/inference", json={"z": [[1.0] * 64]})).status == 400
    v2 = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP64", "data": [1.0] * 64}]}
    for _ in range(n_bad_dtype):
        assert (await client.post(f"/v2/models/{MM_Q}/infer", json=v2)).status == 400
    assert (await client.post(f"/v1/models/{TOK_Q}/inference", json={"input_ids": [1, 2], "attention_mask": [1, 1]})).status == 200

    after = await scrape(client)
    assert sample(after, "mlos_inference_request_success_total", model=MM) == n_ok
    assert sample(after, "mlos_inference_request_success_total", model=TOK) == 1
    assert sample(after, "mlos_inference_request_failure_total", model=MM, reason="invalid_tensor") == n_bad_tensor + n_bad_dtype
    assert sample(after, "mlos_inference_request_failure_total", model=TOK, reason="invalid_tensor") is None
    assert sample(after, "mlos_inference_count_total", model=MM) == n_ok
    assert sample(after, "mlos_inference_exec_count_total", model=MM) == n_ok  # sequential: no batches
    assert sample(after, "mlos_inference_request_seconds_count", model=MM) == n_ok
    assert sample(after, "mlos_inference_request_duration_us_total", model=MM) > 0
    assert sample(after, "mlos_inference_compute_infer_duration_us_total", model=MM) > 0
    assert sample(after, "mlos_inference_pending_request_count", model=MM) == 0
    assert sample(after, "mlos_model_memory_bytes", model=MM) == models.matmul.stat().st_size
    assert sample(after, "mlos_model_state", model=MM, state="ready") == 1

    # an unloaded model: failure reason model_not_ready, the loaded gauge drops
    await client.post(f"/v2/repository/models/{TOK_Q}/unload")
    assert (await client.post(f"/v1/models/{TOK_Q}/inference", json={"input_ids": [1], "attention_mask": [1]})).status == 400
    last = await scrape(client)
    assert sample(last, "mlos_models_loaded") == 1
    assert sample(last, "mlos_inference_request_failure_total", model=TOK, reason="model_not_ready") == 1
    assert sample(last, "mlos_model_state", model=TOK, state="unloaded") == 1


async def test_metrics_concurrent_batches(serving, models):
    client = await serving({MM: models.matmul})
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(32)]  # 1-3 rows each

    async def one(x):
        r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": x.tolist()})
        return r.status, await r.json()

    answers = await asyncio.gather(*(one(x) for x in xs))
    for x, (status, body) in zip(xs, answers):
        assert status == 200, body
        # each answer carries its own row, even when it ran inside a batch
        np.testing.assert_allclose(np.array(body["outputs"]["y"], np.float32), x @ models.matmul_w, rtol=1e-5, atol=1e-4)
        assert body["output_shapes"]["y"] == [len(x), 64]
        assert 1 <= body["batch_size"] <= 32
    s = await scrape(client)
    inferences = sample(s, "mlos_inference_count_total", model=MM)
    executions = sample(s, "mlos_inference_exec_count_total", model=MM)
    assert inferences == sum(len(x) for x in xs)  # rows, not requests
    assert sample(s, "mlos_inference_request_success_total", model=MM) == 32
    assert 1 <= executions <= inferences
    assert sample(s, "mlos_inference_pending_request_count", model=MM) == 0


async def test_system_resources(app_factory):
    client = await app_factory()
    r = await client.get("/v1/system/resources")
    body = await r.json()
    assert r.status == 200
    assert body["cpu"]["logical_cores"] == os.cpu_count()
    assert body["memory"]["total_bytes"] > body["memory"]["available_bytes"] > 0
    assert body["process"]["pid"] == os.getpid()  # in-process app: this very process
    assert body["process"]["rss_bytes"] > 0
    if resources.gpus() is None:  # no NVML here: no made-up GPU figures
        assert "gpus" not in body
    else:
        assert isinstance(body["gpus"], list)


async def test_failures_are_labelled_by_resolved_model_id(serving, models):
    """A request naming a model by name + version (or bare name) counts under the model's id."""
    client = await serving({MM: models.matmul}, max_queue=1)
    await client.post(f"/v2/repository/models/{MM_Q}/unload")
    v2 = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}
    # an unloaded model is the client's own doing: 400 until it is loaded again (Triton answers so)
    assert (await client.post("/v2/models/test%2Fmatmul/versions/1/infer", json=v2)).status == 400
    assert (await client.post("/v1/models/test%2Fmatmul/inference", json={"x": [[0.5] * 64]})).status == 400
    s = await scrape(client)
    assert sample(s, "mlos_inference_request_failure_total", model=MM, reason="model_not_ready") == 2
    labels = {dict(k[1]).get("model") for k in s if k[0] == "mlos_inference_request_failure_total"}
    assert labels == {MM}


async def test_unknown_model_names_do_not_grow_metrics(serving, models):
    """Model names in failed requests are client input: one series for all unknown names."""
    client = await serving({MM: models.matmul})
    for i in range(20):
        r = await client.post(f"/v1/models/scanner%2Fguess{i}/inference", json={"x": [1.0]})
        assert r.status == 404
    s = await scrape(client)
    series = [k for k in s if k[0] == "mlos_inference_request_failure_total"]
    assert len(series) == 1, series
    assert s[series[0]] == 20
    assert dict(series[0][1])["reason"] == "model_not_found"
    text = await (await client.get("/metrics")).text()
    assert "guess" not in text
    stats = await (await client.get("/stats")).json()
    assert stats["failed_requests"] == 20
