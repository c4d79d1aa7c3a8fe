"""The stock ``tritonclient.http`` (PyPI, unchanged) against a real core subprocess with its
default settings: JSON and binary tensors of every datatype, compression, async infer, system
shared memory made with ``tritonclient.utils.shared_memory``, and the model/repository calls."""
from __future__ import annotations

import uuid

import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] is in the test extra")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.utils import InferenceServerException  # noqa: E402

ID, MM = "test/identity@1", "test/matmul@1"


@pytest.fixture
def triton(core_process, models):
    core = core_process()  # default settings: loopback, client shared memory allowed
    for model_id, path in ((ID, models.identity), (MM, models.matmul)):
        status, _, body = core.call("POST", "/v1/models/register", {"model_id": model_id, "path": str(path)})
        assert status == 200, body
    client = httpclient.InferenceServerClient(url=core.url.removeprefix("http://"), concurrency=4)
    yield client
    client.close()
    assert core.alive()


def sample() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {
        "FP32": rng.standard_normal((2, 3)).astype(np.float32),
        "FP16": np.array([[1.5, -0.0, 65504.0, 0.000061]], dtype=np.float16),
        "INT64": np.array([[2**63 - 1, -(2**63)], [0, 42]], dtype=np.int64),
        "BOOL": np.array([[True, False], [False, True]]),
        "BYTES": np.array([["naïve".encode(), b"", b"triton"]], dtype=np.object_),
    }


def make_inputs(arrays, binary: bool):
    inputs = []
    for t, arr in arrays.items():
        i = httpclient.InferInput(f"in_{t}", list(arr.shape), t)
        i.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(i)
    return inputs


def assert_exact(result, arrays):
    for t, arr in arrays.items():
        got = result.as_numpy(f"out_{t}")
        assert got is not None and got.shape == arr.shape, t
        if t == "BYTES":
            assert [bytes(v) if isinstance(v, bytes) else v.encode() for v in got.reshape(-1)] == list(arr.reshape(-1))
        else:
            assert got.dtype == arr.dtype and got.tobytes() == arr.tobytes(), t


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_every_datatype_round_trips(triton, binary_in, binary_out):
    arrays = sample()
    outputs = [httpclient.InferRequestedOutput(f"out_{t}", binary_data=binary_out) for t in arrays]
    result = triton.infer(ID, make_inputs(arrays, binary_in), outputs=outputs, request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    assert_exact(result, arrays)
    # no outputs named: the client asks for all of them in binary
    assert_exact(triton.infer(ID, make_inputs(arrays, binary_in)), arrays)


@pytest.mark.parametrize("request_coding,response_coding", [("gzip", "deflate"), ("deflate", "gzip")])
def test_compressed_bodies(triton, request_coding, response_coding):
    arrays = sample()
    result = triton.infer(ID, make_inputs(arrays, True), request_compression_algorithm=request_coding,
                          response_compression_algorithm=response_coding)
    assert_exact(result, arrays)


def test_async_infer_and_scheduling_parameters(triton, models):
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(8)]
    pending = []
    for i, x in enumerate(xs):
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        pending.append(triton.async_infer(MM, [inp], priority=1 + i % 10, timeout=30_000_000))
    for x, p in zip(xs, pending):
        np.testing.assert_allclose(p.get_result().as_numpy("y"), x @ models.matmul_w, rtol=1e-5, atol=1e-4)


