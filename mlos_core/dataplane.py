"""The transport-agnostic data plane: every protocol handler calls these, and holds no logic.

It validates requests against the model's schema, schedules them, and keeps the request
statistics that ``/stats`` and ``/metrics`` report.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

import numpy as np

from . import __version__
from .errors import BadRequest, InferenceFailed, InvalidTensor, MLOSError, ModelNotFound
from .execution import Generate
from .metrics import Metrics
from .model_roots import ModelRoots
from .registry import ModelEntry, Registry, RegisterSpec, split_id, validate_model_id
from .scheduler import Execution
from .smi import GenerationChunk, Model, ModelMetadata
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
        return split_id(self.model_id)[1]


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


def _graphs(model) -> dict[str, Model]:
    graphs = getattr(model, "graphs", None)   # a cluster's stand-in for a remote model has none
    return graphs() if graphs else {}


def _graph(entry, graph: str | None) -> Model:
    """The model a tensor request runs on: the whole model, or the named graph of a model made of
    several; tensors for a model of several graphs must name one."""
    graphs = _graphs(entry.model)
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


def _split_graph(name: str, missing: ModelNotFound) -> tuple[str, str]:
    """``org/model/encoder@v`` -> (``org/model@v``, ``encoder``); ``missing`` when it has no parent part."""
    base, at, ver = name.rpartition("@") if "@" in name else (name, "", "")
    parent, _, graph = base.rpartition("/")
    if not parent or not graph:
        raise missing
    return parent + at + ver, graph


def _infer_graph(graph: str, inputs, outputs, model: Model):
    """A runner's call (a function of the model, so that it can cross to a replica): one graph's
    inference, in the model's queue, never batched."""
    return _graphs(model)[graph].infer(inputs, outputs)


def _check_outputs(outputs: Sequence[str], meta: ModelMetadata) -> None:
    unavailable = {u["name"]: u["reason"] for u in meta.properties.get("unavailable_outputs", ())}
    for name in outputs:
        if name in unavailable:
            raise InvalidTensor(f"output {name!r} is not available: {unavailable[name]}; the model's outputs are "
                                + ", ".join(repr(t.name) for t in meta.outputs))
    unknown = [o for o in outputs if meta.output(o) is None]
    if unknown:
        raise InvalidTensor(f"unknown output {', '.join(map(repr, unknown))}; the model's outputs are "
                            + ", ".join(repr(t.name) for t in meta.outputs))


