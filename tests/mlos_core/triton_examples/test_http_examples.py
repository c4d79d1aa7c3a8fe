"""Triton's HTTP example clients, their calls and checks, against a real core (see conftest.py).
Shared-memory keys are made unique per test (the examples use fixed ones such as /input_simple,
which parallel runs on one machine would share)."""
from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from .conftest import check_sum_and_difference, simple_data, start_core


def _simple_inputs(module, input0, input1, outputs=True):
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0, binary_data=False)
    inputs[1].set_data_from_numpy(input1, binary_data=True)
    if not outputs:
        return inputs, None
    return inputs, [module.InferRequestedOutput("OUTPUT0", binary_data=True),
                    module.InferRequestedOutput("OUTPUT1", binary_data=False)]


@pytest.mark.parametrize("request_coding,response_coding", [(None, None), ("gzip", "deflate"), ("deflate", "gzip")])
def test_simple_http_infer_client(http_client, request_coding, response_coding):
    input0, input1 = simple_data(-1)
    query = {"test_1": 1, "test_2": 2}
    for with_outputs in (True, False):
        inputs, outputs = _simple_inputs(httpclient, input0, input1, with_outputs)
        result = http_client.infer("simple", inputs, outputs=outputs, query_params=query,
                                   request_compression_algorithm=request_coding,
                                   response_compression_algorithm=response_coding)
        check_sum_and_difference(result, input0, input1)
        if with_outputs:
            assert len(http_client.get_inference_statistics(model_name="simple")["model_stats"]) == 1
    inputs, outputs = _simple_inputs(httpclient, input0, input1)
    with pytest.raises(InferenceServerException) as e:
        http_client.infer("wrong_model_name", inputs, outputs=outputs)
    assert e.value.message().startswith("Request for unknown model")


def test_simple_http_aio_infer_client(core):
    input0, input1 = simple_data(-1)

    async def main():
        client = aiohttpclient.InferenceServerClient(core.url.removeprefix("http://"))
        try:
            async def infer(model, with_outputs=True):
                inputs, outputs = _simple_inputs(aiohttpclient, input0, input1, with_outputs)
                return await client.infer(model, inputs, outputs=outputs, query_params={"test_1": 1, "test_2": 2})

            check_sum_and_difference(await infer("simple"), input0, input1)
            stats = await client.get_inference_statistics(model_name="simple")
            assert len(stats["model_stats"]) == 1
            check_sum_and_difference(await infer("simple", False), input0, input1)
            with pytest.raises(InferenceServerException) as e:
                await infer("wrong_model_name")
            assert e.value.message().startswith("Request for unknown model")
            for result in await asyncio.gather(infer("simple"), infer("simple", False)):
                check_sum_and_difference(result, input0, input1)
        finally:
            await client.close()

    asyncio.run(main())


