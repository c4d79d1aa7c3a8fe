"""The GGUF continuous-batching engine on the real Gemma 3 270M Q4_K_M: sequences decoded together
give exactly what each gives alone, a cancelled one leaves at the next step, a reused prompt prefix
gives the same tokens as computing it, embeddings of many calls share decodes. One model for the
module: 8 slots of 256 tokens, one llama.cpp thread (two threads meet at a spinning barrier after
every operation, which crawls when the machine is shared and one of them is descheduled; a row's
result does not depend on the thread count)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mlos_core.smi import GenerationParams, LoadOptions, ModelSource

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test installs it)")

PARALLEL = 8
N_CTX_SEQ = 256
GREEDY = GenerationParams(max_tokens=32, temperature=0.0)
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a village by the sea,",
    "def fibonacci(n):",
    "Tell Alice a fun fact about the number 7.",
    "Les trois plus grandes villes d'Italie sont",
    "A recipe for pancakes: first, take",
    "The theory of relativity says that " + "space and time are linked, " * 12,  # a longer prompt
    "Q: What is 12 times 12?\nA:",
]
# per-request sampling: two of the eight draw with their own parameters and seeds
PARAMS = [GREEDY] * 6 + [
    GenerationParams(max_tokens=32, temperature=0.8, top_p=0.9, top_k=40, seed=7),
    GenerationParams(max_tokens=32, temperature=0.7, repetition_penalty=1.3, seed=11),
]


@pytest.fixture(scope="module")
def model():
    from mlos_core.plugins import plugin_for
    from tests.hub.repos import gemma_gguf

    m = plugin_for("gguf").load(ModelSource(gemma_gguf(), "gguf"),
                                LoadOptions(extra={"parallel": PARALLEL, "n_ctx_seq": N_CTX_SEQ, "n_threads": 1}))
    yield m
    m.unload()


def _run(model, prompt, params, cancelled=lambda: False):
    chunks = list(model.generate(prompt, params, cancelled))
    return "".join(c.text for c in chunks), chunks[-1]


def _no_cache(params: GenerationParams) -> GenerationParams:
    return GenerationParams(**{**params.__dict__, "cache_prompt": False})


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _steps_of_at_least(stats, tokens: int) -> int:
    h = stats["iteration_tokens"]
    return sum(n for bound, n in zip([*h["buckets"], float("inf")], h["counts"]) if bound >= tokens)


def test_a_rows_logits_do_not_depend_on_its_batch_neighbours(model):
    """The property the engine rests on, bit for bit: the logits of every step of a sequence are
    the same alone, with the 7 others from the first step, and with the others joining one per
    step (their prompts then share steps with its decode rows)."""
    from mlos_core.plugins.gguf.context import Batch, new_context
    from mlos_core.plugins.gguf.engine import PROMPT_CHUNK

    lm = model._model
    ctx = new_context(lm, n_ctx=8 * 256, n_seq_max=8, n_batch=512, n_threads=1)
    mem, batch, n_vocab = llama_cpp.llama_get_memory(ctx), Batch(512), lm.n_vocab()
    prompts = [lm.tokenize(p.encode(), True, True) for p in PROMPTS]

    def run(seqs, steps=6, stagger=False):
        llama_cpp.llama_memory_clear(mem, True)
        pending = {s: list(prompts[s]) for s in seqs}
        pos = dict.fromkeys(seqs, 0)
        logits = {s: [] for s in seqs}
        nxt: dict = {}
        joined = list(seqs[:1]) if stagger else list(seqs)
        while any(len(logits[s]) < steps for s in seqs):
            batch.clear()
            rows = {}
            for s in joined:
                if s in nxt and len(logits[s]) < steps:
                    rows[s] = batch.add([nxt.pop(s)], pos[s], s, True)
                    pos[s] += 1
                elif pending[s]:
                    chunk, pending[s] = pending[s][:PROMPT_CHUNK], pending[s][PROMPT_CHUNK:]
                    r = batch.add(chunk, pos[s], s, not pending[s])
                    pos[s] += len(chunk)
                    if not pending[s]:
                        rows[s] = r
            batch.decode(ctx)
            for s, r in rows.items():
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, r), shape=(n_vocab,)).copy()
                logits[s].append(row)
                nxt[s] = int(row.argmax())
            if stagger and len(joined) < len(seqs):
                joined.append(seqs[len(joined)])
        return logits

    try:
        alone = {s: run([s])[s] for s in range(len(PROMPTS))}
        for stagger in (False, True):
            together = run(list(range(len(PROMPTS))), stagger=stagger)
            for s, rows in together.items():
                for step, (got, ref) in enumerate(zip(rows, alone[s])):
                    assert np.array_equal(got, ref), f"sequence {s}, step {step}, stagger={stagger}"
    finally:
        batch.free()
        llama_cpp.llama_free(ctx)


def test_eight_concurrent_generations_equal_each_alone(model):
    solo = [_run(model, p, _no_cache(params)) for p, params in zip(PROMPTS, PARAMS)]
    before = model.serving_stats()
    results: list = [None] * len(PROMPTS)
    barrier = threading.Barrier(len(PROMPTS))

    def client(i):
        barrier.wait()
        results[i] = _run(model, PROMPTS[i], PARAMS[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, ((text, last), (ref_text, ref_last)) in enumerate(zip(results, solo)):
        assert text == ref_text, f"prompt {i} differs when decoded with the others"
        assert (last.finish_reason, last.completion_tokens, last.prompt_tokens) == \
            (ref_last.finish_reason, ref_last.completion_tokens, ref_last.prompt_tokens)
        assert len(text) > 10
    after = model.serving_stats()
    # they ran together: decode steps carried 5 or more rows (one new token of each running sequence)
    assert _steps_of_at_least(after, 5) - _steps_of_at_least(before, 5) >= 10, after["iteration_tokens"]
    assert after["slots_busy"] == 0 and after["slots_total"] == PARALLEL
    assert after["generation_tokens"] - before["generation_tokens"] == sum(r[1].completion_tokens for r in results)


def test_cancelled_generation_leaves_at_the_next_step(model):
    cancel = threading.Event()
    out: dict = {}

    def client():
        out["chunks"] = list(model.generate("Write a very long story about a dragon.",
                                            GenerationParams(max_tokens=200, temperature=0.0),
                                            cancelled=cancel.is_set))

    t = threading.Thread(target=client)
    t.start()
    assert _wait(lambda: model.serving_stats()["generation_tokens"] > 0 and model.serving_stats()["slots_busy"] == 1)
    steps = model.serving_stats()["decode_steps"]
    cancel.set()  # the client went away; nobody reads its tokens any more
    assert _wait(lambda: model.serving_stats()["slots_busy"] == 0, timeout=10)
    assert model.serving_stats()["decode_steps"] - steps <= 1  # freed before (or right after) the next step
    t.join(10)
    assert not t.is_alive()
    seen = out["chunks"]
    assert seen[-1].finish_reason == "cancelled" and seen[-1].completion_tokens < 200
    # the slot serves the next request at once
    text, last = _run(model, "The capital of France is", GenerationParams(max_tokens=4, temperature=0.0))
    assert last.completion_tokens == 4 and last.finish_reason == "length"


def test_a_released_stream_frees_its_slot(model):
    stream = model.generate("Count from one to one hundred:", GenerationParams(max_tokens=200, temperature=0.0))
    next(stream)
    next(stream)
    assert model.serving_stats()["slots_busy"] == 1
    stream.close()  # the reader stops (GeneratorExit): the request is released
    assert _wait(lambda: model.serving_stats()["slots_busy"] == 0, timeout=10)


def test_prompt_cache_reuse_is_exact(model):
    tok = model._model
    system = ("You are a careful assistant for a small bakery in Lyon. The bakery opens at seven, sells bread, "
              "croissants and cakes, and closes on Mondays. Answer in one short sentence. ") * 3
    first, second = system + "Q: When do you open?\nA:", system + "Q: What do you sell?\nA:"
    refs = [_run(model, p, _no_cache(GREEDY)) for p in (first, second)]
    assert refs[0][1].cached_tokens == 0
    n_first = len(tok.tokenize(first.encode(), True, True))
    common = next(i for i, (a, b) in enumerate(zip(tok.tokenize(first.encode(), True, True),
                                                   tok.tokenize(second.encode(), True, True))) if a != b)
    assert common > 60
    before = model.serving_stats()
    warm = _run(model, first, GREEDY)  # the no-cache runs left this prompt in a slot: it is reused
    again = _run(model, second, GREEDY)
    assert warm[0] == refs[0][0] and again[0] == refs[1][0]
    assert warm[1].cached_tokens == n_first - 1  # all but the last prompt token, whose logits are needed
    assert again[1].cached_tokens >= common
    after = model.serving_stats()
    assert after["prompt_cache_hits"] - before["prompt_cache_hits"] == warm[1].cached_tokens + again[1].cached_tokens
    assert after["prompt_cache_hit_requests"] - before["prompt_cache_hit_requests"] == 2


def test_a_busy_slots_prefix_is_copied_into_a_free_slot(model):
    prefix = "Zebra quartz violin harbor " * 10  # nothing else in this module shares it
    long_one, other = prefix + "Continue the list:", prefix + "Now something different:"
    ref = _run(model, other, _no_cache(GREEDY))
    started = threading.Event()
    holder: dict = {}

    def busy():
        chunks = []
        for c in model.generate(long_one, GenerationParams(max_tokens=120, temperature=0.0)):
            chunks.append(c)
            started.set()
        holder["chunks"] = chunks

    t = threading.Thread(target=busy)
    copies = model.serving_stats()["prompt_cache_copies"]
    t.start()
    assert started.wait(60)
    text, last = _run(model, other, GREEDY)  # the only slot holding the prefix is busy: its cells are copied
    t.join(60)
    assert model.serving_stats()["prompt_cache_copies"] == copies + 1
    assert last.cached_tokens >= 40 and text == ref[0]


def test_a_stop_token_ends_the_sequence_and_is_counted(model):
    """How a chat's single-token turn markers end a turn: the engine sends the token, then stops."""
    from mlos_core.plugins.gguf.sampler import Sampler
    from mlos_core.plugins.gguf.sequence import Finished, Request

    tokens = model._tokenize_prompt(b"The capital of France is")
    params = GenerationParams(max_tokens=20, temperature=0.0)
    plain = Request(tokens, params, Sampler(params, model._n_vocab), lambda: False)
    model._engine.submit(plain)
    events = list(plain.events())
    assert len(events) == 21 and events[-1] == Finished("length")
    k = next(i for i in range(1, 20) if events[i] not in events[:i])  # a token not sampled before
    stopper = Request(tokens, params, Sampler(params, model._n_vocab), lambda: False, stop_ids=frozenset({events[k]}))
    model._engine.submit(stopper)
    assert list(stopper.events()) == [*events[:k + 1], Finished("stop")]


