"""The KServe packaging (deploy/kserve): the manifests against KServe's own CRD schemas (vendored
from kserve/kserve, deploy/kserve/schema), and the core started exactly as the container would
start it (the Dockerfile's ENTRYPOINT and ENV, the ServingRuntime's args, KServe's ``{{.Name}}``
filled in) against a directory laid out like ``/mnt/models``. Docker cannot build or run here
and no Kubernetes runs here: this is what can be checked of the packaging on this machine."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import onnxruntime as ort
import pytest
import yaml

from tests.conftest import http
from validation.core_proc import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "deploy" / "kserve"
SCHEMAS = json.loads((KSERVE / "schema" / "kserve-crds.json").read_text())["schemas"]
MANIFESTS = ("servingruntime.yaml", "clusterservingruntime.yaml", "inferenceservice.yaml")


def strict(schema):
    """The CRD schema with unknown fields refused, as ``kubectl apply --validate=strict`` does:
    every object that lists its properties (and does not keep unknown fields) allows no others."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def problems(doc: dict) -> list[str]:
    kind = doc.get("kind")
    if kind not in SCHEMAS:
        return [f"kind {kind!r} is not one of {sorted(SCHEMAS)}"]
    if doc.get("apiVersion") != SCHEMAS[kind]["apiVersion"]:
        return [f"apiVersion {doc.get('apiVersion')!r}: KServe serves {kind} as {SCHEMAS[kind]['apiVersion']}"]
    validator = jsonschema.Draft7Validator(strict(SCHEMAS[kind]["openAPIV3Schema"]))
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)]


def load(name: str) -> dict:
    return yaml.safe_load((KSERVE / name).read_text())


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_follow_the_kserve_crd_schemas(name):
    assert problems(load(name)) == []


def test_the_schemas_catch_mistakes():
    runtime = load("servingruntime.yaml")
    typo = copy.deepcopy(runtime)
    typo["spec"]["containers"][0]["agrs"] = typo["spec"]["containers"][0].pop("args")
    assert any("agrs" in p for p in problems(typo))
    wrong_type = copy.deepcopy(runtime)
    wrong_type["spec"]["supportedModelFormats"][0]["priority"] = "high"
    assert any("priority" in p for p in problems(wrong_type))
    no_containers = copy.deepcopy(runtime)
    del no_containers["spec"]["containers"]
    assert any("containers" in p for p in problems(no_containers))
    isvc = load("inferenceservice.yaml")
    isvc["spec"]["predictor"]["model"]["modelFormat"].pop("name")
    assert any("name" in p for p in problems(isvc))
    assert problems({**runtime, "apiVersion": "serving.kserve.io/v1beta1"})


def test_a_v2_runtime_kserve_can_select_for_the_example():
    runtime, cluster, isvc = (load(n) for n in MANIFESTS)
    assert runtime["spec"] == cluster["spec"] and runtime["metadata"] == cluster["metadata"]
    spec = runtime["spec"]
    assert spec["protocolVersions"] == ["v2"]
    [container] = spec["containers"]
    assert container["name"] == "kserve-container"
    assert [p["containerPort"] for p in container["ports"]] == [8080] and "--port=8080" in container["args"]
    assert "--register={{.Name}}=/mnt/models" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    formats = {f["name"] for f in spec["supportedModelFormats"]}
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"] and model["modelFormat"]["name"] in formats
    assert model["protocolVersion"] == "v2"


def _dockerfile() -> tuple[list[str], dict[str, str], int]:
    """The final stage's ENTRYPOINT (exec form), ENV and USER."""
    text = (KSERVE / "Dockerfile").read_text().replace("\\\n", " ")
    final = text.split("\nFROM ")[-1]
    [entry] = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", final, re.M)
    env = {}
    for line in re.findall(r"^ENV\s+(.+)$", final, re.M):
        env.update(dict(part.split("=", 1) for part in shlex.split(line)))
    [user] = re.findall(r"^USER\s+(\d+)\s*$", final, re.M)
    return json.loads(entry), env, int(user)


def test_the_image_runs_the_core_as_kserve_expects():
    entrypoint, env, user = _dockerfile()
    assert entrypoint == ["python", "-m", "mlos_core"]
    assert user == load("servingruntime.yaml")["spec"]["containers"][0]["securityContext"]["runAsUser"]
    assert env["MLOS_DATA_DIR"].startswith("/tmp/")  # writable by a non-root user in a pod


