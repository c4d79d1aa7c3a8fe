"""The MLOS API (/v1/... and plain paths): register, inference, models, stats, plugins."""
from __future__ import annotations

from urllib.parse import quote

import numpy as np
import pytest

MM = "test/matmul@1"
TOK = "test/tokens@1"
PREFIXES = ["/v1", ""]


def q(model_id: str) -> str:
    return quote(model_id, safe="")


def x_row(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 64)).astype(np.float32)


# ---- register -------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("path_key", ["path", "model_path"])
async def test_register_answer_fields(app_factory, models, prefix, path_key):
    client = await app_factory()
    r = await client.post(f"{prefix}/models/register", json={"model_id": MM, path_key: str(models.matmul)})
    body = await r.json()
    assert r.status == 200, body
    assert body["status"] == "success"
    assert body["model_id"] == MM
    assert body["plugin_id"] == "onnxruntime"
    assert isinstance(body["message"], str) and body["message"]
    assert body["inference_endpoint"] == "/v1/models/test%2Fmatmul%401/inference"
    # the endpoint it names really serves the model
    x = x_row()
    r = await client.post(body["inference_endpoint"], json={"x": x.tolist()})
    out = await r.json()
    assert r.status == 200, out
    np.testing.assert_allclose(np.array(out["outputs"]["y"], np.float32), x @ models.matmul_w, rtol=1e-5, atol=1e-4)


async def test_reregister_same_path_is_idempotent(app_factory, models):
    client = await app_factory()
    first = await client.post("/v1/models/register", json={"model_id": MM, "path": str(models.matmul)})
    assert first.status == 200
    again = await client.post("/models/register", json={"model_id": MM, "model_path": str(models.matmul)})
    body = await again.json()
    assert again.status == 200, body
    assert "already registered" in body["message"]
    assert body["model_id"] == MM
    listing = await (await client.get("/models")).json()
    assert [m["id"] for m in listing["models"]] == [MM]


async def test_reregister_other_path_conflicts(app_factory, models):
    client = await app_factory()
    assert (await client.post("/v1/models/register", json={"model_id": MM, "path": str(models.matmul)})).status == 200
    r = await client.post("/v1/models/register", json={"model_id": MM, "path": str(models.tokens)})
    body = await r.json()
    assert r.status == 409, body
    assert body["status"] == "error" and body["code"] == "conflict"
    assert str(models.matmul) in body["message"]
    # the first registration is untouched
    desc = await (await client.get(f"/v1/models/{q(MM)}")).json()
    assert desc["path"] == str(models.matmul)


# ---- inference ------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", PREFIXES)
async def test_flat_named_tensors_tokens(serving, models, prefix):
    client = await serving({TOK: models.tokens})
    ids, mask = [101, 7592, 102], [1, 1, 0]
    r = await client.post(f"{prefix}/models/{q(TOK)}/inference", json={"input_ids": ids, "attention_mask": mask})
    body = await r.json()
    assert r.status == 200, body
    expected_sum = float(np.sum(np.array(ids) * np.array(mask)))
    assert body["outputs"]["masked_sum"] == [expected_sum]  # [batch] with batch 1
    assert body["outputs"]["length"] == [sum(mask)]
    assert body["output_datatypes"] == {"masked_sum": "FP32", "length": "INT64"}
    assert body["output_shapes"] == {"masked_sum": [1], "length": [1]}
    assert body["output_size"] == 2
    for key in ("status", "model_id", "inference_time_us", "queue_time_us", "output_size", "outputs"):
        assert key in body
    assert body["status"] == "success" and body["model_id"] == TOK
    assert isinstance(body["inference_time_us"], int) and body["inference_time_us"] >= 0
    assert isinstance(body["queue_time_us"], int) and body["queue_time_us"] >= 0


