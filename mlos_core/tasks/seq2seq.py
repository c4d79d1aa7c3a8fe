"""Encoder-decoder generation (T5, BART, Marian...) over optimum's seq2seq ONNX export.

The encoder runs once over the (padded) prompts. Step 0 feeds the decoder start token with an
empty past (the merged graph with ``use_cache_branch`` false, or ``decoder_model.onnx``) and keeps
two caches from it: the self-attention past, which every later step extends by one token, and the
cross-attention past over the encoder states, which stays fixed. Later steps feed one token per
sequence to the with-past graph. Every sequence of a batch advances in the same step; one that has
finished is fed padding and its outputs ignored, as transformers' ``generate`` does. Without a
with-past graph each step re-runs the decoder over the whole sequence.

Tokens are chosen and streamed as for decoder-only models (``generation.choose_token`` and
``TokenStream``), with transformers' ``forced_bos_token_id`` (BART-style models) applied to the
first generated token. Nothing here imports torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BadRequest, UnprocessableModel
from ..smi import GenerationChunk, GenerationParams, Model, TaskUnsupported
from .generation import TokenStream, _template_of, chat_prompt, check_params, choose_token
from .tokenizer import TextTokenizer

_PAST = re.compile(r"^past_key_values\.(\d+)\.(decoder|encoder)\.(key|value)$")
_DECODER_INPUTS = {"input_ids", "encoder_hidden_states", "encoder_attention_mask", "use_cache_branch",
                   "attention_mask", "cache_position"}
MAX_BATCH = 64   # prompts per generate_batch call: bounds the encoder's and the caches' memory


def _int_setting(*sources: Mapping[str, Any], key: str) -> int | None:
    for src in sources:
        v = src.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


@dataclass
class _Row:
    """One sequence of a batch: its prompt, what it generated, and how it ended."""
    prompt: list[int]
    stream: TokenStream
    generated: list[int] = field(default_factory=list)
    finish: str | None = None   # None while it runs
    rest: str = ""              # the text not streamed yet, once finished


class Seq2SeqGenerator:
    def __init__(self, model: Model, tokenizer: TextTokenizer, config: Mapping[str, Any],
                 generation_config: Mapping[str, Any] | None = None, chat_template: str | None = None,
                 embedded_template: str | None = None):
        graphs = dict(model.graphs())
        self.model = model
        self.tok = tokenizer
        self.config = dict(config)
        gen = dict(generation_config or {})
        self.encoder = graphs.get("encoder")
        merged = graphs.get("decoder_merged")
        self.first = graphs.get("decoder") or merged             # step 0: no past yet
        self.with_past = graphs.get("decoder_with_past") or merged  # later steps, or None: no cache
        if self.encoder is None or self.first is None:
            raise UnprocessableModel("text2text generation needs an encoder-decoder export (encoder_model.onnx "
                                     "with decoder_model.onnx or decoder_model_merged.onnx); this model's graphs: "
                                     + (", ".join(graphs) or "one graph"))
        enc_in = {t.name for t in self.encoder.metadata.inputs}
        if "input_ids" not in enc_in or not enc_in <= {"input_ids", "attention_mask"} \
                or self.encoder.metadata.output("last_hidden_state") is None:
            raise UnprocessableModel("the encoder graph must take input_ids (and attention_mask) and give "
                                     f"last_hidden_state; it takes {sorted(enc_in)}")
        for graph in {id(g): g for g in (self.first, self.with_past) if g is not None}.values():
            names = {t.name for t in graph.metadata.inputs}
            unknown = names - _DECODER_INPUTS - {n for n in names if _PAST.match(n)}
            if unknown or "input_ids" not in names or graph.metadata.output("logits") is None:
                raise UnprocessableModel(f"a decoder graph takes inputs generation cannot fill ({sorted(unknown)}) "
                                         "or lacks input_ids / logits")
        # past input -> the present output that fills it, for the with-past graph
        self.self_past: dict[str, str] = {}
        self.cross_past: dict[str, str] = {}
        if self.with_past is not None:
            first_out = {t.name for t in self.first.metadata.outputs}
            for spec in self.with_past.metadata.inputs:
                m = _PAST.match(spec.name)
                if not m:
                    continue
                present = f"present.{m.group(1)}.{m.group(2)}.{m.group(3)}"
                if present not in first_out:
                    raise UnprocessableModel(f"the decoder takes {spec.name} but its first step gives no {present}")
                (self.self_past if m.group(2) == "decoder" else self.cross_past)[spec.name] = present
            if not self.self_past:
                self.with_past = None       # a with-past graph that takes no past is no cache at all
        start = _int_setting(gen, self.config, self.config.get("decoder") or {}, key="decoder_start_token_id")
        if start is None:
            start = _int_setting(gen, self.config, key="bos_token_id")
        if start is None:
            raise UnprocessableModel("config.json names no decoder_start_token_id (nor bos_token_id): the decoder "
                                     "has no first token")
        self.start_id = start
        self.forced_bos = _int_setting(gen, self.config, key="forced_bos_token_id")
        self.pad_id = _int_setting(gen, self.config, key="pad_token_id")
        if self.pad_id is None:
            self.pad_id = tokenizer.pad_token_id
        self.eos_ids = tokenizer.eos_token_ids
        self.ids_dtype = self.first.metadata.input("input_ids").dtype
        # learned decoder positions (BART, Marian) bound the output; T5's relative ones do not
        limit = self.config.get("max_position_embeddings")
        self._context = limit if isinstance(limit, int) and limit > 0 and self.config.get("model_type") not in (
            "t5", "mt5", "umt5", "longt5") else None
        self.chat_override = chat_template
        self.embedded_template = _template_of(tokenizer.tokenizer_config) or embedded_template

    # ---- what the model offers ------------------------------------------------------------------

    def has_chat_template(self) -> bool:
        return bool(self.chat_override or self.embedded_template)

    def context_length(self) -> int | None:
        return self._context

    def generate(self, prompt: str, params: GenerationParams,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        stops = check_params(params)
        rows = [self._row(self.tok.encode(prompt, add_special_tokens=True), stops)]
        self._check_lengths(rows, params)
        return self._stream(rows, params, cancelled)

    def chat(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
             cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        template = self.chat_override or self.embedded_template
        if not template:
            raise TaskUnsupported("chat (the model has no chat template; register it with a chat_template option)")
        ids, stop_ids, stop_texts = chat_prompt(self.tok, template, messages)
        rows = [self._row(ids, check_params(params, stop_texts))]
        self._check_lengths(rows, params)
        return self._stream(rows, params, cancelled, stop_ids)

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams,
                       cancelled: Callable[[], bool] = lambda: False) -> list[GenerationChunk]:
        if isinstance(prompts, str) or not prompts or any(not isinstance(p, str) for p in prompts):
            raise BadRequest("prompts must be a non-empty list of strings")
        if len(prompts) > MAX_BATCH:
            raise BadRequest(f"{len(prompts)} prompts in one request; at most {MAX_BATCH}")
        stops = check_params(params)
        rows = [self._row(self.tok.encode(p, add_special_tokens=True), stops) for p in prompts]
        self._check_lengths(rows, params)
        for _ in self._loop(rows, params, cancelled):
            pass
        return [GenerationChunk(r.stream.text, finish_reason=r.finish, prompt_tokens=len(r.prompt),
                                completion_tokens=len(r.generated), token_ids=r.generated) for r in rows]

    # ---- the loop -------------------------------------------------------------------------------

    def _row(self, ids: list[int], stops: tuple[str, ...]) -> _Row:
        return _Row(ids, TokenStream(self.tok, stops))

    def _check_lengths(self, rows: list[_Row], p: GenerationParams) -> None:
        limit = self.tok.max_length
        for i, r in enumerate(rows):
            if limit and len(r.prompt) > limit:
                which = "the prompt" if len(rows) == 1 else f"prompt {i}"
                raise BadRequest(f"{which} has {len(r.prompt)} tokens; the encoder takes at most {limit}")
        if self._context and 1 + p.max_tokens > self._context:
            raise BadRequest(f"max_tokens is {p.max_tokens}: the decoder holds at most {self._context - 1} "
                             "generated tokens")

    def _stream(self, rows: list[_Row], p: GenerationParams, cancelled,
                stop_ids: frozenset[int] = frozenset()) -> Iterator[GenerationChunk]:
        for pieces in self._loop(rows, p, cancelled, stop_ids):
            if pieces[0]:
                yield GenerationChunk(pieces[0])
        r = rows[0]
        yield GenerationChunk(r.rest, finish_reason=r.finish, prompt_tokens=len(r.prompt),
                              completion_tokens=len(r.generated), token_ids=r.generated)

    def _encode(self, rows: list[_Row]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's states and the padding mask over the prompts (padded on the right)."""
        width = max(1, max(len(r.prompt) for r in rows))
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, :len(r.prompt)] = r.prompt
            mask[i, :len(r.prompt)] = 1
        meta = self.encoder.metadata
        feed = {"input_ids": ids.astype(meta.input("input_ids").dtype)}
        if meta.input("attention_mask") is not None:
            feed["attention_mask"] = mask.astype(meta.input("attention_mask").dtype)
        states = self.encoder.infer(feed, ["last_hidden_state"])["last_hidden_state"]
        return states, mask

    def _empty(self, graph: Model, name: str, batch: int) -> np.ndarray:
        """A zero-length past for the merged graph's first step, shaped [batch, heads, 0, head_dim]."""
        spec = graph.metadata.input(name)
        shape = list(spec.shape)
        if len(shape) != 4:
            raise UnprocessableModel(f"{name} has rank {len(shape)}; a past key/value has rank 4")
        cfg = self.config
        heads = cfg.get("num_heads") or cfg.get("decoder_attention_heads") or cfg.get("num_attention_heads")
        head_dim = cfg.get("d_kv") or ((cfg.get("d_model") or cfg.get("hidden_size") or 0) // heads if heads else None)
        fill = [batch, heads, 0, head_dim]
        out = [fill[i] if (i in (0, 2) or shape[i] < 0) else shape[i] for i in range(4)]
        if not all(isinstance(d, int) for d in out):
            raise UnprocessableModel(f"cannot tell the shape of {name} {tuple(shape)} from config.json")
        return np.zeros(out, dtype=spec.dtype)

    def _feed(self, graph: Model, tokens: np.ndarray, states: np.ndarray, mask: np.ndarray,
              past: dict[str, np.ndarray] | None, past_len: int) -> dict[str, np.ndarray]:
        meta = graph.metadata
        feed = {"input_ids": tokens.astype(self.ids_dtype)}
        for spec in meta.inputs:
            name = spec.name
            if name == "encoder_hidden_states":
                feed[name] = states.astype(spec.dtype, copy=False)
            elif name == "encoder_attention_mask":
                feed[name] = mask.astype(spec.dtype, copy=False)
            elif name == "attention_mask":
                feed[name] = np.ones((tokens.shape[0], past_len + tokens.shape[1]), dtype=spec.dtype)
            elif name == "use_cache_branch":
                feed[name] = np.array([past is not None], dtype=np.bool_)
            elif name == "cache_position":
                feed[name] = np.arange(past_len, past_len + tokens.shape[1], dtype=spec.dtype)
            elif _PAST.match(name):
                feed[name] = past[name] if past is not None else self._empty(graph, name, tokens.shape[0])
        return feed

    def _loop(self, rows: list[_Row], p: GenerationParams, cancelled,
              stop_ids: frozenset[int] = frozenset()) -> Iterator[list[str]]:
        """Advance every row one token per step; yields each step's streamable text per row.
        At the end each row has its ``finish`` reason and its not-yet-streamed ``rest``."""
        states, mask = self._encode(rows)
        rng = np.random.default_rng(p.seed)
        eos = self.eos_ids | stop_ids
        decoded = [[self.start_id] for _ in rows]   # the decoder's input so far, per row
        past: dict[str, np.ndarray] | None = None
        cross: dict[str, np.ndarray] = {}
        want_first = ["logits"] + (list(self.self_past.values()) + list(self.cross_past.values())
                                   if self.with_past is not None else [])
        want_next = ["logits"] + list(self.self_past.values())
        step = 0
        while any(r.finish is None for r in rows):
            if cancelled():
                for r in rows:
                    r.finish = r.finish or "cancelled"
                break
            if step >= p.max_tokens:
                for r in rows:
                    r.finish = r.finish or "length"
                break
            if past is None or self.with_past is None:
                graph, wanted = self.first, want_first
                tokens = np.array(decoded if self.with_past is None else [d[-1:] for d in decoded])
                out = graph.infer(self._feed(graph, tokens, states, mask, None, 0), wanted)
                if self.with_past is not None:
                    cross = {name: out[present] for name, present in self.cross_past.items()}
            else:
                graph = self.with_past
                tokens = np.array([d[-1:] for d in decoded])
                out = graph.infer(self._feed(graph, tokens, states, mask, {**past, **cross}, step), want_next)
            if self.with_past is not None:
                past = {name: out[present] for name, present in self.self_past.items()}
            logits = out["logits"][:, -1]
            pieces = []
            for i, r in enumerate(rows):
                if r.finish is not None:
                    decoded[i].append(self.pad_id)
                    pieces.append("")
                    continue
                if step == 0 and self.forced_bos is not None:
                    token = self.forced_bos
                else:
                    token = choose_token(logits[i], decoded[i], p, rng)
                decoded[i].append(token)
                if token in eos:
                    r.finish = "stop"
                    pieces.append("")
                    continue
                r.generated.append(token)
                pieces.append(r.stream.push(token))
                if r.stream.stopped:
                    r.finish = "stop"
            step += 1
            yield pieces
        for r in rows:
            r.rest, r.finish = r.stream.finish(r.finish or "length")
