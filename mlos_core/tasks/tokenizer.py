"""The text side of a package directory: ``tokenizer.json`` (the ``tokenizers`` library), the
special tokens of tokenizer_config.json / special_tokens_map.json / config.json, and the
sequence limit the model was trained with."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadRequest, UnprocessableModel

# transformers writes int(1e30) as model_max_length when a tokenizer has no limit of its own
_NO_LIMIT = 1_000_000


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when it is missing or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"] or None
    return None


def _ids(value: Any) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


@dataclass
class Encoded:
    input_ids: np.ndarray       # int64 [n, seq]
    attention_mask: np.ndarray  # int64 [n, seq]
    token_type_ids: np.ndarray  # int64 [n, seq]

    def feed(self, declared: Sequence[str], dtypes: Mapping[str, np.dtype] | None = None) -> dict[str, np.ndarray]:
        """The arrays the ONNX model declares, in the dtype it declares (int64 unless told)."""
        out = {}
        for name, arr in (("input_ids", self.input_ids), ("attention_mask", self.attention_mask),
                          ("token_type_ids", self.token_type_ids)):
            if name in declared:
                dt = (dtypes or {}).get(name)
                out[name] = arr.astype(dt) if dt is not None and dt != arr.dtype else arr
        return out


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus what the package says about its special tokens.

    Two instances of the Rust tokenizer are kept: one batch-configured (truncation to the
    model's limit, padding to the longest text), one plain (for generation, where a prompt is
    never cut silently). Both are configured once at load, so encoding is thread-safe."""

    def __init__(self, model_dir: Path, config: Mapping[str, Any] | None = None):
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        path = model_dir / "tokenizer.json"
        try:
            self._plain = Tokenizer.from_file(str(path))
            self._batch = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises its own exception type
            raise UnprocessableModel(f"{path} is not a tokenizers file: {str(e)[:300]}") from None
        config = dict(config or {})
        tcfg = read_json(model_dir / "tokenizer_config.json") or {}
        smap = read_json(model_dir / "special_tokens_map.json") or {}
        gcfg = read_json(model_dir / "generation_config.json") or {}
        st_cfg = read_json(model_dir / "sentence_bert_config.json") or {}
        self.tokenizer_config = tcfg

        def special(name: str) -> str | None:
            return _token_text(tcfg.get(name)) or _token_text(smap.get(name))

        self.mask_token = special("mask_token")
        self.pad_token = special("pad_token")
        self.bos_token = special("bos_token")
        self.eos_token = special("eos_token")
        self.unk_token = special("unk_token")

        self.mask_token_id = self.token_id(self.mask_token)
        self.bos_token_id = self.token_id(self.bos_token)
        if self.bos_token_id is None:
            ids = _ids(config.get("bos_token_id"))
            self.bos_token_id = ids[0] if ids else None
            if self.bos_token is None and self.bos_token_id is not None:
                self.bos_token = self._plain.id_to_token(self.bos_token_id)
        # every id generation stops at: the tokenizer's eos and those of config/generation_config
        eos: list[int] = []
        if self.token_id(self.eos_token) is not None:
            eos.append(self.token_id(self.eos_token))
        eos += _ids(config.get("eos_token_id")) + _ids(gcfg.get("eos_token_id"))
        self.eos_token_ids = frozenset(eos)
        if self.eos_token is None and eos:
            self.eos_token = self._plain.id_to_token(eos[0])

        pad_id = self.token_id(self.pad_token)
        if pad_id is None:
            ids = _ids(config.get("pad_token_id"))
            pad_id = ids[0] if ids else (eos[0] if eos else 0)
        self.pad_token_id = pad_id

        limits = []
        for value in (tcfg.get("model_max_length"), config.get("max_position_embeddings"),
                      config.get("n_positions"), st_cfg.get("max_seq_length")):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
                limits.append(int(value))
        self.max_length: int | None = min(limits) if limits else None

        self._plain.no_truncation()
        self._plain.no_padding()
        self._batch.no_truncation()
        if self.max_length:
            self._batch.enable_truncation(self.max_length)
        pad_text = self.pad_token or self._plain.id_to_token(pad_id) or ""
        self._batch.enable_padding(pad_id=pad_id, pad_token=pad_text)  # to the longest in the batch

    # ---- lookups ---------------------------------------------------------------------------

    def token_id(self, token: str | None) -> int | None:
        return self._plain.token_to_id(token) if token else None

    @property
    def vocab_size(self) -> int:
        return self._plain.get_vocab_size(with_added_tokens=True)

    # ---- encoding --------------------------------------------------------------------------

    def encode_batch(self, texts: Sequence[str]) -> Encoded:
        """Texts padded to the longest and cut at the model's limit, as int64 arrays."""
        texts = check_texts(texts)
        encs = self._batch.encode_batch(list(texts), add_special_tokens=True)
        return Encoded(
            input_ids=np.array([e.ids for e in encs], dtype=np.int64).reshape(len(encs), -1),
            attention_mask=np.array([e.attention_mask for e in encs], dtype=np.int64).reshape(len(encs), -1),
            token_type_ids=np.array([e.type_ids for e in encs], dtype=np.int64).reshape(len(encs), -1),
        )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """One text, uncut: generation refuses an over-long prompt instead of truncating it."""
        return list(self._plain.encode(text, add_special_tokens=add_special_tokens).ids)

    def count(self, text: str) -> int:
        if not isinstance(text, str):
            raise BadRequest("text must be a string")
        return len(self.encode(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._plain.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def check_texts(texts: Any) -> list[str]:
    """A client's list of texts, refused with BadRequest unless it is a list of strings."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise BadRequest("texts must be a list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise BadRequest(f"texts[{i}] is {type(t).__name__}, not a string")
    return list(texts)