def test_embeddings_of_concurrent_calls_share_decodes(model):
    from mlos_core.plugins.gguf.embedding import ROWS

    texts = [[f"{w} number {i}" for i in range(2)] for w in ("cats", "ships", "rain", "music")]
    flat = [t for ts in texts for t in ts]
    assert sum(len(model._model.tokenize(t.encode(), True, False)) for t in flat) <= ROWS  # fits one decode
    alone = [model.embed([t]) for t in flat]
    s0 = model.serving_stats()
    one = model.embed(flat)  # one call, eight texts: one decode
    s1 = model.serving_stats()
    assert s1["embedding_batches"] - s0["embedding_batches"] == 1
    assert s1["embedding_inputs"] - s0["embedding_inputs"] == 8
    # what each text gives alone: its rows do not depend on what shares the decode; only the mean
    # pooling (a sum over the decode's rows) rounds in its last bits (tiled attention gave ~1e-2)
    np.testing.assert_allclose(one, np.concatenate(alone), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)

    # four calls at once while a generation keeps the engine busy: they join the same decodes
    gen = threading.Thread(target=_run, args=(model, "Write a long poem about the sea.",
                                              GenerationParams(max_tokens=48, temperature=0.0)))
    gen.start()
    assert _wait(lambda: model.serving_stats()["slots_busy"] == 1)
    results: list = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def call(i):
        barrier.wait()
        results[i] = model.embed(texts[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gen.join()
    s2 = model.serving_stats()
    assert s2["embedding_inputs"] - s1["embedding_inputs"] == 8
    assert s2["embedding_batches"] - s1["embedding_batches"] < len(texts)
    np.testing.assert_allclose(np.concatenate(results), one, rtol=0, atol=1e-6)


def test_a_long_text_is_embedded_alone_and_the_same(model):
    from mlos_core.plugins.gguf.embedding import ROWS

    long_text = "The library opens at nine and closes at six, every day but Monday. " * 6
    assert len(model._model.tokenize(long_text.encode(), True, False)) > ROWS
    s0 = model.serving_stats()
    both = model.embed(["short one", long_text, "short two"])
    assert model.serving_stats()["embedding_batches"] - s0["embedding_batches"] == 3  # short, long alone, short
    np.testing.assert_allclose(both[1], model.embed([long_text])[0], rtol=0, atol=1e-6)


async def test_priority_decides_which_waiting_request_gets_the_next_slot(model):
    """The scheduler runs as many calls as the model has slots, whatever ``instances`` says; when
    one frees, the waiting call of highest priority takes it, not the oldest."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from mlos_core.registry.loading import instances_for
    from mlos_core.scheduler import ModelScheduler

    assert instances_for(2, model) == PARALLEL
    pool = ThreadPoolExecutor(PARALLEL + 2)
    scheduler = ModelScheduler(model, pool, instances=instances_for(2, model))
    gates = [threading.Event() for _ in range(PARALLEL)]
    holding = []
    order = []

    def hold(i):
        holding.append(i)
        gates[i].wait(60)
        return i

    def generate(tag):
        order.append(tag)
        return _run(model, "The capital of France is", GenerationParams(max_tokens=3, temperature=0.0))[0]

    try:
        holders = [asyncio.ensure_future(scheduler.submit_call(lambda i=i: hold(i))) for i in range(PARALLEL)]
        for _ in range(600):
            if len(holding) == PARALLEL:
                break
            await asyncio.sleep(0.05)
        assert len(holding) == PARALLEL and scheduler.queued == 0
        low = asyncio.ensure_future(scheduler.submit_call(lambda: generate("low"), priority=0))
        await asyncio.sleep(0.05)
        high = asyncio.ensure_future(scheduler.submit_call(lambda: generate("high"), priority=5))
        await asyncio.sleep(0.2)
        assert scheduler.queued == 2 and order == []
        gates[0].set()  # one slot frees: the later, higher-priority call takes it
        first = await asyncio.wait_for(high, 120)
        second = await asyncio.wait_for(low, 120)  # then the same slot, freed again, runs the other
        assert order == ["high", "low"] and first.outputs == second.outputs and len(first.outputs) > 0
        assert len(holding) == PARALLEL and not any(h.done() for h in holders[1:])
    finally:
        for g in gates:
            g.set()
        await asyncio.gather(*holders, return_exceptions=True)
        await scheduler.close()
        pool.shutdown(wait=False)
