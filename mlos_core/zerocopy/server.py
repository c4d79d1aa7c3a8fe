"""The core's side of the local zero-copy path.

Worker tasks take requests from the shim's priority queue (``/dev/mlos-ml``, or its userspace
broker), map the submitter's buffers by handle and token, read the input tensors in place (numpy
views of the shared pages), run them through the data plane like any other request (same
validation, scheduler, batching and metrics), write the outputs into the output buffer, and
complete the request, which wakes the submitter. A model is addressed by
``kernel_shim.model_id_for(<registered id>)``.
"""
from __future__ import annotations

import asyncio
import errno
import logging
from concurrent.futures import ThreadPoolExecutor

from ..errors import MLOSError
from .layout import read_tensors, write_error, write_tensors

log = logging.getLogger(__name__)

# MLOS error codes -> the status a submitter sees (a negative errno)
_STATUS = {"model_not_found": -errno.ENOENT, "queue_full": -errno.EBUSY, "model_unavailable": -errno.EAGAIN,
           "timeout": -errno.ETIMEDOUT}


class ZeroCopyServer:
    def __init__(self, plane, *, socket_path: str | None = None, workers: int = 4):
        self.plane = plane
        self.socket_path = socket_path
        self.workers = workers
        self.device = None
        self._tasks: list[asyncio.Task] = []
        # the threads that take, map and complete requests run at the inference threads' class
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlos-zerocopy",
                                        initializer=plane.registry.thread_priority)
        self._closing = False
        self.served = self.failed = 0

    @property
    def backend(self) -> dict:
        if self.device is None:
            return {"mode": "off", "reason": "the zero-copy path is disabled"}
        return {"mode": self.device.backend, "reason": self.device.reason}

    async def start(self) -> None:
        from kernel_shim import open_device

        self.device = await asyncio.to_thread(open_device, socket_path=self.socket_path, own_broker=True)
        log.info("zero-copy path on the %s backend (%s)", self.device.backend, self.device.reason)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]

    async def close(self) -> None:
        self._closing = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.device is not None:
            await asyncio.to_thread(self.device.close)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _model_name(self, model_id: int) -> str | None:
        from kernel_shim import model_id_for

        for entry in self.plane.registry.entries():
            if model_id_for(entry.id) == model_id:
                return entry.id
        return None

    async def _worker(self) -> None:
        from kernel_shim import TimedOut

        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                req = await loop.run_in_executor(self._pool, self.device.take, 0.5)
            except TimedOut:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the device went away: say so once, then stop this worker
                if not self._closing:
                    log.error("zero-copy worker stopped: %s", e)
                return
            await self._serve(req)

    async def _serve(self, req) -> None:
        dev = self.device
        inp = out = None
        status = 0
        try:
            name = self._model_name(req.model_id)
            inp = await asyncio.to_thread(dev.map, req.input_handle, req.input_token)
            out = await asyncio.to_thread(dev.map, req.output_handle, req.output_token)
            if name is None:
                status = -errno.ENOENT
                write_error(out.memoryview, f"no registered model has id {req.model_id:#x}")
            else:
                tensors = read_tensors(inp.memoryview)
                # the kernel's classes run REALTIME(0)..BATCH(3); the scheduler's higher is sooner
                result = await self.plane.infer(name, lambda meta: tensors, priority=3 - req.priority, api="zerocopy")
                write_tensors(out.memoryview, result.outputs)
        except MLOSError as e:
            status = _STATUS.get(e.code, -errno.EINVAL)
            if out is not None:
                write_error(out.memoryview, e.message)
        except Exception as e:  # a buffer that vanished, a mapping refused: the submitter hears of it
            log.warning("zero-copy request %d failed: %s", req.request_id, e)
            status = -getattr(e, "errno", None) or -errno.EIO
        finally:
            for buf in (inp, out):
                if buf is not None:
                    buf.close()
        try:
            await asyncio.to_thread(dev.complete, req.request_id, status)
        except Exception as e:  # cancelled by its submitter meanwhile
            log.info("zero-copy request %d not completed: %s", req.request_id, e)
        if status:
            self.failed += 1
        else:
            self.served += 1
