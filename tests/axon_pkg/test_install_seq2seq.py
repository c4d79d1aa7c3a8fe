"""Encoder-decoders through axon-py: a SafeTensors T5 converted at install (encoder + merged decoder
kept), and a repo that already holds an ONNX export under onnx/ (the transformers.js layout), each
installed from the local hub, registered with an in-process core and generating what transformers
generates."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from axon_pkg.convert import conversion_available, convert_to_onnx

from ..hub import repos

pytestmark = pytest.mark.skipif(not conversion_available()[0], reason=conversion_available()[1])

PROMPT = "hello world, this is a test sentence."


def install_json(axon, *args):
    code, out, err = axon("install", *args, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def _reference(src: Path, n: int) -> list[int]:
    import torch
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(str(src))
    model = tf.T5ForConditionalGeneration.from_pretrained(str(src), use_safetensors=True).eval()
    with torch.no_grad():
        out = model.generate(**tok([PROMPT], return_tensors="pt", return_token_type_ids=False), max_new_tokens=n,
                             do_sample=False, num_beams=1)
    row = out[0, 1:].tolist()
    eos = model.generation_config.eos_token_id
    return row[:row.index(eos)] if eos in row else row


async def _generate(serving, path: str) -> list[int]:
    client = await serving({"test/t5@1": path})
    r = await client.post("/v1/models/" + quote("test/t5@1", safe="") + "/inference",
                          json={"text": PROMPT, "max_tokens": 12, "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    return body["outputs"]["token_ids"]


async def test_safetensors_t5_is_converted_to_encoder_and_merged_decoder(axon, hf_endpoint, local_hub, serving):
    files = repos.tiny_model_files("t5")
    local_hub.commit("tiny/t5", files)
    result = install_json(axon, "hf/tiny/t5")
    assert result["format"] == "onnx" and result["conversion"]["task"] == "text2text-generation-with-past"
    manifest = yaml.safe_load(open(Path(result["path"]) / "manifest.yaml"))
    assert manifest["spec"]["format"]["execution_files"] == ["decoder_model_merged.onnx", "encoder_model.onnx"]
    assert [i["name"] for i in manifest["spec"]["io"]["inputs"]] == ["input_ids", "attention_mask"]
    assert not list(Path(result["path"]).glob("decoder_with_past*")) and not list(Path(result["path"]).glob("*.safetensors"))
    assert await _generate(serving, result["path"]) == _reference(Path(files["config.json"]).parent, 12)


async def test_an_onnx_export_under_onnx_folder_is_installed_whole(axon, hf_endpoint, local_hub, serving, tmp_path):
    src = tmp_path / "src"
    repos.tiny_model_files("t5", src)
    export = tmp_path / "export"
    assert convert_to_onnx(src, export, all_graphs=True).converted
    files = {p.name: p for p in src.iterdir() if p.suffix == ".json"}
    files.update({f"onnx/{p.name}": p for p in export.glob("*.onnx")})
    local_hub.commit("tiny/t5-onnx", files)
    result = install_json(axon, "hf/tiny/t5-onnx")
    assert result["format"] == "onnx" and not result["conversion"]
    manifest = yaml.safe_load(open(Path(result["path"]) / "manifest.yaml"))
    assert manifest["spec"]["format"]["execution_files"] == ["onnx/decoder_model_merged.onnx", "onnx/encoder_model.onnx"]
    assert await _generate(serving, result["path"]) == _reference(src, 12)