def test_simple_http_async_infer_client(core):
    client = httpclient.InferenceServerClient(core.url.removeprefix("http://"), concurrency=2)
    try:
        input0 = np.arange(16, dtype=np.int32).reshape(1, 16)
        input1 = np.ones((1, 16), dtype=np.int32)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(input0, binary_data=True)
        inputs[1].set_data_from_numpy(input1, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
        pending = [client.async_infer(model_name="simple", inputs=inputs, outputs=outputs) for _ in range(2)]
        for request in pending:
            check_sum_and_difference(request.get_result(), input0, input1)
    finally:
        client.close()


def test_simple_http_health_metadata(http_client):
    assert http_client.is_server_live(query_params={"test_1": 1, "test_2": 2})
    assert http_client.is_server_ready()
    assert http_client.is_model_ready("simple")
    # the one difference the examples tolerate: this server keeps its own name (it checks "triton")
    assert http_client.get_server_metadata()["name"] == "mlos-core"
    assert http_client.get_model_metadata("simple", query_params={"test_1": 1, "test_2": 2})["name"] == "simple"
    with pytest.raises(InferenceServerException) as e:
        http_client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in e.value.message()


def test_simple_http_model_control(example_models, tmp_path):
    # the example expects a repository of 7 models: the 5 built here and 2 copies of "simple"
    core = start_core(tmp_path / "data", example_models, extra=2)
    client = httpclient.InferenceServerClient(core.url.removeprefix("http://"))
    try:
        assert len(client.get_model_repository_index()) == 7
        client.load_model("simple")
        assert client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as e:
            client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
        assert "failed to load" in e.value.message()
        client.load_model("simple", config='{"max_batch_size":"16"}')
        assert client.get_model_config("simple")["max_batch_size"] == 16
        client.unload_model("simple")
        assert not client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as e:
            client.load_model("wrong_model_name")
        assert "failed to load" in e.value.message()
    finally:
        client.close()
        core.stop()


def _regions(*names):
    tag = uuid.uuid4().hex[:8]
    return {n: (f"{n}-{tag}", f"/mlos-{n}-{tag}") for n in names}


def test_simple_http_shm_client(http_client):
    http_client.unregister_system_shared_memory()
    http_client.unregister_cuda_shared_memory()
    input0 = np.arange(16, dtype=np.int32)
    input1 = np.ones(16, dtype=np.int32)
    size = input0.size * input0.itemsize
    names = _regions("output_data", "input_data")
    (out_name, out_key), (in_name, in_key) = names["output_data"], names["input_data"]
    out_handle = shm.create_shared_memory_region(out_name, out_key, size * 2)
    in_handle = shm.create_shared_memory_region(in_name, in_key, size * 2)
    try:
        http_client.register_system_shared_memory(out_name, out_key, size * 2)
        shm.set_shared_memory_region(in_handle, [input0])
        shm.set_shared_memory_region(in_handle, [input1], offset=size)
        http_client.register_system_shared_memory(in_name, in_key, size * 2)
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(in_name, size)
        inputs[1].set_shared_memory(in_name, size, offset=size)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
        outputs[0].set_shared_memory(out_name, size)
        outputs[1].set_shared_memory(out_name, size, offset=size)
        result = http_client.infer(model_name="simple", inputs=inputs, outputs=outputs)
        out0, out1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
        got0 = shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(out0["datatype"]), out0["shape"])
        got1 = shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(out1["datatype"]), out1["shape"],
                                         offset=size)
        assert (got0[0] == input0 + input1).all() and (got1[0] == input0 - input1).all()
        assert {r["name"] for r in http_client.get_system_shared_memory_status()} == {in_name, out_name}
        http_client.unregister_system_shared_memory()
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    assert http_client.get_system_shared_memory_status() == []


def string_example_data():
    in0 = np.arange(16, dtype=np.int32)
    in1 = np.ones(16, dtype=np.int32)
    as_bytes = lambda a: np.array([str(x).encode("utf-8") for x in a.flatten()], dtype=object)  # noqa: E731
    return in0, in1, as_bytes(in0).reshape(1, 16), as_bytes(in1).reshape(1, 16), \
        as_bytes(in0 + in1), as_bytes(in0 - in1)


