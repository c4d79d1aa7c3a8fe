"""Prometheus metrics, modelled on Triton's ``nv_inference_*`` family.

Counters and histograms are updated on the request path through per-model children cached
here; gauges (pending requests, loaded models, memory) are read from the registry at scrape
time by a collector, so they can never drift from the real state.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client import ProcessCollector

from .statistics import InferenceStatistics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _ModelCounters:
    __slots__ = ("success", "request_us", "queue_us", "compute_us", "latency", "inferences", "executions")

    def __init__(self, m: "Metrics", model: str):
        self.success = m.success.labels(model)
        self.request_us = m.request_us.labels(model)
        self.queue_us = m.queue_us.labels(model)
        self.compute_us = m.compute_us.labels(model)
        self.latency = m.latency.labels(model)
        self.inferences = m.inferences.labels(model)
        self.executions = m.executions.labels(model)


class Metrics:
    def __init__(self, state_reader: Callable[[], list[dict]] | None = None,
                 backend_reader: Callable[[], str] = lambda: "off"):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.success = Counter("mlos_inference_request_success", "Successful inference requests", ["model"], registry=r)
        self.failure = Counter("mlos_inference_request_failure", "Failed inference requests", ["model", "reason"], registry=r)
        self.inferences = Counter("mlos_inference_count", "Inferences performed (a batch of n counts n)", ["model"], registry=r)
        self.executions = Counter("mlos_inference_exec_count", "Model executions (a batch counts once)", ["model"], registry=r)
        self.request_us = Counter("mlos_inference_request_duration_us", "Cumulative end-to-end request time (us)", ["model"], registry=r)
        self.queue_us = Counter("mlos_inference_queue_duration_us", "Cumulative time requests waited in the queue (us)", ["model"], registry=r)
        self.compute_us = Counter("mlos_inference_compute_infer_duration_us", "Cumulative model execution time (us)", ["model"], registry=r)
        self.latency = Histogram("mlos_inference_request_seconds", "End-to-end request latency", ["model"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        ProcessCollector(registry=r)
        if state_reader is not None:
            r.register(_StateCollector(state_reader, backend_reader))
        self._children: dict[str, _ModelCounters] = {}
        self.stats = InferenceStatistics()  # the same events, in the Open Inference Protocol's shape

    def model(self, model_id: str) -> _ModelCounters:
        c = self._children.get(model_id)
        if c is None:
            c = self._children[model_id] = _ModelCounters(self, model_id)
        return c

    def execution_hook(self, model_id: str):
        c = self.model(model_id)

        def on_execution(rows: int, compute_ns: int) -> None:
            self.stats.execution(model_id, rows, compute_ns)
            c.inferences.inc(rows)
            c.executions.inc()
            c.compute_us.inc(compute_ns / 1000)

        return on_execution

    def record_success(self, model_id: str, request_ns: int, queue_ns: int, compute_ns: int = 0) -> None:
        self.stats.success(model_id, request_ns, queue_ns, compute_ns)
        c = self.model(model_id)
        c.success.inc()
        c.request_us.inc(request_ns / 1000)
        c.queue_us.inc(queue_ns / 1000)
        c.latency.observe(request_ns / 1e9)

    def record_failure(self, model_id: str, reason: str, request_ns: int = 0) -> None:
        self.stats.failure(model_id, request_ns)
        self.failure.labels(model_id, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges read from the registry at scrape time."""

    def __init__(self, reader: Callable[[], list[dict]], backend: Callable[[], str]):
        self._reader = reader
        self._backend = backend

    def describe(self):
        return []

    def collect(self):
        rows = self._reader()
        pending = GaugeMetricFamily("mlos_inference_pending_request_count", "Requests waiting or running", labels=["model"])
        queued = GaugeMetricFamily("mlos_inference_queue_depth", "Requests waiting in the model's queue", labels=["model"])
        memory = GaugeMetricFamily("mlos_model_memory_bytes", "Memory accounted to a loaded model", labels=["model"])
        state = GaugeMetricFamily("mlos_model_state", "1 for the model's current state", labels=["model", "state"])
        loaded = GaugeMetricFamily("mlos_models_loaded", "Models loaded now")
        backend = GaugeMetricFamily("mlos_zerocopy_backend", "1 for the backend the local zero-copy path uses",
                                    labels=["backend"])
        for row in rows:
            pending.add_metric([row["id"]], row["pending"])
            queued.add_metric([row["id"]], row["queued"])
            memory.add_metric([row["id"]], row["memory_bytes"])
            state.add_metric([row["id"], row["state"]], 1)
        loaded.add_metric([], sum(1 for r in rows if r["state"] == "ready"))
        backend.add_metric([self._backend()], 1)
        yield from (pending, queued, memory, state, loaded, backend)
