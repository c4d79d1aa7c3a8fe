"""Quantised variants (validation.quantize) measured against their full-precision parent in the
same run, through the same core, on the suite's own inputs.

Every arm (the parent and each variant) is registered with the core from its bare file, so all
take the same path. Speed is measured like the kernel comparison (validation/compare.py): rounds
interleaved A B C A B C after a warm-up round of each, one figure per round (the median of its
requests), medians with 95% bootstrap intervals and the speedup's own interval
(validation/stats.py); "no significant difference" when it covers 1.0. The figure is the model's
own execution time as the core reports it (``inference_time_us``, without HTTP and JSON, which on
a tiny model would hide any difference); the end-to-end latency is kept beside it. GGUF arms are
timed in tokens per second of a greedy completion.

Drift is measured on the inputs the inference phases use (the small and the large one), never on
calibration inputs: validation.drift, worst of the two.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from . import drift, quantize
from . import inputs as inp
from .compare import run_interleaved
from .core_proc import CoreServer, error_text
from .stats import percentile_ci, ratio_ci

ROUNDS = 8          # per arm, as the kernel comparison runs natively (3 gave a false verdict there)
PER_ROUND = 5       # requests of one round (tensor models); its median is the round's figure
GGUF_TOKENS = 32


class Failed(Exception):
    pass


def _post(core: CoreServer, path: str, body: dict, timeout: float) -> dict:
    try:
        status, answer = core.call("POST", path, body, timeout=timeout)
    except OSError as e:
        raise Failed(f"no answer from the core within {timeout:g} s: {e}") from None
    if status != 200:
        raise Failed(error_text(status, answer))
    return answer


def _register(core: CoreServer, model_id: str, path: str, timeout: float) -> None:
    answer = _post(core, "/v1/models/register", {"model_id": model_id, "path": path}, timeout)
    if answer.get("state") not in (None, "ready"):
        raise Failed(f"registered but {answer.get('state')}")


def _unregister(core: CoreServer, model_id: str) -> None:
    try:
        core.call("DELETE", f"/v1/models/{quote(model_id, safe='')}", timeout=60)
    except OSError:
        pass


def _arm_id(model_id: str, name: str) -> str:
    """An arm's own id beside the row's model, which stays registered: a GGUF row's id has its type as
    its version already (``hf/org/llm@F16``), so the arms' versions are prefixed."""
    return f"{model_id.rsplit('@', 1)[0]}@quant-{name}"


def _row(spec, parent_fmt: str, parent_path: Path | None, v: quantize.Variant) -> dict:
    size = parent_path.stat().st_size if parent_path and parent_path.is_file() else None
    return {"model": spec.name, "category": spec.category, "parent_format": parent_fmt,
            "parent_bytes": size, "variant": v.name, "method": v.method, "why": v.why,
            "recommended": v.recommended, "status": "measured" if v.status == "made" else v.status,
            "error": v.error, "bytes": v.bytes,
            "size_ratio": (v.bytes / size) if v.bytes and size else None,
            "calibration": v.calibration, "details": v.details, "speed": None, "wall": None, "drift": None}


def _speed(parent: list[float], variant: list[float], metric: str, higher_is_better: bool) -> dict:
    """Medians with intervals, and the speedup oriented so that > 1 means the variant is faster."""
    r = ratio_ci(variant, parent) if higher_is_better else ratio_ci(parent, variant)
    verdict = "no significant difference" if r["ci_low"] <= 1.0 <= r["ci_high"] else \
        ("faster" if r["ci_low"] > 1.0 else "slower")
    return {"metric": metric, "parent": percentile_ci(parent), "variant": percentile_ci(variant),
            "speedup": {"value": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                        "n": min(len(parent), len(variant))}, "verdict": verdict}


def _single_onnx(pkg_dir: Path) -> Path | None:
    files = sorted(pkg_dir.glob("*.onnx"))
    return files[0] if len(files) == 1 else None


def _calibration(spec, ctx: dict, meta_inputs: list[dict]) -> list[dict]:
    feeds = []
    for i in range(quantize.CALIBRATION_SAMPLES):
        seeded = dataclasses.replace(spec, inputs={**spec.inputs, "test_seed": quantize.CALIBRATION_SEED + i})
        feeds.append(inp.tensors(seeded, ctx["defaults"], "small", ctx["package_path"], meta_inputs))
    return feeds


