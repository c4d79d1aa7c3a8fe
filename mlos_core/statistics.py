"""Per-model inference statistics in the Open Inference Protocol's shape (Triton's
``/v2/models/{m}/stats``), kept beside the Prometheus counters by ``Metrics``.

Durations are summed nanoseconds with their counts, as the protocol reports them; a batch
execution counts once in ``execution_count`` and once per row in ``inference_count``.
"""
from __future__ import annotations

import threading
import time


def _pair() -> list[int]:
    return [0, 0]  # count, ns


class _ModelStats:
    __slots__ = ("success", "fail", "queue", "compute_infer", "inference_count", "execution_count",
                 "last_inference_ms", "batches")

    def __init__(self):
        self.success, self.fail, self.queue, self.compute_infer = _pair(), _pair(), _pair(), _pair()
        self.inference_count = self.execution_count = self.last_inference_ms = 0
        self.batches: dict[int, list[int]] = {}


def _d(pair: list[int]) -> dict:
    return {"count": pair[0], "ns": pair[1]}


class InferenceStatistics:
    def __init__(self):
        self._models: dict[str, _ModelStats] = {}
        # executions are recorded from the scheduler's threads' callbacks and requests from the
        # event loop; one lock keeps a count and its duration consistent with each other
        self._lock = threading.Lock()

    def _get(self, model_id: str) -> _ModelStats:
        s = self._models.get(model_id)
        if s is None:
            s = self._models[model_id] = _ModelStats()
        return s

    def success(self, model_id: str, request_ns: int, queue_ns: int, compute_ns: int) -> None:
        with self._lock:
            s = self._get(model_id)
            for pair, ns in ((s.success, request_ns), (s.queue, queue_ns), (s.compute_infer, compute_ns)):
                pair[0] += 1
                pair[1] += ns
            s.last_inference_ms = int(time.time() * 1000)

    def failure(self, model_id: str, request_ns: int) -> None:
        if not model_id:
            return  # a name that resolved to no model: nothing to attribute it to
        with self._lock:
            s = self._get(model_id)
            s.fail[0] += 1
            s.fail[1] += request_ns

    def execution(self, model_id: str, rows: int, compute_ns: int) -> None:
        with self._lock:
            s = self._get(model_id)
            s.inference_count += rows
            s.execution_count += 1
            b = s.batches.setdefault(rows, _pair())
            b[0] += 1
            b[1] += compute_ns

    def forget(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)

    def model(self, model_id: str, version: str) -> dict:
        with self._lock:
            s = self._models.get(model_id) or _ModelStats()
            zero = {"count": 0, "ns": 0}
            return {
                "name": model_id,
                "version": version,
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": _d(s.success), "fail": _d(s.fail), "queue": _d(s.queue),
                    # inputs arrive decoded and outputs leave before encoding: no separate stages
                    "compute_input": dict(zero), "compute_infer": _d(s.compute_infer),
                    "compute_output": dict(zero), "cache_hit": dict(zero), "cache_miss": dict(zero),
                },
                "response_stats": {},
                "batch_stats": [
                    {"batch_size": size, "compute_input": {"count": b[0], "ns": 0},
                     "compute_infer": _d(b), "compute_output": {"count": b[0], "ns": 0}}
                    for size, b in sorted(s.batches.items())
                ],
                "memory_usage": [],
            }
