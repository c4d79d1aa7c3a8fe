"""The Open Inference Protocol over gRPC against HTTP (binary and JSON), on mlos-core, and against
Triton's own gRPC endpoint (nvidia-pytriton's tritonserver), in one interleaved run.

Models: the ResNet-50 of ``make bench-oip`` (one 1x3x224x224 FP32 image, 1 and 4 clients; a batch
of 32, 1 client) and a small tensor (the 1x64 FP32 MatMul of the core benchmark, 1 and 4 clients),
where a protocol's own cost shows instead of the model's. Clients: ``benchmarks.loadgen`` (HTTP,
raw sockets) and ``benchmarks.grpc_loadgen`` (grpc.aio, pre-serialised requests), each in its own
process; every (server, path) point in turn, round after round. A null system
(``benchmarks/peers/null_server.py``: aiohttp and grpc.aio answering a fixed answer) measures the
floor of each transport in Python on the small tensor.

Writes ``benchmarks/results/grpc.json``; ``python -m benchmarks.report_grpc`` prints the tables.
Environment: MLOS_BENCH_GRPC_ROUNDS (default 2), MLOS_BENCH_GRPC_DURATION (seconds per point,
default 4; the batch of 32 gets 2.5x).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import orjson
import pytest

from . import oip_servers
from .conftest import ROOT
from .test_oip import HDR
from .vision_model import resnet50_path

ROUNDS = int(os.environ.get("MLOS_BENCH_GRPC_ROUNDS", "2"))
DURATION = float(os.environ.get("MLOS_BENCH_GRPC_DURATION", "4"))
# (model, rows per request, concurrent clients)
POINTS = [("resnet50", 1, 1), ("resnet50", 1, 4), ("resnet50", 32, 1), ("matmul", 1, 1), ("matmul", 1, 4)]
RESULTS = ROOT / "benchmarks" / "results" / "grpc.json"
_IO = {"resnet50": ("pixel_values", "logits", 1000), "matmul": ("x", "y", 64)}


def grpc_request(model_name: str, version: str, x: np.ndarray, input_name: str) -> bytes:
    from mlos_core.grpc.protocol import pb

    request = pb.ModelInferRequest(model_name=model_name, model_version=version)
    request.inputs.add(name=input_name, datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    return request.SerializeToString()


def grpc_answer(port: int, body: bytes, out_cols: int) -> np.ndarray:
    import grpc

    from mlos_core.grpc.protocol import pb

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(body, timeout=300)
    response = pb.ModelInferResponse.FromString(raw)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(-1, out_cols)


def _http_answer(status: int, headers: dict, body: bytes, cols: int) -> np.ndarray:
    assert status == 200, body[:300]
    n = headers.get(HDR)
    if n is None:
        return np.asarray(json.loads(body)["outputs"][0]["data"], np.float32).reshape(-1, cols)
    return np.frombuffer(body[int(n):], np.float32).reshape(-1, cols)


def _http_body(kind: str, model: str, x: np.ndarray) -> tuple[bytes, list[str]]:
    name = _IO[model][0]
    if kind == "json":
        doc = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1)}]}
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), []
    raw = x.tobytes()
    head = orjson.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}})
    return head + raw, [f"{HDR}: {len(head)}"]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    import onnxruntime as ort

    from tests import onnx_models

    d = tmp_path_factory.mktemp("grpc")
    paths = {"resnet50": resnet50_path(), "matmul": onnx_models.matmul(d / "matmul.onnx", width=64)[0]}
    rng = np.random.default_rng(9)
    inputs = {("resnet50", 1): rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
              ("resnet50", 32): rng.standard_normal((32, 3, 224, 224)).astype(np.float32),
              ("matmul", 1): rng.standard_normal((1, 64)).astype(np.float32)}
    expected = {}
    for (model, rows), x in inputs.items():
        session = ort.InferenceSession(str(paths[model]), providers=["CPUExecutionProvider"])
        expected[(model, rows)] = session.run(None, {_IO[model][0]: x})[0]
    peers, skipped = [], {}
    for name, start in (("mlos", lambda: oip_servers.start_mlos(paths["resnet50"], d / "mlos", paths["matmul"], grpc=True)),
                        ("triton", lambda: oip_servers.start_triton(paths["resnet50"], d / "triton", paths["matmul"])),
                        ("null", lambda: oip_servers.start_null(d / "null"))):
        try:
            peer = start()
        except Exception as e:  # a peer that cannot start is reported, not fatal
            skipped[name] = f"did not start: {e}"[:500]
            continue
        if isinstance(peer, str):
            skipped[name] = peer
        else:
            peers.append(peer)
    cases = []
    try:
        for peer in peers:
            for (model, rows), x in inputs.items():
                if peer.name == "null" and (model, rows) != ("matmul", 1):
                    continue  # the null system answers the small tensor only
                mlos = peer.name == "mlos"
                model_name = ("bench/resnet50" if model == "resnet50" else "bench/matmul") if mlos else model
                http_model = f"{model_name.replace('/', '%2F')}%401" if mlos else model
                kinds = ["json", "binary"] if mlos else ["binary"]
                for kind in kinds:
                    body, headers = _http_body(kind, model, x)
                    path = f"/v2/models/{http_model}/infer"
                    status, hdrs, answer = peer.call("POST", path, body, dict(h.split(": ", 1) for h in headers))
                    got = _http_answer(status, hdrs, answer, _IO[model][2])
                    if peer.name == "null":
                        assert got.shape == (1, 64)  # a fixed answer: nothing to compare
                    else:
                        np.testing.assert_allclose(got.reshape(expected[(model, rows)].shape), expected[(model, rows)],
                                                   rtol=1e-3, atol=1e-3)
                    f = d / f"{peer.name}-{model}-{kind}-{rows}.body"
                    f.write_bytes(body)
                    cases.append({"peer": peer, "model": model, "rows": rows, "path": kind, "body_file": f,
                                  "headers": headers, "url": path})
                if peer.grpc_port is None:
                    skipped[f"{peer.name} grpc"] = "no gRPC endpoint"
                    continue
                body = grpc_request(model_name, "1" if mlos else "", x, _IO[model][0])
                got = grpc_answer(peer.grpc_port, body, _IO[model][2])
                if peer.name != "null":
                    np.testing.assert_allclose(got.reshape(expected[(model, rows)].shape), expected[(model, rows)],
                                               rtol=1e-3, atol=1e-3)
                f = d / f"{peer.name}-{model}-grpc-{rows}.pb"
                f.write_bytes(body)
                cases.append({"peer": peer, "model": model, "rows": rows, "path": "grpc", "body_file": f})
        yield {"peers": peers, "cases": cases, "skipped": skipped}
    finally:
        for p in peers:
            p.stop()


def _load(case: dict, concurrency: int) -> dict:
    peer = case["peer"]
    duration = DURATION * (2.5 if case["rows"] > 1 else 1)
    warmup = 0.0 if case["rows"] > 1 else 1.0
    if case["path"] == "grpc":
        cmd = [sys.executable, "-m", "benchmarks.grpc_loadgen", "--port", str(peer.grpc_port)]
    else:
        # a 32-image JSON body is 55 MB: on a busy machine one request can outlast the default drain
        cmd = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(peer.port), "--path", case["url"],
               "--drain", "300"]
        for h in case["headers"]:
            cmd += ["--header", h]
    cmd += ["--body-file", str(case["body_file"]), "--concurrency", str(concurrency), "--duration", str(duration),
            "--warmup", str(warmup)]
    cpu0 = peer.cpu_seconds()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=duration + warmup + 600, check=False)
    cpu1 = peer.cpu_seconds()
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    result = json.loads(out.stdout)
    result["server_cpu_s"] = round(cpu1 - cpu0, 3)
    result["warmup_s"] = warmup
    return result


def test_grpc_against_http_interleaved(benchmark, bench):
    rows_out = []

    def interleaved():
        for rnd in range(ROUNDS):
            for model, rows, concurrency in POINTS:
                for case in (c for c in bench["cases"] if c["model"] == model and c["rows"] == rows):
                    r = _load(case, concurrency)
                    assert r["errors"] == 0, f"{case['peer'].name} {case['path']}: {r['error_sample']}"
                    rows_out.append({"server": case["peer"].name, "model": model, "path": case["path"], "rows": rows,
                                     "concurrency": concurrency, "round": rnd, **r,
                                     "items_per_s": r["throughput_rps"] * rows})

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit,
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "load_avg_at_end": os.getloadavg()},
        "versions": oip_servers.versions(), "core_args": oip_servers.CORE_ARGS, "rounds": ROUNDS, "duration_s": DURATION,
        "skipped": bench["skipped"], "points": rows_out,
    }
    benchmark.extra_info["grpc"] = doc
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1))
    assert rows_out
