"""Prompt caching over the slots' KV cells (llama.cpp server's ``cache_prompt``).

A slot keeps the KV cells of its last sequence (prompt and generated tokens) when the request
leaves, together with those tokens. A new request takes the free slot whose kept tokens share the
longest prefix with its prompt, removes the cells past that prefix and computes only the rest.
When another slot (busy or not) holds a prefix longer by ``COPY_MIN_GAIN`` tokens than any free
slot's, its cells are copied into the chosen free slot first (``llama_memory_seq_cp`` across KV
streams copies the stream's buffer, a memcpy far cheaper than recomputing the prefix). With no
useful prefix anywhere, the least recently used free slot is taken and what it kept is evicted.

The cache is thereby bounded by the context itself (``parallel`` sequences of at most
``n_ctx_seq`` tokens) and evicts least recently used first. Reuse is exact: the cells are those a
computation of the same tokens at the same positions wrote, and the engine's kernels give every
row the same result whatever else shares its batch, so a reused prefix yields the tokens a fresh
computation would.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

COPY_MIN_GAIN = 32  # tokens: below this, recomputing costs about what the copy does


class CachedSlot(Protocol):
    seq_id: int
    cached: list[int]
    last_used: float

    @property
    def free(self) -> bool: ...


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # compare in strides first: prompts share long prefixes or none
    step = 64
    while i + step <= n and a[i:i + step] == b[i:i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(frozen=True)
class Placement:
    slot: CachedSlot
    reuse: int  # cached tokens kept (positions 0..reuse-1)
    copy_from: CachedSlot | None = None  # copy this slot's cells into ``slot`` first


def place(slots: Sequence[CachedSlot], tokens: Sequence[int], use_cache: bool = True) -> Placement | None:
    """Where a request with prompt ``tokens`` runs; None when no slot is free. At least the last
    prompt token is always computed again: its logits give the first generated token."""
    free = [s for s in slots if s.free]
    if not free:
        return None
    limit = len(tokens) - 1
    lru = min(free, key=lambda s: s.last_used)
    if not use_cache or limit <= 0:
        return Placement(lru, 0)
    best_free, best_free_n = lru, 0
    for s in free:
        n = min(common_prefix(s.cached, tokens), limit)
        if n > best_free_n or (n == best_free_n and n > 0 and s.last_used < best_free.last_used):
            best_free, best_free_n = s, n
    donor, donor_n = None, best_free_n
    for s in slots:
        if s is best_free:
            continue
        n = min(common_prefix(s.cached, tokens), limit)
        if n >= donor_n + COPY_MIN_GAIN and n > donor_n:
            donor, donor_n = s, n
    if donor is not None:
        # the copy replaces the target's cells: take the least recently used free slot that is not the donor
        target = min((s for s in free if s is not donor), key=lambda s: s.last_used, default=None)
        if target is not None:
            return Placement(target, donor_n, donor)
    if best_free_n == 0:
        return Placement(lru, 0)
    return Placement(best_free, best_free_n)
