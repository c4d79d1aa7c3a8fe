"""Triton's gRPC example clients, their calls and checks, against a real core (see conftest.py)."""
from __future__ import annotations

import asyncio
import queue
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from .conftest import check_sum_and_difference, simple_data, start_core
from .test_http_examples import _regions, string_example_data

SEQUENCE_REFUSED = "model simple_sequence does not support sequences (sequence_id 1000 given): it serves stateless requests only"


def _simple_inputs(module, input0, input1):
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0)
    inputs[1].set_data_from_numpy(input1)
    return inputs, [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_grpc_infer_client(grpc_client, compression):
    input0, input1 = simple_data(1)
    inputs, outputs = _simple_inputs(grpcclient, input0, input1)
    result = grpc_client.infer(model_name="simple", inputs=inputs, outputs=outputs, client_timeout=None,
                               headers={"test": "1"}, compression_algorithm=compression)
    assert len(grpc_client.get_inference_statistics(model_name="simple").model_stats) == 1
    check_sum_and_difference(result, input0, input1)
    result = grpc_client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=compression)
    check_sum_and_difference(result, input0, input1)


def test_simple_grpc_aio_infer_client(core):
    input0, input1 = simple_data(1)

    async def main():
        async with aiogrpcclient.InferenceServerClient(core.grpc_url) as client:
            assert await client.is_server_live() and await client.is_server_ready()
            assert await client.is_model_ready("simple")
            assert (await client.get_model_metadata("simple")).name == "simple"
            assert (await client.get_model_config("simple")).config.name == "simple"
            assert len((await client.get_inference_statistics("simple")).model_stats) == 1
            inputs, outputs = _simple_inputs(aiogrpcclient, input0, input1)
            check_sum_and_difference(await client.infer("simple", inputs, outputs=outputs), input0, input1)

            async def requests():
                for i in range(4):
                    yield {"model_name": "simple", "inputs": inputs, "outputs": outputs, "request_id": str(i)}

            ids = []
            async for result, error in client.stream_infer(inputs_iterator=requests()):
                assert error is None, error
                check_sum_and_difference(result, input0, input1)
                ids.append(result.get_response().id)
            assert sorted(ids) == ["0", "1", "2", "3"]

    asyncio.run(main())


def test_simple_grpc_async_infer_client(grpc_client):
    input0, input1 = simple_data(1)
    inputs, outputs = _simple_inputs(grpcclient, input0, input1)
    answers = []
    grpc_client.async_infer(model_name="simple", inputs=inputs, callback=lambda result, error: answers.append(
        error or result), outputs=outputs, client_timeout=None)
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(answers) == 1 and not isinstance(answers[0], InferenceServerException), answers
    check_sum_and_difference(answers[0], input0, input1)


@pytest.mark.parametrize("how", ["custom_args", "keepalive"])
def test_simple_grpc_custom_args_and_keepalive_clients(core, how):
    if how == "custom_args":
        client = grpcclient.InferenceServerClient(core.grpc_url, channel_args=[
            ("grpc.max_send_message_length", 1024 * 1024), ("grpc.max_receive_message_length", 1024 * 1024),
            ("grpc.keepalive_time_ms", 2**31 - 1), ("grpc.keepalive_timeout_ms", 20000),
            ("grpc.keepalive_permit_without_calls", False), ("grpc.http2.max_pings_without_data", 2),
            ("grpc.dns_enable_srv_queries", 1)])
    else:
        client = grpcclient.InferenceServerClient(core.grpc_url, keepalive_options=grpcclient.KeepAliveOptions(
            keepalive_time_ms=2**31 - 1, keepalive_timeout_ms=20000, keepalive_permit_without_calls=False,
            http2_max_pings_without_data=2))
    try:
        input0, input1 = simple_data(1)
        inputs, outputs = _simple_inputs(grpcclient, input0, input1)
        check_sum_and_difference(client.infer(model_name="simple", inputs=inputs, outputs=outputs,
                                              headers={"test": "1"}), input0, input1)
    finally:
        client.close()


def test_simple_grpc_health_metadata(grpc_client):
    assert grpc_client.is_server_live(headers={"test": "1", "dummy": "2"})
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("simple")
    assert grpc_client.get_server_metadata().name == "mlos-core"  # the tolerated difference: not "triton"
    assert grpc_client.get_model_metadata("simple", headers={"test": "1", "dummy": "2"}).name == "simple"
    with pytest.raises(InferenceServerException) as e:
        grpc_client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in e.value.message()
    assert grpc_client.get_model_config("simple").config.name == "simple"


