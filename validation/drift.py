"""How far two answers of the same model drift apart: a variant against its parent (quantisation),
a run against its baseline, the core against PyTorch.

One measure per kind of output, as a reader of that output would judge it:

- embeddings and hidden states: the cosine of each vector (the last axis) with its counterpart,
  worst and mean; a retrieval system ranks by exactly this;
- classifier logits (``logits``: image and sequence classifiers, masked-LM token predictions):
  top-1 agreement (the share of rows whose arg-max class is the same) and the largest difference
  of any softmax probability;
- generated text: greedy token agreement, the share of the longer generation that both agree on
  before their first different token (after it, greedy decoding continues from different
  prefixes, so later positions say nothing).

Everything is computed in float64 from the arrays as answered; nothing here imports torch.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

CLASSIFIER_OUTPUTS = ("logits",)


def cosine(a, b) -> float:
    """The cosine of two tensors flattened; 1.0 for two all-zero tensors (identical), 0.0 when only
    one is all zero."""
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"cosine of tensors of different sizes: {x.size} and {y.size}")
    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0.0 or ny == 0.0:
        return 1.0 if nx == ny else 0.0
    return float(np.clip(np.dot(x, y) / (nx * ny), -1.0, 1.0))


def row_cosines(a, b) -> np.ndarray:
    """The cosine of every vector along the last axis with its counterpart."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {list(x.shape)} and {list(y.shape)}")
    x, y = x.reshape(-1, x.shape[-1] if x.ndim else 1), y.reshape(-1, y.shape[-1] if y.ndim else 1)
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    dot = np.einsum("ij,ij->i", x, y)
    out = np.where((nx == 0) & (ny == 0), 1.0, dot / np.maximum(nx * ny, np.finfo(np.float64).tiny))
    return np.clip(out, -1.0, 1.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def top1_agreement(a, b) -> float:
    """The share of rows (every position but the last axis) whose arg-max class agrees."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {list(x.shape)} and {list(y.shape)}")
    return float(np.mean(x.argmax(axis=-1) == y.argmax(axis=-1)))


def max_prob_diff(a, b) -> float:
    """The largest |p_a - p_b| of any class of any row, probabilities by softmax over the last axis."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {list(x.shape)} and {list(y.shape)}")
    return float(np.max(np.abs(_softmax(x) - _softmax(y)))) if x.size else 0.0


def token_agreement(a: list[int], b: list[int]) -> float:
    """Greedy token agreement: the common prefix of two generations over the longer one's length."""
    a, b = list(a), list(b)
    if not a and not b:
        return 1.0
    same = 0
    for x, y in zip(a, b):
        if x != y:
            break
        same += 1
    return same / max(len(a), len(b))


def _pooled(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the unmasked positions of [batch, seq, hidden]: a sentence embedding."""
    m = np.asarray(mask, dtype=np.float64)[..., None]
    return (np.asarray(h, dtype=np.float64) * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1.0)


def outputs(parent: dict[str, np.ndarray], variant: dict[str, np.ndarray], mask=None) -> dict:
    """The drift of ``variant``'s outputs from ``parent``'s, over the outputs both have.

    Returns ``kind`` ("classifier" when a ``logits`` output is among them, else "embedding"),
    ``cosine``/``cosine_min`` over every vector, ``max_abs_diff``, for classifiers
    ``top1_agreement`` and ``max_prob_diff``, for hidden states of shape [batch, seq, hidden]
    with an attention ``mask`` the ``sentence_cosine_min`` of their mean-pooled vectors, and the
    ``headline`` a reader judges the variant by: top-1 agreement for a classifier, the worst
    (sentence) cosine for an embedding model."""
    common = [k for k in parent if k in variant]
    if not common:
        raise ValueError(f"no output in common: {sorted(parent)} and {sorted(variant)}")
    classifier = [k for k in common if k in CLASSIFIER_OUTPUTS]
    rows = np.concatenate([row_cosines(parent[k], variant[k]) for k in common])
    diffs = [float(np.max(np.abs(np.asarray(parent[k], np.float64) - np.asarray(variant[k], np.float64))))
             for k in common if np.size(parent[k])]
    out = {"kind": "classifier" if classifier else "embedding", "outputs": common,
           "cosine": float(rows.mean()), "cosine_min": float(rows.min()), "max_abs_diff": max(diffs, default=0.0),
           "top1_agreement": None, "max_prob_diff": None, "sentence_cosine_min": None}
    if classifier:
        out["top1_agreement"] = float(np.mean([top1_agreement(parent[k], variant[k]) for k in classifier]))
        out["max_prob_diff"] = max(max_prob_diff(parent[k], variant[k]) for k in classifier)
        out["headline"] = {"name": "top-1 agreement", "value": out["top1_agreement"]}
        return out
    hidden = [k for k in common if np.ndim(parent[k]) == 3 and mask is not None
              and np.shape(parent[k])[:2] == np.shape(mask)]
    if hidden:
        out["sentence_cosine_min"] = float(min(row_cosines(_pooled(parent[k], mask), _pooled(variant[k], mask)).min()
                                               for k in hidden))
        out["headline"] = {"name": "sentence cosine (worst)", "value": out["sentence_cosine_min"]}
    else:
        out["headline"] = {"name": "cosine (worst)", "value": out["cosine_min"]}
    return out


def worst(measures: list[dict]) -> dict:
    """Several ``outputs()`` results (one per input) as one: the worst of each figure."""
    first = dict(measures[0])
    for m in measures[1:]:
        for k in ("cosine", "cosine_min", "top1_agreement", "sentence_cosine_min"):
            if m.get(k) is not None:
                first[k] = m[k] if first.get(k) is None else min(first[k], m[k])
        for k in ("max_abs_diff", "max_prob_diff"):
            if m.get(k) is not None:
                first[k] = m[k] if first.get(k) is None else max(first[k], m[k])
        first["headline"] = dict(first["headline"], value=min(first["headline"]["value"], m["headline"]["value"]))
    return first


@functools.lru_cache(maxsize=8)
def _tokenizer(path: str):
    """A tokenizer of a package: its tokenizer.json (the ``tokenizers`` library, as the core uses
    it), or the vocabulary of a GGUF file (llama.cpp, vocabulary only: no weights are loaded)."""
    p = Path(path)
    if p.is_dir() and (p / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(p / "tokenizer.json"))
        return lambda text: tok.encode(text, add_special_tokens=False).ids
    gguf = p if p.suffix == ".gguf" else next(iter(sorted(p.rglob("*.gguf"))), None) if p.is_dir() else None
    if gguf is None:
        return None
    from llama_cpp import Llama

    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return lambda text: vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def token_ids(text: str, package: str | Path) -> list[int] | None:
    """``text`` (a generation) as the token ids of the package's own tokenizer; None when the package
    has none. The core answers text, so the ids are re-tokenised: equal texts give equal ids, and
    two generations agree up to the token where their texts first differ."""
    tokenize = _tokenizer(str(package))
    return None if tokenize is None else [int(t) for t in tokenize(text)]
