"""A GGUF model served by the continuous-batching engine: the SMI's tasks on top of it.

Tasks: ``generate``, ``chat`` and ``embed``. Raw ``infer`` takes a BYTES tensor ``prompt`` of
shape [N] and returns a BYTES tensor ``text`` of shape [N]: one completion per prompt, generated
greedily (temperature 0) with the other ``GenerationParams`` defaults (at most 128 tokens).

A call runs in one of the scheduler's worker threads: it checks and tokenizes its input (the
vocabulary is read-only, so no lock), hands a request to the engine and turns the tokens coming
back into text chunks. ``max_concurrency`` is the engine's slot count, so the scheduler admits as
many calls as there are slots and keeps the rest in its priority queue.
"""
from __future__ import annotations

import ctypes
import logging
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import llama_cpp
import numpy as np

from ... import chat as chatlib
from ...errors import BadRequest, InferenceFailed, InvalidTensor
from ...smi import (CHAT, EMBED, GENERATE, GenerationChunk, GenerationParams, LoadOptions, Model, ModelMetadata,
                    ModelSource, TensorSpec)
from .config import EngineConfig
from .engine import Engine
from .sampler import Sampler
from .sequence import Finished, Request
from .support import _arch_int, _check_params, _check_text
from .text import TextStream

log = logging.getLogger(__name__)

INFER_PARAMS = GenerationParams(temperature=0.0)
EMBED_CTX = 2048  # tokens per embedding decode (and the longest text embedded)