def test_simple_grpc_model_control(example_models, tmp_path):
    # the example expects a repository of 8 models: the 5 built here and 3 copies of "simple"
    core = start_core(tmp_path / "data", example_models, extra=3)
    client = grpcclient.InferenceServerClient(core.grpc_url)
    try:
        assert len(client.get_model_repository_index().models) == 8
        client.load_model("simple")
        assert client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as e:
            client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
        assert "failed to load" in e.value.message()
        client.load_model("simple", config='{"max_batch_size":"16"}')
        assert client.get_model_config("simple").config.max_batch_size == 16
        client.unload_model("simple")
        assert not client.is_model_ready("simple")
        # Difference: the example expects Triton's INTERNAL "failed to poll from model repository"
        # for a load carrying files (Triton writes them into a model repository and fails on the
        # 256-character name); this server does not take model files in a load request at all
        with pytest.raises(InferenceServerException) as e:
            client.load_model("simple", config="{}", files={"file:" + "A" * 256: b"a"})
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "failed to load 'simple': model files sent with the load request" in e.value.message()
        assert client.is_server_live()
        with pytest.raises(InferenceServerException) as e:
            client.load_model("wrong_model_name")
        assert "failed to load" in e.value.message()
    finally:
        client.close()
        core.stop()


def test_simple_grpc_shm_client(grpc_client):
    grpc_client.unregister_system_shared_memory()
    grpc_client.unregister_cuda_shared_memory()
    input0 = np.arange(16, dtype=np.int32)
    input1 = np.ones(16, dtype=np.int32)
    size = input0.size * input0.itemsize
    names = _regions("output_data", "input_data")
    (out_name, out_key), (in_name, in_key) = names["output_data"], names["input_data"]
    out_handle = shm.create_shared_memory_region(out_name, out_key, size * 2)
    in_handle = shm.create_shared_memory_region(in_name, in_key, size * 2)
    try:
        grpc_client.register_system_shared_memory(out_name, out_key, size * 2)
        shm.set_shared_memory_region(in_handle, [input0])
        shm.set_shared_memory_region(in_handle, [input1], offset=size)
        grpc_client.register_system_shared_memory(in_name, in_key, size * 2)
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_shared_memory(in_name, size)
        inputs[1].set_shared_memory(in_name, size, offset=size)
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(out_name, size)
        outputs[1].set_shared_memory(out_name, size, offset=size)
        result = grpc_client.infer(model_name="simple", inputs=inputs, outputs=outputs)
        out0, out1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
        got0 = shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(out0.datatype), out0.shape)
        got1 = shm.get_contents_as_numpy(out_handle, utils.triton_to_np_dtype(out1.datatype), out1.shape, offset=size)
        assert (got0[0] == input0 + input1).all() and (got1[0] == input0 - input1).all()
        grpc_client.unregister_system_shared_memory()
    finally:
        shm.destroy_shared_memory_region(in_handle)
        shm.destroy_shared_memory_region(out_handle)
    assert len(grpc_client.get_system_shared_memory_status().regions) == 0


def test_simple_grpc_shm_string_client(grpc_client):
    grpc_client.unregister_system_shared_memory()
    _, _, input0, input1, expected_sum, expected_diff = string_example_data()
    ser = {k: utils.serialize_byte_tensor(v) for k, v in
           (("in0", input0), ("in1", input1), ("sum", expected_sum), ("diff", expected_diff))}
    size = {k: utils.serialized_byte_size(v) for k, v in ser.items()}
    names = _regions("output0_data", "output1_data", "input0_data", "input1_data")
    handles = {n: shm.create_shared_memory_region(*names[n], size[k]) for n, k in
               (("output0_data", "sum"), ("output1_data", "diff"), ("input0_data", "in0"), ("input1_data", "in1"))}
    try:
        for n, k in (("output0_data", "sum"), ("output1_data", "diff")):
            grpc_client.register_system_shared_memory(*names[n], size[k])
        shm.set_shared_memory_region(handles["input0_data"], [ser["in0"]])
        shm.set_shared_memory_region(handles["input1_data"], [ser["in1"]])
        for n, k in (("input0_data", "in0"), ("input1_data", "in1")):
            grpc_client.register_system_shared_memory(*names[n], size[k])
        inputs = [grpcclient.InferInput("INPUT0", [1, 16], "BYTES"), grpcclient.InferInput("INPUT1", [1, 16], "BYTES")]
        inputs[0].set_shared_memory(names["input0_data"][0], size["in0"])
        inputs[1].set_shared_memory(names["input1_data"][0], size["in1"])
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(names["output0_data"][0], size["sum"])
        outputs[1].set_shared_memory(names["output1_data"][0], size["diff"])
        result = grpc_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
        out0, out1 = result.get_output("OUTPUT0"), result.get_output("OUTPUT1")
        got0 = shm.get_contents_as_numpy(handles["output0_data"], utils.triton_to_np_dtype(out0.datatype), out0.shape)
        got1 = shm.get_contents_as_numpy(handles["output1_data"], utils.triton_to_np_dtype(out1.datatype), out1.shape)
        assert list(got0[0]) == list(expected_sum) and list(got1[0]) == list(expected_diff)
        grpc_client.unregister_system_shared_memory()
    finally:
        for handle in handles.values():
            shm.destroy_shared_memory_region(handle)


