"""Open Inference Protocol benchmark: JSON vs binary vs system shared memory, on a ResNet-50
(random weights, ONNX), for one 1x3x224x224 FP32 image and a 32-image batch, served by mlos-core,
by Triton (nvidia-pytriton's tritonserver, Python backend calling onnxruntime) and by MLServer
(a custom onnxruntime runtime), all measured in one run with one client (``benchmarks/loadgen.py``,
pre-encoded bodies) and interleaved: round after round, every (server, path) point in turn, so the
machine's noise falls on all of them alike.

Writes ``benchmarks/results/oip.json``; ``python -m benchmarks.report_oip`` prints the tables.
Environment: MLOS_BENCH_OIP_ROUNDS (default 2), MLOS_BENCH_OIP_DURATION (seconds per point for
one image, default 4; the batch gets 2.5x).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from multiprocessing import shared_memory

import numpy as np
import orjson
import pytest

from . import oip_servers
from .conftest import ROOT
from .vision_model import resnet50_path

ROUNDS = int(os.environ.get("MLOS_BENCH_OIP_ROUNDS", "2"))
DURATION = float(os.environ.get("MLOS_BENCH_OIP_DURATION", "4"))
POINTS = [(1, 1), (1, 4), (32, 1)]  # (images per request, concurrent clients)
PATHS = ("json", "binary", "shm")
HDR = "Inference-Header-Content-Length"
RESULTS = ROOT / "benchmarks" / "results" / "oip.json"


def _json_body(x: np.ndarray, binary_out: bool) -> dict:
    doc = {"inputs": [{"name": "pixel_values", "shape": list(x.shape), "datatype": "FP32", "data": x.reshape(-1)}]}
    if binary_out:
        doc["parameters"] = {"binary_data_output": True}
    return doc


def make_body(path: str, x: np.ndarray, regions: dict) -> tuple[bytes, list[str]]:
    if path == "json":
        return orjson.dumps(_json_body(x, False), option=orjson.OPT_SERIALIZE_NUMPY), []
    if path == "binary":
        raw = x.tobytes()
        doc = {"inputs": [{"name": "pixel_values", "shape": list(x.shape), "datatype": "FP32",
                           "parameters": {"binary_data_size": len(raw)}}],
               "parameters": {"binary_data_output": True}}
        head = orjson.dumps(doc)
        return head + raw, [f"{HDR}: {len(head)}"]
    inp, out = regions[x.shape[0]]
    doc = {"inputs": [{"name": "pixel_values", "shape": list(x.shape), "datatype": "FP32",
                       "parameters": {"shared_memory_region": inp, "shared_memory_byte_size": x.nbytes}}],
           "outputs": [{"name": "logits", "parameters": {"shared_memory_region": out,
                                                         "shared_memory_byte_size": x.shape[0] * 1000 * 4}}]}
    return orjson.dumps(doc), []


def read_answer(path: str, status: int, headers: dict, body: bytes, out_shm, rows: int) -> np.ndarray:
    assert status == 200, body[:300]
    if path == "shm":
        return np.frombuffer(out_shm.buf[: rows * 4000], np.float32).reshape(rows, 1000).copy()
    n = headers.get(HDR)
    if n is None:
        doc = json.loads(body)
        return np.asarray(doc["outputs"][0]["data"], np.float32).reshape(rows, 1000)
    return np.frombuffer(body[int(n):], np.float32).reshape(rows, 1000)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Servers up, shared memory made and registered, bodies written; torn down after."""
    import onnxruntime as ort

    model = resnet50_path()
    d = tmp_path_factory.mktemp("oip")
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    inputs = {b: rng.standard_normal((b, 3, 224, 224)).astype(np.float32) for b in {p[0] for p in POINTS}}
    expected = {b: ref.run(None, {"pixel_values": x})[0] for b, x in inputs.items()}
    shms, regions = [], {}
    for b, x in inputs.items():
        tag = uuid.uuid4().hex[:8]
        i = shared_memory.SharedMemory(name=f"oip-in-{b}-{tag}", create=True, size=x.nbytes)
        o = shared_memory.SharedMemory(name=f"oip-out-{b}-{tag}", create=True, size=b * 4000)
        np.frombuffer(i.buf, np.float32)[:] = x.reshape(-1)
        shms += [i, o]
        regions[b] = (f"in{b}", f"out{b}", i, o)
    peers, skipped = [], {}
    try:
        for start in (oip_servers.start_mlos, oip_servers.start_triton, oip_servers.start_mlserver):
            try:
                p = start(model, d / start.__name__)
            except Exception as e:  # a peer that cannot start is reported, not fatal
                skipped[start.__name__.removeprefix("start_")] = f"did not start: {e}"[:500]
                continue
            if isinstance(p, str):
                skipped[start.__name__.removeprefix("start_")] = p
            else:
                peers.append(p)
        cases, unsupported = [], {}
        for peer in peers:
            for b, (rin, rout, i, o) in regions.items():
                for name, shm in ((rin, i), (rout, o)):
                    try:
                        peer.call("POST", f"/v2/systemsharedmemory/region/{name}/register",
                                  json.dumps({"key": "/" + shm.name, "offset": 0, "byte_size": shm.size}).encode())
                    except Exception as e:
                        unsupported[f"{peer.name} shm"] = f"register: {e}"[:300]
            for path in PATHS:
                if f"{peer.name} {path}" in unsupported:
                    continue
                for b, x in inputs.items():
                    body, headers = make_body(path, x, {k: v[:2] for k, v in regions.items()})
                    f = d / f"{peer.name}-{path}-{b}.body"
                    f.write_bytes(body)
                    try:
                        status, hdrs, answer = peer.call("POST", peer.infer_path(), body,
                                                         dict(h.split(": ", 1) for h in headers))
                        got = read_answer(path, status, hdrs, answer, regions[b][3], b)
                    except Exception as e:
                        unsupported[f"{peer.name} {path}"] = f"{type(e).__name__}: {e}"[:300]
                        break
                    np.testing.assert_allclose(got, expected[b], rtol=1e-3, atol=1e-3)
                    cases.append({"peer": peer, "path": path, "batch": b, "body_file": f, "headers": headers})
        yield {"peers": peers, "cases": cases, "skipped": skipped, "unsupported": unsupported}
    finally:
        for p in peers:
            p.stop()
        for s in shms:
            s.close()
            s.unlink()


