"""Backend choice (MLOS_KERNEL), the in-process broker, and ``python -m kernel_shim status``."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

import kernel_shim as ks
from kernel_shim import userspace
from .conftest import ROOT

HAVE_DEVICE = os.path.exists(ks.abi.DEVICE)


@pytest.fixture
def sock_path(monkeypatch):
    d = tempfile.mkdtemp(prefix="mlos-shim-")
    path = os.path.join(d, "s.sock")
    monkeypatch.setenv("MLOS_SHIM_SOCKET", path)
    yield path
    b = userspace._started.pop(path, None)
    if b:
        b.close()
    shutil.rmtree(d, ignore_errors=True)


def test_bad_mode_is_refused(monkeypatch):
    monkeypatch.setenv("MLOS_KERNEL", "maybe")
    with pytest.raises(ks.InvalidArgument, match="auto, on or off"):
        ks.open_device()


@pytest.mark.skipif(HAVE_DEVICE, reason="the device exists here")
def test_on_without_device_says_why(monkeypatch):
    monkeypatch.setenv("MLOS_KERNEL", "on")
    with pytest.raises(ks.DeviceUnavailable, match="does not exist"):
        ks.open_device()


@pytest.mark.skipif(not HAVE_DEVICE, reason=f"{ks.abi.DEVICE} does not exist")
def test_on_with_device_is_kernel(monkeypatch):
    monkeypatch.setenv("MLOS_KERNEL", "on")
    with ks.open_device() as dev:
        assert dev.backend == "kernel" and "opens" in dev.reason


def test_auto_and_off(monkeypatch, sock_path):
    monkeypatch.setenv("MLOS_KERNEL", "off")
    with ks.open_device() as dev:
        assert dev.backend == "userspace" and "MLOS_KERNEL=off" in dev.reason
    monkeypatch.setenv("MLOS_KERNEL", "auto")
    with ks.open_device() as dev:
        assert dev.backend == ("kernel" if HAVE_DEVICE else "userspace")
        if not HAVE_DEVICE:
            assert "does not exist" in dev.reason


def test_broker_started_on_demand_then_shared(sock_path):
    with ks.open_device("off") as a:
        assert "started a broker in this process" in a.reason
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600
        with ks.open_device("off") as b:
            assert "connected to the broker" in b.reason
            with a.alloc(4096) as buf, b.map(buf.handle, buf.token):
                assert a.stats()["buffers"] == 1
    with pytest.raises(OSError):                        # only one broker per socket
        ks.start_broker(sock_path)


def test_stale_socket_file_is_replaced(sock_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(sock_path)
    s.close()                                           # a dead broker's socket file
    with ks.open_device("off") as dev:
        assert dev.version()["abi_version"] == ks.ABI_VERSION


def test_status_command(sock_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLOS_KERNEL": "auto"}
    out = subprocess.run([sys.executable, "-m", "kernel_shim", "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=30, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["backend"] in ("kernel", "userspace") and st["reason"]
    assert st["device"]["present"] == HAVE_DEVICE
    assert st["version"]["abi_version"] == st["binding_abi_version"] == ks.ABI_VERSION
    assert "queued" in st["stats"]
    text = subprocess.run([sys.executable, "-m", "kernel_shim", "status"], env=env,
                          capture_output=True, text=True, timeout=30, cwd=str(ROOT)).stdout
    assert "backend:" in text and "why:" in text


def test_a_server_never_uses_a_broker_it_did_not_start(sock_path):
    """Issue 11, finding 7: every core of a user shared /tmp/mlos-shim-<uid>.sock, and a second
    core silently used the first one's broker. A server opens with own_broker=True."""
    other = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; from kernel_shim import userspace; "
                              "userspace.start_broker(sys.argv[1]); print('up', flush=True); time.sleep(60)",
                              sock_path], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert other.stdout.readline().strip() == "up"
        with pytest.raises(OSError, match="another process already serves a broker") as e:
            ks.open_device("off", socket_path=sock_path, own_broker=True)
        assert e.value.errno == 98  # EADDRINUSE
        dev = ks.open_device("off", socket_path=sock_path)  # a client may use it: same uid
        dev.close()
    finally:
        other.kill()
        other.wait()
    dev = ks.open_device("off", socket_path=sock_path, own_broker=True)  # the stale socket is replaced
    assert "started a broker in this process" in dev.reason
    dev.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="running a broker as another uid needs root")
def test_a_broker_of_another_uid_is_refused():
    d = tempfile.mkdtemp(prefix="mlos-nobody-")  # pytest's own tmp dirs are root-only: uid 65534 cannot enter
    os.chown(d, 65534, 65534)
    path = os.path.join(d, "s.sock")
    # imports first: once it is uid 65534, the interpreter cannot read a root-only home's stdlib
    code = ("import os, sys, time; from kernel_shim import userspace; os.setgid(65534); os.setuid(65534); "
            "userspace.start_broker(sys.argv[1]); print('up', flush=True); time.sleep(60)")
    other = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = other.stdout.readline().strip()
        if line != "up":
            pytest.skip("this machine cannot run a process as uid 65534 here")
        os.chmod(path, 0o666)  # even a socket anyone may connect to is refused by its owner's uid
        with pytest.raises(OSError, match="runs as uid 65534") as e:
            ks.open_device("off", socket_path=path)
        assert e.value.errno == 13  # EACCES
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_the_default_socket_is_in_a_private_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("MLOS_SHIM_SOCKET", raising=False)
    monkeypatch.setenv("MLOS_DATA_DIR", str(tmp_path / "data"))
    assert userspace.socket_path() == str(tmp_path / "data" / "run" / "shim.sock")
    dev = ks.open_device("off", own_broker=True)
    try:
        assert stat.S_IMODE((tmp_path / "data" / "run").stat().st_mode) == 0o700
        assert stat.S_IMODE(os.stat(userspace.socket_path()).st_mode) == 0o600
    finally:
        dev.close()
        b = userspace._started.pop(userspace.socket_path(), None)
        if b:
            b.close()