def test_simple_grpc_string_infer_client(grpc_client):
    in0, in1, input0, input1, _, _ = string_example_data()
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "BYTES"), grpcclient.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_data_from_numpy(input0)
    inputs[1].set_data_from_numpy(input1)
    outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
    result = grpc_client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    assert [int(v) for v in result.as_numpy("OUTPUT0")[0]] == list(in0 + in1)
    assert [int(v) for v in result.as_numpy("OUTPUT1")[0]] == list(in0 - in1)

    def identity(array):
        inputs = [grpcclient.InferInput("INPUT0", array.shape, "BYTES")]
        inputs[0].set_data_from_numpy(array)
        got = grpc_client.infer(model_name="simple_identity", inputs=inputs,
                                outputs=[grpcclient.InferRequestedOutput("OUTPUT0")]).as_numpy("OUTPUT0")
        if array.dtype == np.object_:
            assert np.array_equal(array, got)
        else:
            assert np.array_equal(array, np.char.encode(got.astype(str)))

    identity(np.array(["he\x00llo".encode("utf-8") for _ in range(16)], dtype=np.object_).reshape(1, 16))
    identity(np.array([b"\x00\x01\x02\x03" for _ in range(16)], dtype=np.bytes_).reshape(1, 16))


def _sequence_inputs(module, value):
    data = np.full((1, 1), value, dtype=np.int32)
    inputs = [module.InferInput("INPUT", data.shape, "INT32")]
    inputs[0].set_data_from_numpy(data)
    return inputs, [module.InferRequestedOutput("OUTPUT")]


def test_simple_grpc_sequence_sync_infer_client(grpc_client):
    inputs, outputs = _sequence_inputs(grpcclient, 0)
    with pytest.raises(InferenceServerException) as e:
        grpc_client.infer(model_name="simple_sequence", inputs=inputs, outputs=outputs, sequence_id=1000,
                          sequence_start=True, sequence_end=False)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT" and e.value.message() == SEQUENCE_REFUSED


def test_simple_grpc_sequence_stream_infer_client(grpc_client):
    answers: queue.Queue = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for count, value in enumerate([0, 11, 7], 1):
            inputs, outputs = _sequence_inputs(grpcclient, value)
            grpc_client.async_stream_infer(model_name="simple_sequence", inputs=inputs, outputs=outputs,
                                           request_id=f"1000_{count}", sequence_id=1000,
                                           sequence_start=count == 1, sequence_end=count == 3)
        errors = [answers.get(timeout=30)[1] for _ in range(3)]
    finally:
        grpc_client.stop_stream()
    assert [e.message() for e in errors] == [SEQUENCE_REFUSED] * 3


def test_simple_grpc_aio_sequence_stream_infer_client(core):
    async def main():
        async with aiogrpcclient.InferenceServerClient(core.grpc_url) as client:
            async def requests():
                for count, value in enumerate([0, 11], 1):
                    inputs, outputs = _sequence_inputs(aiogrpcclient, value)
                    yield {"model_name": "simple_sequence", "inputs": inputs, "outputs": outputs,
                           "request_id": f"1000_{count}", "sequence_id": 1000, "sequence_start": count == 1,
                           "sequence_end": count == 2}

            return [error async for _, error in client.stream_infer(inputs_iterator=requests())]

    errors = asyncio.run(main())
    assert [e.message() for e in errors] == [SEQUENCE_REFUSED] * 2


def _explicit(core, model, datatype, field, values0, values1, version=""):
    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(core.grpc_url))
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, values in (("INPUT0", values0), ("INPUT1", values1)):
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[1, 16])
        getattr(tensor.contents, field)[:] = values
    request.outputs.add(name="OUTPUT0")
    request.outputs.add(name="OUTPUT1")
    return stub, request


