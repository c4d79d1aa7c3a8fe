"""The registry of client shared-memory regions: keys, bounds, shrinking objects, release."""
from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

from mlos_core.errors import BadRequest, Forbidden, NotFound
from mlos_core.shm_regions import SharedMemoryRegions, client_shm_allowed


@pytest.fixture
def shm_object():
    """``make(size)`` creates /dev/shm/<unique> of that size; returns (key, path)."""
    made = []

    def make(size: int = 4096):
        name = f"mlos-test-{uuid.uuid4().hex[:12]}"
        path = f"/dev/shm/{name}"
        with open(path, "wb") as f:
            f.truncate(size)
        made.append(path)
        return "/" + name, path

    yield make
    for p in made:
        if os.path.lexists(p):
            os.unlink(p)


def test_register_map_read_write_and_status(shm_object):
    key, path = shm_object(8192)
    regions = SharedMemoryRegions()
    regions.register("r", key, 4096, 64)
    with open(path, "r+b") as f:
        f.seek(4096 + 8)
        f.write(np.arange(4, dtype=np.float32).tobytes())
    raw = regions.read("r", 8, 16, "input 'x'")
    assert np.frombuffer(raw, np.float32).tolist() == [0.0, 1.0, 2.0, 3.0]
    regions.write("r", 8, 16, b"\1\2\3\4", "output 'y'")
    with open(path, "rb") as f:
        f.seek(4096 + 8)
        assert f.read(4) == b"\1\2\3\4"  # written into the object, seen by the client's file
    with pytest.raises(BadRequest, match="output 'y' is 17 bytes; shared memory region 'r' gives 16 bytes at offset 8"):
        regions.write("r", 8, 16, bytes(17), "output 'y'")
    assert regions.status() == [{"name": "r", "key": key, "offset": 4096, "byte_size": 64}]
    assert regions.status("r") == regions.status()
    with pytest.raises(NotFound, match="no shared memory region named 'nope' is registered"):
        regions.status("nope")
    regions.close()
    assert regions.status() == []


@pytest.mark.parametrize("key,message", [
    ("/a/b", "must name an object directly under /dev/shm"),
    ("//etc", "must name an object directly under /dev/shm"),
    ("/..", "must name an object directly under /dev/shm"),
    ("..", "must name an object directly under /dev/shm"),
    ("/x..y", "must name an object directly under /dev/shm"),
    ("/", "must name an object directly under /dev/shm"),
    ("", "'key' must be a non-empty string"),
    (5, "'key' must be a non-empty string"),
    ("/mlos-test-missing-object", "no shared-memory object '/mlos-test-missing-object' exists"),
])
def test_keys_outside_dev_shm_are_refused(key, message):
    with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        SharedMemoryRegions().register("r", key, 0, 16)


def test_symlinks_and_non_files_are_refused(shm_object, tmp_path):
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 64)
    link = f"/dev/shm/mlos-test-link-{uuid.uuid4().hex[:8]}"
    os.symlink(target, link)
    try:
        with pytest.raises(BadRequest, match="cannot open shared-memory object .*: Too many levels of symbolic links"):
            SharedMemoryRegions().register("r", "/" + os.path.basename(link), 0, 16)
    finally:
        os.unlink(link)
    d = f"/dev/shm/mlos-test-dir-{uuid.uuid4().hex[:8]}"
    os.mkdir(d)
    try:
        with pytest.raises(BadRequest, match="cannot open shared-memory object .*: Is a directory"):
            SharedMemoryRegions().register("r", "/" + os.path.basename(d), 0, 16)
    finally:
        os.rmdir(d)


@pytest.mark.parametrize("offset,size,message", [
    (0, 5000, "offset 0 + byte_size 5000 runs past the end of '{key}', which is 4096 bytes"),
    (4096, 1, "offset 4096 + byte_size 1 runs past the end"),
    (-1, 16, "'offset' must be at least 0, got -1"),
    (0, 0, "'byte_size' must be at least 1, got 0"),
    (0, "16", "'byte_size' must be an integer, got '16'"),
    (2**63, 2**63, "runs past the end"),
])
def test_registration_bounds(shm_object, offset, size, message):
    key, _ = shm_object(4096)
    with pytest.raises(BadRequest) as e:
        SharedMemoryRegions().register("r", key, offset, size)
    assert message.format(key=key) in e.value.message


