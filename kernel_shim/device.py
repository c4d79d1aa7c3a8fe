"""The API both backends share: ``open_device()``, ``Device``, ``Buffer``, ``Request``.

``MLOS_KERNEL`` (or the ``mode`` argument) picks the backend:
  - ``auto`` (default): the kernel when /dev/mlos-ml exists, opens and speaks our ABI version,
    else userspace;
  - ``on``: the kernel, or ``DeviceUnavailable`` saying why not;
  - ``off``: userspace (a broker on a Unix socket, started in-process when none runs).

Timeouts are in seconds: ``None`` waits forever (interruptible by signals), ``<= 0`` polls.
"""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import time
from dataclasses import dataclass

from . import abi
from .errors import DeviceUnavailable, ShimError, shim_error
from .mapping import Mapping

PAGE = mmap.PAGESIZE


def round_up(n: int, to: int = PAGE) -> int:
    return (n + to - 1) // to * to


def model_id_for(name: str) -> int:
    """A stable 64-bit model id for a model name (the ABI's model_id is opaque)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def timeout_ns(timeout: float | None) -> int:
    """Seconds -> the ABI's timeout_ns, where 0 means forever: None -> 0, <= 0 -> 1 ns (poll)."""
    if timeout is None:
        return 0
    return max(1, int(timeout * 1e9))


@dataclass(frozen=True)
class Request:
    """A request as a worker takes it (the fields of struct mlos_req_take)."""
    request_id: int
    model_id: int
    input_handle: int
    input_token: int
    output_handle: int
    output_token: int
    deadline_ns: int
    user_data: int
    priority: int
    submitter_pid: int


class Buffer:
    """A mapped buffer. ``close()`` drops this device's reference (unpin) and this object's hold
    on the mapping; the pages stay mapped while a memoryview or array made from it lives."""

    def __init__(self, device: "Device", handle: int, token: int, length: int, mapping: Mapping):
        self.device, self.handle, self.token, self.length = device, handle, token, length
        self._mapping: Mapping | None = mapping

    @property
    def closed(self) -> bool:
        return self._mapping is None

    def _view(self):
        if self._mapping is None:
            raise shim_error(errno.EBADF, "buffer", "buffer is closed")
        return self._mapping.view()

    @property
    def memoryview(self) -> memoryview:
        return memoryview(self._view())

    def array(self, dtype="uint8", shape=None, offset: int = 0):
        """A numpy array over the mapping, no copy. ``shape`` None: as many items as fit."""
        import numpy as np
        dt = np.dtype(dtype)
        if shape is None:
            count = (self.length - offset) // dt.itemsize
            shape = (count,)
        elif isinstance(shape, int):
            shape = (shape,)
        count = 1
        for s in shape:
            count *= s
        if offset < 0 or offset + count * dt.itemsize > self.length:
            raise shim_error(errno.EINVAL, "array", f"{shape} of {dt} at {offset} does not fit {self.length} bytes")
        return np.frombuffer(self._view(), dtype=dt, count=count, offset=offset).reshape(shape)

    def close(self) -> None:
        if self._mapping is None:
            return
        self._mapping = None
        if not self.device.closed:
            self.device.unpin(self.handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Buffer handle={self.handle} length={self.length}{' closed' if self.closed else ''}>"


class Device:
    """The operations of /dev/mlos-ml. Subclasses: KernelDevice, UserspaceDevice."""

    backend = "?"
    reason = ""
    closed = False

    # -- implemented by each backend
    def version(self) -> dict: raise NotImplementedError
    def alloc(self, nbytes: int) -> Buffer: raise NotImplementedError
    def map(self, handle: int, token: int) -> Buffer: raise NotImplementedError
    def unpin(self, handle: int) -> None: raise NotImplementedError
    def set_priority(self, cls: int) -> tuple[int, int]: raise NotImplementedError
    def reset_priority(self) -> None: raise NotImplementedError
    def submit(self, model_id: int, input_handle: int, output_handle: int, priority: int,
               deadline_ns: int = 0, user_data: int = 0) -> int: raise NotImplementedError
    def wait(self, request_id: int, timeout: float | None = None) -> tuple[int, int]: raise NotImplementedError
    def take(self, timeout: float | None = None) -> Request: raise NotImplementedError
    def complete(self, request_id: int, status: int = 0) -> None: raise NotImplementedError
    def cancel(self, request_id: int) -> None: raise NotImplementedError
    def stats(self) -> dict: raise NotImplementedError
    def close(self) -> None: raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} backend={self.backend} reason={self.reason!r}>"


def deadline_in(seconds: float) -> int:
    """A deadline_ns ``seconds`` from now on CLOCK_MONOTONIC (the clock the ABI uses)."""
    return time.monotonic_ns() + int(seconds * 1e9)


def kernel_mode(mode: str | None = None) -> str:
    m = (mode or os.environ.get("MLOS_KERNEL") or "auto").strip().lower()
    aliases = {"1": "on", "true": "on", "yes": "on", "0": "off", "false": "off", "no": "off"}
    m = aliases.get(m, m)
    if m not in ("auto", "on", "off"):
        raise shim_error(errno.EINVAL, "open_device", f"MLOS_KERNEL must be auto, on or off, not {m!r}")
    return m


def open_device(mode: str | None = None, *, path: str | None = None,
                socket_path: str | None = None, own_broker: bool = False) -> Device:
    """Open the backend MLOS_KERNEL (or ``mode``) asks for; ``.backend``/``.reason`` say which and why.
    ``own_broker``: in userspace, use only a broker this process started (what a server wants)."""
    from .kernel import KernelDevice
    from .userspace import UserspaceDevice
    m = kernel_mode(mode)
    dev_path = path or abi.DEVICE
    if m == "off":
        return UserspaceDevice(socket_path, reason="MLOS_KERNEL=off", own=own_broker)
    if not os.path.exists(dev_path):
        why = f"{dev_path} does not exist (module not loaded?)"
        if m == "on":
            raise DeviceUnavailable(errno.ENOENT, f"MLOS_KERNEL=on but {why}")
        return UserspaceDevice(socket_path, reason=f"MLOS_KERNEL=auto and {why}", own=own_broker)
    try:
        return KernelDevice(dev_path, reason=f"MLOS_KERNEL={m} and {dev_path} opens")
    except (ShimError, OSError) as e:
        why = f"{dev_path} exists but cannot be used: {e}"
        if m == "on":
            raise DeviceUnavailable(e.errno or errno.ENODEV, f"MLOS_KERNEL=on but {why}") from e
        return UserspaceDevice(socket_path, reason=f"MLOS_KERNEL=auto and {why}", own=own_broker)