def test_system_shared_memory_in_and_out(triton):
    arrays = {k: v for k, v in sample().items()}
    tag = uuid.uuid4().hex[:8]
    in_size = sum(v.nbytes for k, v in arrays.items() if k != "BYTES")
    in_region = shm.create_shared_memory_region(f"in-{tag}", f"/mlos-in-{tag}", in_size + 256)
    out_region = shm.create_shared_memory_region(f"out-{tag}", f"/mlos-out-{tag}", 1024)
    try:
        triton.register_system_shared_memory(f"in-{tag}", f"/mlos-in-{tag}", in_size + 256)
        triton.register_system_shared_memory(f"out-{tag}", f"/mlos-out-{tag}", 1024)
        status = {s["name"]: s for s in triton.get_system_shared_memory_status()}
        assert status[f"out-{tag}"] == {"name": f"out-{tag}", "key": f"/mlos-out-{tag}", "offset": 0, "byte_size": 1024}

        inputs, outputs, offset, out_offset, placed = [], [], 0, 0, {}
        for t, arr in arrays.items():
            i = httpclient.InferInput(f"in_{t}", list(arr.shape), t)
            if t == "BYTES":
                i.set_data_from_numpy(arr)  # mixed: this one travels as binary data in the body
            else:
                shm.set_shared_memory_region(in_region, [arr], offset=offset)
                i.set_shared_memory(f"in-{tag}", arr.nbytes, offset=offset)
                offset += arr.nbytes
            inputs.append(i)
            o = httpclient.InferRequestedOutput(f"out_{t}")
            if t != "BYTES":
                o.set_shared_memory(f"out-{tag}", arr.nbytes, offset=out_offset)
                placed[t] = out_offset
                out_offset += arr.nbytes
            outputs.append(o)
        result = triton.infer(ID, inputs, outputs=outputs)
        for t, arr in arrays.items():
            if t == "BYTES":
                assert list(result.as_numpy("out_BYTES").reshape(-1)) == list(arr.reshape(-1))
                continue
            out = result.get_output(f"out_{t}")
            assert out["parameters"]["shared_memory_byte_size"] == arr.nbytes
            got = shm.get_contents_as_numpy(out_region, arr.dtype, arr.shape, offset=placed[t])
            assert got.tobytes() == arr.tobytes(), t

        # a window past the region: a clear 400, and the server serves on
        bad = httpclient.InferInput("in_FP32", [2, 3], "FP32")
        bad.set_shared_memory(f"in-{tag}", 24, offset=in_size + 240)
        with pytest.raises(InferenceServerException) as e:
            triton.infer(ID, [bad] + inputs[1:])
        assert e.value.status() == "400"
        assert f"input 'in_FP32': bytes {in_size + 240}..{in_size + 264} lie outside shared memory region" in e.value.message()
    finally:
        triton.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_region)
        shm.destroy_shared_memory_region(out_region)
    assert triton.get_system_shared_memory_status() == []


def test_model_and_repository_calls(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert "system_shared_memory" in triton.get_server_metadata()["extensions"]
    assert triton.is_model_ready(ID)
    meta = triton.get_model_metadata(ID)
    assert meta["name"] == ID and meta["platform"] == "onnxruntime_onnx"
    assert {"name": "in_BYTES", "datatype": "BYTES", "shape": [-1, -1]} in meta["inputs"]
    assert triton.get_model_metadata("test/identity", model_version="1") == {**meta, "name": "test/identity"}
    config = triton.get_model_config(MM)
    assert config["max_batch_size"] == 32 and config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [64]}]
    assert config["dynamic_batching"]["priority_levels"] == 10

    x = httpclient.InferInput("x", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    triton.infer(MM, [x])
    stats = triton.get_inference_statistics(MM)["model_stats"][0]
    assert stats["name"] == MM and stats["inference_count"] == 1 and stats["execution_count"] == 1
    assert stats["inference_stats"]["success"]["count"] == 1
    assert {s["name"] for s in triton.get_inference_statistics()["model_stats"]} == {"test/identity", "test/matmul"}

    index = {(m["name"], m["version"]): m["state"] for m in triton.get_model_repository_index()}
    assert index == {("test/identity", "1"): "READY", ("test/matmul", "1"): "READY"}
    triton.unload_model(MM)
    assert not triton.is_model_ready(MM)
    triton.load_model(MM)
    assert triton.is_model_ready(MM)

    with pytest.raises(InferenceServerException) as e:
        triton.get_model_metadata("no/such@model")
    assert e.value.status() == "404" and e.value.message() == "Request for unknown model: 'no/such@model' is not found"
    with pytest.raises(InferenceServerException) as e:
        triton.infer(MM, [x], sequence_id=7)
    assert e.value.status() == "400" and "does not support sequences (sequence_id 7 given)" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        triton.register_cuda_shared_memory("g", b"\0" * 8, 0, 8)
    assert e.value.status() == "400" and e.value.message().startswith("CUDA shared memory is not supported")
    assert triton.get_log_settings()["log_format"] == "default"
    assert triton.get_trace_settings()["trace_level"] == ["OFF"]
