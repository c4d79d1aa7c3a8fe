"""Fixtures of the core benchmark: the models, their request bodies, and the two servers.
The LLM benchmark (test_llm.py) reuses ``Server`` and ``launch_mlos`` for its own server.

Each server is a subprocess on a free loopback port (``--port 0``; the port is read from its
"serving on" line), with its own temp dirs, started once per session and stopped after.

Environment knobs (defaults are the configuration chosen for this 2-core machine):
  MLOS_BENCH_SERVER_ARGS  extra mlos-core flags
  MLOS_BENCH_DURATION     measured seconds per HTTP point (default 4)
  MLOS_BENCH_WARMUP       warm-up seconds per HTTP point (default 1)
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from validation.core_proc import model_root_args, stop_process

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_ARGS = "--max-batch-size 64 --max-batch-delay-us 200 --instances 2 --intra-op-threads 1"
SERVER_ARGS = shlex.split(os.environ.get("MLOS_BENCH_SERVER_ARGS", DEFAULT_SERVER_ARGS))
DURATION_S = float(os.environ.get("MLOS_BENCH_DURATION", "4"))
WARMUP_S = float(os.environ.get("MLOS_BENCH_WARMUP", "1"))


def server_flag(name: str, default: int) -> int:
    """The value of one integer flag in SERVER_ARGS (``--intra-op-threads 1`` or ``=1``)."""
    for i, a in enumerate(SERVER_ARGS):
        if a == name and i + 1 < len(SERVER_ARGS):
            return int(SERVER_ARGS[i + 1])
        if a.startswith(name + "="):
            return int(a.split("=", 1)[1])
    return default


@dataclass
class ModelCase:
    key: str  # "matmul" | "silero"
    model_id: str
    path: Path
    feed: dict  # name -> numpy array, for raw session.run
    body: bytes  # the v2 JSON request
    body_file: Path
    url_path: str = field(init=False)

    def __post_init__(self):
        self.url_path = f"/v2/models/{quote(self.model_id, safe='')}/infer"


def _v2_body(feed: dict) -> bytes:
    names = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}
    inputs = [
        {"name": k, "shape": list(v.shape), "datatype": names[v.dtype], "data": v.reshape(-1).tolist()}
        for k, v in feed.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def build_cases(d: Path) -> dict[str, ModelCase]:
    """The benchmark models in ``d`` (MatMul generated, Silero VAD from its wheel) with bodies."""
    from mlos_core.demo import silero_vad_path
    from tests import onnx_models

    rng = np.random.default_rng(1)
    cases = {}
    mpath, _ = onnx_models.matmul(d / "matmul.onnx", width=64)
    feed = {"x": rng.standard_normal((1, 64)).astype(np.float32)}
    body = _v2_body(feed)
    (d / "matmul.json").write_bytes(body)
    cases["matmul"] = ModelCase("matmul", "bench/matmul@1", mpath, feed, body, d / "matmul.json")

    spath = silero_vad_path()
    if spath is not None:
        feed = {
            "input": (rng.standard_normal((1, 512)) * 0.1).astype(np.float32),
            "state": np.zeros((2, 1, 128), dtype=np.float32),
            "sr": np.array(16000, dtype=np.int64),
        }
        body = _v2_body(feed)
        (d / "silero.json").write_bytes(body)
        cases["silero"] = ModelCase("silero", "bench/silero-vad@6", spath, feed, body, d / "silero.json")
    return cases


@pytest.fixture(scope="session")
def model_cases(tmp_path_factory) -> dict[str, ModelCase]:
    return build_cases(tmp_path_factory.mktemp("bench-models"))


class Server:
    """A server subprocess; stdout/stderr go to files in its temp dir."""

    def __init__(self, name: str, cmd: list[str], workdir: Path, ready: str, env: dict | None = None,
                 timeout: float = 60.0):
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{name}.log"
        self._logf = open(self.log, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self._logf, stderr=subprocess.STDOUT, env=env)
        self.port = self._wait_ready(re.compile(ready + r" .*http://127\.0\.0\.1:(\d+)"), timeout)

    def _wait_ready(self, pattern, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            m = pattern.search(self.log.read_text(errors="replace"))
            if m:
                return int(m.group(1))
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not serving after {timeout} s:\n{self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: bytes, timeout: float = 60.0) -> dict:
        req = urllib.request.Request(self.url(path), data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def get(self, path: str, timeout: float = 60.0) -> dict:
        with urllib.request.urlopen(self.url(path), timeout=timeout) as r:
            return json.loads(r.read())

    def register(self, model_id: str, path: Path | str, options: dict | None = None, timeout: float = 300.0) -> dict:
        """POST /v1/models/register; asserts success."""
        body = {"model_id": model_id, "path": str(path)}
        if options:
            body["options"] = options
        r = self.post("/v1/models/register", json.dumps(body).encode(), timeout=timeout)
        assert r.get("status") == "success", r
        return r

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process (all its threads) so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.proc, grace=10)
        self._logf.close()


def _check_answer(server: Server, case: ModelCase) -> None:
    """One request before measuring: the server answers correctly, and the model is loaded."""
    answer = server.post(case.url_path, case.body)
    outs = answer.get("outputs")
    assert outs and outs[0].get("data"), f"{server.name}: unexpected answer {str(answer)[:300]}"
    if case.key == "matmul":
        import onnxruntime as ort

        ref = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"]).run(None, case.feed)[0]
        got = np.asarray(outs[0]["data"], dtype=np.float32).reshape(ref.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def launch_mlos(d: Path, server_args: list[str] = SERVER_ARGS, env: dict | None = None,
                timeout: float = 60.0) -> Server:
    """mlos-core with ``server_args`` on a free port, its data and models dirs under ``d``,
    nothing registered (shared by the core and the LLM benchmarks)."""
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "models").mkdir(exist_ok=True)
    grpc = [] if any(a.startswith("--grpc-port") for a in server_args) else ["--no-grpc"]
    cmd = [sys.executable, "-m", "mlos_core", "--port", "0", "--data-dir", str(d / "data"),
           "--models-dir", str(d / "models"), "--no-ipc", "--log-level", "warning", *model_root_args(d), *grpc,
           *server_args]
    return Server("mlos-core", cmd, d, ready="serving on", env=env, timeout=timeout)


def start_mlos(cases: dict[str, ModelCase], d: Path, server_args: list[str] = SERVER_ARGS) -> Server:
    """mlos-core with ``server_args``, every case registered and answered once."""
    server = launch_mlos(d, server_args)
    try:
        for case in cases.values():
            server.register(case.model_id, case.path)
            _check_answer(server, case)
    except BaseException:
        server.stop()
        raise
    return server


def start_naive(cases: dict[str, ModelCase], d: Path) -> Server:
    cmd = [sys.executable, "-m", "benchmarks.naive_server", "--port", "0"]
    for case in cases.values():
        cmd += ["--model", f"{case.model_id}={case.path}"]
    server = Server("naive", cmd, d, ready="serving on")
    try:
        for case in cases.values():
            _check_answer(server, case)
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def mlos_server(model_cases, tmp_path_factory):
    server = start_mlos(model_cases, tmp_path_factory.mktemp("mlos"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def naive_server(model_cases, tmp_path_factory):
    server = start_naive(model_cases, tmp_path_factory.mktemp("naive"))
    try:
        yield server
    finally:
        server.stop()


def run_load(server: Server, case: ModelCase, concurrency: int,
             duration: float = DURATION_S, warmup: float = WARMUP_S, headers: list[str] = ()) -> dict:
    """One load point from a separate client process; adds the server's CPU seconds used."""
    cmd = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(server.port), "--path", case.url_path,
           "--body-file", str(case.body_file), "--concurrency", str(concurrency),
           "--duration", str(duration), "--warmup", str(warmup), *[a for h in headers for a in ("--header", h)]]
    cpu0 = server.cpu_seconds()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=duration + warmup + 60, check=False)
    cpu1 = server.cpu_seconds()
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    result = json.loads(out.stdout)
    # over the whole run (warm-up included), per completed request: a rough CPU cost figure
    result["server_cpu_s"] = round(cpu1 - cpu0, 3)
    return result


