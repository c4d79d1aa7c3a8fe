"""Real-shaped validator records, built from the contract's own dataclasses (validation.results),
for the metrics and report tests. Numbers are fixed so the tests can assert them."""
from __future__ import annotations

from validation.results import (SCHEMA_VERSION, ComparisonRow, Interval, ModelResult, Parity,
                                PhaseResult, latest_summary)

VERSIONS = {"axon": "0.1.0", "core": "0.1.0", "validation": "0.1.0", "git_commit": "7e48640"}
HARDWARE = {"os": "Debian GNU/Linux 12", "kernel": "6.1.0-28-amd64", "cpu_model": "AMD EPYC 7B13",
            "cores": 2, "threads": 2, "ram_bytes": 24 * (1 << 30), "gpus": [],
            "disk_free_bytes": 80 * (1 << 30)}
RESOURCES = {"idle": {"cpu_percent": 1.5, "rss_bytes": 150 * (1 << 20)},
             "load": {"cpu_percent_peak": 187.5, "rss_peak_bytes": 900 * (1 << 20)},
             "samples": [{"t": t, "cpu_percent": c, "rss_bytes": r * (1 << 20)}
                         for t, c, r in ((0, 1.5, 150), (1, 95.0, 400), (2, 187.5, 900),
                                         (3, 120.0, 850), (4, 2.0, 600))]}
TIMINGS = {"core_startup_ms": 842.0, "install_total_ms": 15234.0, "run_total_ms": 61234.5}
HOSTILE = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'


def phase(status="success", time_ms=100.0, error=None, **kw) -> PhaseResult:
    return PhaseResult(status=status, time_ms=time_ms, error=error, **kw)


def inference(median: float, lo: float, hi: float, n: int = 50, parity: Parity | None = None) -> PhaseResult:
    return phase(time_ms=median * (n + 5), latency_ms=Interval(median, lo, hi, n), p90_ms=hi * 1.1,
                 p99_ms=hi * 1.4, repetitions=n, warmup=5,
                 parity=parity or Parity("pytorch", 1.2e-6, 1e-4, True))


def model(name: str, category: str, mode: str = "userspace", **phases: PhaseResult) -> ModelResult:
    m = ModelResult(model_name=name, axon_id=f"hf/{name}@main", category=category, format="onnx",
                    suite="offline", mode=mode, started_at="2026-11-26T10:00:00.000+00:00",
                    completed_at="2026-11-26T10:00:05.250+00:00", versions=dict(VERSIONS))
    m.phases.update({
        "install": phase(time_ms=1500.0, details={"download_ms": 900.0, "convert_ms": 400.0,
                                                  "package_ms": 150.0}),
        "register": phase(time_ms=120.0),
        "inference_small": inference(4.25, 4.0, 4.6),
        "inference_large": inference(18.5, 17.9, 19.4),
    })
    m.phases.update(phases)
    return m.settle()


def models(mode: str = "userspace") -> list[ModelResult]:
    """Five models, one per seed warning sign: a clean one, a 0 ms register (data bug), a
    timeout, a failed install with a hostile error text, and a parity failure."""
    bad_parity = Parity("pytorch", 0.031, 1e-4, False)
    return [
        model("bert-tiny", "nlp", mode),
        model("resnet-tiny", "vision", mode, register=phase(time_ms=0.0)),
        model("whisper-tiny", "audio", mode,
              inference_large=phase("timeout", 30000.0, "no answer within 30 s")),
        model("evil<b>name</b>", "multimodal", mode,
              install=phase("failed", 35.0, f"HTTP 404 from hub: {HOSTILE}"),
              register=phase("skipped", 0.0), inference_small=phase("skipped", 0.0),
              inference_large=phase("skipped", 0.0)),
        model("gpt2-tiny", "llm", mode, inference_small=inference(40.0, 38.0, 43.0, parity=bad_parity)),
    ]


def summary(mode: str = "userspace", runs: list[str] | None = None) -> dict:
    return latest_summary([m.to_dict() for m in models(mode)], versions=dict(VERSIONS),
                          hardware=dict(HARDWARE), resources=dict(RESOURCES), timings=dict(TIMINGS),
                          runs=runs if runs is not None else [f"run-{mode}"])


def comparison(emulated: bool = True) -> dict:
    rows = [ComparisonRow("bert-tiny", "single_stream", "latency_ms p50", Interval(4.0, 3.9, 4.1, 200),
                          Interval(4.25, 4.1, 4.4, 200), -0.25, Interval(1.0625, 1.01, 1.11, 200),
                          "kernel faster", emulated),
            ComparisonRow("resnet-tiny", "offline", "samples_per_s", Interval(510.0, 500.0, 520.0, 30),
                          Interval(505.0, 495.0, 515.0, 30), 5.0, Interval(1.0099, 0.98, 1.04, 30),
                          "no significant difference", emulated)]
    return {"schema_version": SCHEMA_VERSION, "generated_at": "2026-11-26T10:05:00.000+00:00",
            "emulated": emulated, "machine": {"cpu": "qemu TCG", "kernel": "6.1.0-28-amd64"},
            "rows": rows}


