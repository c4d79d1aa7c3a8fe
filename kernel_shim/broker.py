"""The userspace twin of mlos-ml.ko: buffers, request queue and statistics behind a Unix socket.

Protocol (one frame = one SOCK_SEQPACKET message, so no length prefix is needed):
  request  ``{"op": <name>, "seq": <int>, ...arguments}``  (JSON, UTF-8)
  reply    ``{"seq": <int>, ...results}`` or ``{"seq": <int>, "errno": <int>, "error": <text>}``
  alloc/map replies carry the buffer's memfd as SCM_RIGHTS ancillary data.
Ops: version, alloc{length,flags}, map{handle,token}, unpin{handle}, submit{priority,model_id,
input_handle,output_handle,deadline_ns,user_data}, wait{request_id,timeout_ns},
take{timeout_ns}, complete{request_id,status}, cancel{request_id}, stats, and
abort{target}: give up a blocking wait/take; its reply then comes at once (errno EINTR, or the
result if it was already decided). Every request gets exactly one reply.

A connection is the twin of an open file: buffers it pins or maps are referenced by it, and
its close (a client's exit or death) drops them, removes the requests it queued, and finishes
the requests it had taken with status -ECONNABORTED. Semantics follow the header's comments.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import signal
import socket
import struct
import threading
import time
from collections import Counter, deque

from . import abi

FRAME_MAX = 1 << 16
FINAL = ("done", "cancelled", "expired")
_MAX_ERRNO = 4095                    # include/linux/err.h
_STATE_CODE = {"done": abi.REQ_DONE, "cancelled": abi.REQ_CANCELLED, "expired": abi.REQ_EXPIRED}


class OpError(Exception):
    def __init__(self, code: int, text: str = ""):
        super().__init__(text)
        self.code, self.text = code, text


def block_signals() -> None:
    """Broker threads never take a process's signals: they belong to the threads that wait."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


