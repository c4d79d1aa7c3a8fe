"""The scheduling priority of the core's inference threads, asked of kernel_shim.

``--inference-priority high`` raises every thread that runs or loads a model to the shim's HIGH
class: through /dev/mlos-ml the module applies it within the bound its administrator set (so an
unprivileged core needs no CAP_SYS_NICE), in userspace the shim calls setpriority where allowed.
The class is applied once per thread, as each executor thread starts. Threads those threads
create inherit it (Linux copies nice and policy on clone), which covers onnxruntime's intra-op
pool: it is created while a load thread builds the session.

A refusal (EPERM above the bound, no device) is logged once and reported in /status; the core
serves on at normal priority rather than refusing to start.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

CLASSES = {"realtime": 0, "high": 1, "normal": 2, "batch": 3}   # kernel_shim.PRIO_*


def parse_class(name: str) -> str:
    key = str(name).strip().lower()
    if key not in CLASSES:
        raise ValueError(f"inference priority must be one of {', '.join(CLASSES)}, not {name!r}")
    return key


class ThreadPriority:
    """An executor ``initializer``: applies the configured class to the calling thread."""

    def __init__(self, name: str = "normal", socket_path: str | None = None):
        self.name = parse_class(name)
        self.cls = CLASSES[self.name]
        self.socket_path = socket_path
        self.threads = 0
        self.error: str | None = None
        self._device = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        if self.name == "normal":       # nothing to ask: no device opened, no broker started
            return
        try:
            with self._lock:
                if self._device is None:
                    from kernel_shim import open_device
                    self._device = open_device(socket_path=self.socket_path, own_broker=True)
                dev = self._device
            dev.set_priority(self.cls)
            with self._lock:
                self.threads += 1
        except Exception as e:
            with self._lock:
                first, self.error = self.error is None, str(e)
            if first:
                log.warning("inference threads stay at normal priority: %s", e)

    def status(self) -> dict:
        backend = self._device.backend if self._device is not None else None
        return {"class": self.name, "threads": self.threads, "backend": backend, "error": self.error}

    def close(self) -> None:
        """Drop the device: the module (or the shim) restores every thread it changed."""
        with self._lock:
            dev, self._device = self._device, None
        if dev is not None:
            dev.close()