async def test_inputs_wrapper_with_batch(serving, models):
    client = await serving({TOK: models.tokens})
    ids = np.array([[5, 6, 7, 8], [10, 20, 30, 40]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 0], [0, 1, 0, 1]], dtype=np.int64)
    r = await client.post(f"/v1/models/{q(TOK)}/inference",
                          json={"inputs": {"input_ids": ids.tolist(), "attention_mask": mask.tolist()}})
    body = await r.json()
    assert r.status == 200, body
    assert body["outputs"]["masked_sum"] == (ids * mask).sum(axis=1).astype(np.float32).tolist()
    assert body["outputs"]["length"] == mask.sum(axis=1).tolist()
    assert body["output_shapes"] == {"masked_sum": [2], "length": [2]}
    assert body["output_size"] == 4


async def test_inputs_wrapper_beside_control_keys(serving, models):
    client = await serving({TOK: models.tokens})
    r = await client.post(f"/v1/models/{q(TOK)}/inference", json={
        "inputs": {"input_ids": [[3, 4, 5]], "attention_mask": [[1, 0, 1]]}, "parameters": {}, "max_length": 8})
    body = await r.json()
    assert r.status == 200, body
    assert body["outputs"] == {"masked_sum": [8.0], "length": [2]}
    # control keys beside flat tensors are ignored too
    r = await client.post(f"/v1/models/{q(TOK)}/inference",
                          json={"input_ids": [3, 4], "attention_mask": [1, 1], "temperature": 0.7})
    body = await r.json()
    assert r.status == 200, body
    assert body["outputs"] == {"masked_sum": [7.0], "length": [2]}


@pytest.mark.parametrize("prefix", PREFIXES)
async def test_single_input_alias_and_matmul_values(serving, models, prefix):
    client = await serving({MM: models.matmul})
    x = np.random.default_rng(7).standard_normal((3, 64)).astype(np.float32)
    r = await client.post(f"{prefix}/models/{q(MM)}/inference", json={"input": x.tolist()})
    body = await r.json()
    assert r.status == 200, body
    y = np.array(body["outputs"]["y"], dtype=np.float32)
    assert y.shape == (3, 64)
    np.testing.assert_allclose(y, x @ models.matmul_w, rtol=1e-5, atol=1e-4)
    assert body["output_datatypes"] == {"y": "FP32"}
    assert body["output_shapes"] == {"y": [3, 64]}
    assert body["output_size"] == 3 * 64


async def test_json_ints_to_fp32_input_are_floats(serving, models):
    client = await serving({MM: models.matmul})
    x = list(range(-32, 32))  # JSON integers, rank 1: gets the leading batch dim
    r = await client.post(f"/v1/models/{q(MM)}/inference", json={"x": x})
    body = await r.json()
    assert r.status == 200, body
    expected = np.array([x], dtype=np.float32) @ models.matmul_w
    np.testing.assert_allclose(np.array(body["outputs"]["y"], np.float32), expected, rtol=1e-5, atol=1e-3)


async def test_decimals_to_int64_input_refused(serving, models):
    client = await serving({TOK: models.tokens})
    r = await client.post(f"/v1/models/{q(TOK)}/inference",
                          json={"input_ids": [101.5, 7592, 102], "attention_mask": [1, 1, 0]})
    body = await r.json()
    assert r.status == 400, body
    assert "INT64" in body["message"] and "input_ids" in body["message"]
    # integral floats are integers
    r = await client.post(f"/v1/models/{q(TOK)}/inference",
                          json={"input_ids": [101.0, 7592.0, 102.0], "attention_mask": [1, 1, 0]})
    assert r.status == 200
    assert (await r.json())["outputs"]["length"] == [2]


async def test_schema_types_fp16_and_int32(serving, models):
    client = await serving({"test/fp16@1": models.fp16, "test/int32@1": models.int32})
    r = await client.post("/v1/models/test%2Ffp16%401/inference", json={"x": [0.5, 1.25, -2.0, 3.0]})
    body = await r.json()
    assert r.status == 200, body
    assert body["output_datatypes"] == {"y": "FP16"}
    assert body["outputs"]["y"] == [[1.5, 2.25, -1.0, 4.0]]
    r = await client.post("/v1/models/test%2Fint32%401/inference", json={"x": [[1, 2, 3, 4], [-1, -2, -3, 2**31 - 2]]})
    body = await r.json()
    assert r.status == 200, body
    assert body["output_datatypes"] == {"y": "INT32"}
    assert body["outputs"]["y"] == [[2, 3, 4, 5], [0, -1, -2, 2**31 - 1]]


