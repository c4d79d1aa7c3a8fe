"""Encoder-decoders (T5, BART) served from optimum's seq2seq export, both layouts, against
transformers' own greedy ``generate``: real optimum exports of tiny random-weight models, real
onnxruntime, real HTTP for the API tests."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from axon_pkg.convert import conversion_available, convert_to_onnx
from mlos_core.detect import detect
from mlos_core.errors import BadRequest, UnprocessableModel
from mlos_core.plugins.onnx_graphs import seq2seq_graphs
from mlos_core.plugins.onnx_plugin import OnnxPlugin
from mlos_core.smi import GenerationParams, LoadOptions, ModelSource
from mlos_core.tasks import attach

from ..hub.repos import tiny_model_files

pytestmark = pytest.mark.skipif(not conversion_available()[0],
                                reason=f"the tiny models are exported with optimum: {conversion_available()[1]}")

# different lengths on purpose: the batch pads the shorter prompts (encoder attention mask)
PROMPTS = ["the quick brown fox", "hello world, this is a test sentence. i love this movie", "a"]
SPLIT = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
MERGED = ("encoder_model.onnx", "decoder_model_merged.onnx")
HEADS = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration"}


@dataclass
class Export:
    kind: str
    src: Path            # the SafeTensors model (transformers' reference)
    split: Path          # encoder + decoder + decoder_with_past
    merged: Path         # encoder + decoder_model_merged


@pytest.fixture(scope="module", params=["t5", "bart"])
def export(request, tmp_path_factory) -> Export:
    kind = request.param
    root = tmp_path_factory.mktemp(f"seq2seq-{kind}")
    src = root / "src"
    tiny_model_files(kind, src)
    result = convert_to_onnx(src, root / "all", all_graphs=True)
    assert result.converted, result.reason
    assert result.task == "text2text-generation-with-past"
    assert set(SPLIT + MERGED) <= set(result.files)
    dirs = {}
    for layout, files in (("split", SPLIT), ("merged", MERGED)):
        d = root / layout
        d.mkdir()
        for f in [*src.glob("*.json"), *(root / "all" / name for name in files)]:
            shutil.copy(f, d / f.name)
        dirs[layout] = d
    return Export(kind, src, dirs["split"], dirs["merged"])


_refs: dict = {}


def reference(export: Export, prompts: list[str], n: int) -> list[list[int]]:
    """transformers' greedy generate, batched with padding: the generated ids (start token dropped)
    up to and including the first end-of-sequence token. forced_eos_token_id is off: the core
    does not force EOS at the token budget (docs/models.md)."""
    key = (export.src, tuple(prompts), n)
    if key not in _refs:
        import torch
        import transformers as tf

        tok = tf.AutoTokenizer.from_pretrained(str(export.src))
        model = getattr(tf, HEADS[export.kind]).from_pretrained(str(export.src), use_safetensors=True).eval()
        enc = tok(prompts, return_tensors="pt", padding=True, return_token_type_ids=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=n, do_sample=False, num_beams=1, forced_eos_token_id=None)
        eos = model.generation_config.eos_token_id
        rows = []
        for row in out[:, 1:].tolist():
            cut = next((i for i, t in enumerate(row) if t == eos), None)
            rows.append(row if cut is None else row[:cut + 1])
        _refs[key] = rows
    return _refs[key]


def load(path: Path):
    found = detect(path)
    return attach(OnnxPlugin().load(ModelSource(found.model_path, found.format), LoadOptions()), path)


def _same(got, want: list[int], eos: int) -> None:
    """Our ids leave the end-of-sequence token out (it ends the sequence, it is not text)."""
    expected = want[:-1] if want and want[-1] == eos else want
    assert got.token_ids == expected
    assert got.finish_reason == ("stop" if want and want[-1] == eos else "length")


def _eos(export: Export) -> int:
    return json.loads((export.src / "generation_config.json").read_text())["eos_token_id"]


# ---- detection and loading -------------------------------------------------------------------

def test_both_layouts_are_one_onnx_model(export):
    for d in (export.split, export.merged):
        found = detect(d)
        assert (found.format, found.model_path) == ("onnx", d)
    assert list(seq2seq_graphs(export.split)) == ["encoder", "decoder", "decoder_with_past"]
    assert list(seq2seq_graphs(export.merged)) == ["encoder", "decoder_merged"]
    # with both layouts present the merged decoder is served (one copy of the weights)
    assert list(seq2seq_graphs(export.src.parent / "all")) == ["encoder", "decoder_merged"]


def test_an_encoder_alone_is_not_a_seq2seq_model(export, tmp_path):
    shutil.copy(export.split / "encoder_model.onnx", tmp_path / "encoder_model.onnx")
    (tmp_path / "other.onnx").write_bytes((export.split / "decoder_model.onnx").read_bytes())
    with pytest.raises(UnprocessableModel, match="several onnx files"):
        detect(tmp_path)
    assert seq2seq_graphs(tmp_path) is None


def test_the_graph_set_exposes_each_graph_and_no_tensors_of_its_own(export):
    model = load(export.merged)
    graphs = model.graphs()
    assert set(graphs) == {"encoder", "decoder_merged"}
    assert [t.name for t in graphs["encoder"].metadata.inputs] == ["input_ids", "attention_mask"]
    assert "use_cache_branch" in {t.name for t in graphs["decoder_merged"].metadata.inputs}
    assert model.metadata.inputs == () and "graphs" in model.metadata.properties
    assert model.task == "text2text-generation" and "generate" in model.tasks and "chat" not in model.tasks
    with pytest.raises(BadRequest, match="several ONNX graphs"):
        model.infer({"input_ids": np.zeros((1, 2), np.int64)})


# ---- the generation loop -------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["split", "merged"])
def test_greedy_batch_of_different_lengths_equals_transformers(export, layout):
    model = load(getattr(export, layout))
    want = reference(export, PROMPTS, 20)
    got = model.generate_batch(PROMPTS, GenerationParams(max_tokens=20, temperature=0))
    assert len(got) == len(PROMPTS)
    for g, w, prompt in zip(got, want, PROMPTS):
        _same(g, w, _eos(export))
        assert g.prompt_tokens == len(model._tok.encode(prompt))
        assert g.text == model._tok.decode(g.token_ids)
    # not one repeated token, and not the same for every prompt: the comparison means something
    assert max(len(set(g.token_ids)) for g in got) >= 5
    assert len({tuple(g.token_ids) for g in got}) >= 2


@pytest.mark.parametrize("layout", ["split", "merged"])
def test_a_prompt_alone_generates_what_it_does_in_a_batch(export, layout):
    model = load(getattr(export, layout))
    batch = model.generate_batch(PROMPTS, GenerationParams(max_tokens=12, temperature=0))
    for prompt, together in zip(PROMPTS, batch):
        chunks = list(model.generate(prompt, GenerationParams(max_tokens=12, temperature=0)))
        last = chunks[-1]
        assert last.token_ids == together.token_ids
        assert "".join(c.text for c in chunks) == together.text
        assert last.finish_reason == together.finish_reason


def test_the_cache_gives_what_recomputing_the_whole_sequence_gives(export, tmp_path):
    """Without decoder_with_past every step re-runs the decoder over the whole sequence: the
    cached loop (both layouts) must choose the same tokens."""
    nocache = tmp_path / "nocache"
    shutil.copytree(export.split, nocache)
    (nocache / "decoder_with_past_model.onnx").unlink()
    plain = load(nocache)
    assert plain._impl.with_past is None
    p = GenerationParams(max_tokens=16, temperature=0)
    ref = [g.token_ids for g in plain.generate_batch(PROMPTS, p)]
    for d in (export.split, export.merged):
        assert [g.token_ids for g in load(d).generate_batch(PROMPTS, p)] == ref


@pytest.mark.parametrize("layout", ["split", "merged"])
def test_past_handling_self_attention_grows_cross_attention_stays(export, layout):
    """Every call of the with-past graph, recorded: one new token per sequence, the self-attention
    past one position longer each step, the cross-attention past the very arrays of step 0."""
    model = load(getattr(export, layout))
    impl = model._impl
    graph = impl.with_past
    calls = []
    original = graph.infer

    def record(inputs, outputs=None):
        calls.append(dict(inputs))
        return original(inputs, outputs)

    graph.infer = record
    try:
        got = model.generate_batch(PROMPTS[:2], GenerationParams(max_tokens=8, temperature=0))
    finally:
        del graph.infer
    steps = max(len(g.token_ids) for g in got)
    cached = [c for c in calls if not ("use_cache_branch" in c and not c["use_cache_branch"][0])]
    assert len(cached) >= steps - 1 >= 2
    cross = sorted(impl.cross_past)
    first = {name: cached[0][name] for name in cross}
    for i, c in enumerate(cached):
        assert c["input_ids"].shape == (2, 1)
        for name in impl.self_past:
            assert c[name].shape[0] == 2 and c[name].shape[2] == i + 1
        for name in cross:
            assert c[name] is first[name]
            assert c[name].shape[2] == c["encoder_attention_mask"].shape[1]
    if layout == "merged":
        assert all(c["use_cache_branch"][0] for c in cached)
        assert calls[0]["use_cache_branch"][0] == np.False_
        assert all(calls[0][name].shape[2] == 0 for name in impl.self_past)


def test_sampling_is_reproducible_and_follows_the_seed(export):
    model = load(export.merged)

    def run(seed):
        # hot enough to leave the (peaked) greedy path of these random models
        p = GenerationParams(max_tokens=12, temperature=8.0, top_k=60, top_p=0.99, seed=seed)
        return [g.token_ids for g in model.generate_batch(PROMPTS, p)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    greedy = [g.token_ids for g in model.generate_batch(PROMPTS, GenerationParams(max_tokens=12, temperature=0))]
    assert run(7) != greedy


def test_max_tokens_and_stop_strings(export):
    model = load(export.split)
    full = list(model.generate(PROMPTS[1], GenerationParams(max_tokens=20, temperature=0)))
    text = "".join(c.text for c in full)
    five = list(model.generate(PROMPTS[1], GenerationParams(max_tokens=5, temperature=0)))
    assert five[-1].completion_tokens == 5 and five[-1].finish_reason == "length"
    assert five[-1].token_ids == full[-1].token_ids[:5]
    stop = text.strip()[3:6]
    assert stop and stop in text
    cut = list(model.generate(PROMPTS[1], GenerationParams(max_tokens=20, temperature=0, stop=(stop,))))
    assert "".join(c.text for c in cut) == text[:text.index(stop)]
    assert cut[-1].finish_reason == "stop"


def test_forced_bos_is_the_first_token_where_the_config_says(export):
    model = load(export.split)
    got = model.generate_batch(PROMPTS, GenerationParams(max_tokens=6, temperature=1.0, seed=3))
    # transformers moves it from config.json to generation_config.json when saving
    forced = json.loads((export.src / "generation_config.json").read_text()).get("forced_bos_token_id")
    if export.kind == "bart":
        assert forced == 0 and all(g.token_ids[0] == 0 for g in got)
    else:
        assert forced is None and model._impl.forced_bos is None


def test_bad_requests_are_refused_up_front(export):
    model = load(export.merged)
    with pytest.raises(BadRequest, match="max_tokens"):
        model.generate("x", GenerationParams(max_tokens=0))
    with pytest.raises(BadRequest, match="non-empty list"):
        model.generate_batch([], GenerationParams())
    with pytest.raises(BadRequest, match="encoder takes at most"):
        model.generate("word " * 600, GenerationParams(max_tokens=2))
    from mlos_core.smi import TaskUnsupported

    with pytest.raises(TaskUnsupported):
        model.chat([{"role": "user", "content": "hi"}], GenerationParams())


# ---- through the server ------------------------------------------------------------------------

async def test_served_over_http_text_completions_stream_and_graphs(export, serving):
    client = await serving({"test/s2s@1": export.merged})
    mid = quote("test/s2s@1", safe="")
    want = reference(export, PROMPTS, 10)
    eos = _eos(export)

    r = await client.post(f"/v1/models/{mid}/inference", json={"text": PROMPTS[1], "max_tokens": 10, "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    assert body["task"] == "generate"
    w = want[1][:-1] if want[1][-1] == eos else want[1]
    assert body["outputs"]["token_ids"] == w

    r = await client.post(f"/v1/models/{mid}/inference", json={"text": PROMPTS, "max_tokens": 10, "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    assert [len(t) for t in body["outputs"]["token_ids"]] == [len(x) - (x[-1] == eos) for x in want]
    assert isinstance(body["outputs"]["generated_text"], list) and len(body["outputs"]["generated_text"]) == 3

    r = await client.post("/v1/completions", json={"model": "test/s2s@1", "prompt": PROMPTS[0], "max_tokens": 10,
                                                   "temperature": 0})
    plain = await r.json()
    assert r.status == 200, plain
    r = await client.post("/v1/completions", json={"model": "test/s2s@1", "prompt": PROMPTS[0], "max_tokens": 10,
                                                   "temperature": 0, "stream": True})
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    events = [ln[6:] for ln in (await r.text()).splitlines() if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    streamed = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert streamed == plain["choices"][0]["text"]
    assert plain["usage"]["completion_tokens"] == len(want[0]) - (want[0][-1] == eos)

    # chat: this model has no chat template
    r = await client.post("/v1/chat/completions", json={"model": "test/s2s@1",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 400 and "chat" in (await r.json())["error"]["message"]

    # the raw graphs, as tensor models of their own
    info = await (await client.get(f"/v1/models/{mid}")).json()
    assert set(info["graphs"]) == {"encoder", "decoder_merged"}
    enc_id = info["graphs"]["encoder"]["id"]
    assert enc_id == "test/s2s/encoder@1"
    meta = await (await client.get(f"/v2/models/{quote(enc_id, safe='')}")).json()
    assert meta["name"] == enc_id and [i["name"] for i in meta["inputs"]] == ["input_ids", "attention_mask"]
    ids = [[5, 6, 7, 8]]
    r = await client.post(f"/v2/models/{quote(enc_id, safe='')}/infer", json={"inputs": [
        {"name": "input_ids", "shape": [1, 4], "datatype": "INT64", "data": ids},
        {"name": "attention_mask", "shape": [1, 4], "datatype": "INT64", "data": [[1, 1, 1, 1]]}]})
    out = await r.json()
    assert r.status == 200, out
    assert out["model_name"] == enc_id and out["outputs"][0]["name"] == "last_hidden_state"
    states = np.array(out["outputs"][0]["data"], np.float32).reshape(out["outputs"][0]["shape"])
    direct = load(export.merged).graphs()["encoder"].infer(
        {"input_ids": np.array(ids, np.int64), "attention_mask": np.ones((1, 4), np.int64)})["last_hidden_state"]
    np.testing.assert_allclose(states, direct, rtol=1e-6)
    # the version path works too, and unknown graphs or tensors for the whole model are refused
    r = await client.get("/v2/models/" + quote("test/s2s/encoder", safe="") + "/versions/1")
    got = await r.json()   # the protocol answers with the name as asked (Triton's way), the version apart
    assert r.status == 200 and got["name"] == "test/s2s/encoder" and got["versions"] == ["1"]
    r = await client.post(f"/v2/models/{quote('test/s2s/nope@1', safe='')}/infer", json={"inputs": [
        {"name": "x", "shape": [1], "datatype": "INT64", "data": [1]}]})
    assert r.status == 404 and "encoder, decoder_merged" in (await r.json())["error"]
    r = await client.post(f"/v2/models/{mid}/infer", json={"inputs": [
        {"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [1]}]})
    assert r.status == 400 and "test/s2s/encoder@1" in (await r.json())["error"]


async def test_chat_with_a_template_given_at_register(export, serving):
    client = await serving()
    template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    r = await client.post("/v1/models/register", json={"model_id": "test/s2s-chat@1", "path": str(export.split),
                                                       "options": {"chat_template": template}})
    assert r.status == 200, await r.text()
    r = await client.post("/v1/chat/completions", json={
        "model": "test/s2s-chat@1", "messages": [{"role": "user", "content": PROMPTS[0]}], "max_tokens": 8,
        "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    # the template renders the prompt with a trailing space; without special tokens added
    model = load(export.split)
    ids = model._tok.encode(PROMPTS[0] + " ", add_special_tokens=False)
    rows = [model._impl._row(ids, ())]
    list(model._impl._loop(rows, GenerationParams(max_tokens=8, temperature=0), lambda: False))
    assert body["choices"][0]["message"]["content"] == rows[0].stream.text + rows[0].rest


async def test_a_safetensors_encoder_decoder_is_converted_and_served(export, serving):
    client = await serving({"test/s2s-st@1": export.src})
    info = await (await client.get("/v1/models/" + quote("test/s2s-st@1", safe=""))).json()
    assert info["state"] == "ready" and "encoder" in info["graphs"]
    r = await client.post("/v1/models/" + quote("test/s2s-st@1", safe="") + "/inference",
                          json={"text": PROMPTS[0], "max_tokens": 10, "temperature": 0})
    body = await r.json()
    assert r.status == 200, body
    want = reference(export, PROMPTS, 10)[0]
    assert body["outputs"]["token_ids"] == (want[:-1] if want[-1] == _eos(export) else want)
