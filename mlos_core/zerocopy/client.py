"""A small client for the local zero-copy path.

    from mlos_core.zerocopy.client import LocalClient
    with LocalClient() as client:
        y = client.infer("bench/matmul@1", {"x": x})["y"]

Inputs are written once into a shared buffer the core reads in place; outputs come back in a
second shared buffer. Buffers are kept and reused across calls while they are large enough.
"""
from __future__ import annotations

import errno
from typing import Mapping

import numpy as np

from ..errors import MLOSError
from .layout import read_error, read_tensors, required_size, write_tensors


class LocalInferenceError(MLOSError):
    status = 400
    code = "local_inference_failed"


class LocalClient:
    def __init__(self, device=None, *, socket_path: str | None = None):
        from kernel_shim import open_device

        self.device = device or open_device(socket_path=socket_path)
        self._in = self._out = None

    def _buffer(self, current, nbytes: int):
        if current is not None and current.length >= nbytes:
            return current
        if current is not None:
            current.close()
        return self.device.alloc(nbytes)

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], *, output_bytes: int | None = None,
              priority: int = 2, timeout: float | None = 60.0, copy: bool = True) -> dict[str, np.ndarray]:
        """Run one inference. ``priority`` is a kernel class (0 REALTIME .. 3 BATCH). With
        ``copy=False`` the outputs are views of the shared buffer, valid until the next call."""
        from kernel_shim import REQ_DONE, model_id_for

        # np.require keeps 0-d inputs 0-d (np.ascontiguousarray would make a scalar shape [1])
        arrays = {k: np.require(v, requirements="C") for k, v in inputs.items()}
        self._in = self._buffer(self._in, required_size(arrays))
        write_tensors(self._in.memoryview, arrays)
        self._out = self._buffer(self._out, output_bytes or max(1 << 16, 2 * required_size(arrays)))
        rid = self.device.submit(model_id_for(model), self._in.handle, self._out.handle, priority)
        state, status = self.device.wait(rid, timeout)
        if state != REQ_DONE or status != 0:
            reason = read_error(self._out.memoryview) or errno.errorcode.get(-status, str(status))
            raise LocalInferenceError(f"local inference on {model} failed: {reason} (state {state}, status {status})",
                                      model_id=model)
        out = read_tensors(self._out.memoryview)
        return {k: np.array(v) for k, v in out.items()} if copy else out

    def close(self) -> None:
        for buf in (self._in, self._out):
            if buf is not None:
                buf.close()
        self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
