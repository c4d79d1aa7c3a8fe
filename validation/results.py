"""The validator's result records: one place that says what a run writes.

These dataclasses are the contract between the stages (runner -> metrics JSON -> report); their
``to_dict()`` output is what ``schema/metrics.schema.json`` describes (schema version
``SCHEMA_VERSION``). Field names of the original system-test are kept as they are
(``model_name``, ``started_at``, ``phases.<phase>.{status,time_ms,error}``, ``total_time_ms``,
``latest.json``'s counters), so its tools keep reading our files; everything else is added.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = "1.1"
PHASES = ("install", "register", "inference_small", "inference_large")
CATEGORIES = ("nlp", "vision", "multimodal", "llm", "audio")
MODES = ("kernel", "userspace")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Interval:
    """A statistic with its 95% bootstrap interval (benchmarks/stats.py computes them)."""
    value: float
    ci_low: float
    ci_high: float
    n: int


@dataclass
class Parity:
    """Outputs against the PyTorch reference (generated models) or a stored expectation; for
    generators, token ids against transformers' greedy ones (``measure`` says what was compared)."""
    reference: str                # "pytorch" | "torchvision" | "tensorflow" | "pytorch greedy tokens" | "expected-values" | "none: <why>"
    max_abs_diff: float | None
    tolerance: float | None
    passed: bool | None
    cosine: float | None = None   # of the outputs against the reference, flattened (schema 1.1)
    measure: str | None = None    # token checks: "16/16 greedy tokens equal; top-1 agreement 1.00 over 24"


@dataclass
class PhaseResult:
    status: str = "skipped"       # success | failed | skipped | timeout
    time_ms: float = 0.0          # wall time of the phase (a measured 0 is a data bug the report flags)
    error: str | None = None      # the real reason, as the component said it
    # ours, beyond the original's three fields:
    details: dict[str, Any] = field(default_factory=dict)   # e.g. download_ms/convert_ms/package_ms
    latency_ms: Interval | None = None                      # inference phases: median of the repetitions
    p90_ms: float | None = None
    p99_ms: float | None = None
    repetitions: int = 0
    warmup: int = 0
    parity: Parity | None = None
    # every timed request's latency, in order (schema 1.1): what a comparison with another run
    # bootstraps; the interval above summarises them
    samples_ms: list[float] | None = None


@dataclass
class ModelResult:
    model_name: str
    axon_id: str
    category: str
    format: str
    suite: str                    # offline | seed
    mode: str                     # kernel | userspace
    started_at: str = ""
    completed_at: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    status: str = "failed"        # success | partial | failed
    phases: dict[str, PhaseResult] = field(default_factory=lambda: {p: PhaseResult() for p in PHASES})
    total_time_ms: float = 0.0
    schema_version: str = SCHEMA_VERSION

    def settle(self) -> "ModelResult":
        """status from the phases: success when all four passed, failed when none did."""
        ok = [self.phases[p].status == "success" for p in PHASES]
        self.status = "success" if all(ok) else ("failed" if not any(ok) else "partial")
        self.total_time_ms = sum(self.phases[p].time_ms for p in PHASES)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ComparisonRow:
    """One line of kernel-comparison.json: the same workload on both backends, interleaved."""
    model: str
    scenario: str                 # single_stream | server | offline | transport-<size>
    metric: str                   # e.g. "latency_ms p50", "samples_per_s"
    kernel: Interval
    userspace: Interval
    delta: float                  # kernel - userspace, in the metric's unit
    speedup: Interval             # userspace / kernel for latencies, kernel / userspace for rates
    verdict: str                  # "kernel faster" | "userspace faster" | "no significant difference"
    emulated: bool                # measured inside the qemu TCG guest


def latest_summary(models: list[dict], *, versions: dict, hardware: dict, resources: dict,
                   timings: dict, runs: list[str]) -> dict:
    """metrics/latest.json: the original's counters over ``models`` (dicts of ModelResult), plus ours."""
    inf = [m["phases"][p] for m in models for p in ("inference_small", "inference_large")]
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": now_iso(),
        "total_models": len(models),
        "successful_models": sum(m["status"] == "success" for m in models),
        "partial_models": sum(m["status"] == "partial" for m in models),
        "failed_models": sum(m["status"] == "failed" for m in models),
        "total_inferences": sum(ph["status"] != "skipped" for ph in inf),
        "successful_inferences": sum(ph["status"] == "success" for ph in inf),
        "versions": versions,
        "hardware": hardware,
        "resources": resources,
        "timings": timings,
        "runs": runs,
        "models": models,
    }
