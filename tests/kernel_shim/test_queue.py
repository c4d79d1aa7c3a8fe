"""The request queue on every backend: priority order, FIFO per class, timeouts, signals,
deadlines, cancel, bounds, and a worker mapping the submitter's buffers."""
from __future__ import annotations

import errno
import os
import signal
import threading
import time

import numpy as np
import pytest

import kernel_shim as ks
from .conftest import leak_keys

PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def bufs(dev):
    a, b = dev.alloc(PAGE), dev.alloc(PAGE)
    yield a, b
    a.close()
    b.close()


def test_roundtrip_worker_maps_submitter_buffers(backend, dev):
    with backend.open() as worker:
        inp, out = dev.alloc(4096), dev.alloc(4096)
        inp.array("float32", 16)[:] = np.arange(16)
        mid = ks.model_id_for("org/model@1")
        rid = dev.submit(mid, inp.handle, out.handle, ks.PRIO_HIGH, user_data=42)
        r = worker.take(timeout=5)
        assert (r.request_id, r.model_id, r.user_data, r.priority) == (rid, mid, 42, ks.PRIO_HIGH)
        assert r.submitter_pid == os.getpid()
        assert (r.input_handle, r.output_handle) == (inp.handle, out.handle)
        with worker.map(r.input_handle, r.input_token) as i, worker.map(r.output_handle, r.output_token) as o:
            o.array("float32", 16)[:] = i.array("float32", 16) * 2
        worker.complete(r.request_id, -errno.EIO)       # a status travels back as given
        assert dev.wait(rid, timeout=5) == (ks.REQ_DONE, -errno.EIO)
        assert list(out.array("float32", 4)) == [0, 2, 4, 6]
        inp.close()
        out.close()


def test_priority_then_fifo_in_one_process(dev, bufs):
    a, b = bufs
    order = [ks.PRIO_BATCH, ks.PRIO_NORMAL, ks.PRIO_HIGH, ks.PRIO_NORMAL, ks.PRIO_BATCH,
             ks.PRIO_REALTIME, ks.PRIO_HIGH, ks.PRIO_NORMAL]
    ids = [dev.submit(1, a.handle, b.handle, p, user_data=i) for i, p in enumerate(order)]
    assert len(set(ids)) == len(ids)
    got = []
    for _ in order:
        r = dev.take(timeout=2)
        got.append((r.priority, r.user_data))
        dev.complete(r.request_id, 0)
    assert got == sorted(((p, i) for i, p in enumerate(order)))
    for rid in ids:
        assert dev.wait(rid, timeout=2) == (ks.REQ_DONE, 0)


def test_priority_order_with_concurrent_submitters(dev, backend):
    n_children, per_child = 3, 8
    kids = [backend.child(f"""
a, b = dev.alloc(4096), dev.alloc(4096)
ids = [dev.submit(7, a.handle, b.handle, (i + {k}) % 4, user_data=({k} << 16) | i) for i in range({per_child})]
print("ready", flush=True)
for i, rid in enumerate(ids):
    assert dev.wait(rid, timeout=30) == (ks.REQ_DONE, -i), "wrong completion"
print("done", flush=True)
""") for k in range(n_children)]
    try:
        for p in kids:
            assert p.stdout.readline().strip() == "ready", p.stderr.read()
        taken = []
        for _ in range(n_children * per_child):
            r = dev.take(timeout=5)
            taken.append(r)
        with pytest.raises(ks.TimedOut):
            dev.take(timeout=0.05)
        prios = [r.priority for r in taken]
        assert prios == sorted(prios)                   # highest class first, across submitters
        for k in range(n_children):                     # FIFO within a class, per submitter
            for p in range(4):
                seq = [r.user_data & 0xFFFF for r in taken if r.user_data >> 16 == k and r.priority == p]
                assert seq == sorted(seq)
        assert len({r.submitter_pid for r in taken}) == n_children
        for r in taken:
            dev.complete(r.request_id, -(r.user_data & 0xFFFF))    # 0 or -errno, by the ABI
        for p in kids:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0 and out.strip() == "done", err
    finally:
        for p in kids:
            p.kill()
            p.communicate()


def test_take_timeout(dev):
    t0 = time.monotonic()
    with pytest.raises(ks.TimedOut) as ei:
        dev.take(timeout=0.2)
    dt = time.monotonic() - t0
    assert ei.value.errno == errno.ETIMEDOUT and isinstance(ei.value, TimeoutError)
    assert 0.15 <= dt < 2.0


def test_wait_timeout_then_cancel(dev, bufs):
    a, b = bufs
    s0 = dev.stats()
    rid = dev.submit(1, a.handle, b.handle, ks.PRIO_NORMAL)
    t0 = time.monotonic()
    with pytest.raises(ks.TimedOut):
        dev.wait(rid, timeout=0.2)
    assert 0.15 <= time.monotonic() - t0 < 2.0
    assert dev.stats()["queued"][ks.PRIO_NORMAL] == s0["queued"][ks.PRIO_NORMAL] + 1
    dev.cancel(rid)
    assert dev.wait(rid, timeout=2)[0] == ks.REQ_CANCELLED
    with pytest.raises(ks.TimedOut):
        dev.take(timeout=0.05)                          # a cancelled request is never handed out
    s1 = dev.stats()
    assert s1["cancelled"] == s0["cancelled"] + 1 and leak_keys(s1) == leak_keys(s0)


