"""The GGUF engine's parts that need no model: option sizing, slot placement for the prompt cache,
token-to-text streaming. (They import no llama_cpp.)"""
from __future__ import annotations

import pytest

from mlos_core.errors import BadRequest
from mlos_core.plugins.gguf import config
from mlos_core.plugins.gguf.prompt_cache import COPY_MIN_GAIN, common_prefix, place
from mlos_core.plugins.gguf.text import TextStream, split_utf8

MB = 2**20


# ---- config ------------------------------------------------------------------------------------------

def test_default_parallel_from_cores_and_model_size():
    assert config.default_parallel(250 * MB, 1) == 2
    assert config.default_parallel(250 * MB, 2) == 4
    assert config.default_parallel(250 * MB, 16) == 8
    assert config.default_parallel(5 * 2**30, 2) == 2
    assert config.default_parallel(5 * 2**30, 16) == 8


@pytest.mark.parametrize("extra, expected", [
    ({"parallel": 4, "n_ctx_seq": 1024}, (4, 4096, 1024)),
    ({"parallel": 4, "n_ctx": 4096}, (4, 4096, 1024)),
    ({"parallel": 2, "n_ctx": 4096, "n_ctx_seq": 1024}, (2, 4096, 1024)),  # more room than needed is fine
    ({"parallel": 3}, (3, 3 * 2048, 2048)),
])
def test_resolve_sizes(extra, expected):
    c = config.resolve({**extra, "n_threads": 2}, file_bytes=250 * MB, trained_ctx=32768)
    assert (c.parallel, c.n_ctx, c.n_ctx_seq) == expected and c.n_threads == 2 and c.n_batch == 512


def test_default_context_is_capped_by_training():
    c = config.resolve({"parallel": 2}, file_bytes=MB, trained_ctx=512)
    assert (c.n_ctx_seq, c.n_ctx) == (512, 1024)


@pytest.mark.parametrize("extra, message", [
    ({"parallel": 4, "n_ctx_seq": 1024, "n_ctx": 2048},
     "n_ctx 2048 is too small for parallel 4 x n_ctx_seq 1024 = 4096 tokens: raise n_ctx to 4096, or lower "
     "parallel to 2 or n_ctx_seq to 512"),
    ({"parallel": 8, "n_ctx": 256},
     "n_ctx 256 over parallel 8 slots leaves 32 tokens per sequence, fewer than 64: raise n_ctx to 512 or lower "
     "parallel to 4"),
    ({"parallel": 65}, "option parallel must be at most 64, got 65"),
    ({"parallel": 0}, "option parallel must be a positive integer, got 0"),
    ({"n_ctx_seq": "long"}, "option n_ctx_seq must be a positive integer, got 'long'"),
])
def test_resolve_refuses_with_the_numbers(extra, message):
    with pytest.raises(BadRequest) as e:
        config.resolve(extra, file_bytes=250 * MB)
    assert e.value.message == message


def test_a_slot_may_not_exceed_the_trained_context():
    with pytest.raises(BadRequest) as e:
        config.resolve({"parallel": 2, "n_ctx": 80_000}, file_bytes=MB, trained_ctx=32768)
    assert e.value.message == ("n_ctx 80000 over parallel 2 slots gives 40000 tokens per sequence, more than the "
                               "32768 tokens this model was trained for: lower n_ctx to 65536 or less")
    with pytest.raises(BadRequest) as e:
        config.resolve({"n_ctx_seq": 40_000}, file_bytes=MB, trained_ctx=32768)
    assert e.value.message == "option n_ctx_seq 40000 is more than the 32768 tokens this model was trained for"
    assert config.resolve({"parallel": 4, "n_ctx": 4 * 32768}, file_bytes=MB, trained_ctx=32768).n_ctx_seq == 32768


