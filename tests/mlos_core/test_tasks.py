"""The task layer on real ONNX exports: each test model is converted once with
``axon_pkg.convert.convert_to_onnx``, loaded with the ONNX plugin, ``attach``-ed to its source
directory, and its task results compared with PyTorch / transformers / sentence-transformers."""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from axon_pkg.convert import conversion_available, convert_to_onnx
from mlos_core import plugins, sources
from mlos_core.errors import BadRequest, UnprocessableModel
from mlos_core.smi import (CHAT, CLASSIFY, CLASSIFY_IMAGE, EMBED, FILL_MASK, GENERATE, GenerationParams,
                           LoadOptions, TaskUnsupported)
from mlos_core.tasks import TaskModel, attach, detect_task

from ..hub import repos

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not conversion_available()[0]:  # pragma: no cover
    pytest.skip(f"conversion unavailable: {conversion_available()[1]}", allow_module_level=True)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class Converted:
    src: Path          # the transformers model directory (config, tokenizer, weights)
    onnx: Path         # the exported model.onnx
    inputs: list
    model: object      # the attached task model


def _copy(files: dict[str, Path], dest: Path) -> Path:
    for rel, path in files.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / rel)
    return dest


def _convert(src: Path, out: Path, tmp: Path, task: str | None = None, **attach_kw) -> Converted:
    result = convert_to_onnx(src, out, task=task)
    assert result.converted, result.reason
    onnx_path = out / "model.onnx"
    model = plugins.plugin_for("onnx").load(sources.resolve(onnx_path, tmp / "packages"), LoadOptions())
    return Converted(src, onnx_path, result.inputs, attach(model, src, **attach_kw))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tasks")


@pytest.fixture(scope="module")
def minilm(work) -> Converted:
    src = _copy(repos.minilm_files(), work / "minilm")
    return _convert(src, work / "minilm-onnx", work)


@pytest.fixture(scope="module")
def classifier(work) -> Converted:
    src = work / "bert-classifier"
    repos.tiny_model_files("bert-classifier", src)
    return _convert(src, work / "bert-classifier-onnx", work)


