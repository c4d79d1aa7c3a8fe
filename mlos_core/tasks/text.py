"""Encoder text tasks over an ONNX tensor model: embeddings (sentence-transformers pooling and
normalisation), sequence classification and fill-mask."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BadRequest, UnprocessableModel
from ..smi import Model
from .tokenizer import TextTokenizer, check_texts, read_json

# texts per forward pass: bounds the activation memory of a large embed request
BATCH = 32
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len", "lasttoken")


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


class _TextTask:
    def __init__(self, model: Model, tokenizer: TextTokenizer, config: Mapping[str, Any]):
        self.model = model
        self.tok = tokenizer
        self.config = dict(config)
        self.input_names = [t.name for t in model.metadata.inputs]
        self.dtypes = {t.name: t.dtype for t in model.metadata.inputs}
        if "input_ids" not in self.input_names:
            raise UnprocessableModel(
                f"the ONNX model has no input_ids input (it takes {', '.join(self.input_names)})")
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise UnprocessableModel(f"the ONNX model takes inputs a text task cannot fill: {sorted(unknown)}")

    def _run(self, texts: Sequence[str], outputs: Sequence[str]):
        enc = self.tok.encode_batch(texts)
        return enc, self.model.infer(enc.feed(self.input_names, self.dtypes), outputs)

    def _output(self, *candidates: str, rank: int | None = None) -> str:
        names = [t.name for t in self.model.metadata.outputs]
        for c in candidates:
            if c in names:
                return c
        if rank is not None:
            for t in self.model.metadata.outputs:
                if t.rank == rank:
                    return t.name
        raise UnprocessableModel(
            f"the ONNX model has no {' or '.join(candidates)} output (it gives {', '.join(names)})")


# ---- embeddings -------------------------------------------------------------------------------

def read_sentence_transformers(model_dir: Path) -> tuple[list[str], bool, list[str]]:
    """(pooling modes, normalise, other module types) from modules.json and its Pooling config;
    mean pooling without normalisation when the package is not a sentence-transformers one."""
    modules = []
    try:
        import json
        data = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        modules = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
    except (OSError, ValueError):
        pass
    pooling_dir = None
    normalize = False
    others = []
    for m in modules:
        kind = str(m.get("type") or "")
        if kind.endswith(".Pooling"):
            pooling_dir = model_dir / str(m.get("path") or "1_Pooling")
        elif kind.endswith(".Normalize"):
            normalize = True
        elif not kind.endswith(".Transformer"):
            others.append(kind)
    if pooling_dir is None and (model_dir / "1_Pooling" / "config.json").is_file():
        pooling_dir = model_dir / "1_Pooling"
    cfg = read_json(pooling_dir / "config.json") if pooling_dir is not None else None
    modes = []
    if cfg:
        if isinstance(cfg.get("pooling_mode"), str):  # newer configs may name a single mode
            modes = [cfg["pooling_mode"].replace("_tokens", "").replace("last_token", "lasttoken")]
        else:
            flags = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens",
                     "mean": "pooling_mode_mean_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
                     "lasttoken": "pooling_mode_lasttoken"}
            modes = [m for m in POOLING_MODES if cfg.get(flags[m])]
            if cfg.get("pooling_mode_weightedmean_tokens"):
                others.append("weightedmean pooling")
    modes = [m for m in modes if m in POOLING_MODES] or ["mean"]
    return modes, normalize, others


def pool(hidden: np.ndarray, mask: np.ndarray, modes: Sequence[str]) -> np.ndarray:
    """sentence-transformers pooling of token embeddings [n, seq, dim] -> [n, dim * len(modes)]."""
    hidden = hidden.astype(np.float32)
    m = mask.astype(np.float32)[:, :, None]
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len"):
            summed = (hidden * m).sum(axis=1)
            count = np.clip(m.sum(axis=1), 1e-9, None)
            parts.append(summed / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "lasttoken":
            last = np.clip(mask.sum(axis=1).astype(np.int64) - 1, 0, None)
            # with left padding the last real token is the last position
            left_padded = bool(mask.shape[1] and (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any())
            idx = np.full_like(last, mask.shape[1] - 1) if left_padded else last
            parts.append(hidden[np.arange(hidden.shape[0]), idx])
    return np.concatenate(parts, axis=-1)


class Embedder(_TextTask):
    def __init__(self, model, tokenizer, config, model_dir: Path):
        super().__init__(model, tokenizer, config)
        self.modes, self.normalize, others = read_sentence_transformers(model_dir)
        names = [t.name for t in model.metadata.outputs]
        self.direct = "sentence_embedding" in names
        if not self.direct and others:
            raise UnprocessableModel(
                "the sentence-transformers pipeline has modules the ONNX graph does not include "
                f"({', '.join(others)}) and the graph has no sentence_embedding output")
        self.output = "sentence_embedding" if self.direct else self._output(
            "last_hidden_state", "token_embeddings", rank=3)
        spec = model.metadata.output(self.output)
        dim = spec.shape[-1] if spec is not None and spec.shape and spec.shape[-1] > 0 else config.get("hidden_size")
        self.dim = (int(dim) * (1 if self.direct else len(self.modes))) if isinstance(dim, int) else None

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = check_texts(texts)
        rows = []
        for start in range(0, len(texts), BATCH):
            enc, out = self._run(texts[start:start + BATCH], [self.output])
            value = out[self.output]
            rows.append(value.astype(np.float32) if self.direct
                        else pool(value, enc.attention_mask, self.modes))
        if not rows:
            return np.zeros((0, self.dim or 0), dtype=np.float32)
        emb = np.concatenate(rows, axis=0).astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(emb, axis=1, keepdims=True)
            emb = emb / np.clip(norms, 1e-12, None)
        return emb.astype(np.float32)


# ---- classification ---------------------------------------------------------------------------

def labels_of(config: Mapping[str, Any], n: int) -> list[str]:
    id2label = config.get("id2label") or {}
    out = []
    for i in range(n):
        label = id2label.get(str(i), id2label.get(i)) if isinstance(id2label, Mapping) else None
        out.append(str(label) if label is not None else f"LABEL_{i}")
    return out


class Classifier(_TextTask):
    def __init__(self, model, tokenizer, config):
        super().__init__(model, tokenizer, config)
        self.output = self._output("logits", rank=2)
        problem = config.get("problem_type")
        n = config.get("num_labels") or len(config.get("id2label") or {}) or None
        # as the transformers pipeline: sigmoid for multi-label or a single logit, else softmax
        self.sigmoid = problem == "multi_label_classification" or n == 1

    def classify(self, texts: Sequence[str]) -> list[list[dict]]:
        texts = check_texts(texts)
        result: list[list[dict]] = []
        for start in range(0, len(texts), BATCH):
            _, out = self._run(texts[start:start + BATCH], [self.output])
            logits = out[self.output]
            if logits.ndim != 2:
                raise UnprocessableModel(f"the model's {self.output} output has rank {logits.ndim}, not 2")
            scores = _sigmoid(logits) if self.sigmoid else _softmax(logits)
            labels = labels_of(self.config, scores.shape[1])
            for row in scores:
                order = np.argsort(-row, kind="stable")
                result.append([{"label": labels[j], "score": float(row[j])} for j in order])
        return result


# ---- fill-mask --------------------------------------------------------------------------------

class MaskFiller(_TextTask):
    def __init__(self, model, tokenizer, config):
        super().__init__(model, tokenizer, config)
        self.output = self._output("logits", rank=3)
        if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise UnprocessableModel("the tokenizer names no mask token (mask_token in tokenizer_config.json)")

    def fill_mask(self, text: str, top_k: int = 5) -> list[dict]:
        mask = self.tok.mask_token
        if not isinstance(text, str):
            raise BadRequest("text must be a string")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise BadRequest(f"top_k must be a positive integer, not {top_k!r}")
        if mask not in text:
            raise BadRequest(f"the text has no mask token; put {mask} where a word should be predicted")
        enc, out = self._run([text], [self.output])
        ids = enc.input_ids[0]
        where = np.flatnonzero(ids == self.tok.mask_token_id)
        if len(where) == 0:
            raise BadRequest(f"the mask token {mask} was cut off: the text is longer than the "
                             f"model's {self.tok.max_length} tokens")
        if len(where) > 1:
            raise BadRequest(f"the text has {len(where)} mask tokens; put exactly one {mask}")
        pos = int(where[0])
        probs = _softmax(out[self.output][0, pos])
        k = min(top_k, probs.shape[0])
        best = np.argsort(-probs, kind="stable")[:k]
        real = ids[enc.attention_mask[0] == 1]
        result = []
        for tid in best:
            seq = real.copy()
            seq[pos] = tid
            result.append({
                "score": float(probs[tid]),
                "token": int(tid),
                "token_str": self.tok.decode([int(tid)], skip_special_tokens=False),
                "sequence": self.tok.decode(seq.tolist(), skip_special_tokens=True),
            })
        return result
