"""Fixtures shared by every test package: generated models, an in-process app, and a real
``python -m mlos_core`` subprocess on a free port."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from onnx import TensorProto

from mlos_core.config import load_settings
from mlos_core.demo import silero_vad_path
from mlos_core.http.app import create_app
from validation.core_proc import HARNESS_MODEL_ROOTS, free_port, model_root_args, stop_process

from . import onnx_models

ROOT = Path(__file__).resolve().parents[1]

# llama.cpp's converter (axon_pkg.gguf_tools) is fetched once per llama-cpp-python version, as pip's
# own cache is kept: tests that set their own AXON_HOME share this tools cache (a verified sdist
# extract keyed by version, refetched when incomplete) instead of downloading it in every test.
os.environ.setdefault("AXON_TOOLS_DIR", str(Path(os.environ.get("MLOS_TEST_CACHE", Path.home() / ".cache" /
                                                                    "mlos-tests")) / "tools"))


@dataclass
class Models:
    """Paths of the generated test models (and the MatMul weights for reference results)."""

    dir: Path
    matmul: Path
    matmul_w: object
    fp16: Path
    int64: Path
    int32: Path
    bool_: Path
    string: Path
    tokens: Path
    identity: Path  # in_<TYPE> -> out_<TYPE> for FP32, FP16, INT64, BOOL, BYTES
    slow: Path
    center: Path  # y = x - mean(x, axis=0): axis 0 dynamic, but not a batch axis


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Models:
    d = tmp_path_factory.mktemp("models")
    mm, w = onnx_models.matmul(d / "matmul.onnx")
    return Models(
        dir=d, matmul=mm, matmul_w=w,
        fp16=onnx_models.add_one(d / "fp16.onnx", TensorProto.FLOAT16),
        int64=onnx_models.add_one(d / "int64.onnx", TensorProto.INT64, ("batch", "n")),
        int32=onnx_models.add_one(d / "int32.onnx", TensorProto.INT32),
        bool_=onnx_models.logical_not(d / "not.onnx"),
        string=onnx_models.string_identity(d / "strings.onnx"),
        tokens=onnx_models.token_model(d / "tokens.onnx"),
        identity=onnx_models.identity_all(d / "identity.onnx"),
        slow=onnx_models.slow(d / "slow.onnx"),
        center=onnx_models.center_rows(d / "center.onnx"),
    )


@pytest.fixture(scope="session")
def silero() -> Path:
    path = silero_vad_path()
    if path is None:
        pytest.skip("the silero-vad wheel is not installed (make test installs it)")
    return path


TEST_MODEL_ROOTS = HARNESS_MODEL_ROOTS


def make_settings(tmp_path: Path, **overrides):
    base = {"data_dir": str(tmp_path / "data"), "models_dir": str(tmp_path / "repo"), "ipc_enabled": False,
            "zerocopy": False, "grpc_enabled": False, "model_roots": TEST_MODEL_ROOTS}
    base.update(overrides)
    return load_settings(None, base, environ={})


@pytest.fixture
def app_factory(tmp_path, aiohttp_client):
    """``await app_factory(**settings)`` gives an aiohttp test client of an in-process core."""

    made = []

    async def factory(**overrides):
        # each app its own data directory (one server holds a data directory at a time), unless
        # the test shares one on purpose
        made.append(1)
        if len(made) > 1:
            overrides.setdefault("data_dir", str(tmp_path / f"data-{len(made)}"))
        return await aiohttp_client(create_app(make_settings(tmp_path, **overrides)))

    return factory


@pytest.fixture
def serving(app_factory):
    """``client = await serving({"test/matmul@1": models.matmul}, **settings)``: an in-process
    core with those models registered (and loaded)."""

    async def start(to_register: dict | None = None, **overrides):
        client = await app_factory(**overrides)
        for model_id, path in (to_register or {}).items():
            r = await client.post("/v1/models/register", json={"model_id": model_id, "path": str(path)})
            assert r.status == 200, await r.text()
        return client

    return start


# ---- a real core subprocess ----------------------------------------------------------------


def http(method: str, url: str, body=None, headers: dict | None = None, raw: bytes | None = None, timeout=30):
    """A plain HTTP call: returns (status, headers, parsed JSON or text)."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, hdrs, payload = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, payload = e.code, dict(e.headers), e.read()
    ctype = hdrs.get("Content-Type", "")
    return status, hdrs, (json.loads(payload) if "json" in ctype else payload.decode())


