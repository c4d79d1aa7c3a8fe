"""A real ``python -m mlos_core`` subprocess per mode, and the plain HTTP calls the phases make.

Mode ``kernel`` runs the core with ``MLOS_KERNEL=on`` (the kernel_shim backend on /dev/mlos-ml; the
core refuses to pretend when the device is absent, so the runner checks first and records the mode
as skipped with the reason); ``userspace`` runs it with ``MLOS_KERNEL=off``.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL_DEVICE = "/dev/mlos-ml"


class CoreError(RuntimeError):
    """The core did not start, or died."""


def kernel_available() -> tuple[bool, str]:
    """Whether kernel mode can run here: the device node must exist and open read-write."""
    if not os.path.exists(KERNEL_DEVICE):
        return False, f"{KERNEL_DEVICE} does not exist (mlos-ml.ko is not loaded on this machine)"
    try:
        os.close(os.open(KERNEL_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        return False, f"{KERNEL_DEVICE} does not open: {e.strerror} (errno {e.errno})"
    return True, f"{KERNEL_DEVICE} opens"


# Where the harnesses (tests, the validator, benchmarks) register models from: temporary directories,
# the virtualenv's packages (the demo models' wheels), the checkout, and the home directory (caches).
# A core refuses register paths outside its model roots (mlos_core.model_roots).
HARNESS_MODEL_ROOTS = [tempfile.gettempdir(), sys.prefix, str(ROOT), str(Path.home())]


def model_root_args(*extra: str | Path) -> list[str]:
    """``--model-root`` arguments for a core a harness starts."""
    return [a for r in [*HARNESS_MODEL_ROOTS, *map(str, extra)] for a in ("--model-root", r)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, grace: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds: the core unloads models and closes its
    registry on SIGTERM, which a kill would skip."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def http(method: str, url: str, body=None, timeout: float = 60) -> tuple[int, object]:
    """One call: (status, parsed JSON or text). Connection errors raise OSError."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, ctype, payload = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as e:
        status, ctype, payload = e.code, e.headers.get("Content-Type", ""), e.read()
    text = payload.decode("utf-8", "replace")
    if "json" in ctype:
        try:
            return status, json.loads(text)
        except ValueError:
            pass
    return status, text


def error_text(status: int, answer) -> str:
    """The core's own message for a failed call (its error shape, OpenAI's, or the raw text)."""
    if isinstance(answer, dict):
        err = answer.get("error")
        msg = answer.get("message") or (err.get("message") if isinstance(err, dict) else err)
        return f"HTTP {status}: {msg or json.dumps(answer)[:500]}"
    return f"HTTP {status}: {str(answer)[:500]}"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies (even by SIGKILL),
    so a harness killed mid-run leaves no core behind."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG


class CoreServer:
    def __init__(self, workdir: Path, mode: str, extra_args: list[str] = (), die_with_parent: bool = False):
        if mode not in ("kernel", "userspace"):
            raise ValueError(f"mode must be kernel or userspace, not {mode!r}")
        self.mode = mode
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / f"core-{mode}.log"
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self.extra_args = list(extra_args)
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")

    def start(self, timeout: float = 120) -> "CoreServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLOS_KERNEL": "on" if self.mode == "kernel" else "off",
               # a broker socket of our own: never another core's
               "MLOS_SHIM_SOCKET": str(self.workdir / f"shim-{self.mode}.sock")}
        cmd = [sys.executable, "-m", "mlos_core", "--port", str(self.port), "--data-dir",
               str(self.workdir / f"data-{self.mode}"), "--models-dir", str(self.workdir / "no-models"), "--no-ipc",
               "--no-grpc", *model_root_args(self.workdir), *self.extra_args]
        self._logf = open(self.log, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self._logf, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                     preexec_fn=_die_with_parent if self.die_with_parent else None)
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise CoreError(f"the core ({self.mode}) exited with code {self.proc.returncode} at start: "
                                f"{self.tail()}")
            try:
                if http("GET", self.url + "/v2/health/ready", timeout=2)[0] == 200:
                    self.startup_s = time.perf_counter() - t0
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise CoreError(f"the core ({self.mode}) was not ready after {timeout:g} s: {self.tail()}")

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)
        if getattr(self, "_logf", None) is not None:
            self._logf.close()
            self._logf = None

    def call(self, method: str, path: str, body=None, timeout: float = 60) -> tuple[int, object]:
        return http(method, self.url + path, body, timeout)

    def __enter__(self) -> "CoreServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
