"""GGUF models on llama.cpp (llama-cpp-python).

Load settings come from ``LoadOptions.extra`` (the registry fills it from the register request,
else the package manifest's ``x-mlos.runtime``): ``n_ctx`` (default 2048, capped at the model's
trained context), ``n_threads`` (default ``intra_op_threads`` when set, else the physical cores),
``n_batch`` (default 512) and ``seed``.

Tasks: ``generate``, ``chat`` and ``embed``. Raw ``infer`` takes a BYTES tensor ``prompt`` of
shape [N] and returns a BYTES tensor ``text`` of shape [N]: one completion per prompt, generated
greedily (temperature 0) with the other ``GenerationParams`` defaults (at most 128 tokens).

llama.cpp contexts are not thread-safe. The core's scheduler runs one call at a time per model;
each ``Llama`` is also guarded by a lock here, held for a whole generation (tokenizing reads
only the vocabulary and takes no lock).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .. import chat as chatlib
from .gguf_support import (_Counter, _arch_int, _check_params, _check_text, _held_back, _install_log, _load_reason,
                           _log_state, _positive_int, load_failure, physical_cores)
from ..errors import BadRequest, InferenceFailed, InvalidTensor, UnprocessableModel
from .gguf_header import GgufHeaderError, trained_context
from ..smi import (CHAT, EMBED, GENERATE, FormatPlugin, GenerationChunk, GenerationParams, LoadOptions, Model,
                   ModelMetadata, ModelSource, TensorSpec)

log = logging.getLogger(__name__)

DEFAULT_N_CTX = 2048
DEFAULT_N_BATCH = 512
INFER_PARAMS = GenerationParams(temperature=0.0)

class GgufModel(Model):
    tasks = frozenset({GENERATE, CHAT, EMBED})
    max_concurrency = 1  # a llama.cpp context is not thread-safe: requests queue in the scheduler

    def __init__(self, llm, source: ModelSource, options: LoadOptions, n_threads: int, n_batch: int):
        self._llm = llm
        self._lock = threading.Lock()
        self._embedder = None
        self._embed_lock = threading.Lock()
        self._path = str(source.model_path)
        self._n_threads = n_threads
        self._n_batch = n_batch
        self._n_ctx = int(llm.n_ctx())
        md = dict(llm.metadata or {})
        self._meta = md
        arch = md.get("general.architecture", "")
        self._arch = arch
        self._trained_ctx = int(llm._model.n_ctx_train())
        self._template, self._template_source = chatlib.select_template(
            options.chat_template, md.get("tokenizer.chat_template"), arch)
        self._turn_markers = chatlib.turn_markers(self._template)
        self._turn_token_ids = self._single_tokens(self._turn_markers)
        self._bos_id = llm.token_bos()
        self._eos_id = llm.token_eos()
        self._bos = self._token_text(self._bos_id)
        self._eos = self._token_text(self._eos_id)
        self._add_bos = bool(llm._model.add_bos_token())
        self._file_bytes = os.path.getsize(self._path)
        self._kv_bytes = self._kv_estimate(self._n_ctx)
        self.metadata = ModelMetadata(
            inputs=(TensorSpec("prompt", np.dtype(object), (-1,)),),
            outputs=(TensorSpec("text", np.dtype(object), (-1,)),),
            platform="llama.cpp_gguf",
            batchable=False,
            properties={
                "architecture": arch,
                "name": md.get("general.name", ""),
                "size_label": md.get("general.size_label", ""),
                "context_length": self._n_ctx,
                "trained_context_length": self._trained_ctx,
                "n_threads": n_threads,
                "n_batch": n_batch,
                "chat_template_source": self._template_source,
                "vocab_size": int(llm.n_vocab()),
                "embedding_length": int(llm.n_embd()),
            },
        )

    # -- helpers --
    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        try:
            return self._llm._model.token_get_text(token)
        except Exception:
            return ""

    def _single_tokens(self, markers: Sequence[str]) -> frozenset[int]:
        """The markers that are one (special) token in this vocabulary, as token ids."""
        ids = set()
        for m in markers:
            toks = self._llm.tokenize(m.encode("utf-8"), add_bos=False, special=True)
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

    def _llama(self):
        if self._llm is None:
            raise InferenceFailed("the model has been unloaded")
        return self._llm

    def _tokenize_prompt(self, data: bytes) -> list[int]:
        """Tokens as ``create_completion`` makes them from a string prompt: special tokens
        parsed, BOS/EOS added as the vocabulary says."""
        return self._llama().tokenize(data, add_bos=True, special=True)

    # -- tasks --
    def count_tokens(self, text: str) -> int:
        data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
        if not data:
            return 0
        return len(self._tokenize_prompt(data))  # the vocabulary is read-only: no context lock

    def context_length(self) -> int | None:
        return self._n_ctx

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
        tokens = self._llama().tokenize(data, add_bos=False, special=True)
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
        n_prompt = len(tokens)
        if n_prompt + params.max_tokens > self._n_ctx:
            raise BadRequest(
                f"the prompt takes {n_prompt} tokens and max_tokens is {params.max_tokens}: together "
                f"{n_prompt + params.max_tokens}, more than this model's context of {self._n_ctx} tokens")
        return self._run(tokens, params, cancelled, tuple(stops), stop_ids)

    def _run(self, tokens, params, cancelled, stops, stop_ids) -> Iterator[GenerationChunk]:
        counter = _Counter(cancelled, len(tokens), stop_ids)
        import llama_cpp

        with self._lock:
            llm = self._llama()
            stream = llm.create_completion(
                tokens, stream=True, max_tokens=params.max_tokens,
                temperature=float(params.temperature), top_p=float(params.top_p), top_k=int(params.top_k),
                min_p=0.0, typical_p=1.0, repeat_penalty=float(params.repetition_penalty),
                seed=params.seed, stop=None,  # stop strings are handled in the loop below
                stopping_criteria=llama_cpp.StoppingCriteriaList([counter]),
            )
            pending = ""
            finish = None
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    text = choice.get("text") or ""
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                        break
                    pending += text
                    if counter.stopped or cancelled():
                        if not counter.stopped:
                            counter.stop(counter.calls)
                        break
                    if not text:
                        continue
                    if stops:
                        hits = [pending.index(s) for s in stops if s in pending]
                        if hits:
                            cut = min(hits)
                            if cut:
                                yield GenerationChunk(pending[:cut])
                            pending = ""
                            finish = "stop-sequence"
                            break
                        keep = _held_back(pending, stops)
                    else:
                        keep = 0
                    out, pending = (pending[:len(pending) - keep], pending[len(pending) - keep:]) if keep \
                        else (pending, "")
                    if out:
                        yield GenerationChunk(out)
            except (ValueError, RuntimeError) as e:  # llama_decode failures and the like
                raise InferenceFailed(f"llama.cpp failed while generating: {e}") from None
            finally:
                stream.close()
            # The counter is called once per sampled token, and once more after the loop when
            # llama.cpp finishes by itself; an end-of-generation token is sampled, not returned,
            # and so is the token sampled after a turn marker (the marker itself is counted).
            if counter.stopped:
                finish, completion = "cancelled", counter.sampled_before_stop
            elif finish == "stop-sequence":
                finish, completion = "stop", counter.calls
            elif finish == "stop":
                completion = max(0, counter.calls - 2)
            else:
                finish, completion = finish or "length", max(0, counter.calls - 1)
            yield GenerationChunk(pending, finish_reason=finish, prompt_tokens=len(tokens),
                                  completion_tokens=completion)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise BadRequest(f"input must be a list of strings, got {type(texts).__name__}")
        if not texts:
            raise BadRequest("input is empty: give at least one text to embed")
        encoded = [_check_text(t, f"input[{i}]") for i, t in enumerate(texts)]
        with self._embed_lock:
            emb = self._embedding_llama()
            for i, data in enumerate(encoded):
                n = len(emb.tokenize(data, add_bos=True, special=False))
                if n > emb.n_batch:
                    raise BadRequest(f"input[{i}] takes {n} tokens, more than the {emb.n_batch} this model "
                                     "embeds at once")
            try:
                rows = emb.embed([d.decode("utf-8") for d in encoded], normalize=False, truncate=False)
            except ValueError as e:
                raise InferenceFailed(f"llama.cpp refused the input: {e}") from None
        out = np.asarray(rows, dtype=np.float32)
        if out.ndim != 2:  # a model without pooling returned per-token rows
            raise InferenceFailed("llama.cpp returned unpooled embeddings for this model")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _embedding_llama(self):
        """llama.cpp computes embeddings only in a context made for them: a second Llama over
        the same (memory-mapped, so shared) weights, made on first use, mean-pooled."""
        if self._embedder is None:
            if self._llm is None:
                raise InferenceFailed("the model has been unloaded")
            import llama_cpp

            n = min(self._n_ctx, 2048)
            try:
                self._embedder = llama_cpp.Llama(
                    self._path, embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                    n_ctx=n, n_batch=n, n_ubatch=n, n_threads=self._n_threads, verbose=False)
            except Exception as e:
                raise InferenceFailed(f"llama.cpp could not make an embedding context: {e}") from None
            self._kv_bytes += self._kv_estimate(n)
        return self._embedder

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

    def memory_bytes(self) -> int:
        return self._file_bytes + self._kv_bytes

    def unload(self) -> None:
        for attr, lock in (("_llm", self._lock), ("_embedder", self._embed_lock)):
            with lock:
                llm = getattr(self, attr)
                setattr(self, attr, None)
                if llm is not None:
                    try:
                        llm.close()
                    except Exception:
                        log.debug("closing a llama.cpp context failed", exc_info=True)


def _as_text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"{what} is not valid UTF-8 (bad byte at offset {e.start})") from None
    if isinstance(value, str):
        return value
    raise InvalidTensor(f"{what} must be a string, got {type(value).__name__}")


# ---- the plugin ----------------------------------------------------------------------------------

class GgufPlugin(FormatPlugin):
    id = "llama.cpp"
    format = "gguf"
    description = "GGUF models on llama.cpp (llama-cpp-python), CPU: text generation, chat, embeddings"

    def availability(self) -> tuple[bool, str]:
        try:
            import llama_cpp
        except Exception as e:  # ImportError, or OSError when the shared library does not load
            return False, f"llama_cpp (llama-cpp-python) does not import: {e}"
        return True, getattr(llama_cpp, "__version__", "unknown version")

    def load(self, source: ModelSource, options: LoadOptions) -> Model:
        import llama_cpp

        extra = dict(options.extra or {})
        n_ctx = _positive_int(extra, "n_ctx")
        n_threads = _positive_int(extra, "n_threads") or (
            int(options.intra_op_threads) if options.intra_op_threads and options.intra_op_threads > 0
            else physical_cores())
        n_batch = _positive_int(extra, "n_batch") or DEFAULT_N_BATCH
        seed = extra.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise BadRequest(f"option seed must be a non-negative integer, got {seed!r}")
        path = str(source.model_path)
        if not os.path.isfile(path):
            raise UnprocessableModel(f"{path}: no such GGUF file")
        if n_ctx is not None:
            # before llama.cpp sizes a KV cache for it: a client must not make the server allocate
            # a context the model cannot use
            try:
                trained = trained_context(path)
            except GgufHeaderError as e:
                raise UnprocessableModel(f"{source.model_path.name}: not a readable GGUF header: {e}") from None
            if trained and n_ctx > trained:
                raise BadRequest(f"option n_ctx {n_ctx} is more than the {trained} tokens this model was trained for")

        def make(ctx: int):
            kwargs = dict(n_ctx=ctx, n_threads=n_threads, n_batch=min(n_batch, ctx), verbose=False)
            if seed is not None:
                kwargs["seed"] = seed
            return llama_cpp.Llama(path, **kwargs)

        _install_log()
        _log_state.captured = []
        try:
            llm = make(n_ctx or DEFAULT_N_CTX)
            trained = int(llm._model.n_ctx_train())
            if n_ctx is None and 0 < trained < DEFAULT_N_CTX:
                llm.close()  # the default context is more than the model was trained on
                llm = make(trained)
        except Exception as e:
            reason = _load_reason(_log_state.captured, str(e) or type(e).__name__)
            raise UnprocessableModel(load_failure(source.model_path, reason), detail=reason) from None
        finally:
            _log_state.captured = None
        try:
            return GgufModel(llm, source, options, n_threads, min(n_batch, int(llm.n_ctx())))
        except Exception:
            llm.close()
            raise
