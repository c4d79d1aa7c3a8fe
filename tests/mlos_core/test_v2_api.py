"""The Open Inference Protocol (KServe v2) endpoints."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import mlos_core
from mlos_core.plugins.onnx_plugin import OnnxPlugin

MM, TOK = "test/matmul@1", "test/tokens@1"
MM_Q, TOK_Q = "test%2Fmatmul%401", "test%2Ftokens%401"


def tensor(name, arr, datatype):
    arr = np.asarray(arr)
    return {"name": name, "shape": list(arr.shape), "datatype": datatype, "data": arr.ravel().tolist()}


def out_array(body: dict, name: str, dtype) -> np.ndarray:
    (o,) = [o for o in body["outputs"] if o["name"] == name]
    return np.array(o["data"], dtype=dtype).reshape(o["shape"])


async def test_server_metadata_and_health(app_factory):
    client = await app_factory()
    r = await client.get("/v2")
    body = await r.json()
    assert r.status == 200
    assert body["name"] == "mlos-core"
    assert body["version"] == mlos_core.__version__
    assert "model_repository" in body["extensions"]
    r = await client.get("/v2/health/live")
    assert r.status == 200 and await r.json() == {"live": True}
    r = await client.get("/v2/health/ready")
    assert r.status == 200 and await r.json() == {"ready": True}


async def test_ready_is_503_while_a_model_loads(serving, models, monkeypatch):
    release = threading.Event()
    real_load = OnnxPlugin.load

    def slow_load(self, source, options):
        release.wait(10)
        return real_load(self, source, options)

    monkeypatch.setattr(OnnxPlugin, "load", slow_load)
    client = await serving()
    task = asyncio.create_task(client.post("/v1/models/register", json={"model_id": MM, "path": str(models.matmul)}))
    try:
        for _ in range(200):
            r = await client.get("/v2/health/ready")
            if r.status == 503:
                break
            await asyncio.sleep(0.01)
        body = await r.json()
        assert r.status == 503, body
        assert body == {"ready": False, "loading": [MM]}
        r = await client.get(f"/v2/models/{MM_Q}/ready")
        assert r.status == 400 and (await r.json())["state"] == "loading"
    finally:
        release.set()
    assert (await task).status == 200
    r = await client.get("/v2/health/ready")
    assert r.status == 200 and await r.json() == {"ready": True}


async def test_model_metadata(serving, models):
    client = await serving({TOK: models.tokens, MM: models.matmul})
    r = await client.get(f"/v2/models/{TOK_Q}")
    body = await r.json()
    assert r.status == 200, body
    assert body["name"] == TOK
    assert body["versions"] == ["1"]
    assert body["platform"] == "onnxruntime_onnx"
    assert body["inputs"] == [
        {"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
        {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]},
    ]
    assert body["outputs"] == [
        {"name": "masked_sum", "datatype": "FP32", "shape": [-1]},
        {"name": "length", "datatype": "INT64", "shape": [-1]},
    ]
    mm = await (await client.get(f"/v2/models/{MM_Q}")).json()
    assert mm["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert mm["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 64]}]
    # by name + version, by name alone (a single version), by full id + its version: each answer
    # names the model as the client wrote it, the version apart
    for path, name in (("/v2/models/test%2Ftokens/versions/1", "test/tokens"), ("/v2/models/test%2Ftokens", "test/tokens"),
                       (f"/v2/models/{TOK_Q}/versions/1", TOK)):
        assert await (await client.get(path)).json() == {**body, "name": name}
    r = await client.get("/v2/models/test%2Ftokens/versions/2")
    assert r.status == 404 and (await r.json())["code"] == "model_not_found"
    assert (await r.json())["error"] == "Request for unknown model: 'test/tokens' version '2' is not found"
    r = await client.get(f"/v2/models/{TOK_Q}/versions/2")
    assert r.status == 404
    r = await client.get("/v2/models/wrong_model_name")
    assert (await r.json())["error"] == "Request for unknown model: 'wrong_model_name' is not found"


async def test_model_ready(serving, models):
    client = await serving({TOK: models.tokens})
    for path, name in ((f"/v2/models/{TOK_Q}/ready", TOK), ("/v2/models/test%2Ftokens/versions/1/ready", "test/tokens")):
        r = await client.get(path)
        assert r.status == 200
        assert await r.json() == {"name": name, "ready": True, "state": "ready"}
    r = await client.get("/v2/models/nope/ready")
    assert r.status == 404


async def test_infer_fp32_matmul_with_id(serving, models):
    client = await serving({MM: models.matmul})
    x = np.random.default_rng(2).standard_normal((4, 64)).astype(np.float32)
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"id": "req-42", "inputs": [tensor("x", x, "FP32")]})
    body = await r.json()
    assert r.status == 200, body
    assert body["id"] == "req-42"
    assert body["model_name"] == MM and body["model_version"] == "1"
    assert [(o["name"], o["datatype"], o["shape"]) for o in body["outputs"]] == [("y", "FP32", [4, 64])]
    np.testing.assert_allclose(out_array(body, "y", np.float32), x @ models.matmul_w, rtol=1e-5, atol=1e-4)
    # versioned route, no id: none echoed
    r = await client.post("/v2/models/test%2Fmatmul/versions/1/infer", json={"inputs": [tensor("x", x[:1], "FP32")]})
    body = await r.json()
    assert r.status == 200 and "id" not in body
    assert body["model_name"] == "test/matmul" and body["model_version"] == "1"
    np.testing.assert_allclose(out_array(body, "y", np.float32), x[:1] @ models.matmul_w, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind,datatype,dtype,data", [
    ("fp16", "FP16", np.float16, [[0.5, -1.5, 2.25, 100.0], [0.0, 1.0, -3.0, 7.5]]),
    ("int64", "INT64", np.int64, [[2**40, -5, 0, 9, 11]]),
    ("int32", "INT32", np.int32, [[-(2**31), 0, 41, 2**30]]),
])
async def test_infer_numeric_types(serving, models, kind, datatype, dtype, data):
    client = await serving({f"test/{kind}@1": getattr(models, kind)})
    x = np.array(data, dtype=dtype)
    r = await client.post(f"/v2/models/test%2F{kind}%401/infer", json={"inputs": [tensor("x", x, datatype)]})
    body = await r.json()
    assert r.status == 200, body
    (o,) = body["outputs"]
    assert o["name"] == "y" and o["datatype"] == datatype and o["shape"] == list(x.shape)
    np.testing.assert_array_equal(out_array(body, "y", dtype), x + dtype(1))


async def test_infer_bool(serving, models):
    client = await serving({"test/not@1": models.bool_})
    x = [[True, False, True], [False, False, True]]
    r = await client.post("/v2/models/test%2Fnot%401/infer", json={"inputs": [tensor("x", x, "BOOL")]})
    body = await r.json()
    assert r.status == 200, body
    (o,) = body["outputs"]
    assert o["datatype"] == "BOOL" and o["shape"] == [2, 3]
    assert o["data"] == [not v for row in x for v in row]


async def test_infer_bytes(serving, models):
    client = await serving({"test/strings@1": models.string})
    words = ["hello", "wörld ✓", ""]
    r = await client.post("/v2/models/test%2Fstrings%401/infer",
                          json={"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": words}]})
    body = await r.json()
    assert r.status == 200, body
    assert body["outputs"] == [{"name": "same", "datatype": "BYTES", "shape": [3], "data": words}]


async def test_requested_outputs_subset(serving, models):
    client = await serving({TOK: models.tokens})
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 0]], dtype=np.int64)
    inputs = [tensor("input_ids", ids, "INT64"), tensor("attention_mask", mask, "INT64")]
    r = await client.post(f"/v2/models/{TOK_Q}/infer", json={"inputs": inputs, "outputs": [{"name": "length"}]})
    body = await r.json()
    assert r.status == 200, body
    assert body["outputs"] == [{"name": "length", "datatype": "INT64", "shape": [1], "data": [3]}]
    r = await client.post(f"/v2/models/{TOK_Q}/infer", json={"inputs": inputs})
    body = await r.json()
    assert [o["name"] for o in body["outputs"]] == ["masked_sum", "length"]
    assert out_array(body, "masked_sum", np.float32).tolist() == [float((ids * mask).sum())]
    r = await client.post(f"/v2/models/{TOK_Q}/infer", json={"inputs": inputs, "outputs": [{"name": "logits"}]})
    body = await r.json()
    assert r.status == 400
    assert "logits" in body["message"] and "masked_sum" in body["message"]


async def test_repository_index_unload_load(serving, models):
    client = await serving({MM: models.matmul, TOK: models.tokens})
    r = await client.post("/v2/repository/index")
    index = await r.json()
    assert r.status == 200
    assert sorted(index, key=lambda e: e["name"]) == [
        {"name": "test/matmul", "version": "1", "state": "READY"},
        {"name": "test/tokens", "version": "1", "state": "READY"},
    ]
    # a name from the index, with its version, finds the model
    r = await client.get("/v2/models/test%2Fmatmul/versions/1/ready")
    assert r.status == 200 and (await r.json())["name"] == "test/matmul"

    r = await client.post(f"/v2/repository/models/{MM_Q}/unload")
    assert r.status == 200
    index = {e["name"]: e for e in await (await client.post("/v2/repository/index")).json()}
    assert index["test/matmul"] == {"name": "test/matmul", "version": "1", "state": "UNAVAILABLE",
                                    "reason": "unloaded: load it again to serve"}
    assert index["test/tokens"]["state"] == "READY" and "reason" not in index["test/tokens"]
    ready_only = await (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert [e["name"] for e in ready_only] == ["test/tokens"]
    r = await client.get(f"/v2/models/{MM_Q}/ready")
    assert r.status == 400 and (await r.json())["ready"] is False

    x = np.ones((1, 64), dtype=np.float32)
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [tensor("x", x, "FP32")]})
    body = await r.json()
    assert r.status == 400 and body["code"] == "model_not_ready", body  # a retry cannot help: load it
    assert "/v2/repository/models/" in body["message"] and "load" in body["message"]
    # the other model still serves
    ids = [tensor("input_ids", [[1, 2]], "INT64"), tensor("attention_mask", [[1, 1]], "INT64")]
    assert (await client.post(f"/v2/models/{TOK_Q}/infer", json={"inputs": ids})).status == 200

    r = await client.post(f"/v2/repository/models/{MM_Q}/load")
    assert r.status == 200
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [tensor("x", x, "FP32")]})
    body = await r.json()
    assert r.status == 200, body
    np.testing.assert_allclose(out_array(body, "y", np.float32), x @ models.matmul_w, rtol=1e-5, atol=1e-4)
    index = {e["name"]: e["state"] for e in await (await client.post("/v2/repository/index")).json()}
    assert index["test/matmul"] == "READY"
    r = await client.post("/v2/repository/models/nope/load")
    assert r.status == 404 and (await r.json())["error"].startswith("failed to load 'nope': no model of that name")
