"""Load scenarios in MLPerf LoadGen's terms, over any system under test.

The system is one callable, ``issue(sample_index) -> None``: synchronous, thread-safe, returning
when the answer is in the caller's hand (raising when the query failed). The harness decides
*when* queries are issued and records, per query, when it was due, when it was issued and when
it completed; it knows nothing of HTTP, shared memory or kernels.

- SingleStream: one query at a time, the next issued when the previous completes; p90 latency.
- Server: Poisson arrivals at ``target_qps`` (fixed seed), each query issued on schedule whether
  or not earlier ones completed; latency counts from the scheduled time (so a harness or system
  falling behind is charged for it, as in LoadGen); p99 against ``latency_bound_ms``.
  ``find_max_rate`` bisects over rates for the highest one that passes.
- Offline: every query issued at once; samples per second.
- ``null_system``: the three scenarios against an ``issue`` that does nothing: the harness's own
  cost per query, to read next to a system's latencies.

LoadGen's validity rule: a run counts only when it lasted at least ``min_duration_s`` *and*
completed at least ``min_query_count`` queries (and, here, no query failed; for Server, the p99
met the bound). Results are plain JSON-ready dicts with the raw latencies kept for statistics.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Callable

import numpy as np

Issue = Callable[[int], None]
SEED = 20261126


@dataclass
class Settings:
    min_duration_s: float = 1.0
    min_query_count: int = 32
    # a run that cannot meet the minimums stops here and is reported invalid, never hangs
    max_duration_s: float = 600.0
    sample_count: int = 8            # LoadGen's performance sample set: indices 0..sample_count-1
    seed: int = SEED
    target_qps: float = 10.0         # Server: mean arrival rate
    latency_bound_ms: float = 100.0  # Server: the p99 must stay within it
    workers: int = 4                 # Server/Offline: threads issuing concurrently (clients)
    expected_qps: float | None = None  # Offline: sizes the query count so the run lasts min_duration_s


def _now() -> float:
    return time.perf_counter()


class _Recorder:
    """Per-query timestamps (seconds on perf_counter) filled in by the issuing threads."""

    def __init__(self, n: int):
        self.due = np.full(n, np.nan)
        self.issued = np.full(n, np.nan)
        self.done = np.full(n, np.nan)
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def run(self, issue: Issue, q: int, sample: int) -> None:
        self.issued[q] = _now()
        try:
            issue(sample)
        except Exception as e:  # a failed query is data: no latency, the run becomes invalid
            with self._lock:
                self.errors.append(f"query {q}: {type(e).__name__}: {e}")
            return
        self.done[q] = _now()


def _samples(settings: Settings, n: int) -> np.ndarray:
    """Which sample each query uses: drawn from the fixed seed, as LoadGen does."""
    rng = np.random.default_rng(settings.seed + 1)
    return rng.integers(0, max(1, settings.sample_count), size=n)


def _pct(lat_ms: np.ndarray, q: float) -> float | None:
    return float(np.percentile(lat_ms, q)) if lat_ms.size else None


def _result(scenario: str, settings: Settings, rec: _Recorder, start: float, end: float,
            from_due: bool, extra: dict | None = None) -> dict:
    ok = ~np.isnan(rec.done)
    origin = rec.due if from_due else rec.issued
    lat_ms = (rec.done[ok] - origin[ok]) * 1e3
    duration = end - start
    reasons = []
    if duration < settings.min_duration_s:
        reasons.append(f"ran {duration:.3f} s < min_duration_s {settings.min_duration_s}")
    if int(ok.sum()) < settings.min_query_count:
        reasons.append(f"{int(ok.sum())} queries < min_query_count {settings.min_query_count}")
    if rec.errors:
        reasons.append(f"{len(rec.errors)} queries failed, first: {rec.errors[0]}")
    lag_ms = (rec.issued[ok] - rec.due[ok]) * 1e3 if from_due else np.zeros(0)
    out = {
        "scenario": scenario,
        "settings": asdict(settings),
        "query_count": int(ok.sum()),
        "duration_s": duration,
        "qps": float(ok.sum() / duration) if duration > 0 else None,
        "latency_ms": {"p50": _pct(lat_ms, 50), "p90": _pct(lat_ms, 90), "p99": _pct(lat_ms, 99),
                       "mean": float(lat_ms.mean()) if lat_ms.size else None,
                       "max": float(lat_ms.max()) if lat_ms.size else None},
        "latencies_ms": lat_ms.tolist(),
        # Server: how late the harness issued queries (its own overhead under load)
        "issue_lag_ms": {"p50": _pct(lag_ms, 50), "p99": _pct(lag_ms, 99)} if from_due else None,
        "errors": rec.errors[:10],
        "error_count": len(rec.errors),
        **(extra or {}),
    }
    out["valid"] = not reasons
    out["invalid_reasons"] = reasons
    return out


def single_stream(issue: Issue, settings: Settings = Settings()) -> dict:
    """One query at a time until both minimums are met (or max_duration_s passes)."""
    rng = np.random.default_rng(settings.seed + 1)
    rec = _Recorder(0)
    issued, done = [], []
    start = _now()
    while True:
        elapsed = _now() - start
        enough = len(issued) >= settings.min_query_count and elapsed >= settings.min_duration_s
        if enough or elapsed >= settings.max_duration_s:
            break
        q = len(issued)
        sample = int(rng.integers(0, max(1, settings.sample_count)))
        issued.append(_now())
        try:
            issue(sample)
            done.append(_now())
        except Exception as e:  # as in _Recorder.run: no latency, the run becomes invalid
            rec.errors.append(f"query {q}: {type(e).__name__}: {e}")
            done.append(float("nan"))
    end = _now()
    rec.issued, rec.done = np.array(issued), np.array(done)
    rec.due = rec.issued.copy()
    r = _result("single_stream", settings, rec, start, end, from_due=False)
    # the scenario's defining property, measured rather than assumed: no query began before
    # the previous one had ended
    r["overlapping_queries"] = int(np.sum(rec.issued[1:] < np.nan_to_num(rec.done[:-1])))
    return r


def poisson_schedule(settings: Settings, qps: float) -> np.ndarray:
    """Arrival offsets (s) of a Poisson process at ``qps`` from the fixed seed: enough queries
    to cover min_duration_s and min_query_count both."""
    rng = np.random.default_rng(settings.seed)
    n = max(settings.min_query_count, int(math.ceil(qps * settings.min_duration_s * 1.2)) + 16)
    t = np.cumsum(rng.exponential(1.0 / qps, size=n))
    while t[-1] < settings.min_duration_s:     # a slow draw: extend from the same stream
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / qps, size=n))])
    last = max(settings.min_query_count, int(np.searchsorted(t, settings.min_duration_s)) + 1)
    return t[:last]


def server(issue: Issue, settings: Settings = Settings(), qps: float | None = None) -> dict:
    """Queries issued at Poisson arrival times regardless of completion, by ``workers`` threads."""
    qps = qps or settings.target_qps
    offsets = poisson_schedule(settings, qps)
    rec = _Recorder(len(offsets))
    samples = _samples(settings, len(offsets))
    start = _now()
    rec.due[:] = start + offsets
    with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="loadgen-server") as pool:
        for q, due in enumerate(rec.due):
            wait = due - _now()
            if wait > 0:
                time.sleep(wait)
            if _now() - start > settings.max_duration_s:
                break
            pool.submit(rec.run, issue, q, int(samples[q]))
    end = np.nanmax(rec.done) if np.any(~np.isnan(rec.done)) else _now()
    r = _result("server", settings, rec, start, float(end), from_due=True,
                extra={"target_qps": qps, "scheduled": len(offsets),
                       "arrival_qps": float((len(offsets) - 1) / (offsets[-1] - offsets[0])) if len(offsets) > 1 else None})
    p99 = r["latency_ms"]["p99"]
    r["latency_bound_ms"] = settings.latency_bound_ms
    if p99 is None or p99 > settings.latency_bound_ms:
        r["valid"] = False
        r["invalid_reasons"].append(f"p99 {p99} ms > latency bound {settings.latency_bound_ms} ms")
    return r


def offline(issue: Issue, settings: Settings = Settings()) -> dict:
    """Every query issued at once (queued to ``workers`` threads); samples per second."""
    n = settings.min_query_count
    if settings.expected_qps:
        n = max(n, math.ceil(round(settings.expected_qps * settings.min_duration_s * 1.1, 6)))
    rec = _Recorder(n)
    samples = _samples(settings, n)
    start = _now()
    rec.due[:] = start                         # all due at once: latency includes the queue wait
    with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="loadgen-offline") as pool:
        for q in range(n):
            pool.submit(rec.run, issue, q, int(samples[q]))
    end = _now()
    r = _result("offline", settings, rec, start, end, from_due=True)
    r["samples_per_s"] = r.pop("qps")
    return r


def find_max_rate(issue: Issue, settings: Settings = Settings(), lo: float = 1.0, hi: float = 100.0,
                  trials: int = 6) -> dict:
    """Bisection (geometric, rates span decades) for the highest Server rate whose run is valid.
    ``lo`` is tried first: when even it fails, the answer is None."""
    runs = []

    def passes(rate: float) -> bool:
        r = server(issue, settings, rate)
        runs.append({k: r[k] for k in ("target_qps", "valid", "invalid_reasons", "query_count", "duration_s")}
                    | {"p99_ms": r["latency_ms"]["p99"]})
        return r["valid"]

    if not passes(lo):
        return {"max_qps": None, "latency_bound_ms": settings.latency_bound_ms, "trials": runs}
    best = lo
    if passes(hi):
        return {"max_qps": hi, "latency_bound_ms": settings.latency_bound_ms, "trials": runs, "capped": True}
    for _ in range(max(0, trials - 2)):
        mid = math.sqrt(best * hi)
        if passes(mid):
            best = mid
        else:
            hi = mid
    return {"max_qps": best, "latency_bound_ms": settings.latency_bound_ms, "trials": runs}


def null_system(settings: Settings = Settings()) -> dict:
    """The harness against a system that answers instantly: what each scenario adds per query.
    Offline is sized from the single-stream rate, so that it too can meet the minimum duration."""
    def nothing(_sample: int) -> None:
        return None

    out = {}
    ss = single_stream(nothing, settings)
    runs = (("single_stream", ss), ("server", server(nothing, settings)),
            ("offline", offline(nothing, replace(settings, expected_qps=settings.expected_qps or ss["qps"]))))
    for name, r in runs:
        out[name] = {"latency_ms": r["latency_ms"], "query_count": r["query_count"], "valid": r["valid"],
                     "invalid_reasons": r["invalid_reasons"], "issue_lag_ms": r["issue_lag_ms"]}
    return out
