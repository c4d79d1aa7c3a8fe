"""Per-model request scheduling: a priority queue, bounded concurrency, dynamic batching.

Each loaded model gets one ``ModelScheduler``. Requests wait in a heap ordered by priority
(higher first) then arrival. ``instances`` worker tasks each take the next request and, when
batching is on for the model (axis 0 proved a batch axis at load: ``mlos_core.batch_probe``),
every queued request with the same tensor signature up to ``max_batch_size`` rows; they run as one ``Model.infer`` call in a worker
thread, never on the event loop. Batches form naturally while a worker is busy; an optional
``max_batch_delay`` lets a worker wait briefly for more when the batch is not full.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import InferenceFailed, MLOSError, ModelUnavailable
from .smi import Model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Execution:
    outputs: dict[str, np.ndarray]
    queue_ns: int
    compute_ns: int
    batch_size: int


class _Pending:
    __slots__ = ("inputs", "outputs", "future", "enqueued_ns", "rows", "key", "deadline_ns", "call")

    def __init__(self, inputs, outputs, future, rows, key, deadline_ns, call=None):
        self.call = call
        self.inputs = inputs
        self.outputs = outputs
        self.future = future
        self.enqueued_ns = time.perf_counter_ns()
        self.rows = rows
        self.key = key
        self.deadline_ns = deadline_ns


class RequestTimedOut(MLOSError):
    status = 504
    code = "timeout"


# on_execution(batch_rows, compute_ns) is called once per model execution (batch)
ExecutionHook = Callable[[int, int], None]


class ModelScheduler:
    def __init__(
        self,
        model: Model,
        executor: Executor,
        *,
        batching: bool = False,
        max_batch_size: int = 1,
        max_batch_delay_s: float = 0.0,
        instances: int = 1,
        on_execution: ExecutionHook | None = None,
    ):
        self._model = model
        self._executor = executor
        self._batching = batching and max_batch_size > 1
        self._max_rows = max_batch_size
        self._delay = max_batch_delay_s
        self._heap: list = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._on_execution = on_execution
        self._refusal: MLOSError | None = None  # set while the model is unloading: new work is refused
        self.running = 0
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._worker()) for _ in range(max(1, instances))]

    @property
    def batching(self) -> bool:
        return self._batching

    @property
    def max_rows(self) -> int:
        return self._max_rows

    @property
    def queued(self) -> int:
        return len(self._heap)

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
    ) -> Execution:
        if self._refusal is not None:
            raise self._refusal
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        rows, key = self._signature(inputs, outputs)
        deadline = time.perf_counter_ns() + int(timeout_s * 1e9) if timeout_s else None
        heapq.heappush(self._heap, (-priority, next(self._seq), _Pending(inputs, outputs, future, rows, key, deadline)))
        self._wakeup.set()
        return await future

    async def submit_call(self, call: Callable[[], object], priority: int = 0, timeout_s: float | None = None) -> Execution:
        """Run a task-level call (a generation, an embedding batch...) in the model's turn:
        same queue, priority and concurrency bound as tensor requests, never batched. Its return
        value is the Execution's ``outputs``."""
        if self._refusal is not None:
            raise self._refusal
        future = asyncio.get_running_loop().create_future()
        deadline = time.perf_counter_ns() + int(timeout_s * 1e9) if timeout_s else None
        heapq.heappush(self._heap, (-priority, next(self._seq), _Pending(None, None, future, 1, None, deadline, call)))
        self._wakeup.set()
        return await future

    def _signature(self, inputs, outputs):
        if not self._batching:
            return 1, None
        rows = -1
        parts = []
        for name, arr in inputs.items():
            if arr.ndim == 0:
                return 1, None
            if rows == -1:
                rows = arr.shape[0]
            elif arr.shape[0] != rows:
                return 1, None  # inconsistent leading dims: never merge it with others
            parts.append((name, arr.dtype.str, arr.shape[1:]))
        return max(rows, 1), (tuple(parts), tuple(outputs) if outputs else None)

    def _take_batch(self) -> list[_Pending]:
        first = heapq.heappop(self._heap)[2]
        batch = [first]
        if first.key is None or not self._heap:
            return batch
        rows = first.rows
        kept = []
        while self._heap and rows < self._max_rows:
            item = heapq.heappop(self._heap)
            p = item[2]
            if p.key == first.key and rows + p.rows <= self._max_rows and not p.future.done():
                batch.append(p)
                rows += p.rows
            else:
                kept.append(item)
        for item in kept:
            heapq.heappush(self._heap, item)
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._delay and self._batching and len(self._heap) < self._max_rows:
                await asyncio.sleep(self._delay)
                if not self._heap:
                    continue
            batch = [p for p in self._take_batch() if not p.future.done()]
            now = time.perf_counter_ns()
            live = []
            for p in batch:
                if p.deadline_ns is not None and now > p.deadline_ns:
                    p.future.set_exception(RequestTimedOut("the request waited past its timeout and was not run"))
                else:
                    live.append(p)
            if not live:
                continue
            self.running += 1
            try:
                results, compute_ns = await loop.run_in_executor(self._executor, self._execute, live)
            except MLOSError as e:
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(e)
                continue
            except Exception as e:  # a plugin bug must fail its requests, not the worker
                log.exception("model execution failed")
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(InferenceFailed(f"the model failed: {type(e).__name__}"))
                continue
            finally:
                self.running -= 1
            if self._on_execution:
                self._on_execution(sum(p.rows for p in live), compute_ns)
            for p, out in zip(live, results):
                if not p.future.done():
                    p.future.set_result(Execution(out, now - p.enqueued_ns, compute_ns, len(live)))

    def _execute(self, batch: list[_Pending]):
        start = time.perf_counter_ns()
        if batch[0].call is not None:
            return [batch[0].call()], time.perf_counter_ns() - start
        if len(batch) == 1:
            out = self._model.infer(batch[0].inputs, batch[0].outputs)
            return [out], time.perf_counter_ns() - start
        first = batch[0]
        stacked = {name: np.concatenate([p.inputs[name] for p in batch]) for name in first.inputs}
        out = self._model.infer(stacked, first.outputs)
        total = sum(p.rows for p in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in out.values()):
            # The graph declared axis 0 dynamic but does not keep it as the batch axis: stop
            # batching this model and answer each request on its own.
            self._batching = False
            outs = [self._model.infer(p.inputs, p.outputs) for p in batch]
            return outs, time.perf_counter_ns() - start
        results, offset = [], 0
        for p in batch:
            results.append({k: v[offset : offset + p.rows] for k, v in out.items()})
            offset += p.rows
        return results, time.perf_counter_ns() - start

    def refuse(self, error: MLOSError) -> int:
        """Answer every queued request with ``error`` and refuse new ones (the model is going away);
        running executions go on. Returns how many were refused."""
        self._refusal = error
        refused = 0
        while self._heap:
            p = heapq.heappop(self._heap)[2]
            if not p.future.done():
                p.future.set_exception(error)
                refused += 1
        return refused

    async def close(self) -> None:
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self.refuse(self._refusal or ModelUnavailable("the model was unloaded before the request ran", retry_after=1))