@pytest.fixture(scope="module")
def masked_lm(work) -> Converted:
    src = work / "bert-mlm"
    base = work / "bert-base"
    repos.tiny_model_files("bert", base)
    torch.manual_seed(1)
    model = transformers.BertForMaskedLM(transformers.BertConfig.from_pretrained(base)).eval()
    model.save_pretrained(src, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(base / name, src / name)
    return _convert(src, work / "bert-mlm-onnx", work)


@pytest.fixture(scope="module")
def gpt2(work) -> Converted:
    src = work / "gpt2"
    repos.tiny_model_files("gpt2", src)
    return _convert(src, work / "gpt2-onnx", work)


@pytest.fixture(scope="module")
def gpt2_no_past(work, gpt2) -> Converted:
    return _convert(gpt2.src, work / "gpt2-nopast-onnx", work, task="text-generation")


@pytest.fixture(scope="module")
def vit(work) -> Converted:
    src = work / "vit"
    repos.tiny_model_files("vit", src)
    return _convert(src, work / "vit-onnx", work)


def _torch_model(cls, src: Path):
    return cls.from_pretrained(src).eval()


def _png(width: int, height: int, seed: int = 0, mode: str = "RGB") -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    else:
        img = Image.new(mode, (width, height))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _collect(chunks) -> tuple[str, list, object]:
    chunks = list(chunks)
    return "".join(c.text for c in chunks), chunks, chunks[-1]


# ---- detection and the wrapper ------------------------------------------------------------------

def test_detect_task_and_wrapper(minilm, classifier, masked_lm, gpt2, vit, work):
    assert detect_task(minilm.src) == "feature-extraction"
    assert detect_task(classifier.src) == "text-classification"
    assert detect_task(masked_lm.src) == "fill-mask"
    assert detect_task(gpt2.src) == "text-generation"
    assert detect_task(vit.src) == "image-classification"
    assert detect_task(work / "nowhere") is None and detect_task(None) is None

    assert isinstance(minilm.model, TaskModel) and minilm.model.tasks == {EMBED}
    assert classifier.model.tasks == {CLASSIFY}
    assert masked_lm.model.tasks == {FILL_MASK}
    assert GENERATE in gpt2.model.tasks
    assert vit.model.tasks == {CLASSIFY_IMAGE}
    # the tensor side is the inner model's
    inner = minilm.model.inner
    assert minilm.model.metadata is inner.metadata
    assert minilm.model.memory_bytes() == inner.memory_bytes() > 0
    enc = {"input_ids": np.array([[101, 7592, 102]]), "attention_mask": np.ones((1, 3), np.int64),
           "token_type_ids": np.zeros((1, 3), np.int64)}
    np.testing.assert_array_equal(minilm.model.infer(enc)["last_hidden_state"], inner.infer(enc)["last_hidden_state"])
    # other entry points are refused as unsupported
    with pytest.raises(TaskUnsupported):
        minilm.model.classify(["x"])
    with pytest.raises(TaskUnsupported):
        classifier.model.generate("x", GenerationParams())

    # no directory, or a directory without task files: unchanged; an override it cannot serve: refused
    assert attach(inner, None) is inner
    assert attach(inner, work / "nowhere") is inner
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    assert attach(inner, empty) is inner
    assert attach(inner, minilm.src, "none") is inner
    with pytest.raises(UnprocessableModel, match="unknown task"):
        attach(inner, minilm.src, "translate-everything")
    with pytest.raises(UnprocessableModel):
        attach(inner, minilm.src, "text-classification")  # no logits output
    with pytest.raises(UnprocessableModel):
        attach(inner, None, "embed")
    # an override by our own task name works as the pipeline name does
    assert attach(inner, minilm.src, "embed").tasks == {EMBED}
    # a classifier graph in a directory that implies generation is left as it is
    assert attach(classifier.model.inner, gpt2.src) is classifier.model.inner


# ---- embeddings ---------------------------------------------------------------------------------

def test_minilm_embeddings_match_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["hello world",
             "The quick brown fox jumps over the lazy dog, twice, before breakfast.",
             "Ünïcödé text — with accents and dashes",
             "a",
             " ".join(["a long sentence that runs past the 256 token limit"] * 40)]
    ours = minilm.model.embed(texts)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 384)
    ref = SentenceTransformer(str(minilm.src), device="cpu").encode(texts, convert_to_numpy=True)
    cos = (ours * ref).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # Normalize module
    # each text alone gives the same vector as in the padded batch
    np.testing.assert_allclose(minilm.model.embed([texts[0]])[0], ours[0], atol=1e-5)
    assert minilm.model.embed([]).shape == (0, 384)
    assert minilm.model.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    with pytest.raises(BadRequest):
        minilm.model.embed([1, 2])


# ---- classification -----------------------------------------------------------------------------

def test_classifier_matches_pytorch(classifier):
    texts = ["i love this movie it is great", "i hate this film", "hello"]
    ours = classifier.model.classify(texts)
    tok = transformers.AutoTokenizer.from_pretrained(classifier.src)
    ref_model = _torch_model(transformers.BertForSequenceClassification, classifier.src)
    with torch.no_grad():
        logits = ref_model(**tok(texts, padding=True, return_tensors="pt")).logits
    probs = torch.softmax(logits, -1).numpy()
    labels = ["NEGATIVE", "POSITIVE"]
    for row, ref in zip(ours, probs):
        assert [r["label"] for r in row] == [labels[i] for i in np.argsort(-ref)]
        for r in row:
            assert abs(r["score"] - ref[labels.index(r["label"])]) < 1e-4
        assert abs(sum(r["score"] for r in row) - 1) < 1e-6


# ---- fill-mask ----------------------------------------------------------------------------------

def test_fill_mask_matches_pytorch(masked_lm):
    text = "the quick brown [MASK] jumps over the lazy dog"
    ours = masked_lm.model.fill_mask(text, top_k=5)
    tok = transformers.AutoTokenizer.from_pretrained(masked_lm.src)
    ref_model = _torch_model(transformers.BertForMaskedLM, masked_lm.src)
    enc = tok(text, return_tensors="pt")
    pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0])
    with torch.no_grad():
        probs = torch.softmax(ref_model(**enc).logits[0, pos], -1).numpy()
    top = np.argsort(-probs)[:5]
    assert [c["token"] for c in ours] == top.tolist()
    for c in ours:
        assert abs(c["score"] - probs[c["token"]]) < 1e-4
        assert c["token_str"] == tok.decode([c["token"]])
        ids = enc["input_ids"][0].clone()
        ids[pos] = c["token"]
        assert c["sequence"] == tok.decode(ids, skip_special_tokens=True)
    assert len(masked_lm.model.fill_mask(text, top_k=2)) == 2
    with pytest.raises(BadRequest, match=r"\[MASK\]"):
        masked_lm.model.fill_mask("no mask here")
    with pytest.raises(BadRequest, match="exactly one"):
        masked_lm.model.fill_mask("[MASK] and [MASK]")


