"""The client half of the userspace backend: ``UserspaceDevice`` speaks to a broker.

One connection per device (the twin of one open file), usable from many threads: frames carry
a sequence number, and whichever thread is reading hands replies to their callers. A blocking
call interrupted by an exception (a signal handler's, KeyboardInterrupt) sends ``abort`` and
collects the reply so the connection stays in step; a take the broker had already decided is
kept and returned by the next take(), a wait's result by the next wait() of that request.
"""
from __future__ import annotations

import errno
import itertools
import os
import socket
import threading

from . import abi
from .broker import recv_frame, send_frame
from .device import Buffer, Device, Request, timeout_ns
from .errors import shim_error
from .mapping import Mapping
from . import userspace as _us


class UserspaceDevice(Device):
    backend = "userspace"

    def __init__(self, path: str | None = None, reason: str = "", *, start: bool = True, own: bool = False):
        """``start``: start a broker in this process when none listens. ``own``: use only a broker
        this process started (a server's private broker), never one somebody else runs."""
        self.path = path or _us.socket_path()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        how = f"connected to the broker at {self.path}"
        try:
            if own and not _us.started_here(self.path):
                try:
                    _us.start_broker(self.path)
                except OSError as e:
                    if e.errno == errno.EADDRINUSE:
                        raise shim_error(errno.EADDRINUSE, "open", f"another process already serves a broker at "
                                         f"{self.path}; a server uses only a broker of its own") from None
                    raise
                how = f"started a broker in this process at {self.path}"
            try:
                self.sock.connect(self.path)
            except OSError as e:
                if not start or own:
                    raise shim_error(e.errno, "open", f"no broker at {self.path}: {e.strerror}") from None
                try:
                    _us.start_broker(self.path)
                    how = f"started a broker in this process at {self.path}"
                except OSError as e2:
                    if e2.errno != errno.EADDRINUSE:     # lost a race: someone else started one
                        raise
                self.sock.connect(self.path)
            uid = _us.peer_uid(self.sock)
            if uid != os.getuid():
                raise shim_error(errno.EACCES, "open", f"the broker at {self.path} runs as uid {uid}, not as this "
                                 f"uid ({os.getuid()}): refused")
        except BaseException:
            self.sock.close()
            raise
        self.reason = f"{reason}; {how}" if reason else how
        self.closed = False
        self._seq = itertools.count(1)
        self._cv = threading.Condition()
        self._replies: dict[int, tuple[dict, list]] = {}
        self._waiting: set[int] = set()
        self._reading = False
        self._send_lock = threading.Lock()
        self._saved_take: list[dict] = []
        self._saved_wait: dict[int, dict] = {}
        self._prio: dict[int, tuple] = {}        # native thread id -> (policy, param, nice)

    # -- the wire
    def _send(self, obj: dict) -> None:
        if self.closed:
            raise shim_error(errno.EBADF, obj["op"], "device is closed")
        try:
            with self._send_lock:
                send_frame(self.sock, obj)
        except OSError as e:
            raise shim_error(e.errno or errno.EPIPE, obj["op"], f"broker connection lost: {e}") from None

    def _await(self, seq: int) -> tuple[dict, list]:
        while True:
            with self._cv:
                if seq in self._replies:
                    self._waiting.discard(seq)
                    return self._replies.pop(seq)
                if self._reading:
                    self._cv.wait()
                    continue
                self._reading = True
            msg, fds = None, []
            try:
                msg, fds = recv_frame(self.sock)
            except OSError as e:
                raise shim_error(errno.EPIPE, "broker", f"broker connection lost: {e}") from None
            finally:
                with self._cv:
                    self._reading = False
                    if msg is not None:
                        if msg.get("seq") in self._waiting:
                            self._replies[msg["seq"]] = (msg, fds)
                        else:
                            for fd in fds:
                                os.close(fd)
                    self._cv.notify_all()
            if msg is None:
                raise shim_error(errno.EPIPE, "broker", "the broker closed the connection")

    def _call(self, op: str, **args) -> tuple[dict, list]:
        seq = next(self._seq)
        with self._cv:
            self._waiting.add(seq)
        self._send({"op": op, "seq": seq, **args})
        try:
            msg, fds = self._await(seq)
        except BaseException:
            if op in ("take", "wait") and not self.closed:
                self._abort(op, seq, args)
            raise
        if "errno" in msg:
            for fd in fds:
                os.close(fd)
            raise shim_error(msg["errno"], op, msg.get("error"))
        return msg, fds

    def _abort(self, op: str, seq: int, args: dict) -> None:
        try:
            self._send({"op": "abort", "seq": 0, "target": seq})
            msg, _ = self._await(seq)
        except BaseException:
            return
        if "errno" not in msg:              # decided before the abort: keep it for the next call
            if op == "take":
                self._saved_take.append(msg)
            else:
                self._saved_wait[int(args["request_id"])] = msg

    def _mmap(self, fds: list, length: int) -> Mapping:
        try:
            if not fds:
                raise shim_error(errno.EPROTO, "mmap", "the broker sent no memfd")
            return Mapping(fds[0], length)
        finally:
            for fd in fds:
                os.close(fd)

    # -- the operations
    def version(self) -> dict:
        msg, _ = self._call("version")
        return {k: msg[k] for k in ("abi_version", "pool_limit", "max_queue", "max_priority")}

    def alloc(self, nbytes: int) -> Buffer:
        msg, fds = self._call("alloc", length=int(nbytes), flags=0)
        return Buffer(self, msg["handle"], msg["token"], msg["length"], self._mmap(fds, msg["length"]))

    def map(self, handle: int, token: int) -> Buffer:
        msg, fds = self._call("map", handle=int(handle), token=int(token))
        return Buffer(self, int(handle), int(token), msg["length"], self._mmap(fds, msg["length"]))

    def unpin(self, handle: int) -> None:
        self._call("unpin", handle=int(handle))

    def set_priority(self, cls: int) -> tuple[int, int]:
        if cls not in _us._PRIO_SCHED:
            raise shim_error(errno.EINVAL, "set_priority", f"unknown priority class {cls}")
        bound = _us.unprivileged_max_priority()
        if os.geteuid() == 0:
            bound = min(bound, abi.PRIO_HIGH)
        if cls < bound:
            raise shim_error(errno.EPERM, "set_priority",
                             f"class {cls} is above what this process may take (class {bound})")
        tid = threading.get_native_id()
        saved = (os.sched_getscheduler(tid), os.sched_getparam(tid),
                 os.getpriority(os.PRIO_PROCESS, tid))
        policy_name, nice = _us._PRIO_SCHED[cls]
        policy = getattr(os, policy_name)
        try:
            prio = 1 if policy == os.SCHED_FIFO else 0
            os.sched_setscheduler(tid, policy, os.sched_param(prio))
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError as e:
            self._restore(tid, saved)
            raise shim_error(errno.EPERM, "set_priority", f"the system refused class {cls}: {e.strerror}") from None
        self._prio.setdefault(tid, saved)
        return os.getpriority(os.PRIO_PROCESS, tid), policy

    @staticmethod
    def _restore(tid: int, saved: tuple) -> None:
        policy, param, nice = saved
        os.sched_setscheduler(tid, policy, param)
        os.setpriority(os.PRIO_PROCESS, tid, nice)

    def reset_priority(self) -> None:
        tid = threading.get_native_id()
        saved = self._prio.pop(tid, None)
        if saved is None:
            return
        try:
            self._restore(tid, saved)
        except OSError as e:
            raise shim_error(errno.EPERM, "reset_priority",
                             f"cannot restore the thread's priority: {e.strerror} (needs CAP_SYS_NICE)") from None

    def submit(self, model_id, input_handle, output_handle, priority, deadline_ns=0, user_data=0) -> int:
        msg, _ = self._call("submit", model_id=int(model_id), input_handle=int(input_handle),
                            output_handle=int(output_handle), priority=int(priority),
                            deadline_ns=int(deadline_ns), user_data=int(user_data))
        return msg["request_id"]

    def wait(self, request_id: int, timeout: float | None = None) -> tuple[int, int]:
        msg = self._saved_wait.pop(int(request_id), None)
        if msg is None:
            msg, _ = self._call("wait", request_id=int(request_id), timeout_ns=timeout_ns(timeout))
        return msg["state"], msg["status"]

    def take(self, timeout: float | None = None) -> Request:
        msg = self._saved_take.pop(0) if self._saved_take else None
        if msg is None:
            msg, _ = self._call("take", timeout_ns=timeout_ns(timeout))
        return Request(**{k: msg[k] for k in Request.__dataclass_fields__})

    def complete(self, request_id: int, status: int = 0) -> None:
        self._call("complete", request_id=int(request_id), status=int(status))

    def cancel(self, request_id: int) -> None:
        self._call("cancel", request_id=int(request_id))

    def stats(self) -> dict:
        msg, _ = self._call("stats")
        msg.pop("seq", None)
        return msg

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for tid in list(self._prio):
            try:
                self._restore(tid, self._prio.pop(tid))
            except OSError:
                pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