async def test_include_outputs_false(serving, models):
    client = await serving({MM: models.matmul})
    x = x_row(3)
    r = await client.post(f"/v1/models/{q(MM)}/inference?include_outputs=false", json={"x": x.tolist()})
    body = await r.json()
    assert r.status == 200, body
    assert "outputs" not in body
    assert body["output_size"] == 64
    assert body["status"] == "success"
    r = await client.post(f"/v1/models/{q(MM)}/inference?include_outputs=maybe", json={"x": x.tolist()})
    assert r.status == 400


# ---- model listing, description, unregister ---------------------------------------------------

async def test_list_models_shape(serving, models):
    client = await serving({MM: models.matmul, TOK: models.tokens})
    body = await (await client.get("/models")).json()
    assert body["status"] == "success"
    assert body["total"] == 2
    rows = {m["id"]: m for m in body["models"]}
    assert set(rows) == {MM, TOK}
    for model_id, path in ((MM, models.matmul), (TOK, models.tokens)):
        row = rows[model_id]
        assert {"id", "name", "plugin_id", "status", "framework", "path"} <= set(row)
        assert row["plugin_id"] == "onnxruntime"
        assert row["status"] == "ready"
        assert row["framework"] == "ONNX"
        assert row["path"] == str(path)
    assert rows[MM]["name"] == "matmul"


async def test_list_models_v1_has_openai_data(serving, models):
    client = await serving({MM: models.matmul})
    body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert [d["id"] for d in body["data"]] == [MM]
    assert body["data"][0]["object"] == "model"
    assert body["data"][0]["owned_by"] == "test"
    assert isinstance(body["data"][0]["created"], int)
    assert [m["id"] for m in body["models"]] == [MM]
    assert body["total"] == 1


