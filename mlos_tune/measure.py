"""From the load generator's raw runs to metrics with 95% intervals, and comparisons between two
configurations measured in the same time window, with the validator's bootstrap statistics
(``validation.stats``: percentile intervals, ratio intervals and their verdict).

Throughput has no per-request sample, so each run's measured window is cut into equal slices
(8 per run) and each slice's rate is one sample: the throughput is their mean (completed requests
over the measured time), its interval the bootstrap interval of that mean, and two
configurations' throughputs compare as the ratio of their means. Latencies are
bootstrapped per request. The bootstrap draws 2,000 resamples of the whole sample, so a sample
larger than ``CAP`` requests is first thinned to ``CAP`` (uniformly, fixed seed) for the
interval; the point value always comes from every request.
"""
from __future__ import annotations

import numpy as np

from validation.stats import mean_ci, percentile_ci, ratio_ci

from .slo import Objective

SLICES = 8
CAP = 2500
_SEED = 20261203


def _cap(a: np.ndarray) -> np.ndarray:
    if a.size <= CAP:
        return a
    return np.random.default_rng(_SEED).choice(a, size=CAP, replace=False)


def throughput_slices(run: dict, llm: bool) -> np.ndarray:
    """One rate per slice of the run's window: requests/s, or output tokens/s for an LLM."""
    window = float(run["duration_s"])
    k = SLICES if window >= 0.4 else 2
    width = window / k
    if llm:
        counts, _ = np.histogram(run.get("token_done_s") or [], bins=k, range=(0.0, window),
                                 weights=run.get("token_weight") or None)
    else:
        counts, _ = np.histogram(run.get("done_s") or [], bins=k, range=(0.0, window))
    return counts / width


def samples(runs: list[dict], which: str, llm: bool) -> np.ndarray:
    if which == "throughput":
        return np.concatenate([throughput_slices(r, llm) for r in runs]) if runs else np.zeros(0)
    key = {"latency": "latencies_ms", "ttft": "ttft_ms", "tpot": "tpot_ms"}[which]
    return np.asarray([v for r in runs for v in (r.get(key) or [])], dtype=np.float64)


def _interval(a: np.ndarray, q: float) -> dict | None:
    if a.size == 0:
        return None
    iv = percentile_ci(_cap(a), q)
    iv["value"], iv["n"] = float(np.percentile(a, q)), int(a.size)
    return iv


def metrics(runs: list[dict], llm: bool) -> dict:
    """Every figure of one configuration over its runs."""
    window = sum(float(r["duration_s"]) for r in runs)
    completed = sum(int(r["completed"]) for r in runs)
    errors = sum(int(r["errors"]) for r in runs)
    out: dict = {"runs": len(runs), "window_s": round(window, 3), "completed": completed, "errors": errors,
                 "error_rate": errors / (completed + errors) if completed + errors else None,
                 "throughput_unit": "tokens/s" if llm else "requests/s"}
    slices = samples(runs, "throughput", llm)
    out["throughput"] = mean_ci(slices) if slices.size else None
    series = ("latency", "ttft", "tpot") if llm else ("latency",)
    for name in series:
        a = samples(runs, name, llm)
        for q in (50, 90, 99):
            out[f"{name}_p{q}_ms"] = _interval(a, q)
    if llm:
        out["requests_per_s"] = completed / window if window else None
    cpu = [r.get("server_cpu_s") for r in runs if r.get("server_cpu_s") is not None]
    if cpu and completed:
        out["server_cpu_ms_per_request"] = round(sum(cpu) * 1e3 / completed, 4)
    client = [r.get("client_cpu_s") for r in runs if r.get("client_cpu_s") is not None]
    if client and window:
        out["client_cpu_share"] = round(sum(client) / window, 3)
    return out


def compare(a_runs: list[dict], b_runs: list[dict], objective: Objective, llm: bool) -> dict | None:
    """Configuration A against B on the objective, from runs taken in the same window: the ratio
    A/B of the objective's median with its interval, and whether A is better, worse, or not
    significantly different."""
    a, b = samples(a_runs, objective.samples, llm), samples(b_runs, objective.samples, llm)
    if a.size == 0 or b.size == 0 or not (b.mean() if objective.samples == "throughput" else np.percentile(b, 50)) > 0:
        return None
    mean = objective.samples == "throughput"
    r = ratio_ci(_cap(a), _cap(b), 50, mean=mean)
    r["ratio"] = float(a.mean() / b.mean()) if mean else float(np.percentile(a, 50) / np.percentile(b, 50))
    if r["verdict"] != "no significant difference":
        higher = r["verdict"] == "higher"
        r["verdict"] = "better" if higher == objective.higher_is_better else "worse"
    r["metric"] = objective.metric
    return r
