"""validation/compare.py: interleaving, verdicts on samples whose answer is known, rows, the
kernel-comparison document and its renderer."""
from __future__ import annotations

import json

import numpy as np
import pytest

from validation import compare
from validation.results import SCHEMA_VERSION, ComparisonRow, Interval


def _row(kernel, userspace, lower=True, **kw):
    return compare.compare(kernel, userspace, lower_is_better=lower, model=kw.get("model", "m"),
                           scenario=kw.get("scenario", "single_stream"), metric=kw.get("metric", "latency_ms p50"),
                           emulated=kw.get("emulated", False))


def test_interleaving_is_a_b_a_b():
    assert compare.interleaved_order(["kernel", "userspace"], 3) == ["kernel", "userspace"] * 3
    calls = []
    results = compare.run_interleaved({"kernel": lambda: calls.append("k") or {"i": len(calls)},
                                       "userspace": lambda: calls.append("u") or {"i": len(calls)}},
                                      repetitions=3, warmup=1)
    assert "".join(calls) == "ku" + "kukuku"       # warm-up of each first, then A B A B
    assert [r["i"] for r in results["kernel"]] == [3, 5, 7]   # warm-up results are not kept
    assert [r["i"] for r in results["userspace"]] == [4, 6, 8]


def test_same_distribution_is_no_significant_difference():
    rng = np.random.default_rng(3)
    a, b = rng.normal(10.0, 1.0, 40), rng.normal(10.0, 1.0, 40)
    row = _row(a, b)
    assert row.verdict == "no significant difference"
    assert row.speedup.ci_low <= 1.0 <= row.speedup.ci_high
    same = _row(a, a)
    assert same.speedup.value == 1.0 and same.delta == 0.0 and same.verdict == "no significant difference"


def test_shifted_latencies_give_the_faster_side():
    rng = np.random.default_rng(4)
    kernel, user = rng.normal(10.0, 0.5, 30), rng.normal(15.0, 0.5, 30)
    row = _row(kernel, user)
    assert row.verdict == "kernel faster"
    assert row.speedup.value == pytest.approx(np.median(user) / np.median(kernel))
    assert row.speedup.ci_low > 1.0 and row.speedup.value == pytest.approx(1.5, rel=0.05)
    assert _row(user, kernel).verdict == "userspace faster"


def test_rates_are_oriented_so_above_one_means_kernel_faster():
    rng = np.random.default_rng(5)
    kernel, user = rng.normal(100.0, 2.0, 20), rng.normal(150.0, 2.0, 20)   # samples/s: higher is better
    row = _row(kernel, user, lower=False, scenario="offline", metric="samples_per_s")
    assert row.verdict == "userspace faster"
    assert row.speedup.ci_high < 1.0
    assert row.speedup.value == pytest.approx(np.median(kernel) / np.median(user))


def test_a_1_01x_difference_within_noise_is_not_called():
    # the original system's kind of figure: a 1% shift under 5% noise, few runs
    rng = np.random.default_rng(6)
    row = _row(rng.normal(10.0, 0.5, 6), rng.normal(10.1, 0.5, 6))
    assert row.verdict == "no significant difference"


def test_comparison_row_fields():
    kernel, user = [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    row = _row(kernel, user, model="validation/matmul@1", scenario="single_stream", metric="latency_ms p90",
               emulated=True)
    assert isinstance(row, ComparisonRow)
    assert (row.model, row.scenario, row.metric, row.emulated) == ("validation/matmul@1", "single_stream",
                                                                   "latency_ms p90", True)
    assert isinstance(row.kernel, Interval) and row.kernel.value == 3.0 and row.kernel.n == 5
    assert row.userspace.value == 4.5 and row.userspace.n == 6
    assert row.kernel.ci_low <= row.kernel.value <= row.kernel.ci_high
    assert row.delta == -1.5
    assert row.speedup.value == 1.5 and row.speedup.n == 5
    with pytest.raises(ValueError, match="need >= 2 valid runs per arm"):
        _row([1.0], [2.0, 3.0])


def _run(p50, p90, rate, valid=True):
    return {"valid": valid, "latency_ms": {"p50": p50, "p90": p90, "p99": p90 * 2}, "samples_per_s": rate}


def test_rows_for_uses_valid_runs_only():
    results = {"kernel": [_run(1, 2, 100), _run(1, 2, 100), _run(99, 99, 1, valid=False)],
               "userspace": [_run(2, 4, 50), _run(2, 4, 50), _run(2, 4, 50)]}
    rows = compare.rows_for("m", "single_stream", results, emulated=False)
    assert [r.metric for r in rows] == ["latency_ms p50", "latency_ms p90"]
    assert rows[0].kernel.n == 2 and rows[0].kernel.value == 1 and rows[0].userspace.n == 3
    assert rows[0].speedup.value == 2.0
    (off,) = compare.rows_for("m", "offline", results, emulated=False)
    assert off.metric == "samples_per_s" and off.speedup.value == 2.0
    (srv,) = compare.rows_for("m", "server", results, emulated=False)
    assert srv.metric == "latency_ms p99" and srv.kernel.value == 4


def test_document_and_render(tmp_path, capsys):
    rng = np.random.default_rng(7)
    rows = [_row(rng.normal(10, 0.5, 8), rng.normal(15, 0.5, 8), model="validation/matmul@1", emulated=True),
            _row(rng.normal(10, 0.5, 8), rng.normal(10, 0.5, 8), model="validation/silero-vad@6", emulated=True)]
    doc = compare.document(rows, emulated=True, machine={"cpu": "test cpu", "cpu_count": 2})
    assert set(doc) == {"schema_version", "generated_at", "emulated", "machine", "rows"}
    assert doc["schema_version"] == SCHEMA_VERSION and doc["emulated"] is True
    path = compare.write_document(doc, tmp_path / "out" / "kernel-comparison.json")
    back = json.loads(path.read_text())
    assert back["rows"][0]["speedup"]["value"] == rows[0].speedup.value
    assert back["rows"][0]["kernel"] == {"value": rows[0].kernel.value, "ci_low": rows[0].kernel.ci_low,
                                         "ci_high": rows[0].kernel.ci_high, "n": 8}
    assert not (tmp_path / "out" / "kernel-comparison.json.tmp").exists()

    assert compare.main(["render", str(path)]) == 0
    text = capsys.readouterr().out
    assert "EMULATED" in text and "test cpu" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| validation/")]
    assert len(lines) == 2
    assert lines[0].endswith("| kernel faster |") and lines[1].endswith("| no significant difference |")
    assert f"{rows[0].speedup.value:.3f}x" in lines[0]
    assert compare.main(["render", str(tmp_path / "missing.json")]) == 1
    assert compare.main([]) == 2


def test_machine_info_names_the_machine():
    m = compare.machine_info()
    assert m["cpu_count"] >= 1 and m["python"].count(".") == 2


def test_one_statistics_implementation():
    import benchmarks.stats
    import validation.stats

    assert benchmarks.stats.percentile_ci is validation.stats.percentile_ci
    assert benchmarks.stats.ratio_ci is validation.stats.ratio_ci