# ---- across releases and variants (validation/baseline.py, history.py, quant_measure.py) ----------

def release(mode: str = "userspace", slow: float = 1.0, commit: str = "7e48640", core: str = "0.1.0",
            started: str = "2026-11-26T10:00:00.000+00:00") -> dict:
    """A run's latest.json as a release's: bert-tiny's latency times ``slow``; samples drawn around
    the medians so a comparison bootstraps them."""
    import numpy as np

    ms_ = models(mode)
    rng = np.random.default_rng(len(commit) + int(slow * 100))
    for m in ms_:
        m.started_at = started
        for p in ("inference_small", "inference_large"):
            ph = m.phases[p]
            if ph.latency_ms is None:
                continue
            scale = slow if m.model_name == "bert-tiny" else 1.0
            ph.samples_ms = [float(x) for x in rng.normal(ph.latency_ms.value * scale, ph.latency_ms.value * 0.02, 30)]
            ph.latency_ms = Interval(ph.latency_ms.value * scale, ph.latency_ms.ci_low * scale,
                                     ph.latency_ms.ci_high * scale, 30)
    return latest_summary([m.to_dict() for m in ms_], versions={**VERSIONS, "git_commit": commit, "core": core},
                          hardware=dict(HARDWARE), resources=dict(RESOURCES), timings=dict(TIMINGS),
                          runs=[f"run-{mode}"])


def quantisation() -> dict:
    """quantisation.json as validation.quant_measure writes it: an encoder's dynamic INT8 and FP16,
    a CNN's static INT8, one variant that does not apply, and a GGUF row refused on a quantised parent."""
    def speed(ratio, lo, hi, parent=10.0):
        return {"metric": "compute ms per request (large input), median of 5", "verdict":
                "faster" if lo > 1 else ("slower" if hi < 1 else "no significant difference"),
                "parent": {"value": parent, "ci_low": parent * 0.95, "ci_high": parent * 1.05, "n": 8},
                "variant": {"value": parent / ratio, "ci_low": parent / hi, "ci_high": parent / lo, "n": 8},
                "speedup": {"value": ratio, "ci_low": lo, "ci_high": hi, "n": 8}}

    def row(model, variant, status="measured", sp=None, drift=None, error=None, category="nlp", **kw):
        return {"model": model, "category": category, "parent_format": "onnx", "parent_bytes": 90_000_000,
                "variant": variant, "method": f"onnxruntime {variant}", "why": "because", "recommended":
                variant in ("int8-dynamic", "int8-static"), "status": status, "error": error,
                "bytes": kw.get("bytes"), "size_ratio": kw.get("size_ratio"), "calibration": kw.get("calibration"),
                "details": {}, "speed": sp, "wall": sp, "drift": drift}

    emb = {"kind": "embedding", "cosine": 0.995, "cosine_min": 0.97, "max_abs_diff": 0.39, "top1_agreement": None,
           "max_prob_diff": None, "sentence_cosine_min": 0.9888,
           "headline": {"name": "sentence cosine (worst)", "value": 0.9888}}
    cls = {"kind": "classifier", "cosine": 0.999, "cosine_min": 0.9908, "max_abs_diff": 0.44, "top1_agreement": 0.875,
           "max_prob_diff": 0.019, "sentence_cosine_min": None, "headline": {"name": "top-1 agreement", "value": 0.875}}
    rows = [row("minilm", "int8-dynamic", sp=speed(2.28, 1.63, 3.03), drift=emb, bytes=22_000_000, size_ratio=0.25),
            row("minilm", "fp16", sp=speed(1.0, 0.73, 1.25), drift={**emb, "headline": {"name": "sentence cosine (worst)",
                                                                                          "value": 0.9999993}},
                bytes=45_000_000, size_ratio=0.5),
            row("resnet-tiny", "int8-static", sp=speed(0.66, 0.61, 0.78), drift=cls, category="vision",
                bytes=54_000, size_ratio=2.0, calibration={"samples": 16, "seed_from": 1000, "source": "the suite's"}),
            row("silero", "int8-dynamic", status="not applicable", error="onnxruntime quantised no node of this graph"),
            {**row("gemma", "Q8_0", status="not applicable", error="the parent is already quantised (llama_ftype 15)"),
             "parent_format": "gguf"}]
    return {"schema_version": SCHEMA_VERSION, "generated_at": "2026-11-26T10:06:00.000+00:00", "kind": "quantisation",
            "mode": "userspace", "design": {"rounds": 8, "warmup_rounds": 1, "requests_per_round": 5, "gguf_tokens": 32,
                                            "interval": "95% bootstrap"},
            "versions": dict(VERSIONS), "machine_class": {"cpu_model": HARDWARE["cpu_model"]}, "rows": rows}
