"""The two inference phases: warm-up, then timed repetitions of the same request, each answer
checked; for models with a PyTorch reference, the outputs compared numerically with it.

Tensor models (encoders, vision, CLIP, audio, decoders as NLP) are called on the Open Inference
Protocol (``/v2/models/{id}/infer``: explicit shapes and datatypes, so a decoder's empty key/value
cache travels too). LLMs: the small phase is a completion on the MLOS API (``{"prompt", ...}``), the
large phase a multi-turn ``/v1/chat/completions``; their parity is a first forward pass through the
v2 path against PyTorch's logits, or, for a GGUF conversion, llama.cpp's tokens against
transformers' (``generation_checks``). Encoder-decoders (``input_type: text2text``) generate
through the MLOS API and are compared token for token with transformers' ``generate``.
"""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import drift
from . import inputs as inp
from .core_proc import CoreServer, error_text
from .offline_models import References, parity
from .results import Interval, Parity, PhaseResult

try:  # the statistics may move into the validator (validation/stats.py); until then, the benchmarks'
    from .stats import percentile_ci  # type: ignore
except ImportError:
    from benchmarks.stats import percentile_ci


class CallFailed(Exception):
    pass


def _call(core: CoreServer, method: str, path: str, body, timeout: float):
    try:
        status, answer = core.call(method, path, body, timeout=timeout)
    except OSError as e:
        raise CallFailed(f"no answer from the core within {timeout:g} s: {e}") from None
    if status != 200:
        raise CallFailed(error_text(status, answer))
    return answer


def _timed(fn, warmup: int, reps: int) -> tuple[list[float], object]:
    last = None
    for _ in range(warmup):
        last = fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        last = fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return times, last


def _latency(result: PhaseResult, times: list[float], warmup: int) -> None:
    if not times:
        return
    ci = percentile_ci(times, 50.0)
    result.latency_ms = Interval(ci["value"], ci["ci_low"], ci["ci_high"], ci["n"])
    result.p90_ms = float(np.percentile(times, 90))
    result.p99_ms = float(np.percentile(times, 99))
    result.repetitions, result.warmup = len(times), warmup
    result.samples_ms = [round(t, 4) for t in times]


def _parity_check(refs: References, spec, arrays, core_out, tol: float) -> Parity:
    ok, why = refs.available(spec.source)
    if not ok:
        return Parity(why, None, None, None)
    ref = refs.outputs(spec.source, arrays)
    diff, common = parity(core_out, ref)
    # why: the reference (pytorch, torchvision, tensorflow)
    return Parity(why, diff, tol, diff <= tol, cosine=min(drift.cosine(core_out[k], ref[k]) for k in common))


def _tensor_phase(core, spec, size, ctx) -> PhaseResult:
    model = quote(ctx["model_id"], safe="")
    decoder = any(m["name"].startswith("past_key_values") for m in ctx["meta"]["inputs"])
    arrays = inp.tensors(spec, ctx["defaults"], size, ctx["package_path"], ctx["meta"]["inputs"])
    body = inp.v2_body(arrays, ["logits"] if decoder else None)
    result = PhaseResult("success")
    t0 = time.perf_counter()
    times, answer = _timed(lambda: _call(core, "POST", f"/v2/models/{model}/infer", body, ctx["timeout"]),
                           ctx["warmup"], ctx["reps"])
    result.time_ms = (time.perf_counter() - t0) * 1000.0
    _latency(result, times, ctx["warmup"])
    out = inp.v2_outputs(answer)
    result.details = {"request": {k: list(v.shape) for k, v in arrays.items()},
                      "outputs": {k: list(v.shape) for k, v in out.items()}}
    result.parity = _parity_check(ctx["refs"], spec, arrays, out, ctx["tolerance"])
    return result


