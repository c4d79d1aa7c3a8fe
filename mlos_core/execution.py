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

from .errors import BadRequest, InvalidTensor
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

    async def call(self, fn: Callable[..., Any], priority: int = 0, cancellable: bool = False,
                   disconnected: Callable[[], bool] = lambda: False) -> Execution: ...

    def stream(self, generate: Generate, priority: int = 0,
               disconnected: Callable[[], bool] = lambda: False) -> AsyncIterator[GenerationChunk | Execution]: ...

    async def close(self) -> None: ...


class LocalRunner:
    """Runs a model in this process, through its ``ModelScheduler``. ``cancel`` is set when an
    unload's drain timeout passes: running generations stop at their next token."""

    def __init__(self, model_id: str, model: Model, scheduler: ModelScheduler, decision=None):
        self.model_id = model_id
        self.model = model
        self.scheduler = scheduler
        self.decision = decision  # the batching decision made at load (mlos_core.batch_probe)
        self.cancel = threading.Event()

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
        self._check_rows(inputs)
        return await self.scheduler.submit(inputs, outputs, priority, timeout_s)

    async def call(self, fn: Callable[..., Any], priority: int = 0, cancellable: bool = False,
                   disconnected: Callable[[], bool] = lambda: False) -> Execution:
        """Run ``fn(model)`` in the model's turn; pre- and post-processing count in its time. A
        ``cancellable`` call (a generation) is called as ``fn(model, cancelled)`` and polls it."""
        self._servable()
        cancel = self.cancel
        run = ((lambda: fn(self.model, lambda: cancel.is_set() or disconnected())) if cancellable
               else (lambda: fn(self.model)))
        return await self.scheduler.submit_call(self._guard(run), priority)

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
            return stop.is_set() or disconnected() or self.cancel.is_set()

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

    def _check_rows(self, inputs: Mapping[str, np.ndarray]) -> None:
        """A batching model takes at most ``max_batch_size`` rows a request, as Triton enforces it."""
        sched = self.scheduler
        if not sched.batching:
            return
        for name, arr in inputs.items():
            if arr.ndim and arr.shape[0] > sched.max_rows:
                raise InvalidTensor(f"inference request batch-size must be <= {sched.max_rows} for '{self.model_id}': "
                                    f"input {name!r} has {arr.shape[0]} rows (the model's max_batch_size)",
                                    model_id=self.model_id)

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
