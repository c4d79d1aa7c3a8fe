"""Deterministic tokenizers for tiny random-weight models (the validator's offline suite and the
axon tests' local hub): a BERT-style WordPiece, a GPT-2-style byte-level BPE and a BART-style one
(RoBERTa's special tokens), built from a fixed corpus in Python so every run writes identical files;
and a Llama-style SentencePiece model (``tokenizer.model`` beside its ``tokenizer.json``) trained by
the sentencepiece library on that corpus with one thread: what llama.cpp's GGUF converter reads for
Llama and Qwen2 vocabularies (a byte-level BPE vocabulary it accepts only when it knows the
tokenizer's hash, i.e. for published models)."""
from __future__ import annotations

import re

__all__ = ["wordpiece_tokenizer", "bpe_tokenizer", "bart_tokenizer", "spm_tokenizer", "CORPUS"]

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


def _byte_level_bpe(n_merges: int) -> tuple[list[str], list[tuple[str, str]]]:
    """The byte alphabet and merges learnt here in Python (most frequent pair, ties broken
    lexically), so the files are identical on every run."""
    from collections import Counter

    from tokenizers import pre_tokenizers

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
    return alphabet, merges


def _vocab(tokens: list[str]) -> dict[str, int]:
    vocab: dict[str, int] = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    return vocab


def bpe_tokenizer(n_merges: int = 48):
    """A GPT-2-style byte-level BPE (one special token, last: ``<|endoftext|>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet, merges = _byte_level_bpe(n_merges)
    tok = Tokenizer(models.BPE(vocab=_vocab(alphabet + [a + b for a, b in merges] + ["<|endoftext|>"]),
                               merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        model_max_length=64)


def bart_tokenizer(n_merges: int = 48):
    """A BART/RoBERTa-style byte-level BPE: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, the
    pieces, ``<mask>`` last; a text is encoded as ``<s> ... </s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet, merges = _byte_level_bpe(n_merges)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = _vocab(specials + alphabet + [a + b for a, b in merges] + ["<mask>"])
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tok.add_special_tokens(specials + ["<mask>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=128)


def spm_tokenizer(vocab_size: int = 400):
    """A Llama-style SentencePiece BPE (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte fallback) trained on
    the corpus, as a ``LlamaTokenizerFast`` whose ``save_pretrained`` writes both ``tokenizer.model``
    (what llama.cpp's converter reads) and ``tokenizer.json`` (what the core reads)."""
    import io
    import tempfile
    from pathlib import Path

    import sentencepiece as spm
    from transformers import LlamaTokenizerFast

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, hard_vocab_limit=False, num_threads=1, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, add_dummy_prefix=True, split_digits=True,
        normalization_rule_name="identity", minloglevel=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.model"
        path.write_bytes(model.getvalue())
        # from_slow: tokenizer.json is converted from the SentencePiece model, as for Llama 2
        tok = LlamaTokenizerFast(vocab_file=str(path), legacy=True, add_prefix_space=True, add_bos_token=True,
                                 add_eos_token=False, from_slow=True)
    tok.model_max_length = 512
    tok.vocab_file = None
    return _WithSentencePiece(tok, model.getvalue())


class _WithSentencePiece:
    """A tokenizer whose ``save_pretrained`` also writes its SentencePiece ``tokenizer.model``."""

    def __init__(self, tok, spm_bytes: bytes):
        self.__dict__.update(_tok=tok, _spm=spm_bytes)

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __setattr__(self, name, value):
        setattr(self._tok, name, value)

    def __len__(self):
        return len(self._tok)

    def __call__(self, *args, **kwargs):
        return self._tok(*args, **kwargs)

    def save_pretrained(self, dest, **kwargs):
        from pathlib import Path

        out = self._tok.save_pretrained(dest, **kwargs)
        (Path(dest) / "tokenizer.model").write_bytes(self._spm)
        return out
