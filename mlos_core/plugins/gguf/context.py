"""llama.cpp contexts and batches, on llama-cpp-python's low-level bindings.

One model (weights, vocabulary) serves two contexts: the generation context, whose KV cache is
split into one stream per slot (``n_seq_max = parallel``, ``kv_unified = false``), and, made on
first use, an embedding context (mean pooling, a unified cache over up to 256 sequences).

Why split streams rather than one unified cache: each sequence's attention reads only its own
cells; no sequence can run out of cells mid-generation because others grew (a request that fits
``n_ctx_seq`` always completes); and a sequence's cells sit at the same places whatever else runs.
With the weights in llama.cpp's plain layout (``use_extra_bufts = false``: the repacked CPU layout
computes a row differently when it shares a batch), the tiled K-quant kernel off (plugin.py) and
prompts fed in chunks under the flash-attention tile (engine.py), every sequence's output is exactly
what it would be alone (docs/llm-serving.md says where that ends). The price: a prefix shared by
two slots is held twice (see prompt_cache), and one request cannot use more than
``n_ctx / parallel`` tokens.
"""
from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np

from ...errors import InferenceFailed, UnprocessableModel


def load_model(path: str):
    """The model's weights and vocabulary (llama-cpp-python's wrapper frees them on close)."""
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = False
    return LlamaModel(path_model=path, params=params, verbose=False)


def new_context(model, *, n_ctx: int, n_seq_max: int, n_batch: int, n_threads: int,
                embeddings: bool = False, kv_unified: bool = False, n_outputs: int = 0):
    """``n_outputs``: the most rows with logits per decode (0: every row of the batch). A step needs
    one per sequence, and llama.cpp reserves vocabulary x n_outputs floats for them (Gemma 3: 1 MiB
    a row; 512 MiB for a whole batch)."""
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = n_seq_max
    params.n_threads = n_threads
    params.n_threads_batch = n_threads
    params.kv_unified = kv_unified
    params.swa_full = True  # sliding-window layers keep every cell: a cached prefix stays reusable
    params.no_perf = True
    params.n_outputs_max = n_outputs
    if embeddings:
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
    ctx = llama_cpp.llama_init_from_model(model.model, params)
    if not ctx:
        raise UnprocessableModel(f"llama.cpp could not make a context of {n_ctx} tokens for {n_seq_max} sequences")
    return ctx


class Batch:
    """A ``llama_batch`` of ``capacity`` tokens, one sequence id each, filled row by row."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self._token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self._pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self._n_seq = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self._logits = np.ctypeslib.as_array(ctypes.cast(self.raw.logits, ctypes.POINTER(ctypes.c_int8)),
                                             shape=(capacity,))
        self._seq = [self.raw.seq_id[i] for i in range(capacity)]
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def add(self, tokens, first_pos: int, seq_id: int, output_last: bool, output_all: bool = False) -> int:
        """Append ``tokens`` at positions ``first_pos``...; the row of the last one. Outputs (logits,
        or embeddings) of the last token, or of all of them."""
        k = len(tokens)
        a, b = self.n, self.n + k
        self._token[a:b] = tokens
        self._pos[a:b] = np.arange(first_pos, first_pos + k, dtype=np.int32)
        self._n_seq[a:b] = 1
        self._logits[a:b] = 1 if output_all else 0
        if output_last:
            self._logits[b - 1] = 1
        seq = self._seq
        for i in range(a, b):
            seq[i][0] = seq_id
        self.n = b
        return b - 1

    def decode(self, ctx) -> None:
        self.raw.n_tokens = self.n
        rc = llama_cpp.llama_decode(ctx, self.raw)
        if rc != 0:
            raise InferenceFailed(f"llama_decode failed ({rc}) on a batch of {self.n} tokens")

    def free(self) -> None:
        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None
