"""Prometheus metrics, modelled on Triton's ``nv_inference_*`` family.

Counters and histograms are updated on the request path through per-model children cached
here; gauges (pending requests, loaded models, memory) are read from the registry at scrape
time by a collector, so they can never drift from the real state.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client import ProcessCollector

from .statistics import InferenceStatistics

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# vLLM's time_to_first_token_seconds buckets, cut to what a CPU server sees
_TTFT_BUCKETS = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)


class _ModelCounters:
    __slots__ = ("success", "request_us", "queue_us", "compute_us", "latency", "inferences", "executions",
                 "queue_time", "first_token")

    def __init__(self, m: "Metrics", model: str):
        self.success = m.success.labels(model)
        self.request_us = m.request_us.labels(model)
        self.queue_us = m.queue_us.labels(model)
        self.compute_us = m.compute_us.labels(model)
        self.latency = m.latency.labels(model)
        self.inferences = m.inferences.labels(model)
        self.executions = m.executions.labels(model)
        self.queue_time = m.queue_time.labels(model)
        self.first_token = m.first_token.labels(model)


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
        self.queue_time = Histogram("mlos_request_queue_time_seconds", "Time requests waited in the model's queue "
                                    "before they ran (vLLM's request_queue_time_seconds)", ["model"],
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("mlos_time_to_first_token_seconds", "Streamed generations: from the request "
                                     "to its first text, queue included (vLLM's time_to_first_token_seconds)",
                                     ["model"], buckets=_TTFT_BUCKETS, registry=r)
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
        c.queue_time.observe(queue_ns / 1e9)

    def observe_first_token(self, model_id: str, ns: int) -> None:
        self.model(model_id).first_token.observe(ns / 1e9)

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
        yield from _llm_families([(r["id"], r["llm"]) for r in rows if r.get("llm")])


# Models that batch their own work (GGUF slots): figures their engine keeps, named after llama.cpp's
# server (llamacpp:*) and vLLM (vllm:*) where one of them has the figure.
_LLM_GAUGES = (
    ("slots_total", "mlos_llm_slots_total", "Parallel sequence slots"),
    ("slots_busy", "mlos_llm_slots_busy", "Slots running a request (llamacpp:requests_processing)"),
    ("busy_slots_per_step", "mlos_llm_busy_slots_per_decode", "Average busy slots per decode step "
     "(llamacpp:n_busy_slots_per_decode)"),
    ("tokens_per_step", "mlos_llm_tokens_per_decode", "Average tokens per decode step (batch fill)"),
    ("kv_cache_tokens", "mlos_llm_kv_cache_tokens", "Tokens held in the KV cache, prompt cache included "
     "(llamacpp:kv_cache_tokens)"),
    ("kv_cache_usage_ratio", "mlos_llm_kv_cache_usage_ratio", "KV cache cells used (llamacpp:kv_cache_usage_ratio)"),
)
_LLM_COUNTERS = (
    ("decode_steps", "mlos_llm_n_decode", "Decode steps (llamacpp:n_decode_total)"),
    ("prompt_tokens", "mlos_llm_prompt_tokens", "Prompt tokens of admitted requests (vllm:prompt_tokens)"),
    ("generation_tokens", "mlos_llm_generation_tokens", "Generated tokens (vllm:generation_tokens)"),
    ("prompt_cache_queries", "mlos_llm_prefix_cache_queries", "Prompt tokens looked up in the prompt cache "
     "(vllm:prefix_cache_queries)"),
    ("prompt_cache_hits", "mlos_llm_prefix_cache_hits", "Prompt tokens taken from the prompt cache, not computed "
     "(vllm:prefix_cache_hits)"),
    ("prompt_cache_hit_requests", "mlos_llm_prefix_cache_hit_requests", "Requests that reused a cached prefix"),
    ("cancelled", "mlos_llm_requests_cancelled", "Generations stopped by their client (disconnect, drain)"),
    ("embedding_batches", "mlos_llm_embedding_batches", "Embedding decodes"),
    ("embedding_inputs", "mlos_llm_embedding_inputs", "Texts embedded (inputs over all embedding decodes)"),
)
_LLM_HISTOGRAMS = (
    ("iteration_tokens", "mlos_llm_iteration_tokens", "Tokens per decode step (vllm:iteration_tokens_total)"),
    ("inter_token_latency_seconds", "mlos_inter_token_latency_seconds", "Time between two tokens of one "
     "sequence (vllm:inter_token_latency_seconds)"),
)


def _llm_families(rows: list[tuple[str, dict]]):
    if not rows:
        return
    for key, name, doc in _LLM_GAUGES:
        g = GaugeMetricFamily(name, doc, labels=["model"])
        for model, st in rows:
            g.add_metric([model], st.get(key, 0))
        yield g
    for key, name, doc in _LLM_COUNTERS:
        c = CounterMetricFamily(name, doc, labels=["model"])
        for model, st in rows:
            c.add_metric([model], st.get(key, 0))
        yield c
    for key, name, doc in _LLM_HISTOGRAMS:
        h = HistogramMetricFamily(name, doc, labels=["model"])
        for model, st in rows:
            snap = st.get(key)
            if not snap:
                continue
            total, buckets = 0, []
            for bound, n in zip([*snap["buckets"], float("inf")], snap["counts"]):
                total += n
                buckets.append(("+Inf" if bound == float("inf") else str(float(bound)), total))
            h.add_metric([model], buckets, snap["sum"])
        yield h
