"""Every failure answers one JSON shape with the right status, and the server keeps serving."""
from __future__ import annotations

import asyncio

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mlos_core.dataplane import DataPlane

MM, TOK, VAD = "test/matmul@1", "test/tokens@1", "silero/vad@6"
MM_Q, TOK_Q, VAD_Q = "test%2Fmatmul%401", "test%2Ftokens%401", "silero%2Fvad%406"
X = np.linspace(-1, 1, 64, dtype=np.float32).reshape(1, 64)


async def expect_error(r, status: int, code: str | None = None, *, contains: tuple[str, ...] = ()) -> dict:
    """The one error shape, never a traceback."""
    text = await r.text()
    assert r.status == status, text
    assert r.headers["Content-Type"].startswith("application/json"), text
    assert "Traceback" not in text and 'File "' not in text
    body = await r.json()
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"] == body["message"]
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    for part in contains:
        assert part in body["message"], body
    return body


async def still_serves(client, models) -> None:
    r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": X.tolist()})
    body = await r.json()
    assert r.status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"]["y"], np.float32), X @ models.matmul_w, rtol=1e-5, atol=1e-4)


def v2_x(**over) -> dict:
    t = {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": X.ravel().tolist()}
    t.update(over)
    return {"inputs": [t]}


@pytest.fixture
async def client(serving, models):
    return await serving({MM: models.matmul, TOK: models.tokens})


# ---- request bodies -------------------------------------------------------------------------

@pytest.mark.parametrize("path", [f"/v1/models/{MM_Q}/inference", f"/models/{MM_Q}/inference",
                                  f"/v2/models/{MM_Q}/infer", "/v1/models/register"])
async def test_malformed_json(client, models, path):
    r = await client.post(path, data=b'{"x": [1, 2', headers={"Content-Type": "application/json"})
    await expect_error(r, 400, "bad_request", contains=("malformed JSON",))
    await still_serves(client, models)


@pytest.mark.parametrize("path", [f"/v1/models/{MM_Q}/inference", f"/v2/models/{MM_Q}/infer", "/v1/models/register"])
@pytest.mark.parametrize("doc", [[1, 2, 3], "text", 42, None])
async def test_body_not_an_object(client, models, path, doc):
    r = await client.post(path, json=doc)
    await expect_error(r, 400, "bad_request", contains=("JSON object",))
    await still_serves(client, models)


@pytest.mark.parametrize("path", [f"/v1/models/{MM_Q}/inference", f"/v2/models/{MM_Q}/infer"])
async def test_empty_bodies(client, models, path):
    await expect_error(await client.post(path, data=b""), 400, "bad_request")
    await expect_error(await client.post(path, json={}), 400, "bad_request")
    await still_serves(client, models)


# ---- tensors ----------------------------------------------------------------------------------

async def test_wrong_tensor_name_lists_expected_inputs(client, models):
    r = await client.post(f"/v1/models/{TOK_Q}/inference", json={"ids": [1, 2], "attention_mask": [1, 1]})
    body = await expect_error(r, 400, "invalid_tensor", contains=("'ids'", "input_ids", "attention_mask", "INT64"))
    assert body.get("model_id") in (None, TOK)
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(name="input"))
    await expect_error(r, 400, "invalid_tensor", contains=("'input'", "'x'", "FP32 [-1, 64]"))
    r = await client.post(f"/v1/models/{TOK_Q}/inference", json={"input_ids": [1, 2]})
    await expect_error(r, 400, "invalid_tensor", contains=("missing input", "attention_mask"))
    await still_serves(client, models)


async def test_wrong_datatype(client, models):
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(datatype="INT64", data=[1] * 64))
    await expect_error(r, 400, "invalid_tensor", contains=("expects FP32", "INT64"))
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(datatype="FP64"))
    await expect_error(r, 400, "invalid_tensor", contains=("expects FP32",))
    r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": [["a"] * 64]})
    await expect_error(r, 400)
    await still_serves(client, models)


async def test_wrong_shape(client, models):
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(shape=[2, 32]))
    await expect_error(r, 400, "invalid_tensor", contains=("expects shape [-1, 64]", "[2, 32]"))
    r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": [[1.0] * 63]})
    await expect_error(r, 400, "invalid_tensor", contains=("expects shape [-1, 64]",))
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(shape=[1, 1, 64]))
    await expect_error(r, 400, "invalid_tensor", contains=("expects shape",))
    await still_serves(client, models)


