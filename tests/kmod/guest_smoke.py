"""Smoke tests of /dev/mlos-ml, run inside the test guest (kmod/vm) as root.

Raw ioctls with struct/fcntl only (no kernel_shim), so a fault here is the module's. One marker
line per check: ``MLOS-TEST PASS name`` or ``MLOS-TEST FAIL name reason``, then
``MLOS-TEST SUMMARY passed=N failed=M``; kmod/vm/check_log.py parses them on the host.
Should-fail cases come first in each check. Exit status 1 when anything failed.
"""
import ctypes
import errno
import fcntl
import mmap
import os
import random
import signal
import struct
import sys
import threading
import time
import traceback

DEV = "/dev/mlos-ml"
PARAMS = "/sys/module/mlos_ml/parameters/"
SYSFS_STATS = "/sys/class/misc/mlos-ml/stats/"
PAGE = mmap.PAGESIZE
MAGIC = 0xB8

# struct layouts (native order, no implicit padding: the header pads explicitly)
FMT = {
    "version": "=IIQII", "pin": "=IIQQQQ", "map": "=IIQQQQ", "unpin": "=IIQ", "prio": "=IIiI",
    "start": "=IIQQQQQQ", "wait": "=IIQQIi", "take": "=IIQQQQQQQQQII", "complete": "=IiQ",
    "cancel": "=IIQ", "stats": "=II" + "Q" * 14,
}
SIZES = {k: struct.calcsize(v) for k, v in FMT.items()}
NR = {"version": 0, "pin": 1, "map": 2, "unpin": 3, "prio": 4, "reset": 5, "start": 6, "wait": 7,
      "take": 8, "complete": 9, "cancel": 10, "stats": 11}
DIR = {"version": 3, "pin": 3, "map": 3, "unpin": 1, "prio": 3, "reset": 0, "start": 3, "wait": 3,
       "take": 3, "complete": 1, "cancel": 1, "stats": 3}
STATS_KEYS = ["buffers", "bytes", "peak_bytes", "q0", "q1", "q2", "q3", "in_flight", "submitted",
              "completed", "cancelled", "expired", "allocs", "frees"]
REQ_DONE, REQ_CANCELLED, REQ_EXPIRED = 0, 1, 2


def ioc(direction, nr, size):
    return (direction << 30) | (size << 16) | (MAGIC << 8) | nr


def cmd(name):
    return ioc(DIR[name], NR[name], SIZES.get(name, 0))


def call(fd, name, *fields):
    """ioctl with a struct whose first field (size) is filled in; returns the unpacked result."""
    if name == "reset":
        fcntl.ioctl(fd, cmd(name), 0)
        return None
    buf = bytearray(struct.pack(FMT[name], SIZES[name], *fields))
    fcntl.ioctl(fd, cmd(name), buf, True)
    return struct.unpack(FMT[name], buf)


def errno_of(fn, *a):
    try:
        fn(*a)
    except OSError as e:
        return e.errno
    return 0


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.mmap.restype = ctypes.c_void_p
LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def raw_mmap(fd, length, offset):
    """libc mmap: unlike mmap.mmap, keeps no dup of the fd (so close() really closes)."""
    addr = LIBC.mmap(None, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, offset)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    return addr


def mmap_at(fd, length, offset, flags=mmap.MAP_SHARED):
    return mmap.mmap(fd, length, flags, offset=offset)


def opendev():
    return os.open(DEV, os.O_RDWR | os.O_CLOEXEC)


def pin(fd, length):
    _, _, _, handle, token, off = call(fd, "pin", 0, length, 0, 0, 0)
    return handle, token, off


def stats(fd):
    return dict(zip(STATS_KEYS, call(fd, "stats", 0, *[0] * 14)[2:]))


def submit(fd, prio, hin, hout, model=7, deadline=0, user=0):
    return call(fd, "start", prio, model, hin, hout, deadline, user, 0)[-1]


def wait(fd, rid, timeout_ns=0):
    r = call(fd, "wait", 0, rid, timeout_ns, 0, 0)
    return r[4], r[5]


