"""Model configuration, statistics, logging and trace settings, as Triton's clients read them."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest

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
    assert await (await client.get("/v2/models/test%2Fmatmul/versions/1/config")).json() == {**config, "name": "test/matmul"}
    r = await client.get("/v2/models/nope/config")
    assert r.status == 404 and (await r.json())["error"] == "Request for unknown model: 'nope' is not found"


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
    assert {(m["name"], m["version"]) for m in all_stats} == {("test/matmul", "1"), ("test/tokens", "1")}
    assert next(m for m in all_stats if m["name"] == "test/tokens")["inference_count"] == 0
    by_name = (await (await client.get("/v2/models/test%2Fmatmul/versions/1/stats")).json())["model_stats"]
    assert by_name == [{**s, "name": "test/matmul"}]
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


async def test_load_with_a_config_override_applies_it(serving, models):
    client = await serving({MM: models.matmul}, max_batch_size=32, instances=1)
    load = f"/v2/repository/models/{MM_Q}/load"
    # Triton's example sends the numbers as strings, as protobuf's JSON form may
    override = {"max_batch_size": "16", "dynamic_batching": {"max_queue_delay_microseconds": 250,
                                                            "default_queue_policy": {"max_queue_size": 9}},
                "instance_group": [{"kind": "KIND_CPU", "count": 2}],
                "parameters": {"intra_op_thread_count": {"string_value": "1"}}}
    r = await client.post(load, json={"parameters": {"config": json.dumps(override)}})
    assert r.status == 200, await r.text()
    config = await (await client.get(f"/v2/models/{MM_Q}/config")).json()
    assert config["max_batch_size"] == 16
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 250
    assert config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 9
    assert config["instance_group"][0]["count"] == 2
    # persisted as the model's options, and the reloaded model serves with them
    model = await (await client.get(f"/v1/models/{MM_Q}")).json()
    assert model["options"] == {"max_batch_size": 16, "max_batch_delay_us": 250, "max_queue": 9, "instances": 2,
                                "intra_op_threads": 1}
    x = np.ones((2, 64), np.float32)
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [x_input(2)]})
    assert r.status == 200
    np.testing.assert_allclose(np.asarray((await r.json())["outputs"][0]["data"]).reshape(2, 64),
                               x @ models.matmul_w, rtol=1e-5, atol=1e-4)
    # the configuration read back, with one field changed, is a valid override
    config["max_batch_size"] = 8
    r = await client.post(load, json={"parameters": {"config": json.dumps(config)}})
    assert r.status == 200, await r.text()
    assert (await (await client.get(f"/v2/models/{MM_Q}/config")).json())["max_batch_size"] == 8
    # 0 turns batching off
    r = await client.post(load, json={"parameters": {"config": '{"max_batch_size": 0}'}})
    config = await (await client.get(f"/v2/models/{MM_Q}/config")).json()
    assert r.status == 200 and config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, 64]}]


@pytest.mark.parametrize("config,message", [
    ('"parameters": {"config": {{"max_batch_size": "16"}}}', "the configuration override is not valid JSON"),
    ('[16]', "the configuration override must be a JSON object"),
    ('{"max_batch_size": "many"}', "max_batch_size must be an integer >= 0, got 'many'"),
    ('{"backend": "tensorrt"}', "'backend' cannot be changed here (it is \"onnxruntime\")"),
    ('{"instance_group": [{"kind": "KIND_GPU", "count": 1}]}', "instance_group kind 'KIND_GPU' is not available"),
    ('{"parameters": {"gpu_mem_limit": {"string_value": "1"}}}', "parameter 'gpu_mem_limit' is not known here"),
    ('{"sequence_batching": {}}', "'sequence_batching' cannot be changed here"),
])
async def test_load_with_an_override_the_core_cannot_honour_fails(serving, models, config, message):
    client = await serving({MM: models.matmul})
    r = await client.post(f"/v2/repository/models/{MM_Q}/load", json={"parameters": {"config": config}})
    body = await r.json()
    assert r.status == 400, body
    assert body["error"].startswith(f"failed to load '{MM}': ") and message in body["error"], body["error"]
    # nothing changed, and the model serves on
    assert (await (await client.get(f"/v2/models/{MM_Q}/config")).json())["max_batch_size"] == 32
    assert (await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [x_input()]})).status == 200


async def test_load_override_of_a_model_that_cannot_batch(serving, silero):
    client = await serving({"silero/vad@6": silero})
    r = await client.post("/v2/repository/models/silero%2Fvad%406/load", json={"parameters": {"config": '{"max_batch_size": 4}'}})
    body = await r.json()
    assert r.status == 400 and "needs a model whose every input and output has a dynamic first dimension" in body["error"]
    r = await client.post("/v2/repository/models/silero%2Fvad%406/load", json={"parameters": {"file:1/model.onnx": "AAAA"}})
    assert r.status == 400 and "model files sent with the load request" in (await r.json())["error"]


async def test_server_metadata_lists_the_extensions(app_factory):
    client = await app_factory()
    ext = (await (await client.get("/v2")).json())["extensions"]
    for name in ("binary_tensor_data", "system_shared_memory", "statistics", "model_configuration", "model_repository"):
        assert name in ext
