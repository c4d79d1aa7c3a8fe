"""kernel_shim: the cffi binding to ``/dev/mlos-ml`` and its userspace twin of the same semantics.

    from kernel_shim import open_device
    with open_device() as dev:                  # MLOS_KERNEL=auto|on|off picks the backend
        with dev.alloc(4096) as buf:
            buf.array("float32", (1024,))[:] = 1.0
            # another process: open_device().map(buf.handle, buf.token)

``abi`` is generated from ``kmod/include/uapi/mlos_ml.h``; ``kernel`` is the ioctl backend,
``userspace`` (+ ``broker``, ``client``) the Unix-socket one. ``python -m kernel_shim status``.
"""
from . import abi
from .abi import (ABI_VERSION, PRIO_BATCH, PRIO_HIGH, PRIO_NORMAL, PRIO_REALTIME, REQ_CANCELLED,
                  REQ_DONE, REQ_EXPIRED)
from .device import Buffer, Device, Request, deadline_in, model_id_for, open_device
from .errors import (AccessDenied, BufferNotFound, DeviceUnavailable, InvalidArgument, NotPermitted,
                     PoolExhausted, QueueFull, ShimError, TimedOut)
from .userspace import Broker, start_broker  # imports .client last (it needs userspace)

__all__ = [
    "abi", "ABI_VERSION", "PRIO_REALTIME", "PRIO_HIGH", "PRIO_NORMAL", "PRIO_BATCH", "REQ_DONE",
    "REQ_CANCELLED", "REQ_EXPIRED", "Buffer", "Device", "Request", "deadline_in", "model_id_for",
    "open_device", "ShimError", "AccessDenied", "BufferNotFound", "DeviceUnavailable",
    "InvalidArgument", "NotPermitted", "PoolExhausted", "QueueFull", "TimedOut", "Broker",
    "start_broker",
]
