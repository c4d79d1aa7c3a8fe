"""Deterministic tokenizers for tiny random-weight models (the validator's offline suite and the
axon tests' local hub): a BERT-style WordPiece and a GPT-2-style byte-level BPE, both built from a
fixed corpus in Python so every run writes identical tokenizer files."""
from __future__ import annotations

import re

__all__ = ["wordpiece_tokenizer", "bpe_tokenizer", "CORPUS"]

CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a tiny model for testing the model installer",
    "hello world, this is a test sentence.",
    "i love this movie it is great",
    "i hate this film it is terrible",
    "models are downloaded from the local hub server",
    "tokenizers split text into word pieces and byte pairs",
    "positive negative neutral happy sad good bad",
]


def _words() -> list[str]:
    return [w for line in CORPUS for w in re.findall(r"\w+|[^\w\s]", line.lower())]


def wordpiece_tokenizer():
    """A BERT-style WordPiece tokenizer over a vocab built deterministically from the corpus (the
    ``tokenizers`` trainers iterate hash maps, so their vocab order changes between runs)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for w in _words() for c in w})
    words = sorted(set(_words()) - set(chars))
    tokens = specials + chars + [f"##{c}" for c in chars] + words
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tokens.index("[CLS]")), ("[SEP]", tokens.index("[SEP]"))])
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64)


def bpe_tokenizer(n_merges: int = 48):
    """A GPT-2-style byte-level BPE whose merges are learnt here in Python (most frequent pair, ties
    broken lexically), so the files are identical on every run."""
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = Counter(piece for line in CORPUS for piece, _ in byte_level.pre_tokenize_str(line))
    seqs = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter = Counter()
        for w, seq in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        for w, seq in seqs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            seqs[w] = out
    tokens = alphabet + [a + b for a, b in merges] + ["<|endoftext|>"]
    vocab = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        model_max_length=64)
