"""Text generation with an ONNX decoder export (optimum's ``text-generation[-with-past]``).

With ``past_key_values.*`` inputs the first step runs the prompt against a zero-length past and
each later step feeds one token plus the ``present.*`` outputs of the step before; without them
every step recomputes the whole sequence. Text is decoded incrementally, so a multi-byte
character split over tokens is emitted only once complete."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import BadRequest, UnprocessableModel
from ..smi import GenerationChunk, GenerationParams, Model
from .tokenizer import TextTokenizer

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


class Generator:
    def __init__(self, model: Model, tokenizer: TextTokenizer, config: Mapping[str, Any],
                 chat_template: str | None = None, embedded_template: str | None = None):
        self.model = model
        self.tok = tokenizer
        self.config = dict(config)
        meta = model.metadata
        self.input_names = [t.name for t in meta.inputs]
        out_names = [t.name for t in meta.outputs]
        if "input_ids" not in self.input_names or "logits" not in out_names:
            raise UnprocessableModel("a text-generation model needs an input_ids input and a logits output "
                                     f"(this one takes {', '.join(self.input_names)} and gives {', '.join(out_names)})")
        if meta.output("logits").rank != 3:
            raise UnprocessableModel(f"a text-generation model's logits are [batch, sequence, vocab]; this one's "
                                     f"have shape {meta.output('logits').shape}")
        self.past: dict[str, str] = {}   # past input -> present output
        for spec in meta.inputs:
            m = _PAST.match(spec.name)
            if m:
                present = f"present.{m.group(1)}.{m.group(2)}"
                if present not in out_names:
                    raise UnprocessableModel(f"the ONNX model takes {spec.name} but gives no {present}")
                self.past[spec.name] = present
        unknown = set(self.input_names) - set(self.past) - {
            "input_ids", "attention_mask", "position_ids", "use_cache_branch", "token_type_ids"}
        if unknown:
            raise UnprocessableModel(f"the decoder takes inputs generation cannot fill: {sorted(unknown)}")
        self._empty_past = {name: self._zero_past(meta.input(name)) for name in self.past}
        self.ids_dtype = meta.input("input_ids").dtype
        limits = [v for v in (self.config.get("n_positions"), self.config.get("max_position_embeddings"),
                              self.config.get("n_ctx"), self.config.get("seq_length"))
                  if isinstance(v, int) and not isinstance(v, bool) and v > 0]
        self._context = limits[0] if limits else tokenizer.max_length
        self.chat_override = chat_template          # LoadOptions.chat_template
        self.embedded_template = _template_of(tokenizer.tokenizer_config) or embedded_template

    # ---- shapes -------------------------------------------------------------------------------

    def _zero_past(self, spec) -> np.ndarray:
        """A zero-length past for one layer, shaped as the export declares it (batch 1)."""
        shape = list(spec.shape)
        if len(shape) < 3:
            raise UnprocessableModel(f"{spec.name} has rank {len(shape)}; a past key/value has rank 3 or 4")
        shape[0] = 1
        dynamic = [i for i in range(1, len(shape)) if shape[i] < 0]
        if len(dynamic) == 1:
            shape[dynamic[0]] = 0          # the sequence axis
        else:                              # [batch, heads, seq, head_dim] with heads/dim dynamic too
            cfg = self.config
            heads = cfg.get("num_attention_heads") or cfg.get("n_head")
            kv_heads = cfg.get("num_key_value_heads") or heads
            hidden = cfg.get("hidden_size") or cfg.get("n_embd")
            head_dim = cfg.get("head_dim") or (hidden // heads if hidden and heads else None)
            if len(shape) != 4 or not kv_heads or not head_dim:
                raise UnprocessableModel(f"cannot tell the shape of {spec.name} {tuple(spec.shape)} "
                                         "from config.json")
            fill = [1, kv_heads, 0, head_dim]
            shape = [fill[i] if (i == 2 or shape[i] < 0) else shape[i] for i in range(4)]
        return np.zeros(shape, dtype=spec.dtype)

    def context_length(self) -> int | None:
        return self._context

    # ---- the decoding loop ----------------------------------------------------------------------

    def generate(self, prompt: str, params: GenerationParams,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        if not isinstance(prompt, str):
            raise BadRequest("prompt must be a string")
        return self._start(self.tok.encode(prompt, add_special_tokens=True), params, cancelled)

    def chat(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
             cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        ids, stop_ids, stop_texts = chat_prompt(self.tok, self.template()[0], messages)
        return self._start(ids, params, cancelled, stop_ids, stop_texts)

    def template(self) -> tuple[str, str]:
        """The chat template and where it came from (mlos_core.chat.select_template): the
        override, the tokenizer's own, a built-in one for config.json's model_type, or ChatML."""
        from .. import chat as chatlib

        return chatlib.select_template(self.chat_override, self.embedded_template,
                                       str(self.config.get("model_type") or "") or None,
                                       embedded_source="tokenizer_config")

    def _start(self, ids: list[int], params: GenerationParams, cancelled,
               stop_ids: frozenset[int] = frozenset(), extra_stops: tuple[str, ...] = ()) -> Iterator[GenerationChunk]:
        """Check the request up front (so errors are raised at the call, not at the first chunk)."""
        p = params
        stops = check_params(p, extra_stops)
        if not ids:
            if self.tok.bos_token_id is None:
                raise BadRequest("the prompt is empty and the model has no beginning-of-sequence token")
            ids = [self.tok.bos_token_id]
        if self._context and len(ids) + p.max_tokens > self._context:
            raise BadRequest(f"the prompt has {len(ids)} tokens and max_tokens is {p.max_tokens}: "
                             f"{len(ids) + p.max_tokens} is over the model's context length of "
                             f"{self._context} tokens")
        return self._loop(ids, p, stops, self.tok.eos_token_ids | stop_ids, cancelled)

    def _step_feed(self, ids: list[int], past: dict[str, np.ndarray] | None, past_len: int) -> dict:
        """The inputs of one forward pass: the new tokens, the mask over past + new."""
        new = ids[past_len:] if self.past else ids
        start = past_len if self.past else 0
        feed = {"input_ids": np.array([new], dtype=self.ids_dtype)}
        names = self.input_names
        if "attention_mask" in names:
            feed["attention_mask"] = np.ones((1, len(ids)), dtype=self.model.metadata.input("attention_mask").dtype)
        if "position_ids" in names:
            feed["position_ids"] = np.arange(start, start + len(new), dtype=self.model.metadata.input(
                "position_ids").dtype)[None, :]
        if "token_type_ids" in names:
            feed["token_type_ids"] = np.zeros((1, len(new)), dtype=self.model.metadata.input("token_type_ids").dtype)
        if "use_cache_branch" in names:
            feed["use_cache_branch"] = np.array([past_len > 0], dtype=np.bool_)
        if self.past:
            feed.update(past if past is not None else self._empty_past)
        return feed

    def _loop(self, ids: list[int], p: GenerationParams, stops: tuple[str, ...], eos: frozenset[int],
              cancelled) -> Iterator[GenerationChunk]:
        prompt_tokens = len(ids)
        rng = np.random.default_rng(p.seed)
        outputs = ["logits"] + list(self.past.values())
        stream = TokenStream(self.tok, stops)
        generated: list[int] = []
        past: dict[str, np.ndarray] | None = None
        past_len = 0
        finish = "length"
        while len(generated) < p.max_tokens:
            if cancelled():
                finish = "cancelled"
                break
            out = self.model.infer(self._step_feed(ids, past, past_len), outputs)
            if self.past:
                past = {name: out[present] for name, present in self.past.items()}
                past_len = len(ids)
            token = choose_token(out["logits"][0, -1], ids, p, rng)
            if token in eos:
                finish = "stop"
                break
            ids.append(token)
            generated.append(token)
            piece = stream.push(token)
            if stream.stopped:
                finish = "stop"
                break
            if piece:
                yield GenerationChunk(piece)
        rest, finish = stream.finish(finish)
        yield GenerationChunk(rest, finish_reason=finish, prompt_tokens=prompt_tokens,
                              completion_tokens=len(generated), token_ids=generated)


def chat_prompt(tok: TextTokenizer, template: str, messages: Sequence[Mapping[str, Any]]
                ) -> tuple[list[int], frozenset[int], tuple[str, ...]]:
    """The prompt token ids of a chat, and what ends the reply: the template's end-of-turn
    markers, as token ids where the vocabulary has them, else as stop strings."""
    from .. import chat as chatlib

    messages = chatlib.validate_messages(messages)
    text = chatlib.render(messages, template, bos_token=tok.bos_token or "",
                          eos_token=tok.eos_token or "", add_generation_prompt=True)
    stop_ids, stop_texts = set(), []
    for marker in chatlib.end_of_turn_markers(template):
        tid = tok.token_id(marker)
        if tid is not None:
            stop_ids.add(tid)
        else:
            stop_texts.append(marker)
    # the template writes the special tokens itself, as transformers' apply_chat_template
    return tok.encode(text, add_special_tokens=False), frozenset(stop_ids), tuple(stop_texts)


def check_params(p: GenerationParams, extra_stops: Sequence[str] = ()) -> tuple[str, ...]:
    """Refuse parameters no generator can honour; the stop strings to watch for."""
    if isinstance(p.max_tokens, bool) or not isinstance(p.max_tokens, int) or p.max_tokens < 1:
        raise BadRequest(f"max_tokens must be a positive integer, not {p.max_tokens!r}")
    if not (p.temperature >= 0):
        raise BadRequest(f"temperature must be >= 0, not {p.temperature!r}")
    if not (0 < p.top_p <= 1):
        raise BadRequest(f"top_p must be in (0, 1], not {p.top_p!r}")
    if isinstance(p.top_k, bool) or not isinstance(p.top_k, int) or p.top_k < 0:
        raise BadRequest(f"top_k must be a non-negative integer, not {p.top_k!r}")
    if not (p.repetition_penalty > 0):
        raise BadRequest(f"repetition_penalty must be > 0, not {p.repetition_penalty!r}")
    if isinstance(p.stop, str) or any(not isinstance(s, str) for s in (p.stop or ())):
        raise BadRequest("stop must be a list of strings")
    return tuple(s for s in tuple(p.stop or ()) + tuple(extra_stops) if s)


def choose_token(logits: np.ndarray, ids: list[int], p: GenerationParams, rng: np.random.Generator) -> int:
    """The next token: repetition penalty, then greedy or temperature / top-k / top-p sampling
    (the order of the transformers logits processors)."""
    scores = logits.astype(np.float64)
    if p.repetition_penalty != 1.0 and ids:
        seen = np.unique(np.asarray(ids, dtype=np.int64))
        seen = seen[seen < scores.shape[0]]
        s = scores[seen]
        scores[seen] = np.where(s < 0, s * p.repetition_penalty, s / p.repetition_penalty)
    if p.temperature == 0:
        return int(np.argmax(scores))
    scores = scores / p.temperature
    if p.top_k and p.top_k < scores.shape[0]:
        kth = np.partition(scores, -p.top_k)[-p.top_k]
        scores = np.where(scores < kth, -np.inf, scores)
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    if p.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cum = np.cumsum(probs[order])
        keep = int(np.searchsorted(cum, p.top_p) + 1)   # the smallest set reaching top_p
        mask = np.zeros_like(probs)
        mask[order[:keep]] = 1.0
        probs = probs * mask
        probs /= probs.sum()
    return int(rng.choice(probs.shape[0], p=probs))


class TokenStream:
    """Generated token ids -> the text a client receives: decoded incrementally, cut at the
    first stop string, and holding back an end of text that may be the start of one."""

    def __init__(self, tok: TextTokenizer, stops: Sequence[str] = ()):
        self.decoder = _IncrementalDecoder(tok)
        self.stops = tuple(stops)
        self.text = ""       # the completion decoded so far
        self.emitted = 0     # how much of it the client has
        self.stopped = False  # a stop string ended it: what follows the stop is never sent

    def push(self, token: int) -> str:
        """Add one token; the text that may be sent now ('' while held back or stopped)."""
        self.text += self.decoder.add(token)
        if self.stops:
            cut = _find_stop(self.text, self.stops, self.emitted)
            if cut is not None:
                self.text, self.stopped = self.text[:cut], True
                return ""
            safe = len(self.text) - _partial_stop(self.text, self.stops)
        else:
            safe = len(self.text)
        if safe <= self.emitted:
            return ""
        piece, self.emitted = self.text[self.emitted:safe], safe
        return piece

    def finish(self, reason: str) -> tuple[str, str]:
        """The text not sent yet and the final finish reason. A cancelled generation ends with
        what the client has; otherwise held-back text is flushed (and cut at a stop string)."""
        if reason == "cancelled":
            self.text = self.text[:self.emitted]
        elif not self.stopped:
            self.text += self.decoder.flush()
            cut = _find_stop(self.text, self.stops, self.emitted) if self.stops else None
            if cut is not None:
                self.text, reason = self.text[:cut], "stop"
        rest, self.emitted = self.text[self.emitted:], len(self.text)
        return rest, reason


class _IncrementalDecoder:
    """Streams the text of a growing token list. Decoding a window (some tokens of context plus
    the new ones) keeps word-boundary spaces right; text ending in U+FFFD (an incomplete UTF-8
    sequence) waits for the next token."""

    def __init__(self, tok: TextTokenizer):
        self.tok = tok
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """What is still held back at the end (an incomplete character comes out as U+FFFD)."""
        before = self.tok.decode(self.ids[self.prefix:self.read])
        after = self.tok.decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _partial_stop(text: str, stops: Sequence[str]) -> int:
    """The length of the longest end of ``text`` that begins some stop string (held back)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def _template_of(tcfg: Mapping[str, Any]) -> str | None:
    """tokenizer_config.json's chat_template: a string, or a list of {name, template}."""
    t = tcfg.get("chat_template")
    if isinstance(t, str) and t.strip():
        return t
    if isinstance(t, list):
        named = {str(x.get("name")): x.get("template") for x in t if isinstance(x, Mapping)}
        value = named.get("default") or next(iter(named.values()), None)
        return value if isinstance(value, str) and value.strip() else None
    return None


def read_chat_template_file(model_dir: Path) -> str | None:
    """``chat_template.jinja`` (newer transformers save the template beside the tokenizer)."""
    path = Path(model_dir) / "chat_template.jinja"
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except OSError:
        return None