async def test_get_model_includes_io(serving, models):
    client = await serving({TOK: models.tokens})
    r = await client.get(f"/v1/models/{q(TOK)}")
    body = await r.json()
    assert r.status == 200, body
    assert body["id"] == TOK
    assert body["inputs"] == [
        {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
    ]
    assert body["outputs"] == [
        {"name": "masked_sum", "datatype": "FP32", "shape": [-1]},
        {"name": "length", "datatype": "INT64", "shape": [-1]},
    ]
    assert body["model"]["inputs"] == body["inputs"]
    r = await client.get(f"/v1/models/{q('no/such@1')}")
    assert r.status == 404


async def test_delete_then_inference_404(serving, models):
    client = await serving({MM: models.matmul})
    r = await client.delete(f"/v1/models/{q(MM)}")
    body = await r.json()
    assert r.status == 200, body
    assert body["status"] == "success" and body["model_id"] == MM
    r = await client.post(f"/v1/models/{q(MM)}/inference", json={"x": x_row().tolist()})
    body = await r.json()
    assert r.status == 404, body
    assert body["code"] == "model_not_found"
    assert (await (await client.get("/models")).json())["total"] == 0
    assert (await client.delete(f"/v1/models/{q(MM)}")).status == 404
    # registrable again afterwards, even from another path
    r = await client.post("/v1/models/register", json={"model_id": MM, "path": str(models.tokens)})
    assert r.status == 200


# ---- stats and plugins --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/stats", "/v1/stats"])
async def test_stats_counters(serving, models, path):
    client = await serving({MM: models.matmul})
    before = await (await client.get(path)).json()
    assert before["total_requests"] == before["successful_requests"] == before["failed_requests"] == 0
    assert before["avg_response_time_us"] == 0
    for seed in range(3):
        assert (await client.post(f"/v1/models/{q(MM)}/inference", json={"x": x_row(seed).tolist()})).status == 200
    assert (await client.post(f"/v1/models/{q(MM)}/inference", json={"x": [[1.0, 2.0]]})).status == 400
    assert (await client.post("/v1/models/no%2Fsuch/inference", json={"x": [1.0]})).status == 404
    x = x_row(9)
    v2 = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": x.ravel().tolist()}]}
    assert (await client.post(f"/v2/models/{q(MM)}/infer", json=v2)).status == 200
    after = await (await client.get(path)).json()
    assert after["total_requests"] == 6
    assert after["successful_requests"] == 4
    assert after["failed_requests"] == 2
    assert after["avg_response_time_us"] > 0
    assert after["uptime_seconds"] >= before["uptime_seconds"]
    assert after["apis"] == {"mlos": 5, "v2": 1}


async def test_plugins_lists_onnxruntime(app_factory):
    import onnxruntime

    client = await app_factory()
    for path in ("/plugins", "/v1/plugins"):
        body = await (await client.get(path)).json()
        assert body["status"] == "success"
        onnx = [p for p in body["plugins"] if p["id"] == "onnxruntime"]
        assert len(onnx) == 1
        assert onnx[0]["available"] is True
        assert onnx[0]["format"] == "onnx"
        assert onnx[0]["version"] == onnxruntime.__version__
        assert body["total"] == len(body["plugins"])


# ---- the seeds' own calls ---------------------------------------------------------------------

async def test_seed_calls_dash_form_health_405_and_model_state(serving, models):
    client = await serving({"hf/distilgpt2@latest": models.matmul})
    # the seeds' E2E example: the dash form of hf/distilgpt2@latest, on the plain path
    r = await client.post("/models/hf-distilgpt2@latest/inference", json={"x": x_row().tolist()})
    body = await r.json()
    assert r.status == 200, body
    assert body["model_id"] == "hf/distilgpt2@latest"
    np.testing.assert_allclose(np.array(body["outputs"]["y"]), x_row() @ models.matmul_w, rtol=1e-5, atol=1e-4)
    r = await client.get("/v1/models/hf-distilgpt2")
    assert r.status == 200 and (await r.json())["id"] == "hf/distilgpt2@latest"
    # /v1/health beside /v1/stats
    health = await (await client.get("/v1/health")).json()
    assert health["status"] == "healthy" and health["models"]["ready"] == 1
    plain = await (await client.get("/health")).json()
    assert {k: v for k, v in plain.items() if k != "uptime_seconds"} == \
           {k: v for k, v in health.items() if k != "uptime_seconds"}
    # a known route with the wrong method: 405 and Allow, not "not registered"
    for method, path, allow in (("GET", f"/v1/models/{q('hf/distilgpt2@latest')}/inference", "POST"),
                                ("GET", "/models/hf-distilgpt2@latest/inference", "POST"),
                                ("DELETE", f"/v1/models/{q('hf/distilgpt2@latest')}/inference", "POST"),
                                ("GET", "/v1/models/register", "POST"), ("GET", "/v1/models/scan", "POST"),
                                ("GET", f"/v2/models/{q('hf/distilgpt2@latest')}/infer", "POST"),
                                ("PUT", f"/v1/models/{q('hf/distilgpt2@latest')}", None),
                                ("GET", "/v2/repository/index", None)):
        r = await client.request(method, path)
        body = await r.json()
        assert r.status == 405, (method, path, body)
        assert body["code"] == "method_not_allowed" and f"method {method} is not allowed" in body["message"]
        if allow:
            assert r.headers["Allow"] == allow
    # GET /v1/models/{id}: "status" is the call's, the model's state is "state"
    body = await (await client.get(f"/v1/models/{q('hf/distilgpt2@latest')}")).json()
    assert body["status"] == "success" and body["state"] == "ready" and body["model"]["status"] == "ready"


async def test_dash_form_that_names_two_models_is_not_guessed(serving, models):
    client = await serving({"a/b-c@1": models.matmul, "a-b/c@1": models.matmul})
    r = await client.post("/v1/models/a-b-c@1/inference", json={"x": x_row().tolist()})
    assert r.status == 404 and (await r.json())["model_id"] == "a-b-c@1"
