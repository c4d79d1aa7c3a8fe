"""A real core serving the models of Triton's example clients (triton-inference-server/client,
``src/python/examples``), rebuilt as ONNX by ``tests/onnx_models.py``, over HTTP and gRPC.

The tests beside this file make the examples' own calls with the stock ``tritonclient`` and check
what the examples check, one test per example (named after it). They are written here rather than
run from a checkout because tests fetch nothing; where a call or a check had to differ, the test
says why, and docs/triton-compatibility.md lists it.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto

from ... import onnx_models
from ...conftest import CoreProcess

pytest.importorskip("tritonclient.http", reason="tritonclient[http,grpc] is in the test extra")
pytest.importorskip("tritonclient.grpc", reason="tritonclient[http,grpc] is in the test extra")


@pytest.fixture(scope="session")
def example_models(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("triton-examples")
    return {
        "simple": onnx_models.triton_simple(d / "simple.onnx"),
        "simple_int8": onnx_models.triton_simple(d / "simple_int8.onnx", TensorProto.INT8),
        "simple_string": onnx_models.triton_simple_string(d / "simple_string.onnx"),
        "simple_identity": onnx_models.triton_simple_identity(d / "simple_identity.onnx"),
        "simple_sequence": onnx_models.triton_simple_sequence(d / "simple_sequence.onnx"),
    }


def start_core(data_dir, models: dict, extra: int = 0) -> CoreProcess:
    """A core with the example models registered under their Triton names, plus ``extra`` more
    copies of "simple" (the model-control examples count the repository's models)."""
    core = CoreProcess(data_dir, grpc=True).start()
    try:
        for name, path in [*models.items(), *((f"simple_copy_{i}", models["simple"]) for i in range(extra))]:
            status, _, body = core.call("POST", "/v1/models/register", {"model_id": name, "path": str(path)})
            assert status == 200, body
    except BaseException:
        core.stop()
        raise
    return core


@pytest.fixture(scope="module")
def core(example_models, tmp_path_factory):
    core = start_core(tmp_path_factory.mktemp("examples-core") / "data", example_models)
    yield core
    assert core.alive()
    core.stop()


@pytest.fixture
def http_client(core):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(core.url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture
def grpc_client(core):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(core.grpc_url)
    yield client
    client.close()


# the examples' data: INPUT0 = 0..15, INPUT1 = -1 (HTTP examples) or 1 (gRPC examples)
def simple_data(other: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(16, dtype=np.int32).reshape(1, 16), np.full((1, 16), other, dtype=np.int32)


def check_sum_and_difference(result, input0, input1) -> None:
    """What every "simple" example checks: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    out0, out1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert out0.dtype == input0.dtype and out0.shape == input0.shape
    assert (out0 == input0 + input1).all(), "incorrect sum"
    assert (out1 == input0 - input1).all(), "incorrect difference"