def _infer(core: CoreServer, model_id: str, arrays: dict, timeout: float) -> tuple[dict, float, float]:
    """(outputs, model execution ms, wall ms) of one MLOS API tensor request."""
    body = {"inputs": {k: v.tolist() for k, v in arrays.items()}}
    t = time.perf_counter()
    answer = _post(core, f"/v1/models/{quote(model_id, safe='')}/inference", body, timeout)
    wall = (time.perf_counter() - t) * 1000.0
    outs = {k: np.asarray(v, dtype=np.float64).reshape(answer["output_shapes"][k])
            for k, v in answer["outputs"].items()}
    return outs, answer["inference_time_us"] / 1000.0, wall


def _measure_arms(core, arms: dict[str, str], one_round, rounds: int) -> dict[str, list[dict]]:
    return run_interleaved({name: (lambda mid=mid: one_round(mid)) for name, mid in arms.items()},
                           repetitions=rounds, warmup=1)


def onnx_rows(core: CoreServer, spec, ctx: dict, work: Path, rounds: int) -> list[dict]:
    pkg_dir = Path(ctx["package_path"])
    parent = _single_onnx(pkg_dir)
    if parent is None:
        v = quantize.Variant("int8", "", "", "not applicable",
                             error="the package has no single ONNX graph (an encoder-decoder, or none at all)")
        return [_row(spec, "onnx", None, v)]
    meta_inputs = ctx["meta"]["inputs"]
    feeds = _calibration(spec, ctx, meta_inputs) if spec.category == "vision" else None
    variants = quantize.onnx_variants(parent, work / spec.name, spec.category, feeds)
    rows = {v.name: _row(spec, "onnx", parent, v) for v in variants}
    arms = {"fp32": _arm_id(ctx["model_id"], "fp32")}
    registered = []
    try:
        _register(core, arms["fp32"], str(parent), ctx["timeout"])
        registered.append(arms["fp32"])
        for v in variants:
            if v.status != "made":
                continue
            try:
                _register(core, _arm_id(ctx["model_id"], v.name), v.path, ctx["timeout"])
                registered.append(_arm_id(ctx["model_id"], v.name))
                arms[v.name] = _arm_id(ctx["model_id"], v.name)
            except Failed as e:
                rows[v.name].update(status="failed", error=f"the core did not load it: {e}")
        cases = [inp.tensors(spec, ctx["defaults"], size, pkg_dir, meta_inputs) for size in ("small", "large")]
        answers = {name: [_infer(core, mid, case, ctx["timeout"])[0] for case in cases] for name, mid in arms.items()}
        for name in arms:
            if name != "fp32":
                rows[name]["drift"] = drift.worst([drift.outputs(p, q, c.get("attention_mask")) for p, q, c in
                                                   zip(answers["fp32"], answers[name], cases)])

        def one_round(mid: str) -> dict:
            times = [_infer(core, mid, cases[1], ctx["timeout"])[1:] for _ in range(PER_ROUND)]
            return {"compute_ms": float(np.median([t[0] for t in times])),
                    "wall_ms": float(np.median([t[1] for t in times]))}

        measured = _measure_arms(core, arms, one_round, rounds)
        for name in arms:
            if name == "fp32":
                continue
            for key, metric in (("speed", "compute_ms"), ("wall", "wall_ms")):
                rows[name][key] = _speed([r[metric] for r in measured["fp32"]], [r[metric] for r in measured[name]],
                                         f"{metric[:-3]} ms per request (large input), median of {PER_ROUND}",
                                         higher_is_better=False)
    except (Failed, inp.InputError, ValueError, KeyError) as e:
        for row in rows.values():
            if row["status"] == "measured" and row["speed"] is None:
                row.update(status="failed", error=f"{type(e).__name__}: {e}")
    finally:
        for mid in registered:
            _unregister(core, mid)
    return list(rows.values())


def _generate(core: CoreServer, model_id: str, prompt: str, max_tokens: int, timeout: float) -> tuple[str, float]:
    """(text, tokens per second of model execution) of one greedy completion."""
    answer = _post(core, f"/v1/models/{quote(model_id, safe='')}/inference",
                   {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}, timeout)
    out = answer.get("outputs") or {}
    tokens = (out.get("usage") or {}).get("completion_tokens") or 0
    return out.get("generated_text") or "", tokens / max(answer["inference_time_us"] / 1e6, 1e-9)


