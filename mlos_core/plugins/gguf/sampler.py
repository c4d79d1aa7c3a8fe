"""Per-request sampling on llama.cpp's own sampler chain (``llama_sampler_*``), so that one decode
step can sample every sequence with its own parameters straight from the step's logits.

The chain is the one llama-cpp-python's ``Llama`` builds for the same parameters (penalties over
the last 64 generated tokens, then greedy; or top-k, top-p, temperature and a seeded draw), so a
request gives the same tokens here as through ``Llama.create_completion``.
"""
from __future__ import annotations

import llama_cpp

from ...smi import GenerationParams

PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size


class Sampler:
    def __init__(self, params: GenerationParams, n_vocab: int, default_seed: int | None = None):
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._chain = chain
        add = lambda s: llama_cpp.llama_sampler_chain_add(chain, s)  # noqa: E731 (the chain owns s)
        if params.repetition_penalty != 1.0:
            add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, float(params.repetition_penalty), 0.0, 0.0))
        if params.temperature == 0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(int(params.top_k)))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(float(params.top_p), 1))
        add(llama_cpp.llama_sampler_init_temp(float(params.temperature)))
        seed = params.seed if params.seed is not None else default_seed
        add(llama_cpp.llama_sampler_init_dist(llama_cpp.LLAMA_DEFAULT_SEED if seed is None else int(seed) & 0xFFFFFFFF))

    def sample(self, ctx, index: int) -> int:
        """The token for the logits of batch row ``index``; the chain records it (penalties)."""
        return int(llama_cpp.llama_sampler_sample(self._chain, ctx, index))

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
