"""Buffers on every backend: zero-copy across processes, tokens, lifetime, pool limit, leaks."""
from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest

import kernel_shim as ks
from .conftest import leak_keys, wait_for

PAGE = os.sysconf("SC_PAGE_SIZE")


def test_version(dev):
    v = dev.version()
    assert v["abi_version"] == ks.ABI_VERSION
    assert v["pool_limit"] > 0 and v["max_queue"] > 0
    assert 0 <= v["max_priority"] < ks.abi.PRIO_COUNT


def test_alloc_is_zeroed_and_zero_copy(dev):
    with dev.alloc(10_000) as buf:
        assert buf.length >= 10_000 and buf.handle and buf.token
        a = buf.array("float32", (50, 50))
        assert not a.any()
        a[:] = np.arange(2500, dtype=np.float32).reshape(50, 50)
        assert np.frombuffer(buf.memoryview, np.float32, 2500)[2499] == 2499   # same memory
        assert buf.array("uint8").size == buf.length
        del a
    assert buf.closed


def test_map_in_another_process(dev, backend):
    with dev.alloc(1 << 16) as buf:
        buf.array("int32")[:] = np.arange(buf.length // 4, dtype=np.int32)
        p = backend.child(f"""
b = dev.map({buf.handle}, {buf.token})
a = b.array("int32")
assert (a == np.arange(a.size, dtype=np.int32)).all(), "content differs"
a[:4] = [7, 7, 7, 7]
print("ok", b.length, flush=True)
""")
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert out.split()[0] == "ok" and int(out.split()[1]) == buf.length
        assert list(buf.array("int32")[:5]) == [7, 7, 7, 7, 4]      # the child wrote our pages


def test_wrong_token_refused(dev, backend):
    with dev.alloc(PAGE) as buf:
        with pytest.raises(ks.AccessDenied) as ei:
            dev.map(buf.handle, buf.token ^ 1)
        assert ei.value.errno == errno.EACCES and "token" in str(ei.value)
        p = backend.child(f"""
try:
    dev.map({buf.handle}, {buf.token ^ (1 << 63)})
except ks.AccessDenied:
    print("refused")
""")
        out, err = p.communicate(timeout=30)
        assert out.strip() == "refused", err


def test_use_after_free_refused(dev):
    buf = dev.alloc(PAGE)
    h, t = buf.handle, buf.token
    buf.close()
    with pytest.raises(ks.BufferNotFound) as ei:
        dev.map(h, t)
    assert ei.value.errno == errno.ENOENT
    with pytest.raises(ks.BufferNotFound):
        dev.unpin(h)
    with dev.alloc(PAGE) as other:
        assert other.handle != h                       # handles are never reused
        with pytest.raises(ks.BufferNotFound):
            dev.submit(1, h, other.handle, ks.PRIO_NORMAL)


def test_buffer_lives_while_any_device_references_it(backend):
    with backend.open() as a, backend.open() as b, backend.open() as c:
        buf = a.alloc(PAGE)
        buf.array("uint8")[:3] = [1, 2, 3]
        mb = b.map(buf.handle, buf.token)
        buf.close()                                     # a's reference gone, b's remains
        mc = c.map(mb.handle, mb.token)
        assert list(mc.array("uint8")[:3]) == [1, 2, 3]
        mb.close()
        mc.close()                                      # last reference: freed
        with pytest.raises(ks.BufferNotFound):
            c.map(mb.handle, mb.token)


def test_submit_needs_a_buffer_this_device_references(backend):
    with backend.open() as a, backend.open() as b:
        with a.alloc(PAGE) as buf, b.alloc(PAGE) as own:
            with pytest.raises(ks.BufferNotFound):
                b.submit(1, buf.handle, own.handle, ks.PRIO_NORMAL)


def test_invalid_lengths(dev):
    with pytest.raises(ks.InvalidArgument):
        dev.alloc(0)


def test_pool_limit(dev):
    limit = dev.version()["pool_limit"]
    with pytest.raises(ks.PoolExhausted) as ei:
        dev.alloc(limit + PAGE)
    assert ei.value.errno == errno.ENOSPC
    if limit > 64 << 20:
        return                                          # too big to fill on a test machine
    used = dev.stats()["bytes"]
    half = (limit - used) // 2 + PAGE
    first = dev.alloc(half)
    with pytest.raises(ks.PoolExhausted):
        dev.alloc(half)
    first.close()
    dev.alloc(half).close()


def test_stats_account_buffers(dev):
    s0 = dev.stats()
    a, b = dev.alloc(3 * PAGE), dev.alloc(PAGE + 1)
    s1 = dev.stats()
    assert s1["buffers"] == s0["buffers"] + 2
    assert s1["bytes"] >= s0["bytes"] + 4 * PAGE + 1
    assert s1["peak_bytes"] >= s1["bytes"]
    assert s1["allocs"] == s0["allocs"] + 2
    a.close()
    b.close()
    s2 = dev.stats()
    assert s2["frees"] == s0["frees"] + 2
    assert leak_keys(s2) == leak_keys(s0)


def test_device_close_drops_its_references(backend, dev):
    base = leak_keys(dev.stats())
    other = backend.open()
    keep = other.alloc(PAGE)
    x = other.alloc(PAGE)
    other.submit(5, x.handle, x.handle, ks.PRIO_BATCH)
    assert leak_keys(dev.stats()) != base
    other.close()
    assert wait_for(lambda: leak_keys(dev.stats()) == base)
    with pytest.raises(ks.BufferNotFound):
        dev.map(keep.handle, keep.token)


def test_mapping_holds_no_descriptor(backend):
    """A mapping must not hold a dup of the device's fd (Python's mmap.mmap does): else closing
    the device would leave its references alive for as long as any buffer stays mapped."""
    p = backend.child("""
dev.close()
before = len(os.listdir("/proc/self/fd"))
d = ks.open_device()
bufs = [d.alloc(4096) for _ in range(4)]
print(len(os.listdir("/proc/self/fd")) - before)
d.close()
arr = bufs[0].array("uint8")                        # still mapped after the device closed
arr[:] = 7
for b in bufs:
    b.close()
print(int(arr.sum()), int(arr[-1]))                 # the array keeps its pages
""")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert out.split() == ["1", str(7 * 4096), "7"]   # the device's one fd (or broker socket)


def test_userspace_buffers_cannot_be_resized(backend):
    """A memfd's holder could otherwise shrink it under another process's mapping (SIGBUS there)."""
    if backend.name != "userspace":
        pytest.skip("kernel buffers have no file a holder could truncate")
    from kernel_shim.client import UserspaceDevice
    with UserspaceDevice(backend.socket) as d:
        msg, fds = d._call("alloc", length=PAGE, flags=0)
        try:
            for size in (0, 2 * PAGE):
                with pytest.raises(PermissionError):
                    os.ftruncate(fds[0], size)
            assert os.fstat(fds[0]).st_size == PAGE
        finally:
            for fd in fds:
                os.close(fd)
            d.unpin(msg["handle"])


def test_sigkill_leaks_nothing(dev, backend):
    base = leak_keys(dev.stats())
    with dev.alloc(PAGE) as mine:
        p = backend.child(f"""
bufs = [dev.alloc(256 << 10) for _ in range(3)]
shared = dev.map({mine.handle}, {mine.token})
for i in range(2):
    dev.submit(9, bufs[0].handle, bufs[1].handle, ks.PRIO_NORMAL)
print("ready", flush=True)
time.sleep(60)
""")
        try:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
            s = dev.stats()
            assert s["buffers"] >= base[0] + 3 and sum(s["queued"]) >= sum(base[2]) + 2
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=10)
        finally:
            p.kill()
            p.communicate()
        def only_mine_left():
            b, nbytes, queued, in_flight = leak_keys(dev.stats())
            return ((b, queued, in_flight) == (base[0] + 1, base[2], base[3])
                    and nbytes - base[1] in range(PAGE, 2 * PAGE))
        assert wait_for(only_mine_left)
        assert list(mine.array("uint8")[:1]) == [0]       # our buffer is intact
    assert wait_for(lambda: leak_keys(dev.stats()) == base)