def gguf_rows(core: CoreServer, spec, ctx: dict, work: Path, rounds: int) -> list[dict]:
    files = sorted(Path(ctx["package_path"]).glob("*.gguf"))
    if len(files) != 1:
        v = quantize.Variant("Q8_0", "", "", "not applicable", error="the package holds no single GGUF file")
        return [_row(spec, "gguf", None, v)]
    parent = files[0]
    variants = quantize.gguf_variants(parent, work / spec.name)
    rows = {v.name: _row(spec, "gguf", parent, v) for v in variants}
    if not any(v.status == "made" for v in variants):
        return list(rows.values())
    precision = variants[0].details.get("parent_precision", "F16")
    arms = {precision: _arm_id(ctx["model_id"], precision)}
    arms.update({v.name: _arm_id(ctx["model_id"], v.name) for v in variants if v.status == "made"})
    paths = {precision: str(parent), **{v.name: v.path for v in variants if v.status == "made"}}
    registered = []
    try:
        for name, mid in list(arms.items()):
            try:
                _register(core, mid, paths[name], ctx["timeout"])
                registered.append(mid)
            except Failed as e:
                if name == precision:
                    raise
                rows[name].update(status="failed", error=f"the core did not load it: {e}")
                arms.pop(name)
        prompts = [inp.prompt(spec, size) for size in ("small", "large")]
        texts = {name: [_generate(core, mid, p, n, ctx["timeout"])[0] for p, n in prompts] for name, mid in arms.items()}
        for name in arms:
            if name == precision:
                continue
            pairs = [(drift.token_ids(a, parent), drift.token_ids(b, parent)) for a, b in zip(texts[precision], texts[name])]
            agreement = [drift.token_agreement(a, b) for a, b in pairs]
            rows[name]["drift"] = {"kind": "generator", "token_agreement": float(np.mean(agreement)),
                                   "token_agreement_min": float(min(agreement)), "prompts": len(pairs),
                                   "headline": {"name": "greedy token agreement", "value": float(min(agreement))}}
        prompt, _ = prompts[0]

        def one_round(mid: str) -> dict:
            return {"tokens_per_s": _generate(core, mid, prompt, GGUF_TOKENS, ctx["timeout"])[1]}

        measured = _measure_arms(core, arms, one_round, rounds)
        for name in arms:
            if name != precision:
                rows[name]["speed"] = _speed([r["tokens_per_s"] for r in measured[precision]],
                                             [r["tokens_per_s"] for r in measured[name]],
                                             f"tokens/s of model execution ({GGUF_TOKENS} greedy tokens)",
                                             higher_is_better=True)
    except (Failed, ValueError, KeyError) as e:
        for row in rows.values():
            if row["status"] == "measured" and row["speed"] is None:
                row.update(status="failed", error=f"{type(e).__name__}: {e}")
    finally:
        for mid in registered:
            _unregister(core, mid)
    return list(rows.values())


def measure(core: CoreServer, spec, pkg_format: str, ctx: dict, work: Path, rounds: int = ROUNDS) -> list[dict]:
    """The quantisation rows of one model (none for a format without variants)."""
    if pkg_format == "gguf":
        return gguf_rows(core, spec, ctx, work, rounds)
    if pkg_format == "onnx" and spec.category != "llm":
        return onnx_rows(core, spec, ctx, work, rounds)
    why = ("ONNX decoders are compared as GGUF rows (F16, Q8_0, Q4_K_M)" if spec.category == "llm"
           else f"no quantised variant is made of a {pkg_format} package")
    return [_row(spec, pkg_format, None, quantize.Variant("—", "", "", "not applicable", error=why))]


@dataclasses.dataclass
class Collector:
    """What a run hands the models it quantises: a work directory, rounds, and the rows so far."""
    work: Path
    rounds: int = ROUNDS
    rows: list = dataclasses.field(default_factory=list)


def failed_row(spec, pkg_format: str, error: str) -> dict:
    return _row(spec, pkg_format, None, quantize.Variant("—", "", "", "failed", error=error))


def document(rows: list[dict], mode: str, rounds: int, versions: dict, hardware: dict) -> dict:
    from .environment import machine_class
    from .results import SCHEMA_VERSION, now_iso

    return {"schema_version": SCHEMA_VERSION, "generated_at": now_iso(), "kind": "quantisation", "mode": mode,
            "design": {"rounds": rounds, "warmup_rounds": 1, "requests_per_round": PER_ROUND,
                       "gguf_tokens": GGUF_TOKENS, "interval": "95% bootstrap"},
            "versions": versions, "machine_class": machine_class(hardware), "rows": rows}