def take(fd, timeout_ns):
    r = call(fd, "take", 0, timeout_ns, *[0] * 8, 0, 0)
    keys = ["request_id", "model_id", "input_handle", "input_token", "output_handle",
            "output_token", "deadline_ns", "user_data", "priority", "submitter_pid"]
    return dict(zip(keys, r[3:]))


def complete(fd, rid, status=0):
    call(fd, "complete", status, rid)


def set_param(name, value):
    with open(PARAMS + name, "w") as f:
        f.write(str(value))


def get_param(name):
    with open(PARAMS + name) as f:
        return f.read().strip()


def fork_child(fn):
    """Start fn() in a forked child; its exit status will be 0 when fn returned without raising."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fn()
            code = 0
        except BaseException:
            traceback.print_exc()
        os._exit(code)
    return pid


def wait_child(pid):
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def in_child(fn):
    """Run fn() in a forked child and wait: 0 when fn returned without raising."""
    return wait_child(fork_child(fn))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_errno(expected, fn, *a, what=""):
    got = errno_of(fn, *a)
    check(got == expected, f"{what or fn.__name__}: expected {errno.errorcode.get(expected, expected)}, "
                           f"got {errno.errorcode.get(got, got)}")


# ---------------------------------------------------------------------------------- checks

def t_version(fd):
    _, abi, pool, maxq, maxp = call(fd, "version", 0, 0, 0, 0)
    check(abi == 1, f"abi {abi}")
    check(pool == int(get_param("pool_limit_mb")) << 20, f"pool_limit {pool}")
    check(maxq == int(get_param("max_queue")) and maxp == int(get_param("max_priority_class")),
          "max_queue / max_priority")


def t_arg_checks(fd):
    check_errno(errno.ENOTTY, fcntl.ioctl, fd, ioc(3, 0x1F, 16), bytearray(16), what="unknown nr")
    check_errno(errno.ENOTTY, fcntl.ioctl, fd, (3 << 30) | (16 << 16) | (0xB9 << 8), bytearray(16),
                what="other magic")
    b = bytearray(struct.pack(FMT["version"], 8, 0, 0, 0, 0))      # size below the first one
    check_errno(errno.EINVAL, fcntl.ioctl, fd, cmd("version"), b, True, what="short size")
    big = bytearray(struct.pack(FMT["version"], 64, 0, 0, 0, 0)) + bytearray(40)
    fcntl.ioctl(fd, cmd("version"), big, True)                       # larger, zero tail: fine
    check(struct.unpack_from("=I", big, 4)[0] == 1, "larger struct not answered")
    big[50] = 1
    check_errno(errno.E2BIG, fcntl.ioctl, fd, cmd("version"), big, True, what="non-zero tail")
    check_errno(errno.EFAULT, fcntl.ioctl, fd, cmd("stats"), 16, what="bad pointer")
    check_errno(errno.EINVAL, call, fd, "pin", 1, 4096, 0, 0, 0, what="pin flags")
    check_errno(errno.EINVAL, call, fd, "pin", 0, 0, 0, 0, 0, what="pin length 0")
    check_errno(errno.ENOSPC, call, fd, "pin", 0, 1 << 62, 0, 0, 0, what="pin huge")
    check_errno(errno.EINVAL, call, fd, "map", 1, 1, 1, 0, 0, what="map pad")
    check_errno(errno.EINVAL, call, fd, "prio", 4, 0, 0, what="priority class 4")
    check_errno(errno.EINVAL, call, fd, "start", 4, 0, 0, 0, 0, 0, 0, what="start priority 4")
    check_errno(errno.EINVAL, call, fd, "complete", 1, 1, what="complete status > 0")
    check_errno(errno.EINVAL, call, fd, "stats", 1, *[0] * 14, what="stats pad")


def t_alloc_mmap(fd):
    h, tok, off = pin(fd, 10000)
    check(off == h * PAGE and tok != 0, "offset/token")
    check_errno(errno.EINVAL, mmap_at, fd, 3 * PAGE, off, mmap.MAP_PRIVATE, what="MAP_PRIVATE")
    check_errno(errno.EINVAL, mmap_at, fd, 4 * PAGE, off, what="too long")
    check_errno(errno.EINVAL, mmap_at, fd, PAGE, (h + 1000) * PAGE, what="unknown offset")
    m1 = mmap.mmap(fd, 3 * PAGE, mmap.MAP_SHARED, offset=off)
    check(m1[:] == bytes(3 * PAGE), "new buffer not zeroed")
    pattern = bytes(random.getrandbits(8) for _ in range(3 * PAGE))
    m1[:] = pattern
    m2 = mmap.mmap(fd, 2 * PAGE, mmap.MAP_SHARED, offset=off)
    check(m2[:] == pattern[:2 * PAGE], "second mapping differs")
    check_errno(errno.EINVAL, m2.resize, 4 * PAGE, what="mremap grow") if hasattr(m2, "resize") else None
    m2.close()
    m1.close()
    call(fd, "unpin", 0, h)


def t_map_from_child(fd):
    h, tok, off = pin(fd, PAGE)
    m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, offset=off)
    m[:5] = b"hello"

    def child():
        cfd = opendev()
        check_errno(errno.EACCES, call, cfd, "map", 0, h, tok ^ 1, 0, 0, what="wrong token")
        check_errno(errno.ENOENT, call, cfd, "map", 0, h + 100000, tok, 0, 0, what="unknown handle")
        check_errno(errno.EINVAL, mmap_at, cfd, PAGE, off, what="mmap before map")
        _, _, _, _, length, coff = call(cfd, "map", 0, h, tok, 0, 0)
        check(length == PAGE and coff == off, "map result")
        cm = mmap.mmap(cfd, PAGE, mmap.MAP_SHARED, offset=coff)
        check(cm[:5] == b"hello", "child does not see the parent's bytes")
        cm[5:10] = b"world"
        cm.close()
        os.close(cfd)
    check(in_child(child) == 0, "child failed")
    check(m[:10] == b"helloworld", "parent does not see the child's bytes")
    m.close()
    call(fd, "unpin", 0, h)


def t_unpin_then_map(fd):
    h, tok, _ = pin(fd, PAGE)
    call(fd, "unpin", 0, h)
    check_errno(errno.ENOENT, call, fd, "unpin", 0, h, what="double unpin")
    fd2 = opendev()
    check_errno(errno.ENOENT, call, fd2, "map", 0, h, tok, 0, 0, what="map after free")
    os.close(fd2)
    # counted references: map twice needs two unpins
    h, tok, off = pin(fd, PAGE)
    call(fd, "map", 0, h, tok, 0, 0)
    call(fd, "unpin", 0, h)
    call(fd, "unpin", 0, h)
    check_errno(errno.ENOENT, call, fd, "unpin", 0, h, what="third unpin")


def t_mapping_outlives_unpin_and_close(fd):
    base = stats(fd)
    h, tok, off = pin(fd, 2 * PAGE)
    m = mmap.mmap(fd, 2 * PAGE, mmap.MAP_SHARED, offset=off)
    call(fd, "unpin", 0, h)
    m[:4] = b"live"
    check(m[:4] == b"live", "mapping unusable after unpin")
    s = stats(fd)
    check(s["buffers"] == base["buffers"] and s["frees"] == base["frees"] + 1,
          f"unpinned buffer still counted: {s}")
    fd2 = opendev()
    check_errno(errno.ENOENT, call, fd2, "map", 0, h, tok, 0, 0, what="map of unpublished buffer")
    m.close()
    # closing the fd releases the file even while its buffers are mapped
    h2, _, off2 = pin(fd2, PAGE)
    addr = raw_mmap(fd2, PAGE, off2)
    submit(fd2, 3, h2, h2)
    check(stats(fd)["q3"] == base["q3"] + 1, "not queued")
    os.close(fd2)
    s = stats(fd)
    check(s["buffers"] == base["buffers"] and s["q3"] == base["q3"], f"close did not release: {s}")
    ctypes.memmove(addr, b"abc", 3)
    check(ctypes.string_at(addr, 3) == b"abc", "mapping unusable after close")
    # the pool limit counts mapped memory of unpinned buffers
    old = get_param("pool_limit_mb")
    set_param("pool_limit_mb", 1)
    try:
        h3, _, off3 = pin(fd, (1 << 20) - PAGE)
        m3 = mmap.mmap(fd, (1 << 20) - PAGE, mmap.MAP_SHARED, offset=off3)
        call(fd, "unpin", 0, h3)
        check_errno(errno.ENOSPC, pin, fd, 2 * PAGE, what="pin while mapped memory fills the pool")
        LIBC.munmap(addr, PAGE)
        m3.close()
        call(fd, "unpin", 0, pin(fd, 2 * PAGE)[0])
    finally:
        set_param("pool_limit_mb", old)


def t_pool_limit(fd):
    old = get_param("pool_limit_mb")
    used_mb = -(-stats(fd)["bytes"] // (1 << 20))
    set_param("pool_limit_mb", used_mb + 4)
    try:
        hs = [pin(fd, 2 << 20)[0], pin(fd, 2 << 20)[0]]
        check_errno(errno.ENOSPC, pin, fd, PAGE, what="past the pool limit")
        call(fd, "unpin", 0, hs.pop())
        hs.append(pin(fd, PAGE)[0])
        s = stats(fd)
        check(s["peak_bytes"] >= 4 << 20, f"peak {s}")
        for h in hs:
            call(fd, "unpin", 0, h)
    finally:
        set_param("pool_limit_mb", old)


def t_killed_child_leaks_nothing(fd):
    base = stats(fd)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            cfd = opendev()
            hs = [pin(cfd, n * PAGE) for n in (1, 3, 17)]
            mm = mmap.mmap(cfd, 3 * PAGE, mmap.MAP_SHARED, offset=hs[1][2])
            mm[0] = 1
            submit(cfd, 2, hs[0][0], hs[2][0])
            call(cfd, "prio", 3, 0, 0)
            os.write(w, b"x")
        finally:
            time.sleep(60)
            os._exit(1)
    os.close(w)
    check(os.read(r, 1) == b"x", "child did not get ready")
    os.close(r)
    mid = stats(fd)
    check(mid["buffers"] == base["buffers"] + 3 and mid["q2"] == base["q2"] + 1, f"child state {mid}")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    s = stats(fd)
    for k in ("buffers", "bytes", "q0", "q1", "q2", "q3", "in_flight"):
        check(s[k] == base[k], f"{k} not back: {s[k]} vs {base[k]}")
    check(s["cancelled"] == base["cancelled"] + 1, "queued request of the dead child not cancelled")


def t_queue_priority_order(fd):
    prios = {0: [3, 1, 2], 1: [2, 0, 3, 1], 2: [1, 3, 0, 2, 0]}
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    kids = []
    for k, plist in prios.items():
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                cfd = opendev()
                hin, _, offin = pin(cfd, PAGE)
                hout, _, offout = pin(cfd, PAGE)
                mi = mmap.mmap(cfd, PAGE, mmap.MAP_SHARED, offset=offin)
                mo = mmap.mmap(cfd, PAGE, mmap.MAP_SHARED, offset=offout)
                mi[:8] = struct.pack("=Q", 1000 + k)
                rids = [submit(cfd, p, hin, hout, model=k, user=p) for p in plist]
                os.write(ready_w, b"r")
                os.read(go_r, 1)
                for rid, p in zip(rids, plist):
                    state, status = wait(cfd, rid, 20 * 10**9)
                    check(state == REQ_DONE and status == -p, f"request {rid}: {state} {status}")
                check(struct.unpack("=Q", mo[:8])[0] == 2000 + k, "worker's output not seen")
                check_errno(errno.ENOENT, wait, cfd, rids[0], 1000, what="wait after reap")
                code = 0
            except BaseException:
                traceback.print_exc()
            os._exit(code)
        kids.append(pid)
    for _ in prios:
        os.read(ready_r, 1)
    got = []
    while True:
        try:
            got.append(take(fd, 200 * 10**6))
        except OSError as e:
            check(e.errno == errno.ETIMEDOUT, f"take: {e}")
            break
    check(len(got) == sum(map(len, prios.values())), f"took {len(got)}")
    order = [(g["priority"], g["request_id"]) for g in got]
    check(order == sorted(order), f"not priority then FIFO order: {order}")
    for g in got:       # the worker maps the submitter's buffers by handle + token
        check(g["priority"] == g["user_data"], "user_data")
        _, _, _, _, _, off = call(fd, "map", 0, g["input_handle"], g["input_token"], 0, 0)
        m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, offset=off)
        k = struct.unpack("=Q", m[:8])[0] - 1000
        check(k == g["model_id"], "input buffer content")
        m.close()
        _, _, _, _, _, off = call(fd, "map", 0, g["output_handle"], g["output_token"], 0, 0)
        m = mmap.mmap(fd, PAGE, mmap.MAP_SHARED, offset=off)
        m[:8] = struct.pack("=Q", 2000 + k)
        m.close()
        call(fd, "unpin", 0, g["input_handle"])
        call(fd, "unpin", 0, g["output_handle"])
        complete(fd, g["request_id"], -g["priority"])
    check_errno(errno.ENOENT, complete, fd, got[0]["request_id"], 0, what="complete twice")
    os.write(go_w, b"g" * len(kids))
    for pid in kids:
        _, st = os.waitpid(pid, 0)
        check(os.waitstatus_to_exitcode(st) == 0, "a submitter failed")
    for x in (ready_r, ready_w, go_r, go_w):
        os.close(x)


def t_timeouts_cancel_expire(fd):
    t0 = time.monotonic()
    check_errno(errno.ETIMEDOUT, take, fd, 200 * 10**6, what="take on an empty queue")
    check(time.monotonic() - t0 >= 0.15, "take returned too early")
    h, _, _ = pin(fd, PAGE)
    rid = submit(fd, 2, h, h)
    check_errno(errno.ETIMEDOUT, wait, fd, rid, 100 * 10**6, what="wait on a queued request")
    call(fd, "cancel", 0, rid)
    call(fd, "cancel", 0, rid)                                   # final already: no-op
    check(wait(fd, rid, 10**9) == (REQ_CANCELLED, 0), "cancelled state")
    check_errno(errno.ENOENT, call, fd, "cancel", 0, rid, what="cancel after reap")
    # expiry: not handed out, the waiter learns EXPIRED
    base = stats(fd)
    rid = submit(fd, 0, h, h, deadline=time.monotonic_ns() + 50 * 10**6)
    time.sleep(0.1)
    check_errno(errno.ETIMEDOUT, take, fd, 100 * 10**6, what="take of an expired request")
    check(wait(fd, rid, 10**9)[0] == REQ_EXPIRED, "expired state")
    rid = submit(fd, 1, h, h, deadline=time.monotonic_ns() + 100 * 10**6)   # waiter-side expiry
    check(wait(fd, rid, 0)[0] == REQ_EXPIRED, "wait past the deadline")
    check(stats(fd)["expired"] == base["expired"] + 2, "expired count")
    # in flight: cancel refused, other files cannot complete, worker death fails it
    rid = submit(fd, 2, h, h)
    wfd = opendev()
    got = take(wfd, 10**9)
    check(got["request_id"] == rid and got["submitter_pid"] == os.getpid(), "take")
    check_errno(errno.EBUSY, call, fd, "cancel", 0, rid, what="cancel in flight")
    check_errno(errno.ENOENT, complete, fd, rid, 0, what="complete by another file")
    os.close(wfd)
    check(wait(fd, rid, 10**9) == (REQ_DONE, -errno.ECONNABORTED), "worker death")
    # max_queue
    old = get_param("max_queue")
    set_param("max_queue", 3)
    try:
        rids = [submit(fd, 3, h, h) for _ in range(3)]
        check_errno(errno.EBUSY, submit, fd, 3, h, h, what="queue full")
        check_errno(errno.ENOENT, submit, fd, 3, h + 10**6, h, what="foreign handle")
        for r in rids:
            call(fd, "cancel", 0, r)
            wait(fd, r, 10**9)
    finally:
        set_param("max_queue", old)
    call(fd, "unpin", 0, h)


def t_take_needs_server_uid(fd):
    def child():
        os.setgid(65534)
        os.setuid(65534)
        cfd = opendev()
        check_errno(errno.EPERM, take, cfd, 10**6, what="take as uid 65534")
        os.close(cfd)
    check(in_child(child) == 0, "child failed")


def t_priority(fd):
    nice0 = os.getpriority(os.PRIO_PROCESS, 0)
    _, _, nice, pol = call(fd, "prio", 3, 0, 0)
    check(pol == os.SCHED_BATCH and nice == 10, f"BATCH gave {pol} {nice}")
    check(os.sched_getscheduler(0) == os.SCHED_BATCH, "policy not applied")
    _, _, nice, pol = call(fd, "prio", 1, 0, 0)
    check(pol == os.SCHED_OTHER and nice == -5, f"HIGH gave {pol} {nice}")
    _, _, nice, pol = call(fd, "prio", 0, 0, 0)
    check(pol == os.SCHED_FIFO, f"REALTIME as root gave {pol}")
    check(os.sched_getparam(0).sched_priority == int(get_param("rt_priority")), "rt priority")
    call(fd, "reset")
    check(os.sched_getscheduler(0) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, 0) == nice0,
          "reset did not restore")
    call(fd, "reset")                                            # nothing saved: no-op

    def unprivileged():
        os.setgid(65534)
        os.setuid(65534)
        cfd = opendev()
        check_errno(errno.EPERM, call, cfd, "prio", 0, 0, 0, what="REALTIME unprivileged")
        _, _, nice, _ = call(cfd, "prio", 1, 0, 0)                 # within max_priority_class
        check(nice == -5 and os.getpriority(os.PRIO_PROCESS, 0) == -5, "HIGH unprivileged")
        os.close(cfd)                                            # release restores
        check(os.getpriority(os.PRIO_PROCESS, 0) == 0, "release did not restore")
    check(in_child(unprivileged) == 0, "unprivileged child failed")

    def other_thread():                                          # restore on release, per thread
        cfd = opendev()
        seen = {}

        def run():
            call(cfd, "prio", 3, 0, 0)
            seen["pol"] = os.sched_getscheduler(0)
            time.sleep(0.5)
            seen["after"] = os.sched_getscheduler(0)
        t = threading.Thread(target=run)
        t.start()
        time.sleep(0.2)
        os.close(cfd)
        t.join()
        check(seen["pol"] == os.SCHED_BATCH and seen["after"] == os.SCHED_OTHER,
              f"thread restore {seen}")
    check(in_child(other_thread) == 0, "thread child failed")


def t_sysfs_stats(fd):
    h, _, _ = pin(fd, 5 * PAGE)
    s = stats(fd)
    for k in ("buffers", "bytes", "peak_bytes", "in_flight", "submitted", "completed",
              "cancelled", "expired", "allocs", "frees"):
        with open(SYSFS_STATS + k) as f:
            check(int(f.read()) == s[k], f"sysfs {k}")
    with open(SYSFS_STATS + "queued") as f:
        check([int(x) for x in f.read().split()] == [s["q0"], s["q1"], s["q2"], s["q3"]], "queued")
    call(fd, "unpin", 0, h)


def fuzz(seconds):
    rnd = random.Random(int.from_bytes(os.urandom(8), "little"))
    print(f"fuzz seed-free run for {seconds}s", flush=True)
    signal.signal(signal.SIGALRM, lambda *a: None)
    signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
    fd = opendev()
    handles, calls, maps = [1, 2, 3], 0, []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        calls += 1
        nr = rnd.choice([rnd.randrange(0, 32), rnd.randrange(0, 12), rnd.randrange(0, 12)])
        c = ioc(rnd.randrange(4), nr, rnd.randrange(1 << 14)) if rnd.random() < 0.3 else \
            ioc(3, nr, rnd.randrange(1 << 14)) & ~(0x3FFF << 16) | (rnd.choice(list(SIZES.values())) << 16)
        if rnd.random() < 0.05:
            c = rnd.getrandbits(32)
        if rnd.random() < 0.05:
            errno_of(fcntl.ioctl, fd, c, rnd.choice([0, 8, rnd.getrandbits(31) & ~0xF, 0x7FFFF000]))
            continue
        n = rnd.choice([8, 16, 24, 32, 40, 56, 88, 120, 128, rnd.randrange(8, 1024)])
        buf = bytearray(rnd.getrandbits(8) for _ in range(n))
        size = rnd.choice([n, n, rnd.choice(list(SIZES.values())), rnd.randrange(0, 2048),
                           rnd.getrandbits(32)])
        struct.pack_into("=I", buf, 0, size)
        if rnd.random() < 0.7 and n >= 16:
            buf[4:8] = bytes(4)                                 # flags/pad zero: go deeper
        if nr == 1 and n >= 16:                                 # pin: sane lengths mostly
            struct.pack_into("=Q", buf, 8, rnd.choice([rnd.randrange(1, 1 << 20),
                                                       rnd.getrandbits(64)]))
        if nr in (2, 3, 6, 9, 10) and n >= 48:                  # known handles / ids
            for o in range(8, 48, 8):
                if rnd.random() < 0.5:
                    struct.pack_into("=Q", buf, o, rnd.choice(handles))
        if nr == 4 and n >= 8:
            struct.pack_into("=I", buf, 4, rnd.choice([1, 2, 3, rnd.getrandbits(32)]))
        if nr in (7, 8) and n >= 24:                            # blocking calls: short timeouts
            struct.pack_into("=Q", buf, 8 if nr == 8 else 16, rnd.randrange(1, 5 * 10**6))
            if nr == 7:
                struct.pack_into("=Q", buf, 8, rnd.choice(handles))
        elif nr in (7, 8):
            buf = bytearray(struct.pack("=I", size)) + bytearray(28)
        try:
            fcntl.ioctl(fd, c, buf, True)
            if nr == 1 and n >= 40:
                handles.append(struct.unpack_from("=Q", buf, 24)[0])
            if nr == 6 and n >= 56:
                handles.append(struct.unpack_from("=Q", buf, 48)[0])
            if nr == 8 and n >= 32:
                handles.append(struct.unpack_from("=Q", buf, 16)[0])
        except OSError:
            pass
        except Exception:
            pass
        r = rnd.random()
        if r < 0.02:                                            # mmap at random offsets
            try:
                maps.append(mmap.mmap(fd, PAGE * rnd.randrange(1, 4), mmap.MAP_SHARED,
                                      offset=PAGE * rnd.choice(handles + [rnd.getrandbits(20)])))
                maps[-1][0] = 1
            except (OSError, ValueError, OverflowError, IndexError):
                pass
        elif r < 0.03:                                          # release with live state
            os.close(fd)
            fd = opendev()
            if maps and rnd.random() < 0.5:
                maps.pop(rnd.randrange(len(maps))).close()
        handles = handles[-64:]
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    for m in maps:
        m.close()
    os.close(fd)
    print(f"fuzz made {calls} calls", flush=True)


def t_concurrent_stress(fd):
    """Submitters, workers and closers at once for 3 s: the lock paths under contention."""
    base = stats(fd)
    end = time.monotonic() + 3.0

    def submitter():
        rnd = random.Random(os.getpid())
        cfd = opendev()
        h = pin(cfd, PAGE)[0]
        while time.monotonic() < end:
            try:
                rid = submit(cfd, rnd.randrange(4), h, h,
                             deadline=time.monotonic_ns() + rnd.choice([0, 10**6, 10**8]) * rnd.randrange(2))
            except OSError as e:
                check(e.errno == errno.EBUSY, f"submit {e}")
                continue
            if rnd.random() < 0.3:
                errno_of(call, cfd, "cancel", 0, rid)
            if rnd.random() < 0.1:
                os.close(cfd)                       # release with requests queued / in flight
                cfd = opendev()
                h = pin(cfd, PAGE)[0]
                continue
            try:
                state, _ = wait(cfd, rid, 10**9)
            except OSError as e:
                check(e.errno == errno.ETIMEDOUT, f"wait {e}")
        os.close(cfd)

    def worker():
        rnd = random.Random(os.getpid())
        cfd = opendev()
        while time.monotonic() < end:
            try:
                r = take(cfd, 50 * 10**6)
            except OSError as e:
                check(e.errno == errno.ETIMEDOUT, f"take {e}")
                continue
            if rnd.random() < 0.05:
                os.close(cfd)                       # worker death with a request in flight
                cfd = opendev()
                continue
            try:
                call(cfd, "map", 0, r["input_handle"], r["input_token"], 0, 0)
                call(cfd, "unpin", 0, r["input_handle"])
            except OSError as e:
                check(e.errno == errno.ENOENT, f"map {e}")
            complete(cfd, r["request_id"], -rnd.randrange(3))
        os.close(cfd)

    kids = [fork_child(fn) for fn in [submitter] * 4 + [worker] * 2]
    codes = [wait_child(p) for p in kids]
    check(codes == [0] * len(kids), f"children failed: {codes}")
    s = stats(fd)
    for k in ("buffers", "bytes", "q0", "q1", "q2", "q3", "in_flight"):
        check(s[k] == base[k], f"{k} left behind: {s[k]} vs {base[k]}")
    print(f"stress: submitted {s['submitted'] - base['submitted']}, completed "
          f"{s['completed'] - base['completed']}, cancelled {s['cancelled'] - base['cancelled']}, "
          f"expired {s['expired'] - base['expired']}", flush=True)


def t_fuzz(fd):
    base = stats(fd)
    check(in_child(lambda: fuzz(5.0)) == 0, "fuzzer raised")
    s = stats(fd)
    for k in ("buffers", "bytes", "q0", "q1", "q2", "q3", "in_flight"):
        check(s[k] == base[k], f"{k} left behind by the fuzzer: {s[k]} vs {base[k]}")


CHECKS = [t_version, t_arg_checks, t_alloc_mmap, t_map_from_child, t_unpin_then_map,
          t_mapping_outlives_unpin_and_close, t_pool_limit, t_killed_child_leaks_nothing,
          t_queue_priority_order, t_timeouts_cancel_expire, t_take_needs_server_uid,
          t_priority, t_sysfs_stats, t_concurrent_stress, t_fuzz]


def main():
    if not os.path.exists(DEV):
        print(f"MLOS-TEST FAIL device {DEV} missing (module not loaded)")
        print("MLOS-TEST SUMMARY passed=0 failed=1")
        return 1
    fd = opendev()
    passed = failed = 0
    for t in CHECKS:
        name = t.__name__[2:]
        t0 = time.monotonic()
        try:
            t(fd)
            passed += 1
            print(f"MLOS-TEST PASS {name} ({time.monotonic() - t0:.2f}s)", flush=True)
        except Exception as e:
            failed += 1
            traceback.print_exc()
            print(f"MLOS-TEST FAIL {name} {type(e).__name__}: {e}", flush=True)
    s = stats(fd)
    if any(s[k] for k in ("buffers", "bytes", "q0", "q1", "q2", "q3", "in_flight")):
        failed += 1
        print(f"MLOS-TEST FAIL final_stats_zero {s}", flush=True)
    else:
        passed += 1
        print("MLOS-TEST PASS final_stats_zero", flush=True)
    os.close(fd)
    print(f"MLOS-TEST SUMMARY passed={passed} failed={failed}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