def _llm_phase(core, spec, size, ctx) -> PhaseResult:
    model_id = ctx["model_id"]
    result = PhaseResult("success")
    gguf = spec.format == "gguf" or (ctx.get("format") == "gguf")
    if gguf and ctx["refs"].available(spec.source)[0]:
        # a conversion of a generated model: llama.cpp on its GGUF file against transformers, token for token
        from .generation_checks import gguf_parity

        t = time.perf_counter()
        text, _ = inp.prompt(spec, size)
        floor = (spec.extra.get("parameters") or {}).get("min_top1_agreement") or 0.9
        result.parity, details = gguf_parity(ctx["refs"], spec.source, text, Path(ctx["package_path"]),
                                             (ctx.get("conversion") or {}).get("quant"), float(floor))
        result.details = {"token_parity": details}
        result.time_ms = (time.perf_counter() - t) * 1000.0
    elif ctx["refs"].available(spec.source)[0] and ctx["meta"] and ctx["meta"].get("inputs"):
        # parity first: one forward pass of the prompt, empty cache, logits against PyTorch's
        result = _tensor_phase(core, spec, size, {**ctx, "reps": 1, "warmup": 0})
        result.details = {"parity_request": result.details["request"]}
    if size == "small":
        text, max_tokens = inp.prompt(spec, "small")
        body = {"prompt": text, "max_tokens": max_tokens, "temperature": 0}
        path = f"/v1/models/{quote(model_id, safe='')}/inference"
    else:
        _, max_tokens = inp.prompt(spec, "large")
        body = {"model": model_id, "messages": inp.conversation(spec, ctx["defaults"]),
                "max_tokens": max_tokens, "temperature": 0}
        path = "/v1/chat/completions"
    t0 = time.perf_counter()
    times, answer = _timed(lambda: _call(core, "POST", path, body, ctx["timeout"]), ctx["warmup"], ctx["reps"])
    result.time_ms += (time.perf_counter() - t0) * 1000.0
    _latency(result, times, ctx["warmup"])
    if size == "small":
        outputs = answer.get("outputs") or {}
        text, usage = outputs.get("generated_text"), outputs.get("usage") or answer.get("usage") or {}
        finish = outputs.get("finish_reason")
    else:
        choice = (answer.get("choices") or [{}])[0]
        text, usage, finish = (choice.get("message") or {}).get("content"), answer.get("usage") or {}, \
            choice.get("finish_reason")
    if not isinstance(text, str):
        raise CallFailed(f"the answer carries no generated text: {str(answer)[:300]}")
    result.details.update({"generated_text": text[:200], "finish_reason": finish, "usage": usage,
                           "turns": len(body.get("messages") or []) or None,
                           # greedy: a later run (or a quantised variant) is compared token by token
                           "generated_tokens": drift.token_ids(text, ctx["package_path"])})
    if result.parity is None:
        result.parity = Parity(ctx["refs"].available(spec.source)[1], None, None, None)
    return result


def run_phase(core: CoreServer, spec, size: str, ctx: dict) -> PhaseResult:
    """inference_small / inference_large. ``ctx``: model_id, meta (v2 metadata), package_path,
    defaults, refs, warmup, reps, timeout, tolerance."""
    t0 = time.perf_counter()
    try:
        if spec.input_type == "text2text":
            from .generation_checks import text2text_phase

            result = text2text_phase(core, spec, size, ctx)
        elif spec.category == "llm":
            result = _llm_phase(core, spec, size, ctx)
        else:
            if not ctx["meta"] or not ctx["meta"].get("inputs"):
                raise CallFailed("the core reports no tensor inputs for this model (GET /v2/models/{id})")
            result = _tensor_phase(core, spec, size, ctx)
    except (CallFailed, inp.InputError, ValueError) as e:
        return PhaseResult("timeout" if "within" in str(e) else "failed", (time.perf_counter() - t0) * 1000.0, str(e))
    if result.parity is not None and result.parity.passed is False:
        result.status = "failed"
        result.error = (f"outputs differ from {result.parity.reference}: max abs diff {result.parity.max_abs_diff:.3g} "
                        f"> tolerance {result.parity.tolerance:g}")
    return result
