"""Backends under test: userspace always (a broker started in this process on a private socket,
small pool and queue so the limits can be reached), kernel only where /dev/mlos-ml exists."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kernel_shim import abi, open_device, start_broker

ROOT = Path(__file__).resolve().parents[2]
POOL_LIMIT = 4 << 20
MAX_QUEUE = 64


@dataclass
class Backend:
    name: str
    env: dict = field(default_factory=dict)       # for child processes
    socket: str | None = None

    def open(self):
        if self.name == "kernel":
            return open_device("on")
        return open_device("off", socket_path=self.socket)

    def child(self, code: str) -> subprocess.Popen:
        """A python child that runs ``code`` (with ``dev`` opened on this backend)."""
        prelude = ("import os, sys, time, signal\nimport numpy as np\nimport kernel_shim as ks\n"
                   "dev = ks.open_device()\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        return subprocess.Popen([sys.executable, "-c", prelude + code], env=env, cwd=str(ROOT),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)


def _kernel_available() -> str | None:
    if not os.path.exists(abi.DEVICE):
        return f"{abi.DEVICE} does not exist (kernel module not loaded)"
    try:
        os.close(os.open(abi.DEVICE, os.O_RDWR))
    except OSError as e:
        return f"{abi.DEVICE} does not open: {e}"
    return None


@pytest.fixture(params=["userspace", "kernel"])
def backend(request):
    if request.param == "kernel":
        why = _kernel_available()
        if why:
            pytest.skip(why)
        yield Backend("kernel", {"MLOS_KERNEL": "on"})
        return
    d = tempfile.mkdtemp(prefix="mlos-shim-")      # AF_UNIX paths must stay short
    sock = os.path.join(d, "s.sock")
    broker = start_broker(sock, pool_limit=POOL_LIMIT, max_queue=MAX_QUEUE)
    try:
        yield Backend("userspace", {"MLOS_KERNEL": "off", "MLOS_SHIM_SOCKET": sock}, sock)
    finally:
        broker.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dev(backend):
    d = backend.open()
    assert d.backend == backend.name
    yield d
    d.close()


def wait_for(pred, timeout=5.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def leak_keys(stats: dict) -> tuple:
    """What must return to its baseline when every holder is gone."""
    return stats["buffers"], stats["bytes"], tuple(stats["queued"]), stats["in_flight"]
