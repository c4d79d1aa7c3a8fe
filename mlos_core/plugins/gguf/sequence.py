"""A generation request as the engine sees it, and the slot (one llama.cpp sequence id) it runs in.

The engine's thread produces, the caller's thread consumes: each sampled token goes into the
request's queue as an ``int``, and the end as one ``Finished``. The caller may ``release()`` the
request at any time (a stop string completed, or it stopped reading): the engine frees its slot at
the next step boundary.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from ...smi import GenerationParams
from .sampler import Sampler


@dataclass(frozen=True)
class Finished:
    reason: str  # "stop" (end of generation), "length", "cancelled", "released" or "error"
    error: str | None = None


class Request:
    def __init__(self, tokens: list[int], params: GenerationParams, sampler: Sampler,
                 cancelled: Callable[[], bool], stop_ids: frozenset[int] = frozenset(), use_cache: bool = True):
        self.tokens = tokens
        self.max_tokens = params.max_tokens
        self.sampler = sampler
        self.cancelled = cancelled
        self.stop_ids = stop_ids
        self.use_cache = use_cache
        self.released = threading.Event()
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self.generated = 0
        self.cached_tokens = 0  # prompt tokens whose KV came from the cache
        self.submitted = time.perf_counter()
        self.admitted: float | None = None
        self.last_token_at: float | None = None
        self.done = False

    # ---- engine side ----
    def client_gone(self) -> bool:
        """The caller's ``cancelled()``: its client disconnected, or the model is being drained."""
        try:
            return bool(self.cancelled())
        except Exception:  # a broken callback must not stop the engine; treat it as gone
            return True

    def is_cancelled(self) -> bool:
        return self.released.is_set() or self.client_gone()

    def put_token(self, token: int) -> None:
        self._events.put(token)

    def finish(self, reason: str, error: str | None = None) -> None:
        if not self.done:
            self.done = True
            self.sampler.close()
            self._events.put(Finished(reason, error))

    # ---- caller side ----
    def events(self) -> Iterator[int | Finished]:
        while True:
            item = self._events.get()
            yield item
            if isinstance(item, Finished):
                return

    def release(self) -> None:
        self.released.set()


class Slot:
    """One llama.cpp sequence id. ``cached`` lists the tokens whose KV is in the slot's cells, at
    positions 0..len-1; it outlives the request (the prompt cache)."""

    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.cached: list[int] = []
        self.request: Request | None = None
        self.pending: list[int] = []  # prompt tokens still to compute
        self.next_token: int | None = None  # sampled, to be fed at the next step
        self.row = -1  # batch row whose logits this slot samples after the step
        self.last_used = 0.0

    @property
    def free(self) -> bool:
        return self.request is None

    def clear(self) -> None:
        self.request = None
        self.pending = []
        self.next_token = None
        self.row = -1
        self.last_used = time.perf_counter()