def test_the_container_command_serves_a_mnt_models_directory(tmp_path, silero):
    """The argv the pod would run, with only what a test must change: the interpreter (this
    virtualenv's), the paths /mnt/models and /tmp/mlos (to temporary directories), the port (a
    free one) and the address (loopback, never 0.0.0.0 in tests)."""
    entrypoint, image_env, _ = _dockerfile()
    [container] = load("servingruntime.yaml")["spec"]["containers"]
    isvc = load("inferenceservice.yaml")
    name = isvc["metadata"]["name"]
    mnt = tmp_path / "mnt" / "models"  # what the storage initializer leaves: the model's files
    mnt.mkdir(parents=True)
    (mnt / "silero_vad.onnx").write_bytes(silero.read_bytes())
    port = free_port()
    scratch = tmp_path / "scratch"

    def localize(arg: str) -> str:
        arg = arg.replace("{{.Name}}", name).replace("/mnt/models", str(mnt)).replace("/tmp/mlos", str(scratch))
        return {"--port=8080": f"--port={port}", "--host=0.0.0.0": "--host=127.0.0.1"}.get(arg, arg)

    argv = [sys.executable if entrypoint[0] == "python" else entrypoint[0], *entrypoint[1:],
            *map(localize, container["args"])]
    env = {**os.environ, **{k: localize(v) for k, v in image_env.items()}}
    env.update({e["name"]: localize(e["value"]) for e in container.get("env", [])})
    log = open(tmp_path / "pod.log", "wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        ready = container["readinessProbe"]["httpGet"]["path"]
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "pod.log").read_text()[-2000:]
            try:
                if http("GET", url + ready, timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the container's readiness probe never passed"
            time.sleep(0.2)
        assert http("GET", url + container["livenessProbe"]["httpGet"]["path"])[0] == 200
        status, _, meta = http("GET", f"{url}/v2/models/{name}")
        assert status == 200 and meta["name"] == name
        assert http("GET", f"{url}/v2/models/{name}/ready")[0] == 200

        body = json.loads((ROOT / "examples" / "vad-request-v2.json").read_text())
        status, _, answer = http("POST", f"{url}/v2/models/{name}/infer", body)
        assert status == 200, answer
        feeds = {}
        for t in body["inputs"]:
            dtype = {"FP32": np.float32, "INT64": np.int64}[t["datatype"]]
            feeds[t["name"]] = np.array(t["data"], dtype=dtype).reshape(t["shape"])
        session = ort.InferenceSession(str(silero), providers=["CPUExecutionProvider"])
        expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
        for out in answer["outputs"]:
            np.testing.assert_allclose(np.array(out["data"]).reshape(out["shape"]), expected[out["name"]],
                                       rtol=1e-5, atol=1e-6)
        _, _, metrics = http("GET", url + load("servingruntime.yaml")["spec"]["annotations"]["prometheus.kserve.io/path"])
        assert f'mlos_inference_request_success_total{{model="{name}"}} 1.0' in metrics
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0  # SIGTERM (what the kubelet sends) is a clean stop


def test_the_container_command_exits_when_the_model_cannot_load(tmp_path):
    """A pod whose model is missing stops with the reason in its log (CrashLoopBackOff shows it)."""
    entrypoint, image_env, _ = _dockerfile()
    [container] = load("servingruntime.yaml")["spec"]["containers"]
    empty = tmp_path / "mnt" / "models"
    empty.mkdir(parents=True)
    args = [a.replace("{{.Name}}", "broken").replace("/mnt/models", str(empty)).replace("/tmp/mlos", str(tmp_path))
            for a in container["args"]]
    args = [f"--port={free_port()}" if a == "--port=8080" else "--host=127.0.0.1" if a == "--host=0.0.0.0" else a
            for a in args]
    env = {**os.environ, **{k: v.replace("/tmp/mlos", str(tmp_path)) for k, v in image_env.items()}}
    done = subprocess.run([sys.executable, *entrypoint[1:], *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 1
    assert "cannot start" in done.stderr and str(empty) in done.stderr, done.stderr[-1500:]
