"""The transport-agnostic data plane: every protocol handler calls these, and holds no logic.

It validates requests against the model's schema, schedules them, and keeps the request
statistics that ``/stats`` and ``/metrics`` report.
"""
from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Sequence

import numpy as np

from . import __version__
from .errors import BadRequest, InvalidTensor, MLOSError, ModelNotFound
from .metrics import Metrics
from .model_roots import ModelRoots
from .registry import ModelEntry, Registry, RegisterSpec, validate_model_id
from .smi import GenerationChunk, Model, ModelMetadata, TaskUnsupported
from .tensors import validate_inputs

Decoder = Callable[[ModelMetadata], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class InferResult:
    model_id: str
    outputs: dict[str, np.ndarray]
    queue_us: int
    compute_us: int
    total_us: int
    batch_size: int

    @property
    def version(self) -> str:
        return self.model_id.rsplit("@", 1)[1] if "@" in self.model_id else "1"


@dataclass(frozen=True)
class TaskResult:
    model_id: str
    value: Any
    queue_us: int
    compute_us: int
    total_us: int


def graph_id(model_id: str, graph: str | None) -> str:
    """``org/model@v`` and ``encoder`` -> ``org/model/encoder@v``: how one graph is addressed."""
    if graph is None:
        return model_id
    base, at, version = model_id.rpartition("@") if "@" in model_id else (model_id, "", "")
    return f"{base}/{graph}{at}{version}"


def _graph(entry, graph: str | None) -> Model:
    """The model a tensor request runs on: the whole model, or the named graph of a model made of
    several; tensors for a model of several graphs must name one."""
    graphs = entry.model.graphs()
    if graph is None:
        if graphs:
            raise BadRequest(f"model {entry.id} is made of several graphs: send tensors to one of "
                             + ", ".join(graph_id(entry.id, g) for g in graphs) + ", or text to its task",
                             model_id=entry.id)
        return entry.model
    if graph not in graphs:
        where = ("its graphs are " + ", ".join(graphs)) if graphs else "it is a single graph"
        raise ModelNotFound(f"model {entry.id} has no graph {graph!r}: {where}", model_id=graph_id(entry.id, graph))
    return graphs[graph]


def _servable(entry) -> None:
    reason = entry.model.metadata.properties.get("unservable")
    if reason:
        raise BadRequest(f"model {entry.id}: {reason}", model_id=entry.id)


def _guard(entry, fn: Callable[[], Any]) -> Callable[[], Any]:
    """A task the model does not serve is the client's mistake: 400, naming what it serves."""

    def run():
        try:
            return fn()
        except TaskUnsupported as e:
            served = ", ".join(sorted(entry.model.tasks)) or "raw tensors only"
            raise BadRequest(f"model {entry.id} does not do {e}; it serves: {served}", model_id=entry.id) from None

    return run


def _check_rows(entry, inputs: Mapping[str, np.ndarray]) -> None:
    """A batching model takes at most ``max_batch_size`` rows a request, as Triton enforces it."""
    sched = entry.scheduler
    if sched is None or not sched.batching:
        return
    for name, arr in inputs.items():
        if arr.ndim and arr.shape[0] > sched.max_rows:
            raise InvalidTensor(f"inference request batch-size must be <= {sched.max_rows} for '{entry.id}': input "
                                f"{name!r} has {arr.shape[0]} rows (the model's max_batch_size)", model_id=entry.id)


class DataPlane:
    def __init__(self, registry: Registry, metrics: Metrics):
        self.registry = registry
        self.metrics = metrics
        self.started = time.time()
        self.total = self.succeeded = self.failed = 0
        self._total_us = 0
        self.by_api: dict[str, int] = {}
        self.zerocopy = None  # the local zero-copy server, when it runs (mlos_core.zerocopy)
        self.roots = ModelRoots.from_settings(registry.settings)

    async def infer(
        self,
        name: str,
        decode: Decoder,
        *,
        version: str | None = None,
        outputs: Sequence[str] | None = None,
        priority: int = 0,
        timeout_s: float | None = None,
        api: str = "mlos",
    ) -> InferResult:
        start = self._begin(api)
        model_id = ""
        try:
            name, version, graph = self._target(name, version)
            model_id = self.registry.lookup(name, version).id
            async with self.registry.use(name, version) as entry:
                model = _graph(entry, graph)
                meta = model.metadata
                inputs = decode(meta)
                validate_inputs(inputs, meta)
                _check_rows(entry, inputs)
                if outputs:
                    unknown = [o for o in outputs if meta.output(o) is None]
                    if unknown:
                        raise InvalidTensor(
                            f"unknown output {', '.join(map(repr, unknown))}; the model's outputs are "
                            + ", ".join(repr(t.name) for t in meta.outputs)
                        )
                if graph is None:
                    ex = await entry.scheduler.submit(inputs, outputs, priority, timeout_s)
                else:  # one graph of several: in the model's queue, never batched
                    ex = await entry.scheduler.submit_call(lambda: model.infer(inputs, outputs), priority, timeout_s)
        except MLOSError as e:
            self._failed(model_id, e, start)
            raise
        done = self._succeeded(model_id, start, ex.queue_ns, ex.compute_ns, ex.outputs)
        return InferResult(graph_id(model_id, graph), ex.outputs, done.queue_us, done.compute_us, done.total_us,
                           ex.batch_size)

    def _target(self, name: str, version: str | None) -> tuple[str, str | None, str | None]:
        """(model name, version, graph): a name that is no registered model, but a registered one
        followed by ``/<graph>`` (``hf/t5-small/encoder@latest``), names one graph of that model."""
        try:
            self.registry.lookup(name, version)
            return name, version, None
        except ModelNotFound as missing:
            base, at, ver = name.rpartition("@") if "@" in name else (name, "", "")
            parent, _, graph = base.rpartition("/")
            if not parent or not graph:
                raise
            try:
                self.registry.lookup(parent + at + ver, version)
            except ModelNotFound:
                raise missing from None
            return parent + at + ver, version, graph

    # ---- task level ---------------------------------------------------------------------------
    async def run_task(self, name: str, call: Callable[..., Any], *, api: str, priority: int = 0,
                       cancellable: bool = False, disconnected: Callable[[], bool] = lambda: False) -> TaskResult:
        """Run one task-level call (embed, classify...) in the model's turn; pre- and
        post-processing run inside it and count in its time. A ``cancellable`` call (a generation)
        is called as ``call(model, cancelled)`` and must poll ``cancelled()``: true once its client
        left or its model is being unloaded past the drain timeout."""
        start = self._begin(api)
        model_id = ""
        try:
            model_id = self.registry.lookup(name).id
            async with self.registry.use(name) as entry:
                _servable(entry)
                cancel = entry.cancel
                fn = ((lambda: call(entry.model, lambda: cancel.is_set() or disconnected())) if cancellable
                      else (lambda: call(entry.model)))
                ex = await entry.scheduler.submit_call(_guard(entry, fn), priority)
        except MLOSError as e:
            self._failed(model_id, e)
            raise
        return self._succeeded(model_id, start, ex.queue_ns, ex.compute_ns, ex.outputs)

    async def stream_task(self, name: str, generate: Callable[[Model, Callable[[], bool]], Iterator[GenerationChunk]],
                          *, api: str, disconnected: Callable[[], bool] = lambda: False,
                          priority: int = 0) -> AsyncIterator[GenerationChunk]:
        """Stream a generation: the model's worker thread produces chunks, this yields them as
        they come. Leaving early (the client went away) stops the generation at its next token."""
        start = self._begin(api)
        model_id = ""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        end = object()

        def cancelled() -> bool:
            return stop.is_set() or disconnected() or entry.cancel.is_set()

        def job():
            try:
                for chunk in generate(entry.model, cancelled):
                    loop.call_soon_threadsafe(chunks.put_nowait, chunk)
            finally:
                loop.call_soon_threadsafe(chunks.put_nowait, end)

        try:
            model_id = self.registry.lookup(name).id
            async with self.registry.use(name) as entry:
                _servable(entry)
                run = asyncio.ensure_future(entry.scheduler.submit_call(_guard(entry, job), priority))
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
        except MLOSError as e:
            self._failed(model_id, e)
            raise
        self._succeeded(model_id, start, ex.queue_ns, ex.compute_ns, None)

    def _begin(self, api: str) -> int:
        self.total += 1
        self.by_api[api] = self.by_api.get(api, 0) + 1
        return time.perf_counter_ns()

    def _failed(self, model_id: str, e: MLOSError, start: int | None = None) -> None:
        # Failures count under the model's resolved id; a name that resolves to no model is
        # client input and counts under "" so that guessed names cannot grow the metrics.
        self.failed += 1
        self.metrics.record_failure(model_id, e.code, time.perf_counter_ns() - start if start else 0)

    def _succeeded(self, model_id, start, queue_ns, compute_ns, value) -> "TaskResult":
        total_ns = time.perf_counter_ns() - start
        self.succeeded += 1
        self._total_us += total_ns // 1000
        self.metrics.record_success(model_id, total_ns, queue_ns, compute_ns)
        return TaskResult(model_id, value, queue_ns // 1000, compute_ns // 1000, total_ns // 1000)

    async def metadata(self, name: str, version: str | None = None) -> tuple[ModelEntry, ModelMetadata, str]:
        """The entry, the metadata and the public id of a model, or of one of its graphs."""
        name, version, graph = self._target(name, version)
        async with self.registry.use(name, version) as entry:
            return entry, _graph(entry, graph).metadata, graph_id(entry.id, graph)

    def admit(self, name: str, version: str | None = None, *, api: str) -> None:
        """Refuse a request the model's queue cannot take, before its body is read or parsed
        (counted as a failed request of ``api``, as it would be after parsing)."""
        model_id = ""
        try:
            name, version, _ = self._target(name, version)   # a graph is admitted by its model's queue
            entry = self.registry.lookup(name, version)
            model_id = entry.id
            self.registry.check_queue(entry)
        except MLOSError as e:
            self._begin(api)
            self._failed(model_id, e)
            raise

    async def register(self, spec: RegisterSpec) -> tuple[ModelEntry, bool]:
        """A client's registration: its path must lie under the model roots (``mlos_core.model_roots``)."""
        validate_model_id(spec.model_id)
        spec.path = await asyncio.to_thread(self.roots.check, spec.path)
        return await self.registry.register(spec)

    def stats(self) -> dict:
        return {
            "total_requests": self.total,
            "successful_requests": self.succeeded,
            "failed_requests": self.failed,
            "avg_response_time_us": round(self._total_us / self.succeeded, 1) if self.succeeded else 0,
            "uptime_seconds": round(time.time() - self.started, 3),
            "apis": dict(self.by_api),
            "version": __version__,
        }

    def model_rows(self) -> list[dict]:
        """The live state of every model, for ``/status`` and the metrics gauges."""
        now = time.monotonic()
        rows = []
        for e in self.registry.entries():
            rows.append({
                "id": e.id,
                "state": e.state.value,
                "pending": e.pending,
                "queued": e.scheduler.queued if e.scheduler else 0,
                "running": e.scheduler.running if e.scheduler else 0,
                "batching": bool(e.scheduler and e.scheduler.batching),
                "memory_bytes": e.memory_bytes,
                "idle_seconds": round(now - e.last_used, 3),
                "keep_alive": e.option("keep_alive", self.registry.settings),
            })
        return rows