class CoreProcess:
    def __init__(self, data_dir: Path, *args: str, env: dict | None = None, port: int | None = None,
                 port_flag: bool = True, grpc: bool = False, harness_roots: bool = True):
        """``harness_roots=False`` leaves out the harness's model roots (temp dir, venv, checkout, home):
        the core then has only the roots ``args`` give, or its defaults. ``port_flag=False`` passes
        no ``--port``: the port then comes from the config file or the environment, and ``port``
        says where to expect the server. ``grpc=True`` serves gRPC on a free port of its own
        (``grpc_url``); otherwise gRPC is off unless ``args`` set it (never the shared default 8001)."""
        self.data_dir = data_dir
        self.args = args
        self.env = env or {}
        self.port = port or free_port()
        self.port_flag = port_flag
        self.url = f"http://127.0.0.1:{self.port}"
        given = any(a in ("--no-grpc", "--grpc-port") or a.startswith("--grpc-port=") for a in args)
        self.harness_roots = harness_roots
        self.grpc_port = free_port() if grpc and not given else None
        self.grpc_url = f"127.0.0.1:{self.grpc_port}" if self.grpc_port else None
        self._grpc_args = ["--grpc-port", str(self.grpc_port)] if self.grpc_port else [] if given else ["--no-grpc"]
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"core-{self.port}.log"

    def start(self, timeout: float = 60) -> "CoreProcess":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        port_args = ["--port", str(self.port)] if self.port_flag else []
        cmd = [sys.executable, "-m", "mlos_core", *port_args, *self._grpc_args, "--data-dir", str(self.data_dir),
               "--models-dir", str(self.data_dir.parent / "repo"), "--no-ipc",
               *(model_root_args() if self.harness_roots else []), *self.args]
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"core exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                # 401: up, and asking for its --api-key
                if http("GET", self.url + "/v2/health/live", timeout=2)[0] in (200, 401):
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"core did not start in {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process(self.proc)
        if getattr(self, "_logf", None) is not None:
            self._logf.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, method: str, path: str, body=None, **kw):
        return http(method, self.url + path, body, **kw)


@pytest.fixture
def core_process(tmp_path):
    """``core_process(*args)`` starts a real core subprocess; all are stopped after the test."""
    started: list[CoreProcess] = []

    def start(*args: str, data_dir: Path | None = None, env: dict | None = None, port: int | None = None,
              port_flag: bool = True, grpc: bool = False, harness_roots: bool = True) -> CoreProcess:
        proc = CoreProcess(data_dir or tmp_path / "data", *args, env=env, port=port, port_flag=port_flag,
                           grpc=grpc, harness_roots=harness_roots).start()
        started.append(proc)
        return proc

    yield start
    for p in started:
        p.stop()


# ==== local Hugging Face Hub (tests/hub) =====================================================
# ``local_hub``: one LocalHub HTTP server for the session (tests commit to their own repo ids).
# ``hf_endpoint``: points huggingface_hub at it for one test, with a fresh cache dir. In-process,
# huggingface_hub has already read HF_ENDPOINT etc. into module constants at import time, so those
# are monkeypatched too; subprocesses started by the test inherit the environment variables set here
# (HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_DISABLE_XET, ...), which they read at import.

@pytest.fixture(scope="session")
def local_hub():
    from .hub.server import LocalHub

    hub = LocalHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def hf_endpoint(local_hub, tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.file_download
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    env = {
        "HF_ENDPOINT": local_hub.url, "HF_HOME": str(home), "HF_HUB_CACHE": str(cache),
        "HF_ASSETS_CACHE": str(home / "assets"), "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
              "HF_HUB_ENABLE_HF_TRANSFER", "HUGGINGFACE_CO_RESOLVE_ENDPOINT", "TRANSFORMERS_CACHE"):
        monkeypatch.delenv(k, raising=False)

    template = local_hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    for name, value in {
        "ENDPOINT": local_hub.url, "HUGGINGFACE_CO_URL_TEMPLATE": template, "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache), "HUGGINGFACE_HUB_CACHE": str(cache), "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": True, "HF_HUB_ENABLE_HF_TRANSFER": False,
    }.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    # copies taken at import time
    monkeypatch.setattr(huggingface_hub.file_download, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    if hasattr(huggingface_hub, "HUGGINGFACE_CO_URL_TEMPLATE"):
        monkeypatch.setattr(huggingface_hub, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", local_hub.url)  # the module-level HfApi()
    tf_hub = sys.modules.get("transformers.utils.hub")
    if tf_hub is not None:  # only if transformers is already imported (it reads the env itself otherwise)
        for name, value in {"_is_offline_mode": False, "HUGGINGFACE_CO_RESOLVE_ENDPOINT": local_hub.url,
                            "HUGGINGFACE_CO_PREFIX": local_hub.url + "/{model_id}/resolve/{revision}/{filename}",
                            "TRANSFORMERS_CACHE": str(cache), "PYTORCH_TRANSFORMERS_CACHE": str(cache),
                            "PYTORCH_PRETRAINED_BERT_CACHE": str(cache)}.items():
            if hasattr(tf_hub, name):
                monkeypatch.setattr(tf_hub, name, value)
    # huggingface_hub caches one HTTP session per thread, built for the offline mode in force when
    # it was made: drop it on both sides of the test.
    from huggingface_hub.utils import reset_sessions

    reset_sessions()
    yield local_hub
    reset_sessions()
