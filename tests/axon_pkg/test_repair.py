"""axon-py never hangs and mends what it finds broken (issue 11, finding 9).

Before: a hub that accepted the connection but never answered hung ``install`` forever; a corrupt
blob blocked every reinstall ("installed already"; after uninstall, the same mismatch after a full
download), because a cached blob was reused by name without being hashed again."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from axon_pkg.manifest import sha256_file
from axon_pkg.store import Cache

from .test_install_hub import install_json

REPO = "tiny/onnx-repair"


def _corrupt(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x5A
    path.write_bytes(bytes(data))  # in place: every hard link of the inode (blob, download cache) rots too


@pytest.fixture
def installed(axon, hf_endpoint, local_hub, models):
    local_hub.commit(REPO, {"model.onnx": models.matmul, "README.md": b"matmul\n"})
    result = install_json(axon, f"hf/{REPO}")
    return Path(result["path"]) / "model.onnx", sha256_file(models.matmul)


def test_install_of_a_damaged_package_fetches_only_the_bad_file(axon, installed, local_hub):
    model, good = installed
    _corrupt(model)
    local_hub.clear_log()
    result = install_json(axon, f"hf/{REPO}")
    assert result["reused"] and sha256_file(model) == good
    fetched = [r["path"] for r in local_hub.requests if "/resolve/" in r["path"]]
    assert fetched and all(p.endswith("/model.onnx") for p in fetched)  # README.md was fine: not fetched
    assert axon("verify", f"hf/{REPO}")[0] == 0


def test_uninstall_then_install_recovers_from_a_corrupt_blob(axon, installed):
    model, good = installed
    _corrupt(model)
    assert axon("uninstall", f"hf/{REPO}")[0] == 0
    result = install_json(axon, f"hf/{REPO}")
    assert sha256_file(Path(result["path"]) / "model.onnx") == good
    blob = Cache().blob_path(good)
    assert sha256_file(blob) == good  # the store's copy is whole again


def test_verify_repair(axon, installed):
    model, good = installed
    _corrupt(model)
    code, _, err = axon("verify", f"hf/{REPO}")
    assert code == 1 and "does not match the manifest" in err
    code, out, err = axon("verify", f"hf/{REPO}", "--repair")
    assert code == 0, err
    assert "fetched again model.onnx" in out and sha256_file(model) == good


def test_a_silent_hub_is_a_fast_clear_error(axon, hf_endpoint, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    stop = threading.Event()

    def accept():  # accept connections, never answer
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                pass

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    try:
        t0 = time.monotonic()
        code, _, err = axon("install", "hf/some/model@latest", "--quiet")
        took = time.monotonic() - t0
    finally:
        stop.set()
        listener.close()
        for s in held:
            s.close()
    assert code == 1
    assert f"the hub at {url} (HF_ENDPOINT) did not answer within 1 s" in err
    assert "offline" in err and "Timeout(" not in err
    assert took < 30


def test_staging_left_by_a_killed_install_is_removed_by_the_next(axon, installed):
    """A kill -9 mid-install leaves a staging folder (its name says which process made it); the next
    install of that repo removes it, and never one of a live process."""
    import subprocess
    import sys

    cache = Cache()
    root = cache.package_root("hf", REPO)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = root / f".incomplete-pid{dead.pid}-abc"
    (stale / ".onnx-export").mkdir(parents=True)
    live = root / f".incomplete-pid{os.getpid()}-def"
    live.mkdir()
    fresh = cache.staging("hf", REPO)
    assert not stale.exists() and live.is_dir() and fresh.is_dir()
