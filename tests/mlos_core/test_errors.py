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
    body = await expect_error(r, 422, "model_load_failed", contains=(str(path), "truncated ONNX model"))
    assert "it is 3000 (" in body["message"] and body["message"].endswith("; nothing was registered")
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
    row = index["bad/broken"]
    assert row["state"] == "UNAVAILABLE" and row["reason"].startswith("failed: ") and "NoSuchOperator" in row["reason"]
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


# ---- errors a user can act on ------------------------------------------------------------------

async def test_booleans_are_refused_for_numeric_inputs(client, models):
    r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": [[True, False] * 32]})
    await expect_error(r, 400, "invalid_tensor", contains=("tensor 'x': FP32 expects numbers, got booleans",))
    r = await client.post(f"/v2/models/{MM_Q}/infer", json=v2_x(data=[True] * 64))
    await expect_error(r, 400, "invalid_tensor", contains=("FP32 expects numbers, got booleans",))
    await still_serves(client, models)


async def test_inputs_disagreeing_on_a_named_dimension(client, models):
    """input_ids and attention_mask both declare [batch, sequence]: one length each is a 400
    naming both, before the runtime fails somewhere inside the graph."""
    r = await client.post(f"/v1/models/{TOK_Q}/inference", json={"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1, 1, 1]]})
    body = await expect_error(r, 400, "invalid_tensor")
    assert body["message"] == ("inputs 'input_ids' and 'attention_mask' must agree on dimension 'sequence' (axis 1 of "
                               "'input_ids', axis 1 of 'attention_mask'): 'input_ids' has 3, 'attention_mask' has 4; "
                               "shapes [1, 3] and [1, 4]")
    await still_serves(client, models)


async def test_runtime_failure_is_one_sentence_with_detail(serving, models, tmp_path, capfd):
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add")], "unnamed",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, None]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "add.onnx"))
    client = await serving({MM: models.matmul, "test/add@1": tmp_path / "add.onnx"})
    r = await client.post("/v1/models/test%2Fadd%401/inference", json={"a": [[1.0, 2.0, 3.0]], "b": [[1.0] * 4]})
    body = await expect_error(r, 400, "inference_failed")
    assert body["message"] == ("model test/add@1: the inputs' shapes do not fit together in its Add node 'add': a "
                               "dimension of 3 meets one of 4 (inputs: 'a' [1, 3], 'b' [1, 4])")
    assert "Attempting to broadcast an axis by a dimension other than 1. 3 by 4" in body["detail"]
    assert "[E:onnxruntime" not in capfd.readouterr().err
    await still_serves(client, models)


async def test_model_with_a_non_tensor_output_serves_the_others(serving, models, tmp_path):
    from .. import onnx_models

    client = await serving({MM: models.matmul, "sk/clf@1": onnx_models.zipmap_classifier(tmp_path / "clf.onnx")})
    x = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [0.1, 0.9, 0.8, 0.2]}
    r = await client.post("/v2/models/sk%2Fclf%401/infer", json={"inputs": [x]})
    body = await r.json()
    assert r.status == 200, body
    assert body["outputs"] == [{"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]}]
    r = await client.post("/v2/models/sk%2Fclf%401/infer", json={"inputs": [x], "outputs": [{"name": "probabilities"}]})
    await expect_error(r, 400, "invalid_tensor", contains=(
        "output 'probabilities' is not available: its type seq(map(int64,tensor(float))) is not a tensor",
        "options={'zipmap': False}", "the model's outputs are 'label'"))
    meta = await (await client.get("/v2/models/sk%2Fclf%401")).json()
    assert [o["name"] for o in meta["outputs"]] == ["label"]
    assert meta["parameters"]["unavailable_outputs"][0]["name"] == "probabilities"
    model = await (await client.get("/v1/models/sk%2Fclf%401")).json()
    assert model["unavailable_outputs"][0]["type"] == "seq(map(int64,tensor(float)))"


async def test_failed_registration_is_replaced_and_the_422_says_what_was_kept(client, models, tmp_path, caplog):
    bad = unloadable_onnx(tmp_path / "broken.onnx")
    with caplog.at_level("WARNING", logger="mlos_core.registry.registry"):
        r = await client.post("/v1/models/register", json={"model_id": "me/model@1", "path": str(bad)})
    body = await expect_error(r, 422, "model_load_failed", contains=("NoSuchOperator",))
    assert body["message"].endswith("The registration is kept in state failed with this reason (GET /v1/models/{id}); "
                                    "register me/model@1 again with a corrected path to replace it, or DELETE it")
    assert any(rec.levelname == "WARNING" and "model me/model@1 failed to load from" in rec.getMessage()
               and "NoSuchOperator" in rec.getMessage() for rec in caplog.records)
    kept = await (await client.get("/v1/models/me%2Fmodel%401")).json()
    assert kept["state"] == "failed" and "NoSuchOperator" in kept["error"]
    # the corrected path replaces the failed entry: no 409
    r = await client.post("/v1/models/register", json={"model_id": "me/model@1", "path": str(models.matmul)})
    body = await r.json()
    assert r.status == 200 and body["state"] == "ready" and body["created"] is True, body
    r = await client.post("/v1/models/me%2Fmodel%401/inference", json={"x": X.tolist()})
    assert r.status == 200
    # a ready model is still protected: another path is a conflict
    r = await client.post("/v1/models/register", json={"model_id": "me/model@1", "path": str(models.tokens)})
    await expect_error(r, 409, "conflict")
    # a replacement that cannot even be read leaves the failed entry as it was, and says so
    r = await client.post("/v1/models/register", json={"model_id": "me/other@1", "path": str(bad)})
    assert r.status == 422
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    r = await client.post("/v1/models/register", json={"model_id": "me/other@1", "path": str(junk)})
    await expect_error(r, 422, contains=("the earlier registration of me/other@1 (failed) is unchanged",))
    assert (await (await client.get("/v1/models/me%2Fother%401")).json())["path"] == str(bad)


async def test_bad_gguf_header_is_named_with_llama_cpp_words_in_detail(client, models, tmp_path):
    bad = tmp_path / "future.gguf"
    bad.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(64))
    r = await client.post("/v1/models/register", json={"model_id": "me/future@1", "path": str(bad)})
    body = await expect_error(r, 422, "model_load_failed", contains=(
        "GGUF model future.gguf could not be loaded: its GGUF version is newer than this llama.cpp reads",))
    assert "version 99" in body["detail"]
    await still_serves(client, models)
