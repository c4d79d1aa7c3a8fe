"""Continuous batching: one thread per model runs decode steps over every running sequence.

Each step is one ``llama_decode`` over a batch holding the token each generating sequence sampled
last (one row each) and then chunks of the prompts being computed, up to ``n_batch`` rows; after
it, every sequence whose row has logits samples its next token with its own sampler. Requests
join at the next step boundary, and leave at the step they finish or are cancelled (their
``cancelled()`` is polled before every step), which frees their slot for the next one.

How it meets the core's scheduler: the model declares ``parallel`` concurrent calls, so the
scheduler runs up to ``parallel`` generate/chat/embed calls at once, each in a worker thread that
hands its request to this engine and then reads tokens back. The scheduler's priority heap
therefore decides which request gets the next free slot, and its ``max_queue`` bound answers 503
beyond it; the engine's own waiting list only ever holds requests for the moment between a
slot's release and the next step.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

import llama_cpp

from ...errors import InferenceFailed
from .config import EngineConfig
from .context import Batch, new_context
from .embedding import EmbeddingBatcher, EmbedJob
from .prompt_cache import place
from .sequence import Request, Slot
from .stats import EngineStats

log = logging.getLogger(__name__)

# Rows of one sequence's prompt per step: below llama.cpp's flash-attention query tile (64), whose
# tiled kernel rounds differently from the row kernel; so a prompt's rows come out the same however
# they are split across steps (by other sequences, or by a prompt-cache hit).
PROMPT_CHUNK = 63


class Engine:
    def __init__(self, model, config: EngineConfig, embed_ctx: int):
        self.config = config
        self._model = model
        self._vocab = model.vocab
        self._ctx = new_context(model, n_ctx=config.n_ctx, n_seq_max=config.parallel, n_batch=config.n_batch,
                                n_threads=config.n_threads, n_outputs=config.parallel)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ctx))
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = Batch(config.n_batch)
        self.slots = [Slot(i) for i in range(config.parallel)]
        self.stats = EngineStats(config.parallel, self.n_ctx)
        self.embedder = EmbeddingBatcher(model, embed_ctx, config.n_threads, self.stats)
        self._waiting: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mlos-gguf-engine", daemon=True)
        self._thread.start()

    # ---- callers (any thread) ----
    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closing:
                request.finish("error", "the model has been unloaded")
                return
            self._waiting.append(request)
            self.stats.add(requests=1)
            self._cond.notify()

    def embed(self, texts: list[list[int]]):
        job = EmbedJob(texts, self.embedder.dim)
        with self._cond:
            if self._closing:
                raise InferenceFailed("the model has been unloaded")
            self.embedder.submit(job)
            self._cond.notify()
        job.done.wait()
        if job.error:
            raise InferenceFailed(job.error)
        return job.rows

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
        for slot in self.slots:
            if slot.request is not None:
                slot.request.finish("error", "the model was unloaded")
                slot.clear()
        while self._waiting:
            self._waiting.popleft().finish("error", "the model was unloaded")
        self.embedder.fail_all("the model was unloaded")
        self.embedder.close()
        self._batch.free()
        llama_cpp.llama_free(self._ctx)

    # ---- the engine's thread ----
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or self._waiting or self.embedder.pending
                           or any(s.request is not None for s in self.slots)):
                    self._cond.wait()
                if self._closing:
                    return
            try:
                self._admit()
                if self.embedder.pending:
                    self.embedder.step()
                self._step()
            except Exception:  # a bug here must fail the requests, never leave them hanging
                log.exception("GGUF engine step failed")
                for slot in self.slots:
                    if slot.request is not None:
                        slot.request.finish("error", "the engine failed; see the server log")
                        self._forget(slot)
                self.embedder.fail_all("the engine failed; see the server log")

    def _admit(self) -> None:
        with self._cond:
            waiting = self._waiting
            while waiting:
                request = waiting[0]
                if request.is_cancelled():
                    waiting.popleft()
                    request.finish("cancelled")
                    continue
                spot = place(self.slots, request.tokens, request.use_cache)
                if spot is None:
                    break
                waiting.popleft()
                self._start(spot, request)
            self.stats.waiting = len(waiting)

    def _start(self, spot, request: Request) -> None:
        slot, mem, seq = spot.slot, self._mem, spot.slot.seq_id
        if spot.copy_from is not None:
            # cross-stream copy: the target's cells become the donor's; the data moves at the next decode
            llama_cpp.llama_memory_seq_cp(mem, spot.copy_from.seq_id, seq, -1, -1)
            slot.cached = list(spot.copy_from.cached)
            self.stats.add(prompt_cache_copies=1)
        if not llama_cpp.llama_memory_seq_rm(mem, seq, spot.reuse, -1):
            llama_cpp.llama_memory_seq_rm(mem, seq, -1, -1)
            slot.cached = []
        else:
            del slot.cached[spot.reuse:]
        reuse = len(slot.cached)
        slot.request = request
        slot.pending = request.tokens[reuse:]
        request.cached_tokens = reuse
        request.admitted = time.perf_counter()
        self.stats.add(prompt_tokens=len(request.tokens), prompt_cache_queries=len(request.tokens),
                       prompt_cache_hits=reuse, prompt_cache_hit_requests=int(reuse > 0))

    def _step(self) -> None:
        for slot in self.slots:  # leave at once: cancelled or released requests free their slot now
            request = slot.request
            if request is None:
                continue
            gone = request.client_gone()
            if gone or request.released.is_set():
                request.finish("cancelled" if gone else "released")
                self.stats.add(cancelled=int(gone))
                slot.clear()
        batch = self._batch
        batch.clear()
        busy = [s for s in self.slots if s.request is not None]
        with self.stats.lock:
            self.stats.busy = len(busy)
        if not busy:
            return
        for slot in busy:
            if slot.next_token is not None:
                slot.row = batch.add((slot.next_token,), len(slot.cached), slot.seq_id, True)
                slot.cached.append(slot.next_token)
                slot.next_token = None
        for slot in sorted((s for s in busy if s.pending), key=lambda s: s.request.admitted):
            if not batch.room:
                break
            chunk = slot.pending[:min(batch.room, PROMPT_CHUNK)]
            last = len(chunk) == len(slot.pending)
            row = batch.add(chunk, len(slot.cached), slot.seq_id, last)
            slot.cached.extend(chunk)
            slot.pending = slot.pending[len(chunk):]
            if last:
                slot.row = row
        if batch.n == 0:
            return
        try:
            batch.decode(self._ctx)
        except InferenceFailed as e:
            self.stats.add(decode_failures=1)
            for slot in busy:
                slot.request.finish("error", e.message)
                self._forget(slot)
            return
        self.stats.step(batch.n, len(busy))
        now = time.perf_counter()
        for slot in busy:
            if slot.row >= 0:
                self._sampled(slot, slot.request.sampler.sample(self._ctx, slot.row), now)
                slot.row = -1
        with self.stats.lock:
            self.stats.kv_tokens = sum(len(s.cached) for s in self.slots)
            self.stats.busy = sum(1 for s in self.slots if s.request is not None)

    def _sampled(self, slot: Slot, token: int, now: float) -> None:
        request = slot.request
        if request.last_token_at is not None:
            with self.stats.lock:
                self.stats.inter_token.observe(now - request.last_token_at)
        request.last_token_at = now
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            request.finish("stop")  # an end-of-generation token is neither emitted nor counted
            slot.clear()
            return
        request.generated += 1
        self.stats.add(generation_tokens=1)
        request.put_token(token)
        if token in request.stop_ids:
            request.finish("stop")
        elif request.generated >= request.max_tokens:
            request.finish("length")
        else:
            slot.next_token = token
            return
        slot.clear()

    def _forget(self, slot: Slot) -> None:
        """Drop what a slot holds (after a failed decode its cells are in doubt)."""
        llama_cpp.llama_memory_seq_rm(self._mem, slot.seq_id, -1, -1)
        slot.cached = []
        slot.clear()
