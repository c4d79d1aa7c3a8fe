"""One truth for the registry (issue 11, finding 4): what the server answered is what survives a
kill -9; a full disk is an error that changes nothing; an unreadable registry stops the start
instead of being emptied; the data directory is private and held by one server.

Before: DELETE then an immediate re-register was lost after restart (3 of 4 tries); with the disk
full, register answered 500 yet served until restart and DELETE answered 500 yet the model came
back; a truncated registry started empty; a corrupt one died with a raw sqlite3 traceback."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CoreProcess

MM, MM_Q = "t/mm@1", "t%2Fmm%401"


def _kill9(core: CoreProcess) -> None:
    core.proc.send_signal(signal.SIGKILL)
    core.proc.wait()
    core.stop()


def _ids(core) -> set[str]:
    return {m["id"] for m in core.call("GET", "/v1/models")[2]["models"]}


def test_delete_then_register_again_survives_kill_9(tmp_path, models):
    data = tmp_path / "data"
    for attempt in range(4):
        core = CoreProcess(data).start()
        body = {"model_id": MM, "path": str(models.matmul)}
        assert core.call("POST", "/v1/models/register", body)[0] == 200
        assert core.call("DELETE", f"/v1/models/{MM_Q}")[0] == 200
        assert core.call("POST", "/v1/models/register", body)[0] == 200
        assert MM in _ids(core)
        _kill9(core)
        again = CoreProcess(data).start()
        try:
            assert MM in _ids(again), f"attempt {attempt}: the re-registered model was lost"
            assert again.call("POST", f"/v2/models/{MM_Q}/infer", {"inputs": [
                {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})[0] == 200
            assert again.call("DELETE", f"/v1/models/{MM_Q}")[0] == 200
        finally:
            again.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real disk that fills up (root only; CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill a disk needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write until the disk refuses another byte (unbuffered: every write meets the disk)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for block in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * block)
            except OSError:
                pass
    return filler


def test_a_full_disk_is_an_error_that_changes_nothing(small_disk, tmp_path, models):
    data = small_disk / "data"
    core = CoreProcess(data).start()
    try:
        assert core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)})[0] == 200
        filler = _fill(small_disk)
        status, _, doc = core.call("POST", "/v1/models/register", {"model_id": "t/new@1", "path": str(models.matmul)})
        assert status == 507 and doc["code"] == "insufficient_storage" and "disk is full" in doc["error"], doc
        assert _ids(core) == {MM}
        status, _, doc = core.call("DELETE", f"/v1/models/{MM_Q}")
        assert status == 507 and "nothing changed" in doc["error"]
        assert _ids(core) == {MM}
        assert core.call("POST", f"/v2/models/{MM_Q}/infer", {"inputs": [
            {"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})[0] == 200
        _kill9(core)
        filler.unlink()
        core = CoreProcess(data).start()
        assert _ids(core) == {MM}  # what was answered is what was kept
    finally:
        core.stop()


def _start_fails(data: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mlos_core", "--port", "0", "--data-dir", str(data), "--no-ipc", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-a-registry"])
def test_an_unreadable_registry_stops_the_start_and_can_be_reset(tmp_path, models, damage):
    data = tmp_path / "data"
    core = CoreProcess(data).start()
    assert core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)})[0] == 200
    core.stop()
    db = data / "registry.db"
    if damage == "truncate":
        db.write_bytes(b"")
    elif damage == "garbage":
        db.write_bytes(os.urandom(8192))
    else:
        import sqlite3

        db.unlink()
        for side in ("registry.db-wal", "registry.db-shm"):
            (data / side).unlink(missing_ok=True)
        with sqlite3.connect(db) as other:
            other.execute("CREATE TABLE notes (t TEXT)")
    done = _start_fails(data)
    assert done.returncode == 2, done.stderr
    assert f"the registry {db} cannot be used" in done.stderr and "--reset-registry" in done.stderr
    assert "Traceback" not in done.stderr
    kept = db.read_bytes()
    core = CoreProcess(data, "--reset-registry").start()
    try:
        assert _ids(core) == set()
        aside = [p for p in data.iterdir() if p.name.startswith("registry.db.corrupt-") and not p.name.endswith(("-wal", "-shm"))]
        assert len(aside) == 1 and aside[0].read_bytes() == kept  # kept for inspection, not deleted
    finally:
        core.stop()


def test_the_data_directory_is_private_and_held_by_one_server(tmp_path, models):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    core = CoreProcess(data, env={"MLOS_ZEROCOPY": "1", "MLOS_KERNEL": "off"}).start()
    try:
        assert core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)})[0] == 200
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        for name in ("registry.db", "registry.db-wal", ".lock"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
        assert stat.S_IMODE((data / "run").stat().st_mode) == 0o700
        assert (data / "run" / "shim.sock").is_socket()  # this server's own broker, not a shared /tmp one
        done = _start_fails(data)
        assert done.returncode == 2
        assert f"data directory {data} is in use by another mlos-core (pid {core.proc.pid})" in done.stderr
    finally:
        core.stop()


def test_stale_staging_folders_are_removed_at_start(tmp_path):
    data = tmp_path / "data"
    stale = data / "converted" / ".axon-convert-abc123"
    (stale / "export").mkdir(parents=True)
    (stale / "export" / "model.onnx").write_bytes(b"\0" * 1024)
    half = data / "packages" / ".incomplete-xyz"
    half.mkdir(parents=True)
    kept = data / "converted" / "0123abcd"
    kept.mkdir()
    core = CoreProcess(data).start()
    core.stop()
    assert not stale.exists() and not half.exists() and kept.is_dir()