def test_simple_http_shm_string_client(http_client):
    http_client.unregister_system_shared_memory()
    in0, in1, input0, input1, expected_sum, expected_diff = string_example_data()
    ser = {k: utils.serialize_byte_tensor(v) for k, v in
           (("in0", input0), ("in1", input1), ("sum", expected_sum), ("diff", expected_diff))}
    size = {k: utils.serialized_byte_size(v) for k, v in ser.items()}
    names = _regions("output0_data", "output1_data", "input0_data", "input1_data")
    handles = {
        "output0_data": shm.create_shared_memory_region(*names["output0_data"], size["sum"]),
        "output1_data": shm.create_shared_memory_region(*names["output1_data"], size["diff"]),
        "input0_data": shm.create_shared_memory_region(*names["input0_data"], size["in0"]),
        "input1_data": shm.create_shared_memory_region(*names["input1_data"], size["in1"]),
    }
    try:
        http_client.register_system_shared_memory(*names["output0_data"], size["sum"])
        http_client.register_system_shared_memory(*names["output1_data"], size["diff"])
        shm.set_shared_memory_region(handles["input0_data"], [ser["in0"]])
        shm.set_shared_memory_region(handles["input1_data"], [ser["in1"]])
        http_client.register_system_shared_memory(*names["input0_data"], size["in0"])
        http_client.register_system_shared_memory(*names["input1_data"], size["in1"])
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "BYTES"), httpclient.InferInput("INPUT1", [1, 16], "BYTES")]
        inputs[0].set_shared_memory(names["input0_data"][0], size["in0"])
        inputs[1].set_shared_memory(names["input1_data"][0], size["in1"])
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
        outputs[0].set_shared_memory(names["output0_data"][0], size["sum"])
        outputs[1].set_shared_memory(names["output1_data"][0], size["diff"])
        result = http_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
        out0, out1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
        got0 = shm.get_contents_as_numpy(handles["output0_data"], utils.triton_to_np_dtype(out0["datatype"]),
                                         out0["shape"])
        got1 = shm.get_contents_as_numpy(handles["output1_data"], utils.triton_to_np_dtype(out1["datatype"]),
                                         out1["shape"])
        assert list(got0[0]) == list(expected_sum) and list(got1[0]) == list(expected_diff)
        http_client.unregister_system_shared_memory()
    finally:
        for handle in handles.values():
            shm.destroy_shared_memory_region(handle)


def test_simple_http_string_infer_client(http_client):
    in0, in1, input0, input1, _, _ = string_example_data()
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "BYTES"), httpclient.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_data_from_numpy(input0, binary_data=True)
    inputs[1].set_data_from_numpy(input1, binary_data=False)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)]
    result = http_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    assert [int(v) for v in result.as_numpy("OUTPUT0")[0]] == list(in0 + in1)
    assert [int(v) for v in result.as_numpy("OUTPUT1")[0]] == list(in0 - in1)

    def identity(array, binary):
        inputs = [httpclient.InferInput("INPUT0", array.shape, "BYTES")]
        inputs[0].set_data_from_numpy(array, binary_data=binary)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
        got = http_client.infer(model_name="simple_identity", inputs=inputs, outputs=outputs).as_numpy("OUTPUT0")
        if array.dtype == np.object_:
            if not binary:  # JSON answers strings; the example encodes them back
                got = np.array([bytes(str(x), encoding="utf-8") for x in got.flatten()], dtype=object).reshape(1, 16)
            assert np.array_equal(array, got)
        else:
            assert np.array_equal(array, np.char.encode(got.astype(str)))

    null_chars = np.array(["he\x00llo".encode("utf-8") for _ in range(16)], dtype=np.object_).reshape(1, 16)
    identity(null_chars, True)
    identity(null_chars, False)
    raw_bytes = np.array([b"\x00\x01\x02\x03" for _ in range(16)], dtype=np.bytes_).reshape(1, 16)
    identity(raw_bytes, True)
    identity(raw_bytes, False)


def test_simple_http_sequence_sync_infer_client(http_client):
    """Sequences are refused clearly: no model here keeps state between requests."""
    value = np.full((1, 1), 11, dtype=np.int32)
    inputs = [httpclient.InferInput("INPUT", value.shape, "INT32")]
    inputs[0].set_data_from_numpy(value)
    with pytest.raises(InferenceServerException) as e:
        http_client.infer(model_name="simple_sequence", inputs=inputs,
                          outputs=[httpclient.InferRequestedOutput("OUTPUT")],
                          sequence_id=1000, sequence_start=True, sequence_end=False)
    assert e.value.status() == "400"
    assert e.value.message() == ("model simple_sequence does not support sequences (sequence_id 1000 given): "
                                 "it serves stateless requests only")


def test_reuse_infer_objects_client_http(http_client):
    from .test_grpc_examples import reuse_infer_objects

    reuse_infer_objects(http_client, httpclient, "http")


@pytest.mark.skip(reason="simple_http_cudashm_client needs a CUDA device and cuda-python; this server has no CUDA "
                         "memory to share and refuses CUDA registrations (tested in test_tritonclient.py)")
def test_simple_http_cudashm_client():
    pass
