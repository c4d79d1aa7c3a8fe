"""Scheduling priority on every backend: applied to the calling thread, reverted on request,
bounded for unprivileged callers by max_priority (EPERM above it)."""
from __future__ import annotations

import os
import threading

import pytest

import kernel_shim as ks


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_set_and_reset_priority(dev):
    before = _nice()
    cls = ks.PRIO_HIGH if os.geteuid() == 0 else dev.version()["max_priority"]
    nice, policy = dev.set_priority(cls)
    assert isinstance(nice, int) and isinstance(policy, int)
    assert _nice() == nice
    if cls == ks.PRIO_HIGH:                             # both backends: SCHED_OTHER at nice -5
        assert (nice, policy) == (-5, os.SCHED_OTHER)
    dev.reset_priority()
    assert _nice() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test the batch class reversibly")
def test_batch_class_lowers_priority(dev):
    before = _nice()
    nice, policy = dev.set_priority(ks.PRIO_BATCH)
    assert (nice, policy) == (10, os.SCHED_BATCH)
    dev.reset_priority()
    assert _nice() == before and os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER


def test_unknown_class_refused(dev):
    with pytest.raises(ks.InvalidArgument):
        dev.set_priority(ks.abi.PRIO_COUNT)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user")
def test_unprivileged_caller_is_bounded(backend):
    p = backend.child("""
bound = dev.version()["max_priority"]
os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)
if bound > 0:
    try:
        dev.set_priority(bound - 1)
        print("allowed")
    except ks.NotPermitted as e:
        print("eperm", e.errno)
dev.set_priority(bound if bound >= ks.PRIO_NORMAL else ks.PRIO_NORMAL)
dev.reset_priority()
print("ok", flush=True)
""")
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = out.split("\n")
    assert lines[-2] == "ok"
    if len(lines) > 2:
        assert lines[0] == "eperm 1"


def test_userspace_root_bound_is_high(backend, dev):
    if backend.name != "userspace" or os.geteuid() != 0:
        pytest.skip("the userspace backend's own bound for root")
    with pytest.raises(ks.NotPermitted):
        dev.set_priority(ks.PRIO_REALTIME)