def test_window_bounds_and_unregistered_names(shm_object):
    key, _ = shm_object(4096)
    regions = SharedMemoryRegions()
    regions.register("r", key, 100, 200)
    with pytest.raises(BadRequest, match="already registered"):
        regions.register("r", key, 0, 10)
    for args, message in [
        (("r", 150, 51), "input 'x': bytes 150..201 lie outside shared memory region 'r' of 200 bytes"),
        (("r", 201, 0), "input 'x': bytes 201..201 lie outside shared memory region 'r' of 200 bytes"),
        (("r", -8, 4), "input 'x': 'shared_memory_offset' must be at least 0, got -8"),
        (("r", 0, -4), "input 'x': 'shared_memory_byte_size' must be at least 0, got -4"),
        (("r", 0, None), "input 'x': 'shared_memory_byte_size' is required with 'shared_memory_region'"),
        (("q", 0, 4), "input 'x': shared memory region 'q' is not registered"),
        ((7, 0, 4), "input 'x': 'shared_memory_region' must be a string"),
    ]:
        with pytest.raises(BadRequest) as e:
            regions.read(*args, "input 'x'")
        assert e.value.message == message
    assert len(regions.read("r", None, 200, "x")) == 200
    regions.close()


def test_an_object_shrunk_after_registration_is_a_400_not_a_sigbus(shm_object):
    key, path = shm_object(8192)
    regions = SharedMemoryRegions()
    regions.register("r", key, 4096, 4096)
    os.truncate(path, 4100)             # as a client may, at any moment, even during a request
    with pytest.raises(BadRequest, match="its object '.*' ends 4100 bytes in, short of the 4112 the tensor "
                                         r"needs \(it shrank since it was registered\)"):
        regions.read("r", 0, 16, "input 'x'")
    assert bytes(regions.read("r", 0, 4, "input 'x'")) == bytes(4)   # what is left still reads
    regions.close()


def test_unregister_closes_once_nothing_uses_the_region(shm_object):
    key, _ = shm_object(4096)
    regions = SharedMemoryRegions()
    region = regions.register("r", key, 0, 4096)
    regions.register("s", key, 0, 64)
    s = regions._regions["s"]
    assert regions.unregister("s") == ["s"]
    with pytest.raises(OSError):
        os.fstat(s.fd)                  # nothing used it: closed at once
    assert regions.unregister("s") == []  # unknown names are not an error
    regions._use(region, "x")           # a read in progress keeps the descriptor open...
    regions.unregister()
    assert regions.status() == [] and os.fstat(region.fd).st_size == 4096
    with pytest.raises(BadRequest, match="was unregistered meanwhile"):
        regions._use(region, "input 'x'")   # ...and no new one starts on it
    regions._done(region)               # ...until it ends
    with pytest.raises(OSError):
        os.fstat(region.fd)


def test_refused_unless_loopback_or_explicit():
    assert client_shm_allowed("auto", "127.0.0.1")[0]
    assert client_shm_allowed("auto", "::1")[0]
    assert client_shm_allowed("auto", "localhost")[0]
    assert client_shm_allowed("auto", "0.0.0.0", http_enabled=False)[0]  # the Unix socket alone
    ok, reason = client_shm_allowed("auto", "0.0.0.0")
    assert not ok and "--allow-client-shm=true" in reason and "0.0.0.0" in reason
    assert client_shm_allowed("true", "0.0.0.0")[0]
    assert not client_shm_allowed("false", "127.0.0.1")[0]
    with pytest.raises(Forbidden, match="--allow-client-shm=true"):
        SharedMemoryRegions(*client_shm_allowed("auto", "192.168.1.4")).register("r", "/x", 0, 1)


def test_the_number_of_regions_is_bounded(shm_object, monkeypatch):
    import mlos_core.shm_regions as mod

    monkeypatch.setattr(mod, "MAX_REGIONS", 2)
    key, _ = shm_object(4096)
    regions = SharedMemoryRegions()
    regions.register("a", key, 0, 8)
    regions.register("b", key, 0, 8)
    with pytest.raises(BadRequest, match="2 shared memory regions are registered, the most this server holds"):
        regions.register("c", key, 0, 8)
    regions.unregister("a")
    regions.register("c", key, 0, 8)
    regions.close()