@pytest.mark.parametrize("model,datatype,dtype", [("simple", "INT32", np.int32), ("simple_int8", "INT8", np.int8)])
def test_grpc_explicit_int_and_int8_content_clients(core, model, datatype, dtype):
    input0, input1 = list(range(16)), [1] * 16
    stub, request = _explicit(core, model, datatype, "int_contents", input0, input1)
    response = stub.ModelInfer(request)
    results = [np.resize(np.frombuffer(response.raw_output_contents[i], dtype=dtype), list(o.shape))
               for i, o in enumerate(response.outputs)]
    assert len(results) == 2
    assert results[0][0].tolist() == [a + b for a, b in zip(input0, input1)]
    assert results[1][0].tolist() == [a - b for a, b in zip(input0, input1)]
    if datatype == "INT8":
        # Difference: the example prints PASS only when Triton's "failed to get model version from
        # specified version string" comes back; versions here are any string (latest, Q4_K_M), so a
        # version that is not registered is an unknown model version
        request.model_version = "wrong_specification"
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request)
        assert e.value.details() == "Request for unknown model: 'simple_int8' version 'wrong_specification' is not found"


def test_grpc_explicit_byte_content_client(core):
    stub, request = _explicit(core, "simple_string", "BYTES", "bytes_contents",
                              [str(i).encode() for i in range(16)], [b"1"] * 16)
    response = stub.ModelInfer(request)
    results = [np.resize(utils.deserialize_bytes_tensor(response.raw_output_contents[i]), list(o.shape))
               for i, o in enumerate(response.outputs)]
    assert [int(v) for v in results[0][0]] == [i + 1 for i in range(16)]
    assert [int(v) for v in results[1][0]] == [i - 1 for i in range(16)]


def reuse_infer_objects(client, module, protocol):
    """reuse_infer_objects_client: the same InferInput/InferRequestedOutput objects switched
    between shared memory and in-band data, on either protocol."""
    client.unregister_system_shared_memory()
    client.unregister_cuda_shared_memory()
    input0 = np.arange(16, dtype=np.int32)
    input1 = np.ones(16, dtype=np.int32)
    size = input0.nbytes
    names = _regions("output0_data", "output1_data", "input0_data", "input1_data")
    handles = {n: shm.create_shared_memory_region(*names[n], size) for n in names}
    try:
        for n in names:
            client.register_system_shared_memory(*names[n], size)
        shm.set_shared_memory_region(handles["input0_data"], [input0])
        shm.set_shared_memory_region(handles["input1_data"], [input1])
        inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
        outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]

        def infer_and_validate(use_shared_memory, factor):
            first, second = input0, input1 * factor
            if use_shared_memory:
                inputs[0].set_shared_memory(names["input0_data"][0], size)
                inputs[1].set_shared_memory(names["input1_data"][0], size)
                outputs[0].set_shared_memory(names["output0_data"][0], size)
                outputs[1].set_shared_memory(names["output1_data"][0], size)
            else:
                inputs[0].set_data_from_numpy(np.expand_dims(first, axis=0))
                inputs[1].set_data_from_numpy(np.expand_dims(second, axis=0))
                outputs[0].unset_shared_memory()
                outputs[1].unset_shared_memory()
            result = client.infer(model_name="simple", inputs=inputs, outputs=outputs)
            got = []
            for i, name in enumerate(("OUTPUT0", "OUTPUT1")):
                out = result.get_output(name)
                assert out is not None
                if use_shared_memory:
                    datatype, shape = (out.datatype, out.shape) if protocol == "grpc" else (out["datatype"], out["shape"])
                    got.append(shm.get_contents_as_numpy(handles[f"output{i}_data"],
                                                         utils.triton_to_np_dtype(datatype), shape))
                else:
                    got.append(result.as_numpy(name))
            assert (got[0][0] == first + second).all() and (got[1][0] == first - second).all()

        for use_shared_memory, factor in ((True, 1), (False, 2), (True, 1)):
            infer_and_validate(use_shared_memory, factor)
        client.unregister_system_shared_memory()
    finally:
        for handle in handles.values():
            shm.destroy_shared_memory_region(handle)


def test_reuse_infer_objects_client_grpc(grpc_client):
    reuse_infer_objects(grpc_client, grpcclient, "grpc")


@pytest.mark.skip(reason="simple_grpc_cudashm_client needs a CUDA device and cuda-python; this server has no CUDA "
                         "memory to share and refuses CUDA registrations (tested in tests/mlos_core/grpc)")
def test_simple_grpc_cudashm_client():
    pass


@pytest.mark.skip(reason="simple_grpc_custom_repeat calls repeat_int32, a decoupled model (many answers to one "
                         "request); models here answer once per request, generation streams aside")
def test_simple_grpc_custom_repeat():
    pass