async def test_data_count_not_matching_shape(client, models):
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(data=[1.0, 2.0, 3.0]))
    await expect_error(r, 400, "invalid_tensor", contains=("needs 64 elements", "has 3"))
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(shape=[1, -64]))
    await expect_error(r, 400, "invalid_tensor", contains=("shape",))
    await still_serves(client, models)


async def test_unknown_datatype(client, models):
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(datatype="FLOAT32"))
    await expect_error(r, 400, "invalid_tensor", contains=("unknown datatype 'FLOAT32'", "FP32"))
    await still_serves(client, models)


async def test_ragged_and_non_list_inputs(client, models):
    r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": [[1.0, 2.0], [3.0]]})
    await expect_error(r, 400, "invalid_tensor")
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": {"x": [1.0]}})
    await expect_error(r, 400, "bad_request", contains=("'inputs'",))
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": ["x"]})
    await expect_error(r, 400, "invalid_tensor")
    await still_serves(client, models)


# ---- models and routes --------------------------------------------------------------------------

async def test_unknown_model(client, models):
    r = await client.post("/v1/models/no%2Fsuch%401/inference", json={"x": [1.0]})
    body = await expect_error(r, 404, "model_not_found", contains=("no/such@1",))
    assert body["model_id"] == "no/such@1"
    await expect_error(await client.post("/v2/models/no%2Fsuch/infer", json=v2_x()), 404, "model_not_found")
    await expect_error(await client.get("/v2/models/no%2Fsuch"), 404, "model_not_found")
    await still_serves(client, models)


async def test_unknown_route(client, models):
    await expect_error(await client.get("/v3/whatever"), 404, "not_found", contains=("/v3/whatever",))
    await expect_error(await client.post("/v2/nothing/here", json={}), 404)
    await expect_error(await client.put("/v2/health/live"), 405)
    await still_serves(client, models)


@pytest.mark.parametrize("model_id", ["../x", "a b", "", "/abs", "x@1@2", "name;rm", 7, "a" * 300])
async def test_invalid_model_id(client, models, model_id):
    r = await client.post("/v1/models/register", json={"model_id": model_id, "path": str(models.matmul)})
    await expect_error(r, 400, "bad_request", contains=("model_id",))
    listing = await (await client.get("/models")).json()
    assert {m["id"] for m in listing["models"]} == {MM, TOK}
    await still_serves(client, models)


async def test_missing_path(client, models):
    for body in ({"model_id": "t/m@1"}, {"model_id": "t/m@1", "path": ""}, {"model_id": "t/m@1", "path": 3}):
        r = await client.post("/v1/models/register", json=body)
        await expect_error(r, 400, "bad_request", contains=("path",))
    await expect_error(await client.post("/v1/models/register", json={"path": str(models.matmul)}), 400,
                       contains=("model_id",))
    await still_serves(client, models)


