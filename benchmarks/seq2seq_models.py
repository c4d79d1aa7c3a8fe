"""The models of benchmarks/test_seq2seq.py, built once with transformers (random weights, fixed seeds)
and cached under ``~/.cache/mlos-tests/bench/`` (``MLOS_TEST_CACHE``), keyed by their shape and the
library versions:

* ``t5_small()``: a T5 with t5-small's shape (d_model 512, 6+6 layers, 8 heads, d_ff 2048, relu,
  vocabulary 32,128), its SafeTensors and a word-level tokenizer covering the vocabulary; and its
  optimum export with both decoder layouts (``onnx/``);
* ``llama_270m()``: a Llama of Gemma-3-270M's size class (hidden 1024, 22 layers, ~260 M parameters,
  bfloat16 SafeTensors as published checkpoints are) with the tiny SentencePiece vocabulary, for
  the GGUF conversion and quantisation timings.

``python -m benchmarks.seq2seq_models`` builds both (the make target does it before measuring).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("MLOS_TEST_CACHE", Path.home() / ".cache" / "mlos-tests")) / "bench"
T5_SMALL = {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_decoder_layers": 6,
            "num_heads": 8, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
LLAMA_270M = {"hidden_size": 1024, "num_hidden_layers": 22, "num_attention_heads": 16, "num_key_value_heads": 8,
              "intermediate_size": 2816, "max_position_embeddings": 2048}


def _key(name: str, spec: dict) -> Path:
    versions = {d: importlib.metadata.version(d) for d in ("torch", "transformers", "optimum-onnx")}
    digest = hashlib.sha256(json.dumps([spec, versions], sort_keys=True).encode()).hexdigest()[:12]
    return CACHE / f"{name}-{digest}"


def _build(target: Path, make) -> Path:
    if (target / "DONE").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=CACHE))
    try:
        make(tmp)
        (tmp / "DONE").write_text("complete\n")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _word_tokenizer(size: int):
    """A word-level tokenizer with ``size`` entries: the corpus' words, then filler words, so every
    id a random model may emit decodes to something."""
    import re

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from validation.tiny_tokenizers import CORPUS

    words = sorted({w for line in CORPUS for w in re.findall(r"\w+|[^\w\s]", line.lower())})
    vocab = ["<pad>", "</s>", "<unk>"] + words
    vocab += [f"w{i}" for i in range(size - len(vocab))]
    tok = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def t5_small() -> Path:
    """``<dir>/src`` (SafeTensors + tokenizer) and ``<dir>/onnx`` (encoder, both decoder layouts)."""
    def make(d: Path) -> None:
        import torch
        import transformers as tf

        from axon_pkg.convert import convert_to_onnx

        cfg = tf.T5Config(**T5_SMALL)
        torch.manual_seed(0)
        tf.T5ForConditionalGeneration(cfg).eval().save_pretrained(d / "src", safe_serialization=True)
        _word_tokenizer(T5_SMALL["vocab_size"]).save_pretrained(d / "src")
        result = convert_to_onnx(d / "src", d / "onnx", all_graphs=True, check_parity=False)
        if not result.converted:
            raise RuntimeError(f"the T5 export failed: {result.reason}")
        (d / "export.json").write_text(json.dumps({"seconds": result.seconds, "files": result.files}))

    return _build(_key("t5-small-random", T5_SMALL), make)


def layout_dir(t5: Path, layout: str) -> Path:
    """A directory holding one decoder layout beside the model's config and tokenizer (links)."""
    graphs = {"split": ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"),
              "merged": ("encoder_model.onnx", "decoder_model_merged.onnx")}[layout]
    d = t5 / layout
    if not (d / "DONE").is_file():
        d.mkdir(exist_ok=True)
        for f in [*(t5 / "src").glob("*.json"), *(t5 / "onnx" / g for g in graphs)]:
            if not (d / f.name).exists():
                os.link(f, d / f.name)
        (d / "DONE").write_text("complete\n")
    return d


def llama_270m() -> Path:
    def make(d: Path) -> None:
        import torch
        import transformers as tf

        from validation.tiny_tokenizers import spm_tokenizer

        tok = spm_tokenizer()
        cfg = tf.LlamaConfig(vocab_size=len(tok), bos_token_id=1, eos_token_id=2, **LLAMA_270M)
        torch.manual_seed(0)
        model = tf.LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
        model.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)

    return _build(_key("llama-270m-random", LLAMA_270M), make)


def parameters(model_dir: Path) -> int:
    """The parameter count of a SafeTensors model dir, from the headers alone."""
    import math

    from safetensors import safe_open

    total = 0
    for f in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(f), "np") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


if __name__ == "__main__":
    for build in (t5_small, llama_270m):
        print(build.__name__, build())
