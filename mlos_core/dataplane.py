"""The transport-agnostic data plane: every protocol handler calls these, and holds no logic.

It validates requests against the model's schema, schedules them, and keeps the request
statistics that ``/stats`` and ``/metrics`` report.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from . import __version__
from .errors import InvalidTensor, MLOSError
from .metrics import Metrics
from .registry import ModelEntry, Registry, RegisterSpec
from .smi import ModelMetadata
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


class DataPlane:
    def __init__(self, registry: Registry, metrics: Metrics):
        self.registry = registry
        self.metrics = metrics
        self.started = time.time()
        self.total = self.succeeded = self.failed = 0
        self._total_us = 0
        self.by_api: dict[str, int] = {}

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
        start = time.perf_counter_ns()
        self.total += 1
        self.by_api[api] = self.by_api.get(api, 0) + 1
        # Failures count under the model's resolved id; a name that resolves to no model is
        # client input and counts under "" so that guessed names cannot grow the metrics.
        model_id = ""
        try:
            model_id = self.registry.lookup(name, version).id
            async with self.registry.use(name, version) as entry:
                model_id = entry.id
                meta = entry.model.metadata
                inputs = decode(meta)
                validate_inputs(inputs, meta)
                if outputs:
                    unknown = [o for o in outputs if meta.output(o) is None]
                    if unknown:
                        raise InvalidTensor(
                            f"unknown output {', '.join(map(repr, unknown))}; the model's outputs are "
                            + ", ".join(repr(t.name) for t in meta.outputs)
                        )
                ex = await entry.scheduler.submit(inputs, outputs, priority, timeout_s)
        except MLOSError as e:
            self.failed += 1
            self.metrics.record_failure(model_id, e.code)
            raise
        total_ns = time.perf_counter_ns() - start
        self.succeeded += 1
        self._total_us += total_ns // 1000
        self.metrics.record_success(model_id, total_ns, ex.queue_ns)
        return InferResult(model_id, ex.outputs, ex.queue_ns // 1000, ex.compute_ns // 1000, total_ns // 1000, ex.batch_size)

    async def metadata(self, name: str, version: str | None = None) -> tuple[ModelEntry, ModelMetadata]:
        async with self.registry.use(name, version) as entry:
            return entry, entry.model.metadata

    async def register(self, spec: RegisterSpec) -> tuple[ModelEntry, bool]:
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
