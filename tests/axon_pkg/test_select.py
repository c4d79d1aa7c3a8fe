"""Which files an install takes from a repo."""
import pytest

from axon_pkg.errors import SelectionError
from axon_pkg.repos.huggingface import RemoteFile, select_files


def repo(*paths):
    return [RemoteFile(p, 10, None) for p in paths]


def paths(sel):
    return sorted(f.path for f in sel.files)


def test_gguf_preferred_q4_k_m_by_default():
    files = repo("README.md", "model-Q4_K_M.gguf", "model-Q8_0.gguf", "model.safetensors", "config.json")
    sel = select_files(files)
    assert sel.format == "gguf" and paths(sel) == ["model-Q4_K_M.gguf"]


def test_selector_picks_a_quantisation_and_keeps_shards_together():
    files = repo("m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-Q4_K_M.gguf")
    assert paths(select_files(files, selector="Q8_0")) == ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf"]


def test_ambiguous_or_missing_quantisation_lists_choices():
    files = repo("m-Q4_K_M.gguf", "m-Q4_K_M-imat.gguf", "m-Q8_0.gguf")
    with pytest.raises(SelectionError, match="matches several GGUF files: m-Q4_K_M-imat.gguf, m-Q4_K_M.gguf"):
        select_files(files)
    with pytest.raises(SelectionError, match="no GGUF file matches 'Q2_K'; choices: m-Q4_K_M-imat.gguf, m-Q4_K_M.gguf, m-Q8_0.gguf"):
        select_files(files, selector="Q2_K")
    assert paths(select_files(files, wanted_file="m-Q8_0.gguf")) == ["m-Q8_0.gguf"]


def test_onnx_before_safetensors_with_its_data_and_tokenizer():
    files = repo("onnx/model.onnx", "onnx/model.onnx_data", "onnx/model_quantized.onnx", "model.safetensors",
                 "tokenizer.json", "config.json", "pytorch_model.bin")
    sel = select_files(files)
    assert sel.format == "onnx"
    assert paths(sel) == ["config.json", "onnx/model.onnx", "onnx/model.onnx_data", "tokenizer.json"]


def test_an_encoder_decoder_export_is_taken_whole():
    # optimum's layout at the top (optimum/t5-small), merged decoder preferred, quantised variants left
    files = repo("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
                 "decoder_model_merged.onnx", "decoder_model_merged.onnx_data", "encoder_model_quantized.onnx",
                 "config.json", "tokenizer.json", "model.safetensors")
    sel = select_files(files)
    assert sel.format == "onnx" and "encoder-decoder" in sel.note
    assert paths(sel) == ["config.json", "decoder_model_merged.onnx", "decoder_model_merged.onnx_data",
                          "encoder_model.onnx", "tokenizer.json"]
    # split decoders only, under onnx/ (the transformers.js layout)
    files = repo("onnx/encoder_model.onnx", "onnx/decoder_model.onnx", "onnx/decoder_with_past_model.onnx",
                 "onnx/decoder_model_quantized.onnx", "config.json")
    assert paths(select_files(files, fmt="onnx")) == ["config.json", "onnx/decoder_model.onnx",
                                                      "onnx/decoder_with_past_model.onnx", "onnx/encoder_model.onnx"]


def test_safetensors_without_pickles_or_other_frameworks():
    files = repo("model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "rust_model.ot",
                 "config.json", "vocab.txt", "1_Pooling/config.json", "onnx/model.onnx")
    sel = select_files(files, fmt="native")
    assert sel.format == "safetensors"
    assert paths(sel) == ["1_Pooling/config.json", "config.json", "model.safetensors", "vocab.txt"]


def test_only_pickles_is_refused_with_the_reason():
    with pytest.raises(SelectionError, match="pickles can run arbitrary code") as e:
        select_files(repo("pytorch_model.bin", "config.json"))
    assert "SafeTensors" in e.value.hint
    with pytest.raises(SelectionError, match="never downloaded"):
        select_files(repo("pytorch_model.bin"), wanted_file="pytorch_model.bin")


def test_format_gguf_requested_but_absent():
    with pytest.raises(SelectionError, match="no GGUF or SafeTensors to convert weights"):
        select_files(repo("model.onnx", "config.json"), fmt="gguf")
    # SafeTensors are taken to be converted (axon_pkg.gguf_convert)
    sel = select_files(repo("model.safetensors", "config.json", "tokenizer.model", "model.onnx"), fmt="gguf")
    assert sel.format == "safetensors" and paths(sel) == ["config.json", "model.safetensors", "tokenizer.model"]
