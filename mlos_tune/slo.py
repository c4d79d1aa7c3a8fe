"""Objectives and service-level objectives (SLOs), and how an experiment is scored against them.

Objectives (the seed autotuner's four): ``maximize_throughput`` (requests/s; output tokens/s for an
LLM), ``minimize_latency`` (median end-to-end latency), ``minimize_ttft`` (median time to first
token), ``minimize_tpot`` (median time per output token).

SLOs, ``--slo NAME=VALUE``: ``p50_ms``, ``p90_ms``, ``p99_ms`` (end-to-end latency percentiles),
``ttft_p50_ms``... ``tpot_p99_ms`` (LLM), and ``min_throughput``. An SLO is *met* when the measured
value is within its bound, and met *with confidence* when the whole 95% interval is. A
configuration that misses an SLO is marked infeasible, kept in the results with its verdicts,
and never preferred to a feasible one; among infeasible ones the smaller relative violation
ranks first (the seed's penalty scoring, without its hand-set weights).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import TuneError


@dataclass(frozen=True)
class Objective:
    name: str
    metric: str          # key in an experiment's metrics
    samples: str         # which raw samples the comparison bootstraps
    higher_is_better: bool
    llm_only: bool = False

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


OBJECTIVES = {
    "maximize_throughput": Objective("maximize_throughput", "throughput", "throughput", True),
    "minimize_latency": Objective("minimize_latency", "latency_p50_ms", "latency", False),
    "minimize_ttft": Objective("minimize_ttft", "ttft_p50_ms", "ttft", False, llm_only=True),
    "minimize_tpot": Objective("minimize_tpot", "tpot_p50_ms", "tpot", False, llm_only=True),
}

_SLO = re.compile(r"^(?:(ttft|tpot)_)?p(50|90|99)_ms$")


@dataclass(frozen=True)
class Slo:
    name: str
    bound: float
    metric: str
    upper: bool          # True: value must be <= bound; False: >= bound

    def describe(self) -> dict:
        return {"name": self.name, "bound": self.bound, "metric": self.metric,
                "kind": "at most" if self.upper else "at least"}


def parse_slo(text: str, llm: bool) -> Slo:
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep:
        raise TuneError(f"--slo {text!r}: expected NAME=VALUE, e.g. p99_ms=50 or ttft_p90_ms=300")
    try:
        bound = float(value)
    except ValueError:
        raise TuneError(f"--slo {name}: {value.strip()!r} is not a number") from None
    if not bound > 0 or bound == float("inf"):
        raise TuneError(f"--slo {name}: the bound must be a positive number, not {value.strip()}")
    if name == "min_throughput":
        return Slo(name, bound, "throughput", upper=False)
    m = _SLO.match(name)
    if not m:
        raise TuneError(f"--slo {name}: unknown SLO; known: p50_ms, p90_ms, p99_ms, ttft_p50_ms, ttft_p90_ms, "
                        "ttft_p99_ms, tpot_p50_ms, tpot_p90_ms, tpot_p99_ms, min_throughput")
    series, q = m.group(1) or "latency", m.group(2)
    if series != "latency" and not llm:
        raise TuneError(f"--slo {name}: time to first token and per output token are measured on LLM "
                        "workloads only; this workload sends tensors")
    return Slo(name, bound, f"{series}_p{q}_ms", upper=True)


def parse_slos(texts: list[str], llm: bool) -> list[Slo]:
    slos = [parse_slo(t, llm) for t in texts or []]
    names = [s.name for s in slos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TuneError(f"--slo {', '.join(dup)} given more than once")
    return slos


def objective(name: str, llm: bool, open_loop: bool) -> Objective:
    if name not in OBJECTIVES:
        raise TuneError(f"--objective {name}: one of {', '.join(OBJECTIVES)}")
    obj = OBJECTIVES[name]
    if obj.llm_only and not llm:
        raise TuneError(f"--objective {name}: tokens are measured on LLM workloads only; this workload sends tensors")
    if obj.higher_is_better and open_loop:
        raise TuneError("--objective maximize_throughput: an open-loop workload's throughput is its arrival rate; "
                        "use a closed-loop workload (load.mode: closed) or minimize a latency")
    return obj


def verdicts(slos: list[Slo], metrics: dict) -> tuple[dict, bool, float]:
    """Per SLO: bound, value with its interval, met, met with confidence. Then whether all are
    met, and the summed relative violation (0 when feasible)."""
    out, violation = {}, 0.0
    for s in slos:
        iv = metrics.get(s.metric) or {}
        value = iv.get("value")
        if value is None:
            out[s.name] = {"bound": s.bound, "value": None, "met": False, "confident": False,
                           "why": f"{s.metric} was not measured"}
            violation += 1.0
            continue
        lo, hi = iv.get("ci_low", value), iv.get("ci_high", value)
        met = value <= s.bound if s.upper else value >= s.bound
        confident = hi <= s.bound if s.upper else lo >= s.bound
        if not met:
            violation += (value / s.bound - 1.0) if s.upper else (s.bound / max(value, 1e-12) - 1.0)
        out[s.name] = {"bound": s.bound, "value": value, "ci_low": lo, "ci_high": hi, "met": met,
                       "confident": confident}
    return out, all(v["met"] for v in out.values()), violation