# ---- the kernel path (test_kernel_path.py, test_kernel_priority.py): need /dev/mlos-ml
KERNEL_PATH_ARGS = ["--intra-op-threads", "1", "--instances", "1", "--max-batch-size", "1",
                    "--max-request-mb", "512", "--log-level", "warning"]
SLOW_START_S = 600.0  # an emulated guest imports onnxruntime slowly

needs_mlos_device = pytest.mark.skipif(
    not os.path.exists("/dev/mlos-ml"), reason="/dev/mlos-ml does not exist: run `make bench-kmod` (a TCG guest)")


def kernel_path_core(d: Path, backend: str, extra: list[str] = (), socket: str | None = None) -> Server:
    """A core serving the zero-copy path on ``backend`` ("kernel" or "userspace")."""
    env = {"MLOS_ZEROCOPY": "1", "MLOS_KERNEL": "on" if backend == "kernel" else "off"}
    if socket:
        env["MLOS_SHIM_SOCKET"] = socket
    return launch_mlos(d, [*KERNEL_PATH_ARGS, *extra], env=env, timeout=SLOW_START_S)


@pytest.fixture(scope="session")
def kernel_path_models(tmp_path_factory) -> dict[str, Path]:
    """A row sum (moving the input is its cost) and a small stack of MatMuls (some compute)."""
    from tests import onnx_models

    d = tmp_path_factory.mktemp("kpath-models")
    return {"sum": onnx_models.row_sum(d / "row_sum.onnx"),
            "work": onnx_models.slow(d / "work.onnx", width=256, rounds=8)}
