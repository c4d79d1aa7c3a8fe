"""How a GGUF model's llama.cpp context is sized: parallel slots, context per slot, batch, threads.

Options (the register request's ``options``, else the package manifest's ``x-mlos.runtime``):

- ``parallel``: sequences decoded together (slots). Default: two per physical core, between 2 and
  8 (one decode step then keeps both cores busy with a few rows instead of one), one per core for
  models over 4 GiB (their KV cache per token is large and their steps long).
- ``n_ctx``: the whole context, in tokens, shared by the slots (llama.cpp's ``-c``).
- ``n_ctx_seq``: the context of one slot: the most tokens one request (prompt + max_tokens) holds.
  With both given, ``n_ctx`` must hold ``parallel x n_ctx_seq``; with one, the other follows;
  with neither, ``n_ctx_seq`` is 2048 (at most what the model was trained for). A slot's context
  may not exceed the model's trained context (read from the GGUF header before anything is
  allocated).
- ``n_batch``: most tokens in one decode step (new tokens of running sequences + prompt chunks).
- ``n_threads``, ``seed`` as before.

Checked before anything is registered (``check``), so a refusal names the numbers and leaves no
failed model behind.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import BadRequest, UnprocessableModel
from ..gguf_header import GgufHeaderError, trained_context
from .support import _positive_int, physical_cores

DEFAULT_N_CTX_SEQ = 2048
DEFAULT_N_BATCH = 512
MIN_N_CTX_SEQ = 64
MAX_PARALLEL = 64
LARGE_MODEL_BYTES = 4 * 2**30


@dataclass(frozen=True)
class EngineConfig:
    parallel: int
    n_ctx: int  # the whole context (all slots)
    n_ctx_seq: int  # one slot: the limit of prompt + max_tokens
    n_batch: int
    n_threads: int
    seed: int | None


def default_parallel(file_bytes: int, cores: int) -> int:
    if file_bytes > LARGE_MODEL_BYTES:
        return max(1, min(8, cores))
    return max(2, min(8, 2 * cores))


def resolve(extra: Mapping[str, Any], *, file_bytes: int, intra_op_threads: int = 0,
            trained_ctx: int | None = None) -> EngineConfig:
    """The configuration the options ask for; BadRequest, with the numbers, when it cannot work."""
    cores = physical_cores()
    given_parallel = _positive_int(extra, "parallel")
    if given_parallel is not None and given_parallel > MAX_PARALLEL:
        raise BadRequest(f"option parallel must be at most {MAX_PARALLEL}, got {given_parallel}")
    parallel = given_parallel or default_parallel(file_bytes, cores)
    which = f"parallel {parallel}" + ("" if given_parallel else " (the default here)")
    n_ctx = _positive_int(extra, "n_ctx")
    n_ctx_seq = _positive_int(extra, "n_ctx_seq")
    if n_ctx is not None and n_ctx_seq is not None:
        if n_ctx < parallel * n_ctx_seq:
            raise BadRequest(
                f"n_ctx {n_ctx} is too small for {which} x n_ctx_seq {n_ctx_seq} = {parallel * n_ctx_seq} "
                f"tokens: raise n_ctx to {parallel * n_ctx_seq}, or lower parallel to {max(1, n_ctx // n_ctx_seq)} "
                f"or n_ctx_seq to {n_ctx // parallel}")
    elif n_ctx is not None:
        n_ctx_seq = n_ctx // parallel
    elif n_ctx_seq is not None:
        n_ctx = parallel * n_ctx_seq
    else:
        n_ctx_seq = min(DEFAULT_N_CTX_SEQ, trained_ctx) if trained_ctx and trained_ctx > 0 else DEFAULT_N_CTX_SEQ
        n_ctx = parallel * n_ctx_seq
    if trained_ctx and n_ctx_seq > trained_ctx:
        if extra.get("n_ctx_seq") is not None:
            raise BadRequest(f"option n_ctx_seq {n_ctx_seq} is more than the {trained_ctx} tokens this model was "
                             "trained for")
        raise BadRequest(f"n_ctx {n_ctx} over {which} slots gives {n_ctx_seq} tokens per sequence, more than the "
                         f"{trained_ctx} tokens this model was trained for: lower n_ctx to {parallel * trained_ctx} "
                         "or less")
    if n_ctx_seq < MIN_N_CTX_SEQ:
        raise BadRequest(
            f"n_ctx {n_ctx} over {which} slots leaves {n_ctx_seq} tokens per sequence, fewer than "
            f"{MIN_N_CTX_SEQ}: raise n_ctx to {parallel * MIN_N_CTX_SEQ} or lower parallel to "
            f"{max(1, n_ctx // MIN_N_CTX_SEQ)}")
    n_threads = _positive_int(extra, "n_threads") or (
        int(intra_op_threads) if intra_op_threads and intra_op_threads > 0 else cores)
    n_batch = _positive_int(extra, "n_batch") or DEFAULT_N_BATCH
    seed = extra.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise BadRequest(f"option seed must be a non-negative integer, got {seed!r}")
    return EngineConfig(parallel=parallel, n_ctx=n_ctx, n_ctx_seq=n_ctx_seq, n_batch=n_batch,
                        n_threads=n_threads, seed=seed)


def check(path: str, extra: Mapping[str, Any], intra_op_threads: int = 0) -> EngineConfig:
    """The configuration, or a refusal of options that cannot work, from the file's size and
    header alone (no load, nothing allocated)."""
    trained = None
    if extra.get("n_ctx") is not None or extra.get("n_ctx_seq") is not None:
        try:
            trained = trained_context(path)
        except (GgufHeaderError, OSError) as e:
            raise UnprocessableModel(f"{os.path.basename(path)}: not a readable GGUF header: {e}") from None
    return resolve(extra, file_bytes=os.path.getsize(path) if os.path.isfile(path) else 0,
                   intra_op_threads=intra_op_threads, trained_ctx=trained)
