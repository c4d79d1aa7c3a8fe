"""What a GGUF engine counts while it runs: slots, decode steps and their fill, tokens, prompt-cache
reuse, inter-token latency, batched embeddings. The engine's thread writes; ``snapshot()`` (for
``/status`` and ``/metrics``) reads a consistent copy under the same lock. The names follow
llama.cpp's server and vLLM where one of them has the figure."""
from __future__ import annotations

import bisect
import threading

ITERATION_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)


class Histogram:
    """Counts per upper bound (Prometheus ``le``), not cumulative; the last is +Inf."""

    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> dict:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum, "count": self.count}


class EngineStats:
    COUNTERS = ("decode_steps", "step_tokens", "step_busy_slots", "prompt_tokens", "generation_tokens",
                "prompt_cache_queries", "prompt_cache_hits", "prompt_cache_hit_requests", "prompt_cache_copies",
                "requests", "cancelled", "embedding_batches", "embedding_inputs", "decode_failures")

    def __init__(self, slots: int, n_ctx: int):
        self.lock = threading.Lock()
        self.slots = slots
        self.n_ctx = n_ctx
        self.busy = 0
        self.waiting = 0
        self.kv_tokens = 0
        self.c = dict.fromkeys(self.COUNTERS, 0)
        self.iteration_tokens = Histogram(ITERATION_TOKEN_BUCKETS)
        self.inter_token = Histogram(LATENCY_BUCKETS)

    def step(self, tokens: int, busy: int) -> None:
        with self.lock:
            self.c["decode_steps"] += 1
            self.c["step_tokens"] += tokens
            self.c["step_busy_slots"] += busy
            self.iteration_tokens.observe(tokens)

    def add(self, **counts: int) -> None:
        with self.lock:
            for k, v in counts.items():
                self.c[k] += v

    def snapshot(self) -> dict:
        with self.lock:
            steps = self.c["decode_steps"]
            return {
                "slots_total": self.slots,
                "slots_busy": self.busy,
                "requests_waiting": self.waiting,
                "kv_cache_tokens": self.kv_tokens,
                "kv_cache_usage_ratio": round(self.kv_tokens / self.n_ctx, 4) if self.n_ctx else 0.0,
                **self.c,
                "tokens_per_step": round(self.c["step_tokens"] / steps, 3) if steps else 0.0,
                "busy_slots_per_step": round(self.c["step_busy_slots"] / steps, 3) if steps else 0.0,
                "iteration_tokens": self.iteration_tokens.snapshot(),
                "inter_token_latency_seconds": self.inter_token.snapshot(),
            }
