"""Generators checked token for token against transformers.

* Encoder-decoders (``input_type: text2text``, T5 and BART): the core generates through the MLOS
  API (``{"text": ...}`` -> ``token_ids``), greedily; the small phase one prompt, the large phase a
  batch of prompts of different lengths in one request. Parity: every prompt's ids equal
  transformers' greedy ``generate`` over the same padded batch, up to its end-of-sequence token.
* GGUF conversions of the LLM rows: llama.cpp itself (llama-cpp-python, the package's GGUF file)
  against transformers on the same prompt ids. Checked: the prompt tokenises the same; the first
  ``GREEDY_N`` greedy tokens are equal; teacher-forced (both fed transformers' continuation), the
  argmax agrees at every position. Where PyTorch's two best logits are closer than ``TIE_FACTOR``
  times the largest logit difference seen, 16-bit rounding may flip the argmax: such positions are
  counted as near-ties, not failures, and the free-running comparison ends at the first one (the two
  continuations may then legitimately part). A quantised file (Q8_0, Q4_K_M...) is held to the
  looser ``parameters.min_top1_agreement`` of its row instead.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .results import Parity, PhaseResult

# 16 tokens: the small LLM phase's budget; with random tiny models whose logits span about 0.5,
# the F16 rounding (max logit difference ~2e-4 measured) leaves the argmax alone over that many
# steps unless a near-tie occurs, which is then reported as such
GREEDY_N = 16
TIE_FACTOR = 2.0
LOSSLESS = ("F32", "F16", "BF16")


# ---- encoder-decoders through the core -----------------------------------------------------------

def text2text_prompts(spec, defaults: dict, size: str) -> list[str]:
    """The small phase's one text; the large phase's ``large_input.batch`` texts of different
    lengths (growing prefixes, by words, of the large test text)."""
    from .inputs import _text

    text = _text(spec, defaults, size)
    if size == "small":
        return [text]
    words = text.split()
    batch = int(spec.large_input.get("batch", 4))
    return [" ".join(words[:max(1, math.ceil(len(words) * (k + 1) / batch))]) for k in range(batch)]


def text2text_phase(core, spec, size: str, ctx: dict) -> PhaseResult:
    from .inference import CallFailed, _call, _latency, _timed

    io = spec.large_input if size == "large" else spec.small_input
    n = int(io.get("max_tokens", 16))
    texts = text2text_prompts(spec, ctx["defaults"], size)
    body = {"text": texts[0] if size == "small" else texts, "max_tokens": n, "temperature": 0}
    path = f"/v1/models/{quote(ctx['model_id'], safe='')}/inference"
    result = PhaseResult("success")
    t0 = time.perf_counter()
    times, answer = _timed(lambda: _call(core, "POST", path, body, ctx["timeout"]), ctx["warmup"], ctx["reps"])
    result.time_ms = (time.perf_counter() - t0) * 1000.0
    _latency(result, times, ctx["warmup"])
    outputs = answer.get("outputs") or {}
    ids = outputs.get("token_ids")
    if ids is None:
        raise CallFailed(f"the answer carries no token_ids: {str(answer)[:300]}")
    got = [ids] if size == "small" else ids
    texts_out = outputs.get("generated_text")
    result.details = {"prompts": len(texts), "max_tokens": n, "finish_reason": outputs.get("finish_reason"),
                      "generated_text": (texts_out if isinstance(texts_out, str) else (texts_out or [""])[0])[:200],
                      "usage": outputs.get("usage")}
    ok, why = ctx["refs"].available(spec.source)
    result.parity = seq2seq_parity(ctx["refs"], spec.source, texts, n, got) if ok else Parity(why, None, None, None)
    return result


def seq2seq_parity(refs, source: str, texts: list[str], n: int, got: list[list[int]]) -> Parity:
    want, eos = refs.seq2seq_greedy(source, texts, n)
    rows_equal, tokens, first_bad = 0, 0, None
    for i, (g, w) in enumerate(zip(got, want)):
        expected = w[:-1] if w and w[-1] == eos else w   # the core leaves EOS out: it ends the text
        tokens += len(expected)
        if g == expected:
            rows_equal += 1
        elif first_bad is None:
            at = next((j for j, (a, b) in enumerate(zip(g, expected)) if a != b), min(len(g), len(expected)))
            first_bad = f"prompt {i} differs at token {at}: core {g[at:at + 4]}, transformers {expected[at:at + 4]}"
    distinct = len({t for w in want for t in w})
    measure = (f"{rows_equal}/{len(texts)} prompts' greedy token ids equal to transformers' generate "
               f"({tokens} tokens, {distinct} distinct, max_tokens {n})")
    if len(got) != len(want):
        return Parity("pytorch greedy tokens", None, None, False, measure=f"{len(got)} generations for {len(want)} prompts")
    if distinct < 3:   # a reference of one repeated token proves little about the cache
        return Parity("pytorch greedy tokens", None, None, False,
                      measure=measure + ": the reference is degenerate (fewer than 3 distinct tokens)")
    passed = rows_equal == len(texts)
    return Parity("pytorch greedy tokens", None, None, passed, measure=measure if passed else f"{measure}; {first_bad}")


# ---- GGUF files on llama.cpp -------------------------------------------------------------------------

def _gguf_file(package: Path) -> Path:
    files = sorted(Path(package).glob("*.gguf"))
    if len(files) != 1:
        raise ValueError(f"expected one GGUF file in {package}, found {[f.name for f in files]}")
    return files[0]


def gguf_parity(refs, source: str, prompt: str, gguf: Path, quant: str | None,
                min_top1: float = 0.9) -> tuple[Parity, dict]:
    """llama.cpp on a GGUF file (or the one a package holds) against transformers' model of
    ``source`` (``tiny:<arch>``), see the module docstring; ``min_top1`` is the floor of a
    quantised file's teacher-forced top-1 agreement. Returns the Parity and its figures."""
    import llama_cpp

    gguf = _gguf_file(gguf) if Path(gguf).is_dir() else Path(gguf)
    quant = (quant or "").upper() or "F16"
    ids, ref = refs.causal_greedy(source, prompt, GREEDY_N)
    tok = refs.tokenizer(source)
    eos = tok.eos_token_id
    seq = ids + ref
    llm = llama_cpp.Llama(str(gguf), n_ctx=max(256, len(seq) + 8), n_batch=max(256, len(seq) + 8), n_threads=2,
                          logits_all=True, verbose=False)
    try:
        prompt_ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.eval(ids)
        greedy = []
        for _ in range(GREEDY_N):
            scores = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            if eos is not None:
                scores[eos] = -np.inf          # as min_new_tokens does on the reference side
            token = int(np.argmax(scores))
            greedy.append(token)
            llm.eval([token])
        llm.reset()
        llm.eval(seq)
        ours = np.array(llm.scores[len(ids) - 1:len(seq) - 1], dtype=np.float64)
    finally:
        llm.close()
    theirs = refs.causal_logits(source, seq)[len(ids) - 1:len(seq) - 1].astype(np.float64)
    if eos is not None:
        ours[:, eos] = theirs[:, eos] = -np.inf
    finite = np.isfinite(theirs)
    with np.errstate(invalid="ignore"):
        diff = float(np.max(np.abs(np.where(finite, ours - theirs, 0.0))))
    top2 = np.sort(theirs, axis=-1)[:, -2:]
    gaps = top2[:, 1] - top2[:, 0]
    agree = ours.argmax(-1) == theirs.argmax(-1)
    ties = gaps <= TIE_FACTOR * diff
    first_tie = int(np.argmax(ties)) if ties.any() else GREEDY_N
    equal_prefix = next((i for i, (a, b) in enumerate(zip(greedy, ref)) if a != b), GREEDY_N)
    rate = float(agree.mean())
    tok_equal = prompt_ids == ids
    details = {"gguf": gguf.name, "quant": quant, "greedy_n": GREEDY_N, "greedy_equal_prefix": equal_prefix,
               "first_near_tie": first_tie if ties.any() else None, "near_ties": int(ties.sum()),
               "top1_agreement": round(rate, 4), "max_abs_logit_diff": diff, "prompt_tokens_equal": tok_equal,
               "reference_distinct_tokens": len(set(ref))}
    if quant in LOSSLESS:
        passed = tok_equal and bool(np.all(agree | ties)) and equal_prefix >= min(GREEDY_N, first_tie)
        measure = (f"prompt tokens {'equal' if tok_equal else 'DIFFER'}; {equal_prefix}/{GREEDY_N} greedy tokens "
                   f"equal{f' (first near-tie at {first_tie})' if ties.any() else ''}; teacher-forced top-1 "
                   f"agreement {rate:.2f} over {GREEDY_N} ({int(ties.sum())} near-ties); {quant} on llama.cpp")
        return Parity("pytorch greedy tokens", diff, None, passed, measure=measure), details
    floor = float(min_top1)
    passed = tok_equal and rate >= floor
    measure = (f"prompt tokens {'equal' if tok_equal else 'DIFFER'}; teacher-forced top-1 agreement {rate:.2f} "
               f"(at least {floor:.2f} for {quant}) over {GREEDY_N}; {equal_prefix}/{GREEDY_N} greedy tokens equal")
    return Parity("pytorch top-1 agreement", diff, None, passed, measure=measure), details