# ---- generation ---------------------------------------------------------------------------------

PROMPT = "the quick brown fox"


def _reference_greedy(src: Path, prompt: str, n: int) -> list[int]:
    tok = transformers.AutoTokenizer.from_pretrained(src)
    model = _torch_model(transformers.GPT2LMHeadModel, src)
    enc = tok(prompt, return_tensors="pt")
    # only what GPT-2 takes: the generic fast tokenizer also returns token_type_ids, which GPT-2
    # would add as (token) embeddings
    enc = {k: enc[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=n, pad_token_id=tok.eos_token_id)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def test_gpt2_export_has_past_inputs(gpt2, gpt2_no_past):
    names = [i["name"] for i in gpt2.inputs]
    assert "past_key_values.0.key" in names and "position_ids" in names
    past = next(i for i in gpt2.inputs if i["name"] == "past_key_values.0.key")
    assert past["shape"] == [-1, 2, -1, 16]  # batch, heads, past length, head dim
    assert not any(n.startswith("past_key_values") for n in (i["name"] for i in gpt2_no_past.inputs))


@pytest.mark.parametrize("which", ["gpt2", "gpt2_no_past"])
def test_greedy_generation_matches_transformers(which, request):
    conv = request.getfixturevalue(which)
    ref = _reference_greedy(conv.src, PROMPT, 10)
    tok = conv.model._tok
    text, chunks, last = _collect(conv.model.generate(PROMPT, GenerationParams(max_tokens=10, temperature=0)))
    # the token stream re-encodes to what transformers generated
    assert last.prompt_tokens == len(tok.encode(PROMPT))
    if len(ref) == 10 and tok.eos_token_ids.isdisjoint(ref):
        assert last.finish_reason == "length" and last.completion_tokens == 10
    assert text == tok.decode(ref)


def test_greedy_token_for_token_with_past(gpt2):
    """Token ids, not just text: the last chunk carries the ids the generator's loop chose."""
    ref = _reference_greedy(gpt2.src, PROMPT, 10)
    *_, last = gpt2.model.generate(PROMPT, GenerationParams(max_tokens=10, temperature=0))
    assert last.token_ids[:len(ref)] == ref
    assert len(last.token_ids) == last.completion_tokens


def test_sampling_is_reproducible_with_a_seed(gpt2):
    def run(seed):
        p = GenerationParams(max_tokens=12, temperature=1.2, top_p=0.9, top_k=50, seed=seed,
                             repetition_penalty=1.3)
        return _collect(gpt2.model.generate(PROMPT, p))[0]

    a, b = run(7), run(7)
    assert a == b
    outs = {run(s) for s in range(5)}
    assert len(outs) > 1  # the seed matters
    greedy = _collect(gpt2.model.generate(PROMPT, GenerationParams(max_tokens=12, temperature=0)))[0]
    assert _collect(gpt2.model.generate(PROMPT, GenerationParams(max_tokens=12, temperature=0)))[0] == greedy


def test_stop_strings(gpt2):
    p = GenerationParams(max_tokens=20, temperature=0.8, seed=3)
    full, _, last = _collect(gpt2.model.generate(PROMPT, p))
    assert len(full) >= 6, full
    stop = full[3:6]
    idx = full.find(stop)
    text, chunks, last = _collect(gpt2.model.generate(
        PROMPT, GenerationParams(max_tokens=20, temperature=0.8, seed=3, stop=("zzzz-never", stop))))
    assert text == full[:idx]
    assert last.finish_reason == "stop"
    assert all(stop not in c.text for c in chunks)


def test_cancellation(gpt2):
    state = {"n": 0}

    def cancelled():
        state["n"] += 1
        return state["n"] > 3

    text, chunks, last = _collect(gpt2.model.generate(PROMPT, GenerationParams(max_tokens=30, temperature=0),
                                                      cancelled))
    assert last.finish_reason == "cancelled"
    assert last.completion_tokens == 3


def test_context_length_and_bad_requests(gpt2):
    m = gpt2.model
    assert m.context_length() == 64
    n = m.count_tokens(PROMPT)
    with pytest.raises(BadRequest, match=rf"{n} tokens.*max_tokens is 100.*64"):
        m.generate(PROMPT, GenerationParams(max_tokens=100))
    with pytest.raises(BadRequest):
        m.generate(PROMPT, GenerationParams(max_tokens=0))
    with pytest.raises(BadRequest):
        m.generate(PROMPT, GenerationParams(top_p=0))
    # an empty prompt starts from the bos token
    assert _collect(m.generate("", GenerationParams(max_tokens=2, temperature=0)))[2].prompt_tokens == 1


def test_incremental_decoding_keeps_multibyte_characters_whole(gpt2):
    from mlos_core.tasks.generation import _IncrementalDecoder

    tok = gpt2.model._tok
    text = "héllo wörld ☃ 日本 ok"
    ids = tok.encode(text)
    assert len(ids) > len(text.split())  # byte-level: characters span several tokens
    dec = _IncrementalDecoder(tok)
    pieces = [dec.add(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_chat(gpt2, work):
    # no template anywhere: ChatML
    assert CHAT in gpt2.model.tasks
    assert gpt2.model._impl.template()[1] == "builtin:chatml"
    # the tokenizer_config.json template is the model's own; an override beats it
    src = work / "gpt2-chat"
    shutil.copytree(gpt2.src, src, dirs_exist_ok=True)
    tcfg = json.loads((src / "tokenizer_config.json").read_text())
    tcfg["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    (src / "tokenizer_config.json").write_text(json.dumps(tcfg))
    own = attach(gpt2.model.inner, src)
    assert own._impl.template() == (tcfg["chat_template"], "tokenizer_config")
    model = attach(gpt2.model.inner, src, chat_template=CHATML)
    assert model._impl.template() == (CHATML, "override")

    msgs = [{"role": "user", "content": "hello"}]
    text, _, last = _collect(model.chat(msgs, GenerationParams(max_tokens=5, temperature=0)))
    rendered = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    assert last.prompt_tokens == len(model._tok.encode(rendered, add_special_tokens=False))
    same, _, _ = _collect(model.generate(rendered, GenerationParams(max_tokens=5, temperature=0,
                                                                     stop=("<|im_end|>",))))
    assert text == same
    text, _, last = _collect(own.chat(msgs, GenerationParams(max_tokens=5, temperature=0)))
    assert last.prompt_tokens == len(own._tok.encode("user: hello\nassistant:", add_special_tokens=False))
    with pytest.raises(BadRequest):
        model.chat([{"role": "nobody", "content": "x"}], GenerationParams(max_tokens=2))


# ---- image classification -----------------------------------------------------------------------

def test_vit_classify_image_matches_pytorch(vit):
    png = _png(50, 40, seed=4)
    from PIL import Image

    proc = transformers.ViTImageProcessor.from_pretrained(vit.src)
    ref_model = _torch_model(transformers.ViTForImageClassification, vit.src)
    pixels = proc(images=Image.open(io.BytesIO(png)).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        ref_logits = ref_model(pixel_values=pixels).logits[0].numpy()
    impl = vit.model._impl
    ours_pixels = impl.preprocess(Image.open(io.BytesIO(png)).convert("RGB"))
    assert np.abs(ours_pixels - pixels.numpy()).max() < 1e-5
    assert np.abs(impl.logits(png) - ref_logits).max() < 1e-4

    result = vit.model.classify_image(png, top_k=2)
    probs = torch.softmax(torch.from_numpy(ref_logits), -1).numpy()
    labels = ["cat", "dog", "bird"]
    assert [r["label"] for r in result] == [labels[i] for i in np.argsort(-probs)[:2]]
    for r in result:
        assert abs(r["score"] - probs[labels.index(r["label"])]) < 1e-4
    assert len(vit.model.classify_image(_png(32, 32, mode="L"))) == 3  # greyscale is converted


def test_vit_refuses_bad_and_oversized_images(vit):
    m = vit.model
    with pytest.raises(BadRequest, match="not a decodable image"):
        m.classify_image(b"definitely not an image")
    with pytest.raises(BadRequest, match="not a decodable image"):
        m.classify_image(_png(40, 40)[:200])  # truncated
    with pytest.raises(BadRequest, match="oversized"):
        m.classify_image(_png(8000, 6000, mode="1"))  # 48 megapixels, a small file
    with pytest.raises(BadRequest, match="oversized"):
        m.classify_image(b"\x89PNG" + bytes(21 * 1024 * 1024))
    with pytest.raises(BadRequest):
        m.classify_image(_png(32, 32), top_k=0)