class DataPlane:
    def __init__(self, registry: Registry, metrics: Metrics):
        self.registry = registry
        self.metrics = metrics
        self.started = time.time()
        self.total = self.succeeded = self.failed = 0
        self._total_us = 0
        self.by_api: dict[str, int] = {}
        self.zerocopy = None  # the local zero-copy server, when it runs (mlos_core.zerocopy)
        self.cluster = None  # the Ray cluster front door, with --ray-address (mlos_core.cluster)
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
            name, version, graph = await self._target(name, version)
            model_id = (await self.registry.find(name, version)).id
            async with self.registry.use(name, version) as entry:
                meta = _graph(entry, graph).metadata
                inputs = decode(meta)
                validate_inputs(inputs, meta)
                if outputs:
                    _check_outputs(outputs, meta)
                try:
                    if graph is None:
                        ex = await entry.runner.infer(inputs, outputs, priority, timeout_s)
                    else:
                        ex = await entry.runner.call(functools.partial(_infer_graph, graph, inputs, outputs),
                                                     priority)
                except InferenceFailed as e:  # the runtime's sentence, naming the model it is about
                    raise InferenceFailed(f"model {entry.id}: {e.message}", model_id=entry.id, detail=e.detail) from None
        except MLOSError as e:
            self._failed(model_id, e, start)
            raise
        done = self._succeeded(model_id, start, ex.queue_ns, ex.compute_ns, ex.outputs)
        return InferResult(graph_id(model_id, graph), ex.outputs, done.queue_us, done.compute_us, done.total_us,
                           ex.batch_size)

    async def _target(self, name: str, version: str | None) -> tuple[str, str | None, str | None]:
        """(model name, version, graph): a name that is no registered model, but a registered one
        followed by ``/<graph>`` (``hf/t5-small/encoder@latest``), names one graph of that model."""
        try:
            await self.registry.find(name, version)
            return name, version, None
        except ModelNotFound as missing:
            parent, graph = _split_graph(name, missing)
            try:
                await self.registry.find(parent, version)
            except ModelNotFound:
                raise missing from None
            return parent, version, graph

    def graph_of(self, name: str, version: str | None = None) -> tuple[ModelEntry, str] | None:
        """(the model, the graph's name) when ``name`` is no registered model but one graph of a
        registered model made of several (among the models this server knows already)."""
        try:
            self.registry.lookup(name, version)
            return None
        except ModelNotFound as missing:
            try:
                parent, graph = _split_graph(name, missing)
                return self.registry.lookup(parent, version), graph
            except ModelNotFound:
                return None

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
            model_id = (await self.registry.find(name)).id
            async with self.registry.use(name) as entry:
                ex = await entry.runner.call(call, priority, cancellable, disconnected)
        except MLOSError as e:
            self._failed(model_id, e)
            raise
        return self._succeeded(model_id, start, ex.queue_ns, ex.compute_ns, ex.outputs)

    async def stream_task(self, name: str, generate: Generate, *, api: str,
                          disconnected: Callable[[], bool] = lambda: False,
                          priority: int = 0) -> AsyncIterator[GenerationChunk]:
        """Stream a generation as the model's runner produces it. Leaving early (the client went
        away) stops the generation at its next token; the model stays held until it has."""
        start = self._begin(api)
        model_id = ""
        ex = None
        try:
            model_id = (await self.registry.find(name)).id
            async with self.registry.use(name) as entry:
                first = True
                async with contextlib.aclosing(entry.runner.stream(generate, priority, disconnected)) as items:
                    async for item in items:
                        if isinstance(item, Execution):
                            ex = item
                        else:
                            if first:  # queue wait + prompt: what the client waits before text flows
                                first = False
                                self.metrics.observe_first_token(model_id, time.perf_counter_ns() - start)
                            yield item
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

    def readiness(self) -> dict:
        """The Open Inference Protocol's readiness: the registry runs and no model is loading.
        ``reason`` is set when the server cannot serve at all: a cluster replica's health check
        fails on it, while a model that is loading only delays readiness."""
        if not self.registry.running:
            return {"ready": False, "reason": "the model registry is not running"}
        loading = [e.id for e in self.registry.entries() if e.state.value == "loading"]
        return {"ready": not loading, **({"loading": loading} if loading else {})}

    async def metadata(self, name: str, version: str | None = None) -> tuple[ModelEntry, ModelMetadata, str]:
        """The entry, the metadata and the public id of a model, or of one of its graphs."""
        name, version, graph = await self._target(name, version)
        async with self.registry.use(name, version) as entry:
            return entry, _graph(entry, graph).metadata, graph_id(entry.id, graph)

    def admit(self, name: str, version: str | None = None, *, api: str) -> None:
        """Refuse a request the model's queue cannot take, before its body is read or parsed
        (counted as a failed request of ``api``, as it would be after parsing)."""
        model_id = ""
        try:
            graph = self.graph_of(name, version)   # a graph is admitted by its model's queue
            entry = graph[0] if graph else self.registry.lookup(name, version)
            model_id = entry.id
            self.registry.check_queue(entry)
        except MLOSError as e:
            if isinstance(e, ModelNotFound) and self.registry.shared_store:
                return  # maybe registered through another front door: the request's own lookup tells
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
            llm = e.model.serving_stats() if e.model is not None else None
            rows.append({
                "id": e.id,
                "state": e.state.value,
                "pending": e.pending,
                "queued": e.runner.queued if e.runner else 0,
                "running": e.runner.running if e.runner else 0,
                "batching": bool(e.runner and e.runner.batching),
                "memory_bytes": e.memory_bytes,
                "idle_seconds": round(now - e.last_used, 3),
                "keep_alive": e.option("keep_alive", self.registry.settings),
                **({"llm": dict(llm)} if llm else {}),  # slots, decode steps, prompt cache (GGUF)
            })
        return rows