class GgufModel(Model):
    tasks = frozenset({GENERATE, CHAT, EMBED})

    def __init__(self, llm_model, source: ModelSource, options: LoadOptions, config: EngineConfig):
        self._model = llm_model
        self._path = str(source.model_path)
        self.config = config
        self.max_concurrency = config.parallel
        self.concurrent_calls = config.parallel
        md = dict(llm_model.metadata() or {})
        self._meta = md
        arch = md.get("general.architecture", "")
        self._arch = arch
        self._trained_ctx = int(llm_model.n_ctx_train())
        self._template, self._template_source = chatlib.select_template(
            options.chat_template, md.get("tokenizer.chat_template"), arch)
        self._turn_markers = chatlib.turn_markers(self._template)
        self._turn_token_ids = self._single_tokens(self._turn_markers)
        self._bos_id = llm_model.token_bos()
        self._eos_id = llm_model.token_eos()
        self._bos = self._token_text(self._bos_id)
        self._eos = self._token_text(self._eos_id)
        self._add_bos = bool(llm_model.add_bos_token())
        self._file_bytes = os.path.getsize(self._path)
        self._pieces: dict[int, bytes] = {}
        self._n_vocab = int(llm_model.n_vocab())
        embed_ctx = min(config.n_ctx_seq, EMBED_CTX)
        self._engine = Engine(llm_model, config, embed_ctx)
        self._n_ctx_seq = config.n_ctx_seq
        self._kv_bytes = self._kv_estimate(self._engine.n_ctx)
        self._embed_kv_bytes = self._kv_estimate(embed_ctx)
        self._embedding_used = False
        self.metadata = ModelMetadata(
            inputs=(TensorSpec("prompt", np.dtype(object), (-1,)),),
            outputs=(TensorSpec("text", np.dtype(object), (-1,)),),
            platform="llama.cpp_gguf",
            batchable=False,
            properties={
                "architecture": arch,
                "name": md.get("general.name", ""),
                "size_label": md.get("general.size_label", ""),
                "context_length": config.n_ctx_seq,
                "n_ctx": self._engine.n_ctx,
                "parallel": config.parallel,
                "n_parallel": config.parallel,  # the name /api/backend/info (issue 12) reports, as llama.cpp does
                "n_ctx_seq": config.n_ctx_seq,  # one slot's share of n_ctx
                "trained_context_length": self._trained_ctx,
                "n_threads": config.n_threads,
                "n_batch": config.n_batch,
                "chat_template_source": self._template_source,
                "vocab_size": int(llm_model.n_vocab()),
                "embedding_length": int(llm_model.n_embd()),
            },
        )

    # -- helpers --
    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        try:
            return self._model.token_get_text(token)
        except Exception:
            return ""

    def _single_tokens(self, markers: Sequence[str]) -> frozenset[int]:
        """The markers that are one (special) token in this vocabulary, as token ids."""
        ids = set()
        for m in markers:
            toks = self._model.tokenize(m.encode("utf-8"), add_bos=False, special=True)
            if len(toks) == 1:
                ids.add(toks[0])
        return frozenset(ids)

    def _kv_estimate(self, n_ctx: int) -> int:
        """f16 K and V for every layer and position (llama.cpp's default cache types)."""
        md, arch = self._meta, self._arch
        layers = _arch_int(md, arch, "block_count")
        heads = _arch_int(md, arch, "attention.head_count")
        kv_heads = _arch_int(md, arch, "attention.head_count_kv") or heads
        embd = _arch_int(md, arch, "embedding_length")
        if not (layers and heads and kv_heads and embd):
            return 0
        k = _arch_int(md, arch, "attention.key_length") or embd // heads
        v = _arch_int(md, arch, "attention.value_length") or embd // heads
        return layers * n_ctx * kv_heads * (k + v) * 2

    def _live(self):
        if self._engine is None:
            raise InferenceFailed("the model has been unloaded")
        return self._engine

    def _tokenize_prompt(self, data: bytes) -> list[int]:
        """Tokens as ``create_completion`` makes them from a string prompt: special tokens
        parsed, BOS/EOS added as the vocabulary says."""
        return self._model.tokenize(data, add_bos=True, special=True)

    def _piece(self, token: int) -> bytes:
        """The token's text bytes as llama-cpp-python's detokenizer gives them (special tokens empty)."""
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
            piece = self._pieces[token] = buf.raw[:max(n, 0)]
        return piece

    # -- tasks --
    def count_tokens(self, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        if not data:
            return 0
        return len(self._tokenize_prompt(data))

    def context_length(self) -> int | None:
        return self._n_ctx_seq

    def generate(self, prompt: str, params: GenerationParams,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        data = _check_text(prompt, "prompt")
        _check_params(params)
        tokens = self._tokenize_prompt(data)
        return self._stream(tokens, params, cancelled, params.stop)

    def chat(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
             cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        prompt = self.render_chat(messages)
        _check_params(params)
        data = _check_text(prompt, "the rendered chat prompt")
        tokens = self._model.tokenize(data, add_bos=False, special=True)
        if self._add_bos and self._bos_id >= 0 and tokens[:1] != [self._bos_id]:
            tokens = [self._bos_id] + tokens
        stops = tuple(params.stop) + tuple(m for m in self._turn_markers if m not in params.stop)
        return self._stream(tokens, params, cancelled, stops, self._turn_token_ids)

    def render_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True) -> str:
        """The prompt text ``chat`` generates from (exposed for inspection and tests)."""
        validated = chatlib.validate_messages(messages)
        return chatlib.render(validated, self._template, bos_token=self._bos, eos_token=self._eos,
                              add_generation_prompt=add_generation_prompt)

    def _stream(self, tokens: list[int], params: GenerationParams, cancelled: Callable[[], bool],
                stops: Sequence[str], stop_ids: frozenset[int] = frozenset()) -> Iterator[GenerationChunk]:
        n_prompt, limit = len(tokens), self._n_ctx_seq
        if n_prompt + params.max_tokens > limit:
            split = f" (n_ctx {self._engine.n_ctx} over {self.config.parallel} slots)" if self.config.parallel > 1 else ""
            raise BadRequest(
                f"the prompt takes {n_prompt} tokens and max_tokens is {params.max_tokens}: together "
                f"{n_prompt + params.max_tokens}, more than this model's context of {limit} tokens{split}")
        self._live()
        return self._consume(tokens, params, cancelled, tuple(stops), stop_ids)

    def _consume(self, tokens: list[int], params: GenerationParams, cancelled: Callable[[], bool],
                 stops: tuple[str, ...], stop_ids: frozenset[int]) -> Iterator[GenerationChunk]:
        # the request joins the engine when the caller starts reading, so one never read holds no slot
        request = Request(tokens, params, Sampler(params, self._n_vocab, self.config.seed), cancelled, stop_ids,
                          use_cache=params.cache_prompt)
        self._live().submit(request)
        text = TextStream(self._piece, stops)
        consumed, finish = 0, None
        try:
            for item in request.events():
                if isinstance(item, Finished):
                    if item.reason == "error":
                        raise InferenceFailed(f"llama.cpp failed while generating: {item.error}")
                    finish = item.reason
                    break
                if request.is_cancelled():
                    finish = "cancelled"
                    break
                consumed += 1
                out = text.push(item)
                if text.stopped:
                    finish = "stop"
                    if out:
                        yield GenerationChunk(out)
                    break
                if out:
                    yield GenerationChunk(out)
        finally:
            request.release()  # frees the slot at the next step if it is still running
        tail = "" if text.stopped else text.flush()
        yield GenerationChunk(tail, finish_reason=finish or "stop", prompt_tokens=len(tokens),
                              completion_tokens=consumed, cached_tokens=request.cached_tokens)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise BadRequest(f"input must be a list of strings, got {type(texts).__name__}")
        if not texts:
            raise BadRequest("input is empty: give at least one text to embed")
        encoded = [_check_text(t, f"input[{i}]") for i, t in enumerate(texts)]
        engine = self._live()
        limit = engine.embedder.n_ctx
        tokens = []
        for i, data in enumerate(encoded):
            toks = self._model.tokenize(data, add_bos=True, special=False)
            if len(toks) > limit:
                raise BadRequest(f"input[{i}] takes {len(toks)} tokens, more than the {limit} this model embeds at once")
            tokens.append(toks)
        self._embedding_used = True
        out = engine.embed(tokens)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        if set(inputs) != {"prompt"}:
            raise InvalidTensor(f"this model takes one BYTES tensor 'prompt', got {sorted(inputs)}")
        arr = np.asarray(inputs["prompt"])
        if arr.ndim != 1:
            raise InvalidTensor(f"tensor 'prompt' must have shape [N], got {list(arr.shape)}")
        texts = []
        for i, value in enumerate(arr.tolist()):
            chunks = self.generate(_as_text(value, f"prompt[{i}]"), INFER_PARAMS)
            texts.append("".join(c.text for c in chunks))
        return {"text": np.array(texts, dtype=object)}

    def serving_stats(self) -> dict | None:
        engine = self._engine
        return engine.stats.snapshot() if engine is not None else None

    def memory_bytes(self) -> int:
        return self._file_bytes + self._kv_bytes + (self._embed_kv_bytes if self._embedding_used else 0)

    def unload(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        model, self._model = self._model, None
        if model is not None:
            try:
                model.close()
            except Exception:
                log.debug("closing a llama.cpp model failed", exc_info=True)


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"{what} is not valid UTF-8 (bad byte at offset {e.start})") from None
    if isinstance(value, str):
        return value
    raise InvalidTensor(f"{what} must be a string, got {type(value).__name__}")