def send_frame(sock: socket.socket, obj: dict, fds=()) -> None:
    data = json.dumps(obj, separators=(",", ":")).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def recv_frame(sock: socket.socket) -> tuple[dict | None, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(sock, FRAME_MAX, 4)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


class _Buf:
    __slots__ = ("handle", "token", "length", "fd", "refs")

    def __init__(self, handle, token, length, fd):
        self.handle, self.token, self.length, self.fd, self.refs = handle, token, length, fd, 0


class _Req:
    __slots__ = ("id", "model_id", "priority", "input_handle", "output_handle", "deadline_ns",
                 "user_data", "submitter", "pid", "state", "status", "taker")


class Conn:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pid, self.uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        self.refs: Counter = Counter()
        self.pending: set[int] = set()     # seqs of blocking ops in progress
        self.aborted: set[int] = set()
        self.closed = False
        self.send_lock = threading.Lock()

    def reply(self, obj: dict, fds=()) -> None:
        try:
            with self.send_lock:
                send_frame(self.sock, obj, fds)
        except OSError:
            pass                        # the client is gone; dropping the connection cleans up


class BrokerState:
    """Everything the module keeps, under one condition variable."""

    def __init__(self, pool_limit: int, max_queue: int, max_priority: int):
        self.pool_limit, self.max_queue, self.max_priority = pool_limit, max_queue, max_priority
        self.cv = threading.Condition()
        self.buffers: dict[int, _Buf] = {}
        self.requests: dict[int, _Req] = {}
        self.queues = [deque() for _ in range(abi.PRIO_COUNT)]
        self.next_handle = self.next_request = 1
        self.s = Counter()

    # -- helpers (hold cv)
    def _sweep(self) -> None:
        now = time.monotonic_ns()
        for q in self.queues:
            for r in [r for r in q if r.deadline_ns and r.deadline_ns <= now]:
                q.remove(r)
                r.state = "expired"
                self.s["expired"] += 1
                self._settle(r)

    def _settle(self, r: _Req) -> None:
        if r.submitter is None:       # nobody will wait for it
            self.requests.pop(r.id, None)
        self.cv.notify_all()

    def _drop_ref(self, conn: Conn, handle: int, n: int = 1) -> None:
        conn.refs[handle] -= n
        if conn.refs[handle] <= 0:
            del conn.refs[handle]
        b = self.buffers[handle]
        b.refs -= n
        if b.refs <= 0:
            del self.buffers[handle]
            os.close(b.fd)
            self.s["bytes"] -= b.length
            self.s["frees"] += 1

    def _take_one(self, conn: Conn) -> dict | None:
        self._sweep()
        for q in self.queues:
            if q:
                r = q.popleft()
                r.state, r.taker = "taken", conn
                self.s["in_flight"] += 1
                tok = lambda h: self.buffers[h].token if h in self.buffers else 0  # noqa: E731
                return {"request_id": r.id, "model_id": r.model_id, "input_handle": r.input_handle,
                        "input_token": tok(r.input_handle), "output_handle": r.output_handle,
                        "output_token": tok(r.output_handle), "deadline_ns": r.deadline_ns,
                        "user_data": r.user_data, "priority": r.priority, "submitter_pid": r.pid}
        return None

    # -- non-blocking ops: (reply, fds)
    def op_version(self, conn, a):
        return {"abi_version": abi.ABI_VERSION, "pool_limit": self.pool_limit,
                "max_queue": self.max_queue, "max_priority": self.max_priority}, ()

    def op_alloc(self, conn, a):
        length, flags = int(a.get("length", 0)), int(a.get("flags", 0))
        if length <= 0 or flags:
            raise OpError(errno.EINVAL, "length must be > 0 and flags 0")
        length = -(-length // os.sysconf("SC_PAGE_SIZE")) * os.sysconf("SC_PAGE_SIZE")
        if self.s["bytes"] + length > self.pool_limit:
            raise OpError(errno.ENOSPC, f"{length} bytes would exceed the pool limit "
                          f"({self.s['bytes']} of {self.pool_limit} in use)")
        fd = os.memfd_create(f"mlos-buf-{self.next_handle}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, length)        # zero-filled
            # Every holder gets this fd: without the seals one could shrink the buffer under a
            # reader's mapping, whose next access would die of SIGBUS (the core's, too).
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        except OSError:
            os.close(fd)
            raise
        b = _Buf(self.next_handle, secrets.randbits(64) or 1, length, fd)
        self.next_handle += 1
        self.buffers[b.handle] = b
        b.refs = 1
        conn.refs[b.handle] += 1
        self.s["bytes"] += length
        self.s["peak_bytes"] = max(self.s["peak_bytes"], self.s["bytes"])
        self.s["allocs"] += 1
        return {"handle": b.handle, "token": b.token, "length": length, "mmap_offset": 0}, (fd,)

    def op_map(self, conn, a):
        b = self.buffers.get(int(a["handle"]))
        if b is None:
            raise OpError(errno.ENOENT, f"no live buffer with handle {a['handle']}")
        if not secrets.compare_digest(b.token.to_bytes(8, "little"), int(a["token"]).to_bytes(8, "little")):
            raise OpError(errno.EACCES, f"wrong token for buffer {b.handle}")
        b.refs += 1
        conn.refs[b.handle] += 1
        return {"length": b.length, "mmap_offset": 0}, (b.fd,)

    def op_unpin(self, conn, a):
        h = int(a["handle"])
        if conn.refs.get(h, 0) <= 0:
            raise OpError(errno.ENOENT, f"this device does not reference buffer {h}")
        self._drop_ref(conn, h)
        return {}, ()

    def op_submit(self, conn, a):
        prio = int(a["priority"])
        if not 0 <= prio < abi.PRIO_COUNT:
            raise OpError(errno.EINVAL, f"unknown priority class {prio}")
        for key in ("input_handle", "output_handle"):
            if conn.refs.get(int(a[key]), 0) <= 0:
                raise OpError(errno.ENOENT, f"{key} {a[key]} is not a buffer this device references")
        self._sweep()
        if sum(len(q) for q in self.queues) >= self.max_queue:
            raise OpError(errno.EBUSY, f"the request queue is full ({self.max_queue})")
        r = _Req()
        r.id, self.next_request = self.next_request, self.next_request + 1
        r.model_id, r.priority = int(a.get("model_id", 0)), prio
        r.input_handle, r.output_handle = int(a["input_handle"]), int(a["output_handle"])
        r.deadline_ns, r.user_data = int(a.get("deadline_ns", 0)), int(a.get("user_data", 0))
        r.submitter, r.pid, r.state, r.status, r.taker = conn, conn.pid, "queued", 0, None
        self.requests[r.id] = r
        self.queues[prio].append(r)
        self.s["submitted"] += 1
        self.cv.notify_all()
        return {"request_id": r.id}, ()

    def op_complete(self, conn, a):
        r = self.requests.get(int(a["request_id"]))
        if r is None or r.taker is not conn or r.state != "taken":
            raise OpError(errno.ENOENT, f"request {a['request_id']} was not taken by this device")
        status = int(a.get("status", 0))
        if status > 0 or status < -_MAX_ERRNO:          # the header: 0 or a negative errno
            raise OpError(errno.EINVAL, f"status {status} is neither 0 nor a negative errno")
        r.state, r.status = "done", status
        self.s["in_flight"] -= 1
        self.s["completed"] += 1
        self._settle(r)
        return {}, ()

    def op_cancel(self, conn, a):
        r = self.requests.get(int(a["request_id"]))
        if r is None or r.submitter is not conn:
            raise OpError(errno.ENOENT, f"no request {a['request_id']} submitted by this device")
        if r.state == "taken":
            raise OpError(errno.EBUSY, f"request {r.id} was already taken by a worker")
        if r.state == "queued":
            self.queues[r.priority].remove(r)
            r.state = "cancelled"
            self.s["cancelled"] += 1
            self._settle(r)
        return {}, ()

    def op_stats(self, conn, a):
        self._sweep()
        keys = ("buffers", "bytes", "peak_bytes", "in_flight", "submitted", "completed",
                "cancelled", "expired", "allocs", "frees")
        out = {k: self.s[k] for k in keys}
        out["buffers"] = len(self.buffers)
        out["queued"] = [len(q) for q in self.queues]
        return out, ()

    # -- blocking ops, run in their own thread: return the reply
    def blocking(self, conn: Conn, seq: int, op: str, a: dict) -> dict:
        tns = int(a.get("timeout_ns", 0))
        end = time.monotonic_ns() + tns if tns else None
        with self.cv:
            try:
                if op == "wait":
                    r = self.requests.get(int(a["request_id"]))
                    if r is None or r.submitter is not conn:
                        raise OpError(errno.ENOENT, f"no request {a['request_id']} submitted by this device")
                while True:
                    if op == "take":
                        got = self._take_one(conn)
                        if got is not None:
                            return got
                    else:
                        self._sweep()
                        if r.state in FINAL:
                            self.requests.pop(r.id, None)
                            return {"state": _STATE_CODE[r.state], "status": r.status}
                    if seq in conn.aborted or conn.closed:
                        raise OpError(errno.EINTR, "interrupted")
                    now = time.monotonic_ns()
                    if end is not None and now >= end:
                        raise OpError(errno.ETIMEDOUT, f"{op}: timed out")
                    limit = [end] if end else []
                    if op == "wait" and r.state == "queued" and r.deadline_ns:
                        limit.append(r.deadline_ns)
                    self.cv.wait(max(min(limit) - now, 0) / 1e9 + 0.0005 if limit else None)
            finally:
                conn.pending.discard(seq)
                conn.aborted.discard(seq)

    def drop_conn(self, conn: Conn) -> None:
        with self.cv:
            conn.closed = True
            for h, n in list(conn.refs.items()):
                self._drop_ref(conn, h, n)
            for r in list(self.requests.values()):
                if r.submitter is conn:
                    r.submitter = None
                    if r.state == "queued":
                        self.queues[r.priority].remove(r)
                        r.state = "cancelled"
                        self.s["cancelled"] += 1
                    if r.state != "taken":
                        self.requests.pop(r.id, None)
                if r.taker is conn and r.state == "taken":
                    r.state, r.status = "done", -errno.ECONNABORTED
                    self.s["in_flight"] -= 1
                    self._settle(r)
            self.cv.notify_all()