def test_cancel_unknown_and_taken(backend, dev, bufs):
    a, b = bufs
    with pytest.raises(ks.ShimError) as ei:
        dev.cancel(1 << 60)
    assert ei.value.errno in (errno.ENOENT, errno.EINVAL)
    rid = dev.submit(1, a.handle, b.handle, ks.PRIO_NORMAL)
    with backend.open() as worker:
        r = worker.take(timeout=2)
        with pytest.raises(ks.ShimError):               # another device may not complete it
            dev.complete(r.request_id, 0)
        with pytest.raises(ks.ShimError):               # nor may the worker cancel it
            worker.cancel(rid)
        worker.complete(r.request_id, -errno.ENOMEM)
    assert dev.wait(rid, timeout=2) == (ks.REQ_DONE, -errno.ENOMEM)


@pytest.mark.parametrize("status", [1, 4096, -4096])
def test_complete_status_must_be_zero_or_negative_errno(backend, dev, bufs, status):
    a, b = bufs
    rid = dev.submit(1, a.handle, b.handle, ks.PRIO_NORMAL)
    r = dev.take(timeout=2)
    with pytest.raises(ks.InvalidArgument):
        dev.complete(r.request_id, status)
    dev.complete(r.request_id, -4095)                   # the request is still this device's
    assert dev.wait(rid, timeout=2) == (ks.REQ_DONE, -4095)


def test_deadlines_expire(dev, bufs):
    a, b = bufs
    s0 = dev.stats()
    late = dev.submit(1, a.handle, b.handle, ks.PRIO_REALTIME, deadline_ns=ks.deadline_in(0.05))
    live = dev.submit(1, a.handle, b.handle, ks.PRIO_BATCH, deadline_ns=ks.deadline_in(30))
    time.sleep(0.2)
    r = dev.take(timeout=2)                             # the expired one is skipped
    assert r.request_id == live
    dev.complete(r.request_id, 0)
    with pytest.raises(ks.TimedOut):
        dev.take(timeout=0.05)
    assert dev.wait(late, timeout=2)[0] == ks.REQ_EXPIRED
    assert dev.wait(live, timeout=2) == (ks.REQ_DONE, 0)
    s1 = dev.stats()
    assert s1["expired"] == s0["expired"] + 1
    assert s1["submitted"] == s0["submitted"] + 2 and s1["completed"] == s0["completed"] + 1


def test_queue_bound_and_bad_priority(dev, bufs):
    a, b = bufs
    with pytest.raises(ks.InvalidArgument):
        dev.submit(1, a.handle, b.handle, ks.abi.PRIO_COUNT)
    limit = dev.version()["max_queue"]
    if limit > 4096:
        pytest.skip(f"max_queue {limit} is too large to fill here")
    base = sum(dev.stats()["queued"])
    ids = [dev.submit(1, a.handle, b.handle, ks.PRIO_BATCH) for _ in range(limit - base)]
    with pytest.raises(ks.QueueFull) as ei:
        dev.submit(1, a.handle, b.handle, ks.PRIO_BATCH)
    assert ei.value.errno == errno.EBUSY
    for rid in ids:
        dev.cancel(rid)
    assert sum(dev.stats()["queued"]) == base


def test_take_in_a_thread_while_another_submits(dev, bufs):
    a, b = bufs
    got = []
    t = threading.Thread(target=lambda: got.append(dev.take(timeout=5)))
    t.start()
    time.sleep(0.1)
    rid = dev.submit(3, a.handle, b.handle, ks.PRIO_NORMAL)
    t.join(5)
    assert got and got[0].request_id == rid
    dev.complete(rid, 0)
    assert dev.wait(rid, timeout=2) == (ks.REQ_DONE, 0)


class Interrupted(Exception):
    pass


def _signal_main_after(delay: float):
    main = threading.main_thread().ident
    timer = threading.Timer(delay, lambda: signal.pthread_kill(main, signal.SIGUSR1))
    timer.start()
    return timer


def test_signal_interrupts_blocking_take(dev, bufs):
    a, b = bufs

    def boom(signum, frame):
        raise Interrupted()
    old = signal.signal(signal.SIGUSR1, boom)
    try:
        _signal_main_after(0.2)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            dev.take(timeout=None)                      # would wait forever
        assert time.monotonic() - t0 < 2.0
    finally:
        signal.signal(signal.SIGUSR1, old)
    rid = dev.submit(1, a.handle, b.handle, ks.PRIO_NORMAL)   # the device is still in step
    r = dev.take(timeout=2)
    assert r.request_id == rid
    dev.complete(rid, 0)
    assert dev.wait(rid, timeout=2) == (ks.REQ_DONE, 0)


def test_signal_with_quiet_handler_resumes_the_wait(dev):
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
    try:
        _signal_main_after(0.1)
        t0 = time.monotonic()
        with pytest.raises(ks.TimedOut):
            dev.take(timeout=0.5)
        dt = time.monotonic() - t0
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert seen == [signal.SIGUSR1] and 0.45 <= dt < 2.5