def test_default_parallel_is_named_in_a_refusal(monkeypatch):
    monkeypatch.setattr(config, "physical_cores", lambda: 2)
    with pytest.raises(BadRequest) as e:
        config.resolve({"n_ctx": 1024, "n_ctx_seq": 512}, file_bytes=250 * MB)
    assert e.value.message.startswith("n_ctx 1024 is too small for parallel 4 (the default here) x n_ctx_seq 512")


# ---- prompt cache placement --------------------------------------------------------------------------

class FakeSlot:
    def __init__(self, seq_id, cached, last_used, busy=False):
        self.seq_id, self.cached, self.last_used, self.busy = seq_id, list(cached), last_used, busy

    @property
    def free(self):
        return not self.busy


def test_common_prefix():
    a = list(range(300))
    assert common_prefix(a, a) == 300
    assert common_prefix(a, a[:130] + [-1] + a[131:]) == 130
    assert common_prefix([], a) == 0 and common_prefix([1, 2], [1, 2, 3]) == 2


def test_place_prefers_the_longest_cached_prefix_and_keeps_the_last_token():
    prompt = list(range(100))
    slots = [FakeSlot(0, [], 1.0), FakeSlot(1, prompt[:60] + [999], 5.0), FakeSlot(2, prompt, 3.0)]
    p = place(slots, prompt)
    assert p.slot.seq_id == 2 and p.reuse == 99 and p.copy_from is None  # the last token is computed again


def test_place_without_a_match_evicts_the_least_recently_used():
    slots = [FakeSlot(0, [7, 8], 4.0), FakeSlot(1, [9], 2.0), FakeSlot(2, [], 3.0, busy=True)]
    p = place(slots, [1, 2, 3])
    assert p.slot.seq_id == 1 and p.reuse == 0
    assert place(slots, [7, 8, 9], use_cache=False).reuse == 0  # cache_prompt false: nothing reused


def test_place_copies_a_busy_slots_prefix_when_it_gains_enough():
    prompt = list(range(200))
    busy = FakeSlot(0, prompt[:150] + [5000], 1.0, busy=True)
    slots = [busy, FakeSlot(1, prompt[:10], 9.0), FakeSlot(2, [77], 2.0)]
    p = place(slots, prompt)
    assert p.copy_from is busy and p.reuse == 150 and p.slot.seq_id == 2  # the LRU free slot receives it
    short = [busy, FakeSlot(1, prompt[:150 - COPY_MIN_GAIN + 1], 9.0)]
    p = place(short, prompt)
    assert p.copy_from is None and p.slot.seq_id == 1  # a smaller gain: its own prefix, no copy


def test_place_needs_a_free_slot():
    assert place([FakeSlot(0, [], 0.0, busy=True)], [1, 2]) is None


# ---- text --------------------------------------------------------------------------------------------

def pieces(*parts: bytes):
    return lambda token: parts[token]


def test_utf8_split_across_tokens_is_held_until_complete():
    euro = "€".encode()
    stream = TextStream(pieces(b"price: ", euro[:1], euro[1:], b"5"))
    assert [stream.push(i) for i in range(4)] == ["price: ", "", "€", "5"]
    assert split_utf8(b"ab\xe2\x82") == ("ab", b"\xe2\x82")
    assert split_utf8(b"a\xffb") == ("ab", b"")  # invalid bytes are dropped, as llama-cpp-python does


def test_stop_string_across_tokens_cuts_and_stops():
    stream = TextStream(pieces(b"Hello ", b"wor", b"ld", b"! more"), stops=("world!",))
    out = [stream.push(i) for i in range(4)]
    assert out == ["Hello ", "", "", ""] and stream.stopped and stream.flush() == ""
    stream = TextStream(pieces(b"a wo", b"nder"), stops=("world",))
    assert [stream.push(0), stream.push(1)] == ["a ", "wonder"] and not stream.stopped


def test_flush_gives_what_was_held():
    stream = TextStream(pieces(b"the en", b"\xe2"), stops=("end",))
    assert stream.push(0) == "the " and stream.push(1) == ""
    assert stream.flush() == "en"
