"""The three servers of the Open Inference Protocol benchmark, each serving the same ResNet-50
ONNX file on onnxruntime with the same thread count: mlos-core (this venv), Triton through
nvidia-pytriton and MLServer (each in its own venv: ``MLOS_BENCH_PYTRITON_PYTHON``,
``MLOS_BENCH_MLSERVER_PYTHON``, default ``~/.cache/mlos-bench/<name>/bin/python``).

A peer whose venv is missing is skipped with the command that makes it (``make bench-oip``).
"""
from __future__ import annotations

import os
import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .conftest import ROOT, Server

VENVS = Path(os.environ.get("MLOS_BENCH_VENVS", Path.home() / ".cache" / "mlos-bench"))
MODEL = "resnet50"
CORE_ARGS = ["--intra-op-threads", "0", "--instances", "1", "--max-batch-size", "32", "--max-batch-delay-us", "0",
             "--max-request-mb", "512"]


@dataclass
class Peer:
    name: str  # mlos | triton | mlserver
    server: Server
    model_path: str  # the URL path segment naming the model
    headers: dict = field(default_factory=dict)  # for the shared-memory calls (PyTriton's token)
    grpc_port: int | None = None  # the Open Inference Protocol over gRPC, where served

    @property
    def port(self) -> int:
        return self.server.port

    def infer_path(self) -> str:
        return f"/v2/models/{self.model_path}/infer"

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.server.url(path), data=body, method=method,
                                     headers={"Content-Type": "application/json", **self.headers, **(headers or {})})
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.status, dict(r.headers), r.read()

    def cpu_seconds(self) -> float:
        """CPU of the server's whole process tree (Triton runs tritonserver, a stub and a proxy)."""
        total = 0.0
        try:
            root = psutil.Process(self.server.pid)
            for p in [root, *root.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        return total

    def stop(self) -> None:
        for p in psutil.Process(self.server.pid).children(recursive=True):
            try:
                p.terminate()
            except psutil.Error:
                pass
        self.server.stop()


def start_null(d: Path) -> Peer:
    """The null system: aiohttp and grpc.aio answering a fixed answer (benchmarks/peers/null_server.py)."""
    server = Server("null", [sys.executable, "-m", "benchmarks.peers.null_server"], d, ready="serving on")
    grpc_port = re.search(r"grpc=127\.0\.0\.1:(\d+)", server.log.read_text())
    return Peer("null", server, "matmul", grpc_port=int(grpc_port.group(1)))


def venv_python(name: str) -> Path | None:
    path = Path(os.environ.get(f"MLOS_BENCH_{name.upper()}_PYTHON", VENVS / name / "bin" / "python"))
    return path if path.exists() else None


def start_mlos(model: Path, d: Path, small: Path | None = None, grpc: bool = False) -> Peer:
    from .conftest import launch_mlos

    server = launch_mlos(d, CORE_ARGS + (["--grpc-port", "0"] if grpc else []))
    found = re.search(r"grpc://127\.0\.0\.1:(\d+)", server.log.read_text()) if grpc else None
    peer = Peer("mlos", server, "bench%2Fresnet50%401", grpc_port=int(found.group(1)) if found else None)
    server.register("bench/resnet50@1", model)
    if small is not None:
        server.register("bench/matmul@1", small)
    return peer


def start_triton(model: Path, d: Path, small: Path | None = None) -> Peer | str:
    python = venv_python("pytriton")
    if python is None:
        return "no PyTriton venv (make bench-oip creates it)"
    script = ROOT / "benchmarks" / "peers" / "pytriton_launch.py"
    server = Server("triton", [str(python), str(script), str(model), *([str(small)] if small else [])], d,
                    ready="serving on")
    log = server.log.read_text()
    token = re.search(r"token=(\S+)", log).group(1)
    grpc_port = re.search(r"grpc=127\.0\.0\.1:(\d+)", log)
    return Peer("triton", server, MODEL, {"triton-access-token": token},
                grpc_port=int(grpc_port.group(1)) if grpc_port else None)


def start_mlserver(model: Path, d: Path) -> Peer | str:
    python = venv_python("mlserver")
    if python is None:
        return "no MLServer venv (make bench-oip creates it)"
    script = ROOT / "benchmarks" / "peers" / "mlserver_launch.py"
    server = Server("mlserver", [str(python), str(script), str(model), str(d)], d, ready="serving on")
    return Peer("mlserver", server, MODEL)


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name, pkgs in (("pytriton", ("nvidia-pytriton", "onnxruntime")), ("mlserver", ("mlserver", "onnxruntime"))):
        python = venv_python(name)
        if python is None:
            continue
        import subprocess

        code = "import importlib.metadata as m, sys; print(sys.version.split()[0], *[m.version(p) for p in sys.argv[1:]])"
        r = subprocess.run([str(python), "-c", code, *pkgs], capture_output=True, text=True, timeout=60)
        out[name] = r.stdout.strip()
    return out
