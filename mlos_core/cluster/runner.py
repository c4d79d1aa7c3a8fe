"""The front door's half of the cluster path: a ``ModelRunner`` whose work runs on replicas.

A ``ClusterRunner`` sends each request through a Ray Serve deployment handle with the model's
key as the multiplexed model id, so the router prefers a replica that already holds the model.
When the replica serving a request is lost (its node removed, its process killed), the request
is retried once on another replica if it is idempotent: tensor inference and task calls are,
and so is a generation that has not streamed its first chunk yet. Otherwise the client gets
``ReplicaLost``: 503 with ``Retry-After``, saying what happened. Nothing is left unanswered.

``RemoteModel`` is what the front door's registry holds for a model running on replicas: its
metadata and task list as a replica described them, so that request decoding and validation
happen before anything crosses the network.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from typing import Any, AsyncIterator, Callable

import ray.exceptions

from ..errors import ReplicaLost
from ..execution import Generate
from ..scheduler import Execution
from ..smi import GenerationChunk, Model, ModelMetadata  # noqa: F401
from .wire import error_from_wire

log = logging.getLogger(__name__)

# What a handle raises when the replica it chose died or became unreachable mid-request.
LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)


class RemoteModel(Model):
    """The front door's view of a model held by replicas (never run in this process)."""

    def __init__(self, description: dict):
        self.metadata: ModelMetadata = description["metadata"]
        self.tasks = frozenset(description["tasks"])
        self.max_concurrency = description["max_concurrency"]
        self._memory = int(description["memory_bytes"])

    def infer(self, inputs, outputs=None):
        raise RuntimeError("a model of the cluster runs on its replicas")

    def memory_bytes(self) -> int:
        """What one replica's copy holds, as that replica accounted it."""
        return self._memory


class ClusterRunner:
    def __init__(self, handle, model_id: str, key: str, answers: Counter, retries: Counter):
        self.handle = handle.options(multiplexed_model_id=key)
        self.model_id = model_id
        self.key = key
        self.answers = answers  # (model, replica, node) -> answers, for /status and /metrics
        self.retries = retries  # model -> requests retried
        self._batching = False
        self._in_flight = 0
        self.cancel = threading.Event()  # set when an unload's drain timeout passes: streams stop

    @property
    def batching(self) -> bool:
        return self._batching

    @property
    def queued(self) -> int:
        return 0  # requests wait in the replicas' queues, not here

    @property
    def running(self) -> int:
        return self._in_flight

    async def describe(self) -> RemoteModel:
        answer = await self._unary("describe")
        self._batching = answer["batching"]
        return RemoteModel(answer)

    async def infer(self, inputs, outputs=None, priority=0, timeout_s=None) -> Execution:
        return self._execution(await self._unary("infer", dict(inputs), list(outputs) if outputs else None,
                                                 priority, timeout_s))

    async def call(self, fn: Callable[..., Any], priority: int = 0, cancellable: bool = False,
                   disconnected: Callable[[], bool] = lambda: False) -> Execution:
        """A client leaving cancels the request, and with it a cancellable call on its replica."""
        return self._execution(await self._unary("call", fn, priority, cancellable))

    async def stream(self, generate: Generate, priority: int = 0,
                     disconnected: Callable[[], bool] = lambda: False) -> AsyncIterator[GenerationChunk | Execution]:
        left = disconnected
        disconnected = lambda: left() or self.cancel.is_set()  # noqa: E731
        for attempt in (1, 2):
            started = False
            self._in_flight += 1
            gen = self.handle.options(stream=True).stream.remote(generate, priority)
            try:
                async with contextlib.aclosing(_watch(gen, disconnected)) as items:
                    async for kind, item in items:
                        if kind == "chunk":
                            started = True
                            yield item
                        elif kind == "done":
                            self._count(item)
                            yield self._execution(item)
                            return
                        else:
                            raise error_from_wire(item)
                if not disconnected():
                    raise ReplicaLost(f"model {self.model_id}: the replica's stream ended before its "
                                      "generation did", model_id=self.model_id, retry_after=1)
                # the client left: the replica's generation is cancelled below, as a local one
                # stops at its next token; what ran is not timed
                yield Execution(None, 0, 0, 1)
                return
            except LOST as e:
                if started or attempt == 2:
                    raise self._lost(e, "after it had started streaming" if started else "twice") from None
                self._retrying(e)
            finally:
                self._in_flight -= 1
                gen.cancel()  # no-op once finished; stops the replica's generation otherwise

    async def close(self) -> None:
        """The replicas keep their copies until their LRU or keep-alive lets them go."""

    # ---- internals ----------------------------------------------------------------------------
    async def _unary(self, method: str, *args) -> dict:
        for attempt in (1, 2):
            self._in_flight += 1
            try:
                answer = await getattr(self.handle, method).remote(*args)
            except LOST as e:
                if attempt == 2:
                    raise self._lost(e, "twice") from None
                self._retrying(e)
                continue
            finally:
                self._in_flight -= 1
            if not answer["ok"]:
                raise error_from_wire(answer["error"])
            self._count(answer)
            return answer
        raise AssertionError("unreachable")

    def _execution(self, answer: dict) -> Execution:
        return Execution(answer["value"], answer["queue_ns"], answer["compute_ns"], answer["batch_size"])

    def _count(self, answer: dict) -> None:
        self.answers[(self.model_id, answer["replica"], answer["node"])] += 1

    def _retrying(self, e: Exception) -> None:
        self.retries[self.model_id] += 1
        log.warning("model %s: the replica serving a request was lost (%s); retrying once on another",
                    self.model_id, type(e).__name__)

    def _lost(self, e: Exception, when: str) -> ReplicaLost:
        return ReplicaLost(f"model {self.model_id}: the replica serving this request was lost {when} "
                           f"({type(e).__name__}: the node or its process went away); the request was not "
                           "completed, send it again", model_id=self.model_id, retry_after=1)


async def _watch(gen, disconnected: Callable[[], bool], period: float = 0.25):
    """Items of a streamed response, stopping early (and cancelling it) once the client left."""
    it = gen.__aiter__()
    nxt = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({nxt}, timeout=period)
            if not done:
                if disconnected():
                    return
                continue
            try:
                item = nxt.result()
            except StopAsyncIteration:
                return
            nxt = None
            yield item
    finally:
        if nxt is not None and not nxt.done():
            nxt.cancel()
