"""SafeTensors -> GGUF (axon_pkg.gguf_convert): llama.cpp's own converter from the llama-cpp-python
sdist (fetched with pip, once per version), llama.cpp's quantiser through the bindings, tiny Llama
and Qwen2 models installed from the local hub, and llama.cpp's greedy tokens against transformers."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import yaml

from axon_pkg.gguf_convert import (ConversionFailed, convert_to_gguf, gguf_conversion_available, inspect_gguf,
                                   quantize_gguf)
from axon_pkg.gguf_tools import converter, installed_version

from ..hub import repos

pytestmark = pytest.mark.skipif(not gguf_conversion_available()[0], reason=gguf_conversion_available()[1])

PROMPT = "What is the capital of France?"
N_GREEDY = 16
# llama.cpp file types (llama.h): F16 1, Q8_0 7, Q4_K_M 15
FTYPE = {"F16": 1, "Q8_0": 7, "Q4_K_M": 15}


def install_json(axon, *args):
    code, out, err = axon("install", *args, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def _greedy_transformers(model_dir: Path, prompt: str, n: int) -> tuple[list[int], list[int]]:
    import torch
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(str(model_dir))
    model = tf.AutoModelForCausalLM.from_pretrained(str(model_dir), use_safetensors=True).eval()
    ids = tok(prompt).input_ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1,
                             pad_token_id=tok.eos_token_id)
    return ids, out[0, len(ids):].tolist()


def _greedy_llama_cpp(path: Path, ids: list[int], n: int) -> list[int]:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        out = []
        for _ in range(n):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(token)
            llm.eval([token])
        return out
    finally:
        llm.close()


def _teacher_forced_top1(path: Path, model_dir: Path, seq: list[int], start: int) -> float:
    """Share of positions from ``start`` where llama.cpp's argmax equals PyTorch's, both fed ``seq``."""
    import llama_cpp
    import torch
    import transformers as tf

    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, logits_all=True, verbose=False)
    try:
        llm.eval(seq)
        ours = np.array(llm.scores[:len(seq)]).argmax(-1)
    finally:
        llm.close()
    model = tf.AutoModelForCausalLM.from_pretrained(str(model_dir), use_safetensors=True).eval()
    with torch.no_grad():
        ref = model(torch.tensor([seq])).logits[0].numpy().argmax(-1)
    return float((ours[start:] == ref[start:]).mean())


# ---- the converter itself -------------------------------------------------------------------------

def test_the_converter_is_the_installed_llama_cpp_python_ones():
    conv = converter()
    assert conv.version == installed_version()
    assert conv.script.is_file() and (conv.root / "gguf-py" / "gguf" / "gguf_writer.py").is_file()
    assert len(conv.llama_cpp_commit) == 40 and len(conv.sdist_sha256) == 64
    assert conv.sdist == f"llama_cpp_python-{conv.version}.tar.gz"
    known = conv.architectures()
    assert known["LlamaForCausalLM"] == "llama" and known["Qwen2ForCausalLM"] == "qwen"
    assert "ViTForImageClassification" not in known


# ---- install from the local hub -------------------------------------------------------------------

def test_tiny_llama_to_f16_greedy_equals_transformers(axon, hf_endpoint, local_hub, capsys):
    repo = "tiny/llama"
    files = repos.tiny_model_files("llama")
    commit = local_hub.commit(repo, files)
    result = install_json(axon, f"hf/{repo}@main", "-f", "gguf", "--quant", "F16")
    assert result["format"] == "gguf"
    pkg = Path(result["path"])
    manifest = yaml.safe_load(open(pkg / "manifest.yaml"))
    conv = manifest["x-mlos"]["conversion"]
    assert conv["converted"] and conv["quant"] == "F16" and conv["architecture"] == "LlamaForCausalLM"
    assert conv["source_commit"] == commit and len(conv["llama_cpp_commit"]) == 40
    assert conv["tool_version"].startswith(f"llama-cpp-python {installed_version()}")
    assert conv["task"] == "text-generation" and manifest["x-mlos"]["task"] == "text-generation"
    paths = {f["path"] for f in manifest["spec"]["format"]["files"]}
    assert "llama-F16.gguf" in paths and "model.safetensors" not in paths
    assert manifest["spec"]["format"]["execution_files"] == ["llama-F16.gguf"]
    assert axon("verify", result["package"])[0] == 0
    gguf = pkg / "llama-F16.gguf"
    info = inspect_gguf(gguf)
    assert info["architecture"] == "llama" and info["file_type"] == FTYPE["F16"] and "F16" in info["tensor_types"]
    with capsys.disabled():
        print(f"\ntiny Llama -> GGUF F16: convert {conv['convert_s']:.1f} s, {conv['bytes']} bytes")

    # F16 weights, same prompt ids: llama.cpp's greedy tokens are transformers' (N_GREEDY, see docs/models.md)
    src = Path(files["config.json"]).parent
    ids, ref = _greedy_transformers(src, PROMPT, N_GREEDY)
    assert _greedy_llama_cpp(gguf, ids, N_GREEDY) == ref
    assert len(set(ref)) >= 5      # a varied continuation, not one repeated token


async def test_the_converted_gguf_is_served_by_the_core(axon, hf_endpoint, local_hub, serving):
    repo = "tiny/llama-served"
    files = repos.tiny_model_files("llama")
    local_hub.commit(repo, files)
    result = install_json(axon, f"hf/{repo}@main", "-f", "gguf", "--quant", "F16")
    client = await serving({"test/llama@f16": result["path"]})
    src = Path(files["config.json"]).parent
    ids, ref = _greedy_transformers(src, PROMPT, 12)
    r = await client.post("/v1/completions", json={"model": "test/llama@f16", "prompt": PROMPT, "max_tokens": 12,
                                                   "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    assert body["usage"] == {"prompt_tokens": len(ids), "completion_tokens": 12, "total_tokens": len(ids) + 12,
                             "prompt_tokens_details": {"cached_tokens": 0}}   # a first request: nothing cached
    # the served tokens are transformers' greedy ones: their text, as llama.cpp detokenizes (a random
    # model emits byte tokens that are not UTF-8 on their own; llama.cpp drops those, transformers
    # writes U+FFFD for them, so the texts are compared in llama.cpp's terms)
    import llama_cpp

    vocab = llama_cpp.Llama(str(Path(result["path"]) / "llama-served-F16.gguf"), vocab_only=True, verbose=False)
    try:
        want = vocab.detokenize(ref, prev_tokens=ids).decode("utf-8", "ignore")
    finally:
        vocab.close()
    assert body["choices"][0]["text"] == want


def test_tiny_qwen2_auto_prefers_gguf_at_q4_k_m(axon, hf_endpoint, local_hub):
    repo = "tiny/qwen2"
    local_hub.commit(repo, repos.tiny_model_files("qwen2"))
    result = install_json(axon, f"hf/{repo}")          # -f auto: a decoder LLM without GGUF files
    assert result["format"] == "gguf"
    conv = result["conversion"]
    assert conv["quant"] == "Q4_K_M" and conv["intermediate"] == "F16" and conv["architecture"] == "Qwen2ForCausalLM"
    info = inspect_gguf(Path(result["path"]) / "qwen2-Q4_K_M.gguf")
    assert info["architecture"] == "qwen2" and info["file_type"] == FTYPE["Q4_K_M"]
    # rows of 32 values cannot hold 256-value K-quant blocks: llama.cpp falls back, never to F16
    assert "F16" not in info["tensor_types"] and set(info["tensor_types"]) & {"Q4_K", "Q5_0", "Q8_0"}
    # a selector in the reference asks for another type: a package of its own
    q8 = install_json(axon, f"hf/{repo}:Q8_0")
    assert q8["conversion"]["quant"] == "Q8_0" and q8["path"] != result["path"]


def _qwen2_without_sentencepiece(dest: Path) -> dict[str, Path]:
    """The tiny Qwen2 with a made-up byte-level BPE tokenizer: one llama.cpp has no hash for."""
    from validation.tiny_tokenizers import bpe_tokenizer

    repos.tiny_model_files("qwen2", dest)
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "chat_template.jinja"):
        (dest / name).unlink(missing_ok=True)
    bpe_tokenizer().save_pretrained(dest)
    return {p.name: p for p in dest.iterdir() if p.is_file()}


def test_unknown_architecture_and_unknown_tokenizer_are_clear_errors(axon, hf_endpoint, local_hub, tmp_path):
    local_hub.commit("tiny/vit", repos.tiny_model_files("vit"))
    code, _, err = axon("install", "hf/tiny/vit", "-f", "gguf", "--quiet")
    assert code == 1
    assert "does not know the architecture ViTForImageClassification" in err and "LlamaForCausalLM" in err
    local_hub.commit("tiny/qwen2-bpe", _qwen2_without_sentencepiece(tmp_path / "qwen2-bpe"))
    code, _, err = axon("install", "hf/tiny/qwen2-bpe", "-f", "gguf", "--quiet")
    assert code == 1 and "does not know this model's BPE pre-tokenizer (tokenizer hash " in err
    # -f auto goes on to ONNX (and the progress says why not GGUF)
    result = install_json(axon, "hf/tiny/qwen2-bpe")
    assert result["format"] == "onnx" and result["conversion"]["converted"]
    assert not list(Path(result["path"]).glob("*.gguf"))


def test_a_failed_conversion_leaves_nothing(tmp_path):
    repos.tiny_model_files("vit", tmp_path / "vit")
    with pytest.raises(ConversionFailed, match="does not know the architecture"):
        convert_to_gguf(tmp_path / "vit", tmp_path / "out", "F16")
    _qwen2_without_sentencepiece(tmp_path / "qwen2-bpe")
    with pytest.raises(ConversionFailed, match="BPE pre-tokenizer"):
        convert_to_gguf(tmp_path / "qwen2-bpe", tmp_path / "out", "Q8_0")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".axon-gguf-")]


# ---- the quantiser ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory) -> Path:
    """A Llama whose rows (256) hold whole K-quant blocks, so Q4_K_M is really Q4_K / Q6_K."""
    import torch
    import transformers as tf

    from validation.tiny_tokenizers import spm_tokenizer

    d = tmp_path_factory.mktemp("wide-llama")
    tok = spm_tokenizer()
    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=512, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, initializer_range=0.05)
    tf.LlamaForCausalLM(cfg).eval().save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def test_quantiser_types_sizes_and_agreement(wide_llama, tmp_path, capsys):
    f16 = convert_to_gguf(wide_llama, tmp_path / "f16", "F16", name="wide")
    src = tmp_path / "f16" / f16.files[0]
    sizes, seconds = {"F16": src.stat().st_size}, {}
    for quant in ("Q8_0", "Q4_K_M"):
        out = tmp_path / f"wide-{quant}.gguf"
        seconds[quant] = quantize_gguf(src, out, quant, threads=2)
        info = inspect_gguf(out)
        assert info["file_type"] == FTYPE[quant] and info["architecture"] == "llama"
        sizes[quant] = out.stat().st_size
        types = set(info["tensor_types"])
        assert "F16" not in types
        assert types >= ({"Q8_0"} if quant == "Q8_0" else {"Q4_K", "Q6_K"})
    assert sizes["F16"] > sizes["Q8_0"] > sizes["Q4_K_M"]
    # the looser check of a quantised file: teacher-forced top-1 agreement with PyTorch
    ids, ref = _greedy_transformers(wide_llama, PROMPT, 24)
    agree = {q: _teacher_forced_top1(p, wide_llama, ids + ref, len(ids) - 1)
             for q, p in (("F16", src), ("Q8_0", tmp_path / "wide-Q8_0.gguf"), ("Q4_K_M", tmp_path / "wide-Q4_K_M.gguf"))}
    with capsys.disabled():
        print(f"\nquantiser: sizes {sizes}, seconds {seconds}, top-1 agreement {agree}")
    assert agree["F16"] == 1.0 and agree["Q8_0"] >= 0.9 and agree["Q4_K_M"] >= 0.5
    with pytest.raises(ConversionFailed, match="written by the converter"):
        quantize_gguf(src, tmp_path / "x.gguf", "F16")
    with pytest.raises(ConversionFailed, match="unknown GGUF type"):
        quantize_gguf(src, tmp_path / "x.gguf", "Q9_9")
