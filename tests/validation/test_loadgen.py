"""validation/loadgen.py: the scenarios' rules, against small real callables and against a real
core's zero-copy path on the userspace backend. No timing asserts: what is checked is the
scheduling logic (who runs when, how many, which runs count), with generous tolerances."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from validation import loadgen
from validation import kernel_workload as kw

FAST = loadgen.Settings(min_duration_s=0.2, min_query_count=10, max_duration_s=30.0, sample_count=4)


class Probe:
    """A real system under test: sleeps ``seconds`` per query and records how many queries were
    in flight at once and which samples it was given."""

    def __init__(self, seconds: float = 0.0, fail_every: int = 0):
        self.seconds = seconds
        self.fail_every = fail_every
        self.in_flight = self.max_in_flight = self.calls = 0
        self.samples: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, sample: int) -> None:
        with self._lock:
            self.calls += 1
            n = self.calls
            self.samples.append(sample)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.seconds:
                time.sleep(self.seconds)
            if self.fail_every and n % self.fail_every == 0:
                raise RuntimeError(f"query {n} refused")
        finally:
            with self._lock:
                self.in_flight -= 1


def test_single_stream_never_overlaps_and_meets_both_minimums():
    probe = Probe(0.002)
    r = loadgen.single_stream(probe, FAST)
    assert probe.max_in_flight == 1
    assert r["overlapping_queries"] == 0
    assert r["valid"] is True and r["invalid_reasons"] == []
    assert r["query_count"] == probe.calls >= FAST.min_query_count
    assert r["duration_s"] >= FAST.min_duration_s
    assert len(r["latencies_ms"]) == r["query_count"]
    assert r["latency_ms"]["p50"] <= r["latency_ms"]["p90"] <= r["latency_ms"]["p99"] <= r["latency_ms"]["max"]
    assert set(probe.samples) <= set(range(FAST.sample_count))


def test_single_stream_samples_come_from_the_seed():
    a, b = Probe(), Probe()
    s = loadgen.Settings(min_duration_s=0.0, min_query_count=50, sample_count=8, seed=7)
    loadgen.single_stream(a, s)
    loadgen.single_stream(b, s)
    assert a.samples == b.samples and len(set(a.samples)) > 1


def test_a_run_short_of_a_minimum_is_invalid_and_says_why():
    # the cap ends the run before the minimum duration: LoadGen would not accept it
    r = loadgen.single_stream(Probe(), loadgen.Settings(min_duration_s=5.0, min_query_count=1, max_duration_s=0.05))
    assert r["valid"] is False
    assert any("min_duration_s 5.0" in why for why in r["invalid_reasons"])
    # too few queries fit in the cap
    r = loadgen.single_stream(Probe(0.05), loadgen.Settings(min_duration_s=0.0, min_query_count=1000,
                                                             max_duration_s=0.2))
    assert r["valid"] is False
    assert any("< min_query_count 1000" in why for why in r["invalid_reasons"])
    # an offline batch over before the minimum duration
    r = loadgen.offline(Probe(), loadgen.Settings(min_duration_s=5.0, min_query_count=4))
    assert r["valid"] is False and r["query_count"] == 4


def test_failed_queries_make_a_run_invalid_and_carry_no_latency():
    probe = Probe(fail_every=3)
    r = loadgen.single_stream(probe, loadgen.Settings(min_duration_s=0.0, min_query_count=9))
    assert probe.calls == 9
    assert r["error_count"] == 3 and r["query_count"] == 6
    assert len(r["latencies_ms"]) == 6
    assert r["valid"] is False
    assert "3 queries failed" in r["invalid_reasons"][-1] and "6 queries < min_query_count 9" in r["invalid_reasons"][0]
    assert "RuntimeError: query 3 refused" in r["errors"][0]


def test_poisson_schedule_rate_and_seed():
    s = loadgen.Settings(min_duration_s=20.0, min_query_count=10, seed=11)
    t = loadgen.poisson_schedule(s, qps=150.0)
    assert t[-1] >= s.min_duration_s and len(t) >= s.min_query_count
    rate = (len(t) - 1) / (t[-1] - t[0])
    assert rate == pytest.approx(150.0, rel=0.05)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)   # exponential gaps: CV 1
    assert np.array_equal(t, loadgen.poisson_schedule(s, qps=150.0))
    other = loadgen.poisson_schedule(loadgen.Settings(min_duration_s=20.0, min_query_count=10, seed=12), 150.0)
    assert not np.array_equal(t[:100], other[:100])
    # a low rate still gives the minimum query count
    few = loadgen.poisson_schedule(loadgen.Settings(min_duration_s=0.1, min_query_count=25), qps=1.0)
    assert len(few) == 25


def test_server_issues_on_schedule_without_waiting_for_completions():
    probe = Probe(0.05)                      # 50 ms a query at ~200/s: queries must overlap
    s = loadgen.Settings(min_duration_s=0.3, min_query_count=20, target_qps=200.0, latency_bound_ms=10_000.0,
                         workers=16)
    r = loadgen.server(probe, s)
    assert probe.max_in_flight >= 2
    assert r["query_count"] == r["scheduled"] == probe.calls == len(loadgen.poisson_schedule(s, 200.0))
    assert r["valid"] is True
    assert r["issue_lag_ms"]["p50"] >= 0.0
    assert r["target_qps"] == 200.0


def test_server_p99_over_the_bound_is_invalid():
    s = loadgen.Settings(min_duration_s=0.1, min_query_count=10, target_qps=100.0, latency_bound_ms=0.5)
    r = loadgen.server(Probe(0.005), s)       # every query sleeps 5 ms > 0.5 ms
    assert r["valid"] is False
    assert any("latency bound 0.5 ms" in why for why in r["invalid_reasons"])


def test_offline_issues_every_query_at_once():
    probe = Probe(0.01)
    s = loadgen.Settings(min_duration_s=0.0, min_query_count=40, workers=8, sample_count=5)
    r = loadgen.offline(probe, s)
    assert probe.calls == r["query_count"] == 40
    assert probe.max_in_flight >= 2           # 8 threads drain one queue
    assert r["samples_per_s"] > 0 and r["valid"] is True
    # expected_qps sizes the run to cover the minimum duration (x1.1)
    sized = loadgen.offline(Probe(), loadgen.Settings(min_duration_s=0.5, min_query_count=10, expected_qps=200.0))
    assert sized["query_count"] == 110


def test_find_max_rate_brackets_the_passing_rates():
    probe = Probe(0.004)                      # one worker: about 250 queries/s at most
    s = loadgen.Settings(min_duration_s=0.15, min_query_count=10, latency_bound_ms=100.0, workers=1)
    r = loadgen.find_max_rate(probe, s, lo=5.0, hi=1_000.0, trials=5)
    rates = [t["target_qps"] for t in r["trials"]]
    assert len(rates) == 5 and rates[:2] == [5.0, 1_000.0]
    assert r["trials"][0]["valid"] is True and r["trials"][1]["valid"] is False
    passing = [t["target_qps"] for t in r["trials"] if t["valid"]]
    assert r["max_qps"] == max(passing)
    # bisection: each later trial lies between the best pass and the lowest failure so far
    for i in range(2, len(rates)):
        done = r["trials"][:i]
        assert max(t["target_qps"] for t in done if t["valid"]) < rates[i] < \
            min(t["target_qps"] for t in done if not t["valid"])


def test_find_max_rate_when_even_the_lowest_rate_fails():
    s = loadgen.Settings(min_duration_s=0.05, min_query_count=5, latency_bound_ms=0.01)
    r = loadgen.find_max_rate(Probe(0.002), s, lo=50.0, hi=100.0)
    assert r["max_qps"] is None and len(r["trials"]) == 1


def test_null_system_reports_the_harness_overhead():
    s = loadgen.Settings(min_duration_s=0.1, min_query_count=20, target_qps=400.0, expected_qps=1000.0)
    r = loadgen.null_system(s)
    assert set(r) == {"single_stream", "server", "offline"}
    for name, res in r.items():
        assert res["query_count"] >= 20, name
        assert res["latency_ms"]["p50"] >= 0.0
    assert r["single_stream"]["issue_lag_ms"] is None
    assert r["server"]["issue_lag_ms"]["p99"] >= r["server"]["issue_lag_ms"]["p50"] >= 0.0


# ---- against a real core: the local zero-copy path on the userspace backend -------------------

@pytest.fixture
def zerocopy_core(core_process, tmp_path, models, silero):
    sock = str(tmp_path / "shim.sock")
    core = core_process(env={"MLOS_ZEROCOPY": "1", "MLOS_SHIM_SOCKET": sock, "MLOS_KERNEL": "off"})
    wls = {"matmul": kw.matmul(models.matmul), "silero": kw.silero(silero)}
    for wl in wls.values():
        status, _, body = core.call("POST", "/v1/models/register", {"model_id": wl.model_id, "path": str(wl.path)})
        assert status == 200, body
    return sock, wls


def test_scenarios_over_the_zero_copy_path(zerocopy_core, models):
    sock, wls = zerocopy_core
    system = kw.ZeroCopySystem(lambda: kw.local_client("userspace", sock), wls["matmul"])
    try:
        x = wls["matmul"].samples[3]["x"]
        np.testing.assert_allclose(np.array(system.infer(3)["y"]), x @ models.matmul_w, rtol=1e-5, atol=1e-5)
        ss = loadgen.single_stream(system.issue, FAST)
        assert ss["valid"] is True and ss["error_count"] == 0 and ss["overlapping_queries"] == 0
        off = loadgen.offline(system.issue, loadgen.Settings(min_duration_s=0.0, min_query_count=24, workers=3))
        assert off["valid"] is True and off["query_count"] == 24
        srv = loadgen.server(system.issue, loadgen.Settings(min_duration_s=0.2, min_query_count=10, target_qps=50.0,
                                                            latency_bound_ms=60_000.0, workers=3))
        assert srv["valid"] is True and srv["query_count"] == srv["scheduled"]
        assert len(system._clients) == 1 + 3 + 3   # one client per issuing thread, each closed below
    finally:
        system.close()
    assert system._clients == []


def test_silero_scalar_input_keeps_its_shape(zerocopy_core):
    sock, wls = zerocopy_core
    system = kw.ZeroCopySystem(lambda: kw.local_client("userspace", sock), wls["silero"])
    try:
        out = system.infer(0)
        p = float(np.array(out["output"]).reshape(-1)[0])
        assert 0.0 <= p <= 1.0                    # a speech probability
        system.issue(1)                            # and the shape check passes
    finally:
        system.close()
