"""Embeddings batched across requests: texts waiting, from any number of calls, join the next decode
on the embedding context (llama.cpp pools each sequence separately), in arrival order. A decode
holds texts up to ``ROWS`` tokens together, and a longer text alone: the embedding context's cache
is one stream, where 64 query rows or more would switch llama.cpp to its tiled attention kernel,
which rounds differently; so a text's embedding is the same whichever texts share its decode
(to the last bits of the mean pooling, a sum over the decode's rows).
The engine's thread runs the decodes between generation steps, so a model's embeddings and
generations never compete for the cores at once."""
from __future__ import annotations

import collections
import threading

import llama_cpp
import numpy as np

from ...errors import InferenceFailed
from .context import Batch, new_context

MAX_SEQUENCES = 256
ROWS = 63  # below llama.cpp's flash-attention query tile (64): see above


class EmbedJob:
    def __init__(self, texts: list[list[int]], dim: int):
        self.texts = texts
        self.rows = np.zeros((len(texts), dim), dtype=np.float32)
        self.next = 0  # first text not yet given to a decode
        self.left = len(texts)
        self.error: str | None = None
        self.done = threading.Event()


class EmbeddingBatcher:
    def __init__(self, model, n_ctx: int, n_threads: int, stats):
        self.n_ctx = n_ctx  # == n_batch: one decode holds at most this many tokens
        self._model = model
        self._threads = n_threads
        self._stats = stats
        self._dim = int(model.n_embd())
        self._ctx = None
        self._batch: Batch | None = None
        self._jobs: collections.deque[EmbedJob] = collections.deque()

    @property
    def dim(self) -> int:
        return self._dim

    def submit(self, job: EmbedJob) -> None:
        """Called with the engine's lock held."""
        self._jobs.append(job)

    @property
    def pending(self) -> bool:
        return bool(self._jobs)

    def step(self) -> None:
        """One decode over as many waiting texts as fit (engine thread)."""
        if self._ctx is None:
            self._ctx = new_context(self._model, n_ctx=self.n_ctx, n_seq_max=min(self.n_ctx, MAX_SEQUENCES),
                                    n_batch=self.n_ctx, n_threads=self._threads, embeddings=True, kv_unified=True)
            self._batch = Batch(self.n_ctx)
        batch = self._batch
        batch.clear()
        taken: list[tuple[EmbedJob, int]] = []
        for job in list(self._jobs):
            while job.next < len(job.texts) and len(taken) < MAX_SEQUENCES and batch.n < ROWS:
                tokens = job.texts[job.next]
                if taken and batch.n + len(tokens) > ROWS:
                    break  # a longer text goes alone, in the next decode
                batch.add(tokens, 0, len(taken), output_last=False, output_all=True)  # pooling reads them all
                taken.append((job, job.next))
                job.next += 1
            if job.next < len(job.texts):
                break  # keep arrival order: the rest waits for the next decode
        if not taken:
            return
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)
        try:
            batch.decode(self._ctx)
            for seq, (job, i) in enumerate(taken):
                ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
                if not ptr:
                    raise InferenceFailed("llama.cpp returned no pooled embedding for this model")
                job.rows[i] = np.ctypeslib.as_array(ptr, shape=(self._dim,))
        except InferenceFailed as e:
            for job, _ in taken:
                job.error = e.message
        self._stats.add(embedding_batches=1, embedding_inputs=len(taken))
        for job, _ in taken:
            job.left -= 1
            if job.left == 0 or job.error:
                job.left = 0
                if job in self._jobs:
                    self._jobs.remove(job)
                job.done.set()

    def fail_all(self, message: str) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            job.error = message
            job.done.set()

    def close(self) -> None:
        if self._batch is not None:
            self._batch.free()
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
