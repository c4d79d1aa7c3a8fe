"""One exception family for both backends: ``ShimError`` (an ``OSError`` with ``.errno``) and
one subclass per errno the ABI gives, each also a subclass of the matching builtin so that
``except TimeoutError`` / ``except PermissionError`` keep working."""
from __future__ import annotations

import errno as _errno
import os


class ShimError(OSError):
    """Any failure of a kernel_shim operation; ``.errno`` is the errno of the ABI."""

    def __init__(self, code: int, message: str | None = None):
        super().__init__(code, message or os.strerror(code))

    def __str__(self) -> str:
        return f"[{_errno.errorcode.get(self.errno, self.errno)}] {self.strerror}"


class BufferNotFound(ShimError, FileNotFoundError):
    """ENOENT: no such buffer or request (never allocated, freed, or not referenced here)."""


class AccessDenied(ShimError, PermissionError):
    """EACCES: wrong token for the buffer, or the device node is not accessible."""


class NotPermitted(ShimError, PermissionError):
    """EPERM: a priority class above what this process may take."""


class PoolExhausted(ShimError):
    """ENOSPC: the buffer pool limit would be exceeded."""


class QueueFull(ShimError):
    """EBUSY: the request queue is full (or the request is already taken)."""


class TimedOut(ShimError, TimeoutError):
    """ETIMEDOUT: the timeout ran out."""


class InvalidArgument(ShimError, ValueError):
    """EINVAL: unknown priority class, zero length, unknown flags, bad argument."""


class DeviceUnavailable(ShimError):
    """MLOS_KERNEL=on but /dev/mlos-ml is absent or cannot be used."""


_BY_ERRNO = {
    _errno.ENOENT: BufferNotFound, _errno.EACCES: AccessDenied, _errno.EPERM: NotPermitted,
    _errno.ENOSPC: PoolExhausted, _errno.EBUSY: QueueFull, _errno.ETIMEDOUT: TimedOut,
    _errno.EINVAL: InvalidArgument,
}

# What an errno means for each operation, when the bare strerror would be vague.
_HINTS = {
    ("map", _errno.ENOENT): "no live buffer with this handle",
    ("map", _errno.EACCES): "wrong token for this buffer",
    ("unpin", _errno.ENOENT): "this device does not reference the buffer",
    ("alloc", _errno.ENOSPC): "the buffer pool limit would be exceeded",
    ("alloc", _errno.EINVAL): "length must be > 0 and flags 0",
    ("submit", _errno.ENOENT): "input/output handle is not a buffer this device references",
    ("submit", _errno.EBUSY): "the request queue is full",
    ("submit", _errno.EINVAL): "unknown priority class",
    ("set_priority", _errno.EPERM): "priority class above what this process may take",
    ("set_priority", _errno.EINVAL): "unknown priority class",
    ("wait", _errno.ENOENT): "no request with this id submitted by this device",
    ("cancel", _errno.ENOENT): "no request with this id submitted by this device",
    ("cancel", _errno.EBUSY): "the request was already taken by a worker",
    ("complete", _errno.ENOENT): "no request with this id taken by this device",
    ("take", _errno.ETIMEDOUT): "no request arrived before the timeout",
    ("wait", _errno.ETIMEDOUT): "the request did not finish before the timeout",
}


def shim_error(code: int, op: str | None = None, detail: str | None = None) -> ShimError:
    """The ShimError subclass for ``code``, with a message naming the operation."""
    cls = _BY_ERRNO.get(code, ShimError)
    text = detail or _HINTS.get((op, code)) or os.strerror(code)
    if op:
        text = f"{op}: {text}"
    return cls(code, text)
