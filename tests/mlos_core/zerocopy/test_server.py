"""The local zero-copy path end to end: a real core subprocess serving requests that a client in
this process puts into shared buffers, on the userspace backend everywhere and on the kernel one
where /dev/mlos-ml exists (inside the guest of `make kmod-test`)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from mlos_core.zerocopy.client import LocalClient, LocalInferenceError


@pytest.fixture(params=["userspace", "kernel"])
def core(request, core_process, tmp_path, models):
    sock = str(tmp_path / "shim.sock")
    if request.param == "kernel":
        if not os.path.exists("/dev/mlos-ml"):
            pytest.skip("/dev/mlos-ml does not exist (kernel module not loaded): runs in `make kmod-test`")
        env = {"MLOS_ZEROCOPY": "1", "MLOS_KERNEL": "on"}
    else:
        env = {"MLOS_ZEROCOPY": "1", "MLOS_SHIM_SOCKET": sock, "MLOS_KERNEL": "off"}
    proc = core_process(env=env)
    status, _, body = proc.call("POST", "/v1/models/register", {"model_id": "zc/matmul@1", "path": str(models.matmul)})
    assert status == 200, body
    proc.socket, proc.backend = sock, request.param
    return proc


def _client(core) -> LocalClient:
    from kernel_shim import open_device
    return LocalClient(open_device("on") if core.backend == "kernel" else open_device("off", socket_path=core.socket))


def test_inference_through_shared_buffers(core, models):
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    with _client(core) as client:
        assert client.device.backend == core.backend
        y = client.infer("zc/matmul@1", {"x": x})["y"]
        np.testing.assert_allclose(y, x @ models.matmul_w, rtol=1e-5, atol=1e-5)
        views = client.infer("zc/matmul@1", {"x": x[:1]}, copy=False)
        assert not views["y"].flags.owndata  # a view of the shared output buffer
        np.testing.assert_allclose(views["y"], x[:1] @ models.matmul_w, rtol=1e-5, atol=1e-5)
    status = core.call("GET", "/status")[2]
    assert status["kernel"]["mode"] == core.backend and status["kernel"]["served"] == 2
    metrics = core.call("GET", "/metrics")[2]
    assert f'mlos_zerocopy_backend{{backend="{core.backend}"}} 1.0' in metrics
    assert 'mlos_inference_request_success_total{model="zc/matmul@1"} 2.0' in metrics


def test_errors_come_back_with_their_reason(core):
    with _client(core) as client:
        with pytest.raises(LocalInferenceError, match="no registered model"):
            client.infer("nobody/nothing@1", {"x": np.zeros((1, 64), np.float32)})
        with pytest.raises(LocalInferenceError, match=r"expects shape \[-1, 64\]"):
            client.infer("zc/matmul@1", {"x": np.zeros((1, 3), np.float32)})
        ok = client.infer("zc/matmul@1", {"x": np.ones((1, 64), np.float32)})  # still serving
        assert ok["y"].shape == (1, 64)
    with _client(core) as fresh:  # an output buffer too small for the answer
        with pytest.raises(LocalInferenceError, match="need .* bytes; the buffer holds 4096"):
            fresh.infer("zc/matmul@1", {"x": np.zeros((32, 64), np.float32)}, output_bytes=4096)
    assert core.alive()


def test_health_names_the_backend(core):
    kernel = core.call("GET", "/health")[2]["kernel"]
    assert kernel["mode"] == core.backend
    assert f"MLOS_KERNEL={'on' if core.backend == 'kernel' else 'off'}" in kernel["reason"]
    assert kernel["available"] is os.path.exists("/dev/mlos-ml")


def test_scalar_inputs_keep_their_shape(core, silero):
    """Silero's sample rate is a 0-d tensor: it must reach the core as shape [], not [1]."""
    assert core.call("POST", "/v1/models/register", {"model_id": "zc/vad@6", "path": str(silero)})[0] == 200
    feed = {"input": np.zeros((1, 512), np.float32), "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(16000, np.int64)}
    with _client(core) as client:
        out = client.infer("zc/vad@6", feed)
    assert out["output"].shape == (1, 1) and 0.0 <= float(out["output"][0, 0]) <= 1.0
    assert out["stateN"].shape == (2, 1, 128)
