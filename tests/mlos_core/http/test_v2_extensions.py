"""Model configuration, statistics, logging and trace settings, as Triton's clients read them."""
from __future__ import annotations

import logging

import numpy as np

MM, MM_Q = "test/matmul@1", "test%2Fmatmul%401"


def x_input(rows=1):
    return {"name": "x", "shape": [rows, 64], "datatype": "FP32", "data": np.ones(rows * 64).tolist()}


async def test_config_of_a_batching_model(serving, models):
    client = await serving({MM: models.matmul}, max_batch_size=16, max_batch_delay_us=300, instances=1)
    r = await client.get(f"/v2/models/{MM_Q}/config")
    config = await r.json()
    assert r.status == 200, config
    assert config == {
        "name": MM, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
        "version_policy": {"specific": {"versions": ["1"]}},
        "max_batch_size": 16,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [64]}],
        "instance_group": [{"name": MM, "kind": "KIND_CPU", "count": 1}],
        "parameters": {"batching_reason": {
            "string_value": "axis 0 proved a batch axis: two rows stacked answer as they do apart"}},
        "dynamic_batching": {
            "preferred_batch_size": [], "max_queue_delay_microseconds": 300, "preserve_ordering": False,
            "priority_levels": 10, "default_priority_level": 5,
            "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": 0,
                                     "allow_timeout_override": True, "max_queue_size": 256},
        },
    }
    assert await (await client.get("/v2/models/test%2Fmatmul/versions/1/config")).json() == config
    r = await client.get("/v2/models/nope/config")
    assert r.status == 404 and (await r.json())["error"] == "model 'nope' is not registered"


async def test_config_of_a_model_that_does_not_batch(serving, models):
    client = await serving()
    r = await client.post("/v1/models/register", json={"model_id": "test/strings@1", "path": str(models.string),
                                                       "options": {"max_batch_size": 1}})
    assert r.status == 200
    config = await (await client.get("/v2/models/test%2Fstrings%401/config")).json()
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["parameters"]["batching_reason"]["string_value"] == "max_batch_size is 1"
    assert config["input"] == [{"name": "text", "data_type": "TYPE_STRING", "dims": [-1]}]
    assert config["instance_group"][0]["count"] == 1  # batchable shape: one execution at a time


async def test_statistics_in_the_protocol_shape(serving, models):
    client = await serving({MM: models.matmul, "test/tokens@1": models.tokens})
    for rows in (1, 3):
        assert (await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [x_input(rows)]})).status == 200
    bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert (await client.post(f"/v2/models/{MM_Q}/infer", json=bad)).status == 400
    r = await client.get(f"/v2/models/{MM_Q}/stats")
    body = await r.json()
    assert r.status == 200, body
    (s,) = body["model_stats"]
    assert s["name"] == MM and s["version"] == "1"
    assert s["inference_count"] == 4 and s["execution_count"] == 2
    assert s["last_inference"] > 1.7e12  # milliseconds since the epoch
    st = s["inference_stats"]
    assert st["success"]["count"] == 2 and st["fail"]["count"] == 1
    assert st["queue"]["count"] == 2 and st["compute_infer"]["count"] == 2
    assert st["success"]["ns"] >= st["compute_infer"]["ns"] > 0 and st["fail"]["ns"] > 0
    assert st["cache_hit"] == {"count": 0, "ns": 0}
    assert [(b["batch_size"], b["compute_infer"]["count"]) for b in s["batch_stats"]] == [(1, 1), (3, 1)]
    assert all(b["compute_infer"]["ns"] > 0 for b in s["batch_stats"])
    all_stats = (await (await client.get("/v2/models/stats")).json())["model_stats"]
    assert {m["name"] for m in all_stats} == {MM, "test/tokens@1"}
    assert next(m for m in all_stats if m["name"] == "test/tokens@1")["inference_count"] == 0
    assert (await (await client.get("/v2/models/test%2Fmatmul/versions/1/stats")).json())["model_stats"] == [s]
    assert (await client.get("/v2/models/nope/stats")).status == 404


async def test_logging_settings(app_factory):
    client = await app_factory()
    root = logging.getLogger()
    saved = root.level
    try:
        root.setLevel(logging.INFO)
        assert await (await client.get("/v2/logging")).json() == {
            "log_file": "", "log_info": True, "log_warning": True, "log_error": True, "log_verbose_level": 0,
            "log_format": "default"}
        r = await client.post("/v2/logging", json={"log_info": False})
        assert r.status == 200 and (await r.json())["log_info"] is False
        assert root.level == logging.WARNING
        r = await client.post("/v2/logging", json={"log_verbose_level": 1})
        assert (await r.json())["log_verbose_level"] == 1 and root.level == logging.DEBUG
        for body, message in [({"log_file": "/tmp/x"}, "log_file cannot be changed"),
                              ({"log_info": "yes"}, "log_info must be true or false"),
                              ({"verbosity": 3}, "unknown logging setting 'verbosity'")]:
            r = await client.post("/v2/logging", json=body)
            assert r.status == 400 and message in (await r.json())["error"]
    finally:
        root.setLevel(saved)


async def test_trace_settings_say_off_and_refuse_tracing(serving, models):
    client = await serving({MM: models.matmul})
    for path in ("/v2/trace/setting", f"/v2/models/{MM_Q}/trace/setting"):
        r = await client.get(path)
        assert r.status == 200 and (await r.json())["trace_level"] == ["OFF"]
        r = await client.post(path, json={"trace_level": ["TIMESTAMPS"]})
        assert r.status == 400 and (await r.json())["error"].startswith("tracing is not supported by this server")
        assert (await client.post(path, json={"trace_level": ["OFF"]})).status == 200


async def test_load_with_a_new_config_is_refused(serving, models):
    client = await serving({MM: models.matmul})
    r = await client.post(f"/v2/repository/models/{MM_Q}/load", json={"parameters": {"config": "{}"}})
    assert r.status == 400
    assert (await r.json())["error"].startswith("loading a model with a new configuration or files is not supported")


async def test_server_metadata_lists_the_extensions(app_factory):
    client = await app_factory()
    ext = (await (await client.get("/v2")).json())["extensions"]
    for name in ("binary_tensor_data", "system_shared_memory", "statistics", "model_configuration", "model_repository"):
        assert name in ext
