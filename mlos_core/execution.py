"""Where a loaded model's requests execute: the seam between the data plane and the runtime.

The data plane (``mlos_core.dataplane``) validates, accounts and answers; a ``ModelRunner``
executes. The registry gives every loaded model one runner:

- ``LocalRunner``: this process's scheduler (priority queue, batching, worker threads);
- ``mlos_core.cluster.runner.ClusterRunner``: a Ray Serve deployment whose replicas hold the
  model (each replica runs a ``LocalRunner`` of its own).

A runner has three entry points, one per kind of work: ``infer`` (tensors in, tensors out),
``call`` (one task-level call such as embed or classify, run as ``fn(model)``) and ``stream``
(a generation whose chunks arrive as they are produced, ending with the ``Execution`` that
times it). Everything a transport sends to a runner is plain data or a function of the model,
so that it can also cross a process boundary.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Protocol, Sequence

import numpy as np

from .errors import BadRequest
from .scheduler import Execution, ModelScheduler
from .smi import GenerationChunk, Model, TaskUnsupported

Generate = Callable[[Model, Callable[[], bool]], Iterator[GenerationChunk]]


class ModelRunner(Protocol):
    @property
    def batching(self) -> bool: ...

    @property
    def queued(self) -> int: ...

    @property
    def running(self) -> int: ...

    async def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None,
                    priority: int = 0, timeout_s: float | None = None) -> Execution: ...

    async def call(self, fn: Callable[[Model], Any], priority: int = 0) -> Execution: ...

    def stream(self, generate: Generate, priority: int = 0,
               disconnected: Callable[[], bool] = lambda: False) -> AsyncIterator[GenerationChunk | Execution]: ...

    async def close(self) -> None: ...


class LocalRunner:
    """Runs a model in this process, through its ``ModelScheduler``."""

    def __init__(self, model_id: str, model: Model, scheduler: ModelScheduler):
        self.model_id = model_id
        self.model = model
        self.scheduler = scheduler

    @property
    def batching(self) -> bool:
        return self.scheduler.batching

    @property
    def queued(self) -> int:
        return self.scheduler.queued

    @property
    def running(self) -> int:
        return self.scheduler.running

    async def infer(self, inputs, outputs=None, priority=0, timeout_s=None) -> Execution:
        return await self.scheduler.submit(inputs, outputs, priority, timeout_s)

    async def call(self, fn: Callable[[Model], Any], priority: int = 0) -> Execution:
        """Run ``fn(model)`` in the model's turn; pre- and post-processing count in its time."""
        self._servable()
        return await self.scheduler.submit_call(self._guard(lambda: fn(self.model)), priority)

    async def stream(self, generate: Generate, priority: int = 0,
                     disconnected: Callable[[], bool] = lambda: False) -> AsyncIterator[GenerationChunk | Execution]:
        """The model's worker thread produces chunks, this yields them as they come, then the
        ``Execution``. Leaving early (the client went away) stops the generation at its next token."""
        self._servable()
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        end = object()

        def cancelled() -> bool:
            return stop.is_set() or disconnected()

        def job():
            try:
                for chunk in generate(self.model, cancelled):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, end)

        run = asyncio.ensure_future(self.scheduler.submit_call(self._guard(job), priority))
        try:
            while True:
                getter = asyncio.ensure_future(chunks.get())
                await asyncio.wait({getter, run}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    ex = run.result()  # the call ended without running the job: raise its error
                    break
                item = getter.result()
                if item is end:
                    ex = await run
                    break
                yield item
        finally:
            stop.set()
            if not run.done():
                # hold the model until the worker noticed: it is never unloaded mid-generation
                await asyncio.shield(asyncio.wait({run}))
        yield ex

    async def close(self) -> None:
        await self.scheduler.close()

    def _servable(self) -> None:
        reason = self.model.metadata.properties.get("unservable")
        if reason:
            raise BadRequest(f"model {self.model_id}: {reason}", model_id=self.model_id)

    def _guard(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        """A task the model does not serve is the client's mistake: 400, naming what it serves."""

        def run():
            try:
                return fn()
            except TaskUnsupported as e:
                served = ", ".join(sorted(self.model.tasks)) or "raw tensors only"
                raise BadRequest(f"model {self.model_id} does not do {e}; it serves: {served}",
                                 model_id=self.model_id) from None

        return run
