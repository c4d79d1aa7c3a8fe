"""The kernel backend: ioctls on /dev/mlos-ml with structs packed by cffi from the uapi header.

Every call follows one shape: ``abi.new(struct, **in_fields)`` (size word set, rest zeroed),
``fcntl.ioctl(fd, cmd, bytearray)`` (the kernel reads and writes the same bytes), copy the
bytes back into the struct, read the out fields. Buffers are mapped with
libc's ``mmap(fd, length, MAP_SHARED, mmap_offset)`` (kernel_shim.mapping: no dup of the fd);
the mapping outlives an unpin or close (the kernel keeps the pages while a vma references them).

Blocking calls (INFERENCE_WAIT, REQ_TAKE) release the GIL inside fcntl.ioctl. A signal gives
EINTR: its Python handler runs at once (an exception it raises propagates), otherwise the
call is retried with what is left of the timeout (PEP 475 style).
"""
from __future__ import annotations

import errno
import fcntl
import os
import time

from . import abi
from .device import Buffer, Device, Request, round_up, timeout_ns
from .errors import shim_error
from .mapping import Mapping

ffi = abi.ffi


class KernelDevice(Device):
    backend = "kernel"

    def __init__(self, path: str = abi.DEVICE, reason: str = ""):
        self.path, self.reason = path, reason
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise shim_error(e.errno, "open", f"{path}: {e.strerror}") from None
        self.closed = False
        try:
            v = self.version()
        except Exception:
            os.close(self.fd)
            raise
        if v["abi_version"] != abi.ABI_VERSION:
            os.close(self.fd)
            raise shim_error(errno.EPROTO, "open",
                             f"{path} speaks ABI {v['abi_version']}, this binding {abi.ABI_VERSION}")

    # -- one ioctl
    def _ioctl(self, name: str, op: str, p=None):
        if self.closed:
            raise shim_error(errno.EBADF, op, "device is closed")
        cmd = abi.IOCTLS[name]
        if p is None:
            try:
                fcntl.ioctl(self.fd, cmd, 0)
            except OSError as e:
                raise shim_error(e.errno, op) from None
            return None
        buf = bytearray(ffi.buffer(p))
        try:
            fcntl.ioctl(self.fd, cmd, buf, True)
        except OSError as e:
            raise shim_error(e.errno, op) from None
        ffi.memmove(p, buf, len(buf))
        return p

    def _blocking(self, name: str, op: str, p, timeout: float | None):
        """An ioctl with timeout_ns, retried after EINTR with the time that is left."""
        end = None if timeout is None else time.monotonic() + max(timeout, 0)
        while True:
            p.timeout_ns = timeout_ns(None if end is None else end - time.monotonic())
            try:
                return self._ioctl(name, op, p)
            except OSError as e:
                if e.errno != errno.EINTR:
                    raise
            if end is not None and time.monotonic() >= end:
                raise shim_error(errno.ETIMEDOUT, op)

    def _mmap(self, offset: int, length: int) -> Mapping:
        if self.closed:
            raise shim_error(errno.EBADF, "mmap", "device is closed")
        return Mapping(self.fd, round_up(length), offset)

    # -- the operations
    def version(self) -> dict:
        return abi.to_dict(self._ioctl("MLOS_VERSION", "version", abi.new("mlos_version")))

    def alloc(self, nbytes: int) -> Buffer:
        if nbytes <= 0:
            raise shim_error(errno.EINVAL, "alloc")
        p = self._ioctl("MLOS_TENSOR_PIN", "alloc", abi.new("mlos_tensor_pin", length=nbytes))
        try:
            mm = self._mmap(p.mmap_offset, nbytes)
        except Exception:
            self.unpin(p.handle)
            raise
        return Buffer(self, p.handle, p.token, round_up(nbytes), mm)

    def map(self, handle: int, token: int) -> Buffer:
        p = self._ioctl("MLOS_TENSOR_MAP", "map", abi.new("mlos_tensor_map", handle=handle, token=token))
        try:
            mm = self._mmap(p.mmap_offset, p.length)
        except Exception:
            self.unpin(handle)
            raise
        return Buffer(self, handle, token, p.length, mm)

    def unpin(self, handle: int) -> None:
        self._ioctl("MLOS_TENSOR_UNPIN", "unpin", abi.new("mlos_tensor_unpin", handle=handle))

    def set_priority(self, cls: int) -> tuple[int, int]:
        p = self._ioctl("MLOS_SET_PRIORITY", "set_priority", abi.new("mlos_priority", priority=cls))
        return p.nice, p.policy

    def reset_priority(self) -> None:
        self._ioctl("MLOS_RESET_PRIORITY", "reset_priority")

    def submit(self, model_id, input_handle, output_handle, priority, deadline_ns=0, user_data=0) -> int:
        p = abi.new("mlos_inference_start", priority=priority, model_id=model_id,
                    input_handle=input_handle, output_handle=output_handle,
                    deadline_ns=deadline_ns, user_data=user_data)
        return self._ioctl("MLOS_INFERENCE_START", "submit", p).request_id

    def wait(self, request_id: int, timeout: float | None = None) -> tuple[int, int]:
        p = abi.new("mlos_inference_wait", request_id=request_id)
        p = self._blocking("MLOS_INFERENCE_WAIT", "wait", p, timeout)
        return p.state, p.status

    def take(self, timeout: float | None = None) -> Request:
        p = self._blocking("MLOS_REQ_TAKE", "take", abi.new("mlos_req_take"), timeout)
        d = abi.to_dict(p)
        d.pop("timeout_ns")
        return Request(**d)

    def complete(self, request_id: int, status: int = 0) -> None:
        self._ioctl("MLOS_REQ_COMPLETE", "complete",
                    abi.new("mlos_req_complete", request_id=request_id, status=status))

    def cancel(self, request_id: int) -> None:
        self._ioctl("MLOS_REQ_CANCEL", "cancel", abi.new("mlos_req_cancel", request_id=request_id))

    def stats(self) -> dict:
        return abi.to_dict(self._ioctl("MLOS_STATS", "stats", abi.new("mlos_stats")))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)
