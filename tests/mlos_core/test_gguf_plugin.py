"""The GGUF plugin on the real Gemma 3 270M Q4_K_M model, checked against llama-cpp-python
called directly (one sequence at a time: the engine's batching is in test_gguf_engine.py). The
model is loaded once for the module, with 4 slots of 512 tokens; generations are short."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from mlos_core.errors import BadRequest, InvalidTensor, UnprocessableModel
from mlos_core.plugins import plugin_for
from mlos_core.plugins.gguf import GgufPlugin
from mlos_core.plugins.gguf.config import default_parallel
from mlos_core.plugins.gguf.support import physical_cores
from mlos_core.smi import CHAT, EMBED, GENERATE, GenerationParams, LoadOptions, ModelSource
from mlos_core.sources import resolve

try:
    import llama_cpp
except Exception as e:  # ImportError, or OSError when libllama does not load
    pytest.skip(f"llama_cpp (llama-cpp-python) does not import here: {e}", allow_module_level=True)

N_CTX = 512  # per sequence
PARALLEL = 4
THREADS = 2
PROMPT = "The capital of France is"
GREEDY = GenerationParams(max_tokens=24, temperature=0.0, seed=1234)
DIRECT = dict(max_tokens=24, temperature=0.0, seed=1234, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def gemma_path():
    from tests.hub.repos import gemma_gguf

    return gemma_gguf()


@pytest.fixture(scope="module")
def model(gemma_path, tmp_path_factory):
    source = resolve(gemma_path, tmp_path_factory.mktemp("packages"))
    assert source.format == "gguf"
    m = plugin_for("gguf").load(source, LoadOptions(extra={"n_ctx_seq": N_CTX, "parallel": PARALLEL,
                                                           "n_threads": THREADS}))
    yield m
    m.unload()


@pytest.fixture(scope="module")
def direct(gemma_path):
    """llama-cpp-python's Llama with the engine's numerics: weights in llama.cpp's plain layout (the
    engine turns the repacked CPU layout off, see mlos_core/plugins/gguf/context.py) and flash
    attention, which llama.cpp picks on the CPU; with these the tokens must be equal."""
    import llama_cpp.llama_cpp as low

    default = low.llama_model_default_params

    def plain_layout():
        params = default()
        params.use_extra_bufts = False
        return params

    low.llama_model_default_params = plain_layout
    try:
        llm = llama_cpp.Llama(str(gemma_path), n_ctx=N_CTX, n_threads=THREADS, n_batch=512, flash_attn=True,
                              verbose=False)
    finally:
        low.llama_model_default_params = default
    yield llm
    llm.close()


def _text(chunks):
    return "".join(c.text for c in chunks)


# ---- plugin and metadata ---------------------------------------------------------------------------

def test_plugin_available_and_registered():
    plugin = plugin_for("gguf")
    assert isinstance(plugin, GgufPlugin) and plugin.id == "llama.cpp"
    assert plugin.availability() == (True, llama_cpp.__version__)


def test_plugin_reports_unavailable_without_llama_cpp(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # makes `import llama_cpp` fail
    ok, why = GgufPlugin().availability()
    assert not ok and why.startswith("llama_cpp (llama-cpp-python) does not import: ")


def test_metadata(model, gemma_path):
    md = model.metadata
    assert md.platform == "llama.cpp_gguf"
    assert [(t.name, t.dtype, t.shape) for t in md.inputs] == [("prompt", np.dtype(object), (-1,))]
    assert [(t.name, t.dtype, t.shape) for t in md.outputs] == [("text", np.dtype(object), (-1,))]
    p = md.properties
    assert p["architecture"] == "gemma3" and p["context_length"] == N_CTX
    assert p["parallel"] == PARALLEL and p["n_ctx"] == PARALLEL * N_CTX
    assert p["trained_context_length"] == 32768 and p["chat_template_source"] == "builtin:gemma3"
    assert model.tasks == {GENERATE, CHAT, EMBED}
    assert model.context_length() == N_CTX
    assert model.max_concurrency == model.concurrent_calls == PARALLEL
    # file + f16 KV cache: 18 layers x 4 x 512 positions x 1 KV head x (256 + 256) x 2 bytes
    assert model.memory_bytes() == gemma_path.stat().st_size + 18 * PARALLEL * N_CTX * 1 * 512 * 2


def test_default_options_and_override_template(gemma_path):
    m = GgufPlugin().load(ModelSource(gemma_path, "gguf"), LoadOptions(chat_template="{{ messages[0]['content'] }}!"))
    try:
        p = m.metadata.properties
        parallel = default_parallel(gemma_path.stat().st_size, physical_cores())
        assert p["context_length"] == 2048 and p["n_threads"] == physical_cores() and p["n_batch"] == 512
        assert p["parallel"] == parallel == (4 if physical_cores() == 2 else p["parallel"])
        assert p["n_ctx"] == parallel * 2048
        assert p["chat_template_source"] == "override"
        assert m.render_chat([{"role": "user", "content": "hi"}]) == "hi!"
    finally:
        m.unload()


def test_load_errors(tmp_path, gemma_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(gemma_path.read_bytes()[:1_000_000])
    with pytest.raises(UnprocessableModel) as e:
        GgufPlugin().load(ModelSource(broken, "gguf"), LoadOptions())
    assert e.value.message == ("GGUF model broken.gguf could not be loaded: the file is truncated or corrupt "
                               "(1000000 bytes): download or copy it again")
    assert e.value.detail == "gguf_init_from_reader: failed to read key-value pairs"  # llama.cpp's own words
    newer = tmp_path / "newer.gguf"
    newer.write_bytes(b"GGUF" + (99).to_bytes(4, "little") + bytes(64))
    with pytest.raises(UnprocessableModel) as e:
        GgufPlugin().load(ModelSource(newer, "gguf"), LoadOptions())
    assert e.value.message == ("GGUF model newer.gguf could not be loaded: its GGUF version is newer than this "
                               "llama.cpp reads: update llama-cpp-python or re-convert the model")
    assert "version 99" in e.value.detail
    half = tmp_path / "half.gguf"
    half.write_bytes(gemma_path.read_bytes()[: gemma_path.stat().st_size // 2])
    with pytest.raises(UnprocessableModel) as e:
        GgufPlugin().load(ModelSource(half, "gguf"), LoadOptions())
    assert e.value.message.endswith("the file is truncated or corrupt "
                                    f"({gemma_path.stat().st_size // 2} bytes): download or copy it again")
    assert "not within the file bounds" in e.value.detail
    with pytest.raises(BadRequest) as e:
        GgufPlugin().load(ModelSource(gemma_path, "gguf"), LoadOptions(extra={"n_ctx": "lots"}))
    assert e.value.message == "option n_ctx must be a positive integer, got 'lots'"


# ---- generation ------------------------------------------------------------------------------------

def test_greedy_generation_matches_llama_cpp(model, direct):
    chunks = list(model.generate(PROMPT, GREEDY))
    ours = _text(chunks)
    ref = direct.create_completion(PROMPT, **DIRECT)
    theirs = ref["choices"][0]["text"]
    assert ours == theirs and len(ours) > 20
    assert direct.tokenize(ours.encode(), add_bos=False) == direct.tokenize(theirs.encode(), add_bos=False)
    last = chunks[-1]
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert last.finish_reason == ref["choices"][0]["finish_reason"] == "length"
    assert (last.prompt_tokens, last.completion_tokens) == (ref["usage"]["prompt_tokens"], ref["usage"]["completion_tokens"])
    assert model.count_tokens(PROMPT) == len(direct.tokenize(PROMPT.encode())) == last.prompt_tokens


def test_stop_sequence_matches_llama_cpp(model, direct):
    full = _text(model.generate(PROMPT, GREEDY))
    stop = " France"
    assert stop in full
    chunks = list(model.generate(PROMPT, GenerationParams(max_tokens=24, temperature=0.0, seed=1234, stop=(stop,))))
    ref = direct.create_completion(PROMPT, stop=[stop], **DIRECT)
    assert _text(chunks) == ref["choices"][0]["text"] == full[:full.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].completion_tokens == ref["usage"]["completion_tokens"]


def test_seeded_sampling_matches_llama_cpp(model, direct):
    """Per-request sampling parameters go through llama.cpp's own sampler chain: with the same seed,
    temperature, top-k, top-p and repetition penalty, the same tokens as llama-cpp-python."""
    params = GenerationParams(max_tokens=24, temperature=0.8, top_p=0.9, top_k=40, seed=7, repetition_penalty=1.3)
    ours = _text(model.generate(PROMPT, params))
    ref = direct.create_completion(PROMPT, max_tokens=24, temperature=0.8, top_p=0.9, top_k=40, seed=7,
                                   repeat_penalty=1.3, min_p=0.0)
    assert ours == ref["choices"][0]["text"]
    greedy = _text(model.generate(PROMPT, GREEDY))
    assert ours != greedy  # the draw did sample


def test_cancellation_stops_early(model):
    seen = []
    params = GenerationParams(max_tokens=64, temperature=0.0)
    for chunk in model.generate("Once upon a time", params, cancelled=lambda: len(seen) >= 3):
        seen.append(chunk)
    assert len(seen) == 4 and seen[-1].finish_reason == "cancelled"
    assert seen[-1].completion_tokens == 3
    # the slot was freed: the model serves the next request
    assert list(model.generate(PROMPT, GenerationParams(max_tokens=2, temperature=0.0)))[-1].completion_tokens == 2


def test_chat_renders_gemma_builtin_template_and_matches_llama_cpp(model, direct):
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}]
    prompt = model.render_chat(messages)
    assert prompt == ("<bos><start_of_turn>user\nAnswer briefly.\n\nWhat is the capital of France?<end_of_turn>\n"
                      "<start_of_turn>model\n")
    params = GenerationParams(max_tokens=32, temperature=0.0, seed=1234)
    chunks = list(model.chat(messages, params))
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].completion_tokens > 0
    # the same as llama.cpp on the rendered prompt (its <bos> is the BOS token, added once)
    tokens = direct.tokenize(prompt.encode(), add_bos=False, special=True)
    assert tokens[0] == direct.token_bos() and tokens.count(direct.token_bos()) == 1
    ref = direct.create_completion(tokens, **{**DIRECT, "max_tokens": 32})
    assert _text(chunks) == ref["choices"][0]["text"]
    assert chunks[-1].finish_reason == ref["choices"][0]["finish_reason"]
    assert (chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (len(tokens), ref["usage"]["completion_tokens"])


# ---- embeddings and tokens -------------------------------------------------------------------------

def test_embed_unit_rows_and_similarity(model):
    rows = model.embed(["The cat sat on the mat.", "A cat was sitting on a mat.",
                        "Quarterly tax filings are due in April."])
    assert rows.dtype == np.float32 and rows.shape == (3, 640)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    sim = rows @ rows.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[1, 2]


def test_count_tokens(model, direct):
    for text in ("Hello world", "<start_of_turn>user\nhi", "naïve café — 日本語"):
        assert model.count_tokens(text) == len(direct.tokenize(text.encode(), add_bos=True, special=True))


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("messages, expected", [
    ([], "messages is empty: give at least one message"),
    ([{"role": "wizard", "content": "hi"}],
     "messages[0].role 'wizard' is not a chat role; use one of: system, user, assistant, tool"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]}],
     "messages[0].content[0] is an image part ('image_url'): this model takes text only"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
     "the chat template refused the messages: Conversation roles must alternate user/assistant/user/assistant/..."),
])
def test_chat_bad_messages(model, messages, expected):
    with pytest.raises(BadRequest) as e:
        model.chat(messages, GREEDY)
    assert e.value.message == expected


@pytest.mark.parametrize("prompt, params, expected", [
    (PROMPT, GenerationParams(max_tokens=0), "max_tokens must be a positive integer, got 0"),
    (PROMPT, GenerationParams(max_tokens=510),
     "the prompt takes 6 tokens and max_tokens is 510: together 516, more than this model's context of 512 tokens "
     "(n_ctx 2048 over 4 slots)"),
    ("", GREEDY, "prompt is empty"),
    ("  \n", GREEDY, "prompt is empty"),
    ("bad \ud800 text", GREEDY, "prompt is not valid UTF-8 text (unpaired surrogate at position 4)"),
    (PROMPT, GenerationParams(temperature=-1.0), "temperature must be 0 (greedy) or more, got -1.0"),
    (PROMPT, GenerationParams(top_k=-2), "top_k must be 0 (off) or a positive integer, got -2"),
])
def test_generate_bad_input(model, prompt, params, expected):
    with pytest.raises(BadRequest) as e:
        model.generate(prompt, params)  # refused at the call, before any token
    assert e.value.message == expected


def test_chat_over_context(model):
    with pytest.raises(BadRequest) as e:
        model.chat([{"role": "user", "content": "hi"}], GenerationParams(max_tokens=600))
    assert e.value.message.endswith("max_tokens is 600: together 610, more than this model's context of 512 tokens "
                                    "(n_ctx 2048 over 4 slots)")


def test_embed_and_infer_bad_input(model):
    with pytest.raises(BadRequest) as e:
        model.embed([])
    assert e.value.message == "input is empty: give at least one text to embed"
    with pytest.raises(BadRequest) as e:
        model.embed(["ok", ""])
    assert e.value.message == "input[1] is empty"
    with pytest.raises(InvalidTensor):
        model.infer({"input_ids": np.array([1, 2])})
    with pytest.raises(InvalidTensor):
        model.infer({"prompt": np.array([[b"a"]], dtype=object)})
    with pytest.raises(BadRequest) as e:
        model.infer({"prompt": np.array([b"\xff\xfe"], dtype=object)})
    assert e.value.message == "prompt[0] is not valid UTF-8 (bad byte at offset 0)"