@pytest.mark.parametrize("name,content,found", [
    ("notes.txt", b"just some text\n", "content of no known model format"),
    ("weights.onnx", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.", "pickle"),
    ("empty.onnx", b"", "empty file"),
    ("config.onnx", b'{"hidden_size": 768}', "JSON document"),
])
async def test_register_non_model_file(client, models, tmp_path, name, content, found):
    path = tmp_path / name
    path.write_bytes(content)
    r = await client.post("/v1/models/register", json={"model_id": "bad/file@1", "path": str(path)})
    await expect_error(r, 422, "model_load_failed", contains=(found, str(path)))
    listing = await (await client.get("/models")).json()
    assert "bad/file@1" not in {m["id"] for m in listing["models"]}
    await still_serves(client, models)


async def test_register_missing_file(client, models, tmp_path):
    r = await client.post("/v1/models/register", json={"model_id": "bad/file@1", "path": str(tmp_path / "nope.onnx")})
    await expect_error(r, 422, contains=("no such file",))
    await still_serves(client, models)


async def test_register_truncated_onnx(client, models, tmp_path):
    path = tmp_path / "truncated.onnx"
    path.write_bytes(models.matmul.read_bytes()[:3000])
    r = await client.post("/v1/models/register", json={"model_id": "bad/trunc@1", "path": str(path)})
    await expect_error(r, 422, "model_load_failed", contains=(str(path),))
    await still_serves(client, models)


def unloadable_onnx(path):
    """A well-formed ModelProto (it passes detection) that onnxruntime refuses to load."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["x"], ["y"])], "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


async def test_register_onnx_runtime_refuses(client, models, tmp_path):
    path = unloadable_onnx(tmp_path / "broken.onnx")
    r = await client.post("/v1/models/register", json={"model_id": "bad/broken@1", "path": str(path)})
    await expect_error(r, 422, "model_load_failed", contains=("onnxruntime could not load", "NoSuchOperator"))
    await still_serves(client, models)


async def test_lazy_load_failure_is_503_with_retry_after(serving, models, tmp_path):
    path = unloadable_onnx(tmp_path / "broken.onnx")
    client = await serving({MM: models.matmul}, load_on_register=False)
    r = await client.post("/v1/models/register", json={"model_id": "bad/broken@1", "path": str(path)})
    body = await r.json()
    assert r.status == 200, body
    assert body["state"] == "registered"
    for _ in range(2):  # the first load fails, the second answers the kept reason
        r = await client.post("/v1/models/bad%2Fbroken%401/inference", json={"x": [1.0]})
        await expect_error(r, 503, "model_unavailable", contains=("failed to load", "NoSuchOperator"))
        assert int(r.headers["Retry-After"]) >= 1
    listing = {m["id"]: m for m in (await (await client.get("/models")).json())["models"]}
    assert listing["bad/broken@1"]["status"] == "failed"
    assert "NoSuchOperator" in listing["bad/broken@1"]["error"]
    index = {e["name"]: e for e in await (await client.post("/v2/repository/index")).json()}
    assert index["bad/broken@1"]["state"] == "FAILED" and "NoSuchOperator" in index["bad/broken@1"]["reason"]
    await still_serves(client, models)


async def test_body_over_limit(serving, models):
    client = await serving({MM: models.matmul}, max_request_mb=0.01)
    big = b'{"x": [' + b",".join([b"1.0"] * 12_500) + b"]}"
    assert len(big) > 50_000
    for path in (f"/v1/models/{MM_Q}/inference", f"/v2/models/{MM_Q}/infer", "/v1/models/register"):
        r = await client.post(path, data=big, headers={"Content-Type": "application/json"})
        await expect_error(r, 413, "payload_too_large", contains=("limit",))
    await still_serves(client, models)


async def test_internal_error_is_generic(client, models, monkeypatch):
    def boom(self):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(DataPlane, "stats", boom)
    body = await expect_error(await client.get("/stats"), 500, "internal_error")
    assert "secret" not in body["message"]
    monkeypatch.undo()
    await still_serves(client, models)


# ---- overload -------------------------------------------------------------------------------------

def silero_inputs(seed: int):
    rng = np.random.default_rng(seed)
    return {
        "input": (rng.standard_normal((1, 512)) * 0.1).astype(np.float32),
        "state": np.zeros((2, 1, 128), dtype=np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }


async def test_queue_full(serving, models, silero):
    client = await serving({VAD: silero, MM: models.matmul}, max_queue=1)
    reference = ort.InferenceSession(str(silero), providers=["CPUExecutionProvider"])
    feeds = [silero_inputs(i) for i in range(40)]

    async def one(feed):
        body = {"inputs": [
            {"name": "input", "shape": [1, 512], "datatype": "FP32", "data": feed["input"].ravel().tolist()},
            {"name": "state", "shape": [2, 1, 128], "datatype": "FP32", "data": feed["state"].ravel().tolist()},
            {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]},
        ]}
        r = await client.post(f"/v2/models/{VAD_Q}/infer", json=body)
        return r, await r.json()

    answers = await asyncio.gather(*(one(f) for f in feeds))
    full = ok = 0
    for feed, (r, body) in zip(feeds, answers):
        if r.status == 503:
            await expect_error(r, 503, "queue_full", contains=("limit 1",))
            assert int(r.headers["Retry-After"]) >= 1
            full += 1
            continue
        assert r.status == 200, body
        out = {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in body["outputs"]}
        expected, expected_state = reference.run(["output", "stateN"], feed)
        np.testing.assert_allclose(out["output"], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(out["stateN"], expected_state, rtol=1e-4, atol=1e-5)
        ok += 1
    assert full >= 1 and ok >= 1, (full, ok)
    stats = await (await client.get("/stats")).json()
    assert stats["failed_requests"] == full and stats["successful_requests"] == ok
    # once the burst is over the model serves again
    r, body = await one(feeds[0])
    assert r.status == 200, body
    await still_serves(client, models)