def _load(case: dict, concurrency: int) -> dict:
    peer = case["peer"]
    duration = DURATION * (2.5 if case["batch"] > 1 else 1)
    warmup = 1.0 if case["batch"] == 1 else 0.0
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(peer.port), "--path", peer.infer_path(),
           "--body-file", str(case["body_file"]), "--concurrency", str(concurrency),
           "--duration", str(duration), "--warmup", str(warmup)]
    for h in case["headers"]:
        cmd += ["--header", h]
    cpu0 = peer.cpu_seconds()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=duration + warmup + 600, check=False)
    cpu1 = peer.cpu_seconds()
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    result = json.loads(out.stdout)
    result["server_cpu_s"] = round(cpu1 - cpu0, 3)
    result["warmup_s"] = warmup
    return result


def test_oip_paths_interleaved(benchmark, bench):
    """Every (server, path) point, round after round, under pytest-benchmark (one pedantic round
    holding the whole interleaved run); raw figures in extra_info and benchmarks/results/oip.json."""
    rows = []

    def interleaved():
        for rnd in range(ROUNDS):
            for batch, concurrency in POINTS:
                for case in (c for c in bench["cases"] if c["batch"] == batch):
                    r = _load(case, concurrency)
                    assert r["errors"] == 0, f"{case['peer'].name} {case['path']}: {r['error_sample']}"
                    rows.append({"server": case["peer"].name, "path": case["path"], "batch": batch,
                                 "concurrency": concurrency, "round": rnd, **r,
                                 "images_per_s": r["throughput_rps"] * batch})

    benchmark.pedantic(interleaved, rounds=1, iterations=1)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": commit,
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "load_avg_at_end": os.getloadavg()},
        "versions": oip_servers.versions(), "core_args": oip_servers.CORE_ARGS,
        "rounds": ROUNDS, "duration_s": DURATION, "skipped": bench["skipped"], "unsupported": bench["unsupported"],
        "points": rows,
    }
    benchmark.extra_info["oip"] = doc
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1))
    assert rows
