"""validation.baseline and ``python -m validation compare``: verdicts on runs whose answer is known
(per-request samples drawn from known distributions), the fields that make rows incomparable,
the gate, the summary, the document and its schema. Real runs: test_baseline_runs.py."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from validation import baseline, metrics
from validation.cli_compare import main as compare_main, summary_text
from validation.results import Interval, ModelResult, Parity, PhaseResult, latest_summary
from validation.stats import percentile_ci

from . import run_data as rd

REQUEST = {"inference_small": {"input_ids": [1, 7]}, "inference_large": {"input_ids": [1, 128]}}


def timed(samples, phase="inference_small", parity=None, **details) -> PhaseResult:
    ci = percentile_ci(samples)
    return PhaseResult("success", float(sum(samples)), None, {"request": REQUEST[phase], **details},
                       latency_ms=Interval(ci["value"], ci["ci_low"], ci["ci_high"], ci["n"]),
                       repetitions=len(samples), warmup=2, samples_ms=[float(x) for x in samples],
                       parity=parity or Parity("pytorch", 2e-7, 1e-4, True, cosine=0.9999999))


def record(name="bert", *, seed=0, scale=1.0, small=4.0, large=20.0, n=30, revision="a" * 40,
           category="nlp", **phases) -> dict:
    rng = np.random.default_rng(seed)
    m = ModelResult(name, f"hf/{name}@latest", category, "onnx", "offline", "userspace",
                    started_at="2026-11-26T10:00:00.000+00:00", versions=dict(rd.VERSIONS))
    m.phases["install"] = PhaseResult("success", 1500.0, None, {"revision": revision, "reused": True})
    m.phases["register"] = PhaseResult("success", 120.0)
    m.phases["inference_small"] = timed(rng.normal(small, small * 0.05, n) * scale, "inference_small")
    m.phases["inference_large"] = timed(rng.normal(large, large * 0.05, n) * scale, "inference_large")
    m.phases.update(phases)
    return m.settle().to_dict()


def run(*records, hardware=None, versions=None) -> dict:
    s = latest_summary(list(records), versions=versions or dict(rd.VERSIONS), hardware=hardware or dict(rd.HARDWARE),
                       resources={}, timings={}, runs=["r"])
    return {"dirs": ["<memory>"], "summary": s, "label": "r"}


def verdicts(base, cand, **opts) -> dict[str, dict]:
    doc = baseline.compare_runs(base, cand, baseline.Options(**opts))
    metrics.validate(doc, "baseline_comparison")           # what the writer checks before it writes
    return {r["model"]: r for r in doc["verdicts"]}


def test_the_same_distribution_twice_is_unchanged_on_every_metric():
    base = run(record("bert", seed=1), record("resnet", seed=2, category="vision"))
    cand = run(record("bert", seed=3), record("resnet", seed=4, category="vision"))
    v = verdicts(base, cand)
    assert {r["verdict"] for r in v.values()} == {"unchanged"}
    lat = [m for m in v["bert"]["metrics"] if m["kind"] == "latency"]
    assert [m["phase"] for m in lat] == ["inference_small", "inference_large"]
    for m in lat:
        assert m["ratio"]["ci_low"] <= 1.0 <= m["ratio"]["ci_high"] or abs(m["ratio"]["value"] - 1) < 0.05
        assert "bootstrap of 30 and 30 requests of one run each" in m["note"]
    # install and register: one sample each, shown with their ratio, never judged
    times = {m["phase"]: m for m in v["bert"]["metrics"] if m["kind"] == "time"}
    assert times["install"]["verdict"] == "not tested" and times["install"]["ratio"]["value"] == 1.0
    assert times["register"]["ratio"]["ci_low"] is None


def test_a_slower_candidate_is_a_regression_with_its_interval():
    base = run(record("bert", seed=1), record("resnet", seed=2))
    cand = run(record("bert", seed=3, scale=1.5), record("resnet", seed=4))
    v = verdicts(base, cand)
    assert v["bert"]["verdict"] == "regression" and v["resnet"]["verdict"] == "unchanged"
    lat = next(m for m in v["bert"]["metrics"] if m["name"] == "inference_large latency")
    assert lat["verdict"] == "regression"
    assert lat["ratio"]["value"] == pytest.approx(1.5, rel=0.05) and lat["ratio"]["ci_low"] > 1.3
    assert lat["baseline"] == pytest.approx(20.0, rel=0.05) and lat["candidate"] == pytest.approx(30.0, rel=0.05)
    assert any(r.startswith("inference_large latency: 1.5") for r in v["bert"]["reasons"])


def test_a_faster_candidate_is_an_improvement():
    v = verdicts(run(record(seed=1)), run(record(seed=2, scale=0.6)))
    assert v["bert"]["verdict"] == "improvement"
    assert "faster by 4" in v["bert"]["reasons"][0]


def test_a_significant_change_within_the_threshold_is_unchanged():
    # 1.03x over 400 requests is significant, and smaller than 5%
    base, cand = run(record(seed=1, n=400)), run(record(seed=2, n=400, scale=1.03))
    v = verdicts(base, cand)
    lat = [m for m in v["bert"]["metrics"] if m["kind"] == "latency"]
    assert all(m["ratio"]["ci_low"] > 1.0 for m in lat)
    assert v["bert"]["verdict"] == "unchanged"
    assert all("significant but within the 5% threshold" in m["note"] for m in lat)
    assert verdicts(base, cand, threshold=0.01)["bert"]["verdict"] == "regression"


def test_success_state_newly_failing_fixed_and_still_failing():
    broken = PhaseResult("failed", 12.0, "outputs differ from PyTorch: max abs diff 0.5 > tolerance 0.0001")
    base = run(record("a"), record("b", inference_small=copy.deepcopy(broken)),
               record("c", inference_large=copy.deepcopy(broken)))
    cand = run(record("a", inference_small=copy.deepcopy(broken)), record("b"),
               record("c", inference_large=copy.deepcopy(broken)))
    v = verdicts(base, cand)
    assert v["a"]["verdict"] == "newly failing"
    assert v["a"]["reasons"][0] == ("inference_small now failed: outputs differ from PyTorch: max abs diff 0.5 "
                                    "> tolerance 0.0001")
    assert v["b"]["verdict"] == "fixed" and v["b"]["reasons"][0] == "inference_small passes again"
    assert v["c"]["verdict"] == "still failing"
    assert v["a"]["status"] == {"baseline": "success", "candidate": "partial"}


def test_a_changed_revision_is_not_comparable_and_its_figures_are_not_judged():
    base = run(record("bert", seed=1), record("resnet", seed=2))
    cand = run(record("bert", seed=3, scale=2.0, revision="b" * 40), record("resnet", seed=4))
    v = verdicts(base, cand)
    assert v["bert"]["verdict"] == "not comparable"
    assert v["bert"]["not_comparable"] == [{"field": "revision", "baseline": "a" * 40, "candidate": "b" * 40}]
    assert v["bert"]["reasons"][0] == f"revision differs: {'a' * 12} -> {'b' * 12}"
    # the 2x is computed and shown, but does not make the row a regression
    assert any(m["verdict"] == "regression" for m in v["bert"]["metrics"])
    assert v["resnet"]["verdict"] == "unchanged"


def test_another_request_shape_is_not_comparable():
    cand_rec = record(seed=2)
    cand_rec["phases"]["inference_large"]["details"]["request"] = {"input_ids": [1, 64]}
    v = verdicts(run(record(seed=1)), run(cand_rec))
    assert v["bert"]["verdict"] == "not comparable"
    assert v["bert"]["not_comparable"][0]["field"] == "inference_large.request"


def test_another_machine_class_makes_every_row_not_comparable():
    other = {**rd.HARDWARE, "cpu_model": "Intel Xeon 8375C", "ram_bytes": 1 << 30}
    doc = baseline.compare_runs(run(record("a"), record("b")), run(record("a"), record("b"), hardware=other))
    assert doc["counts"]["not comparable"] == 2
    assert doc["environment"]["not_comparable"] == [
        {"field": "hardware.cpu_model", "baseline": "AMD EPYC 7B13", "candidate": "Intel Xeon 8375C"}]
    # RAM size is not part of the machine class
    assert all(d["field"] != "hardware.ram_bytes" for r in doc["verdicts"] for d in r["not_comparable"])


def test_a_failure_is_reported_even_on_another_revision():
    broken = PhaseResult("failed", 12.0, "the core did not answer")
    v = verdicts(run(record()), run(record(revision="c" * 40, inference_small=broken)))
    assert v["bert"]["verdict"] == "newly failing"
    assert any(r.startswith("revision differs") for r in v["bert"]["reasons"])


def test_models_present_on_one_side_only():
    v = verdicts(run(record("old"), record("both")), run(record("both"), record("new")))
    assert v["old"]["verdict"] == v["new"]["verdict"] == "not comparable"
    assert v["old"]["reasons"] == ["not in the candidate run"] and v["new"]["reasons"] == ["not in the baseline run"]


def test_a_baseline_without_samples_is_compared_by_its_intervals():
    old = record(seed=1)
    for p in ("inference_small", "inference_large"):
        old["phases"][p]["samples_ms"] = None                  # a schema 1.0 record
    slow, same = run(record(seed=2, scale=1.5)), run(record(seed=3))
    v = verdicts(run(old), slow)
    lat = next(m for m in v["bert"]["metrics"] if m["name"] == "inference_large latency")
    assert v["bert"]["verdict"] == "regression" and "non-overlap" in lat["note"]
    assert lat["ratio"]["ci_low"] > 1.0
    assert verdicts(run(old), same)["bert"]["verdict"] == "unchanged"


def test_parity_that_grew_tenfold_is_a_regression_and_rounding_is_not():
    worse = record(seed=2)
    worse["phases"]["inference_small"]["parity"].update(max_abs_diff=3e-5, cosine=0.99)
    nudged = record(seed=3)
    nudged["phases"]["inference_small"]["parity"].update(max_abs_diff=4e-7)
    v = verdicts(run(record(seed=1)), run(worse))
    found = {m["name"]: m for m in v["bert"]["metrics"]}
    assert found["inference_small parity max |diff|"]["verdict"] == "regression"
    assert found["inference_small parity 1 - cosine"]["candidate"] == pytest.approx(0.01)
    assert v["bert"]["verdict"] == "regression"
    assert verdicts(run(record(seed=1)), run(nudged))["bert"]["verdict"] == "unchanged"


def test_greedy_generations_compared_token_by_token():
    def llm(tokens, seed):
        r = record("tinyllama", seed=seed, category="llm")
        r["phases"]["inference_large"]["details"].update(generated_tokens=tokens, generated_text="x")
        return r

    same = verdicts(run(llm([5, 6, 7, 8], 1)), run(llm([5, 6, 7, 8], 2)))["tinyllama"]
    assert same["verdict"] == "unchanged"
    drifted = verdicts(run(llm([5, 6, 7, 8], 1)), run(llm([5, 6, 9, 9], 2)))["tinyllama"]
    m = next(m for m in drifted["metrics"] if m["kind"] == "token_agreement")
    assert m["candidate"] == 0.5 and m["verdict"] == "regression" and drifted["verdict"] == "regression"
    assert verdicts(run(llm([5, 6, 7, 8], 1)), run(llm([5, 6, 9, 9], 2)),
                    min_token_agreement=0.5)["tinyllama"]["verdict"] == "unchanged"


def test_fail_on_names_and_the_gate():
    assert baseline.parse_fail_on("regression,newly-failing") == ("regression", "newly failing")
    assert baseline.parse_fail_on(" Not-Comparable , still_failing,") == ("not comparable", "still failing")
    assert baseline.parse_fail_on("") == ()
    with pytest.raises(ValueError, match="unknown verdict 'regresion'; choose from newly-failing, not-comparable"):
        baseline.parse_fail_on("regresion")
    doc = baseline.compare_runs(run(record("a", seed=1), record("b")), run(record("a", seed=2, scale=1.5)))
    assert [r["model"] for r in baseline.gate(doc)] == ["a"]
    assert [r["model"] for r in baseline.gate(doc, ("not comparable",))] == ["b"]
    assert baseline.gate(doc, ()) == []


def test_summary_text_reads_as_a_pr_comment():
    doc = baseline.compare_runs(run(record("a", seed=1), record("b", seed=2)),
                                run(record("a", seed=3, scale=1.5), record("b", seed=4),
                                    versions={**rd.VERSIONS, "git_commit": "f00dfeed" * 5, "core": "0.2.0"}))
    text = summary_text(doc)
    lines = text.splitlines()
    assert lines[0] == ("**Validation vs baseline: FAIL** — 2 rows: 1 regression, 1 unchanged "
                        "(gate: regression, newly failing)")
    assert "- candidate: core 0.2.0 @ f00dfeedf00d" in text
    assert "- note: versions: core 0.1.0 -> 0.2.0; git_commit 7e48640 -> " + "f00dfeed" * 5 in text
    assert re.match(r"- REGRESSION a \(userspace\): inference_small latency: 1\.[45]\dx \[1\.\d\d, 1\.\d\d\] "
                    r"\(4\.\d+ -> [56]\.\d+ ms; slower by \d\d%; bootstrap of 30 and 30 requests of one run each\); "
                    r"inference_large latency", lines[-1])
    assert "b (userspace)" not in text                          # unchanged rows are counted, not listed
    assert summary_text(doc, ()).startswith("**Validation vs baseline: PASS**")


def test_options_are_checked():
    with pytest.raises(ValueError, match="threshold must be a fraction"):
        baseline.Options(threshold=-0.1).check()
    with pytest.raises(ValueError, match="level must lie between"):
        baseline.Options(level=95).check()


def _write(d, records, hardware=None):
    for r in records:
        metrics.write_model_result(d, r)
    metrics.write_latest(d, run(*records, hardware=hardware)["summary"])
    return d


def test_compare_cli_writes_comparison_json_and_gates(tmp_path, capsys):
    base = _write(tmp_path / "base" / "userspace", [record("a", seed=1), record("b", seed=2)])
    cand = _write(tmp_path / "cand" / "userspace", [record("a", seed=3, scale=1.5), record("b", seed=4)])
    summary = tmp_path / "comment.md"
    rc = compare_main([str(base.parent), str(cand.parent), "--summary", str(summary)])
    out = capsys.readouterr().out
    assert rc == 1 and "- REGRESSION a (userspace)" in out
    doc = metrics.read_document(cand.parent / "comparison.json", "baseline_comparison")
    assert doc["counts"]["regression"] == 1 and doc["baseline"]["label"] == "base"
    assert summary.read_text().startswith("**Validation vs baseline: FAIL**")
    assert compare_main([str(base.parent), str(cand.parent), "--fail-on", "newly-failing"]) == 0
    assert compare_main([str(base.parent), str(cand.parent), "--threshold", "0.6"]) == 0
    capsys.readouterr()
    assert compare_main([str(base.parent), str(tmp_path / "nothing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert compare_main([str(base.parent), str(cand.parent), "--fail-on", "bogus"]) == 2
    assert "unknown verdict 'bogus'" in capsys.readouterr().err


def test_an_archived_run_file_is_a_baseline(tmp_path):
    path = tmp_path / "0.1.0-7e48640.json"
    metrics.write_json_atomic(path, run(record(seed=1))["summary"])
    [loaded] = baseline.load(path)
    assert loaded["label"] == "0.1.0-7e48640" and loaded["summary"]["models"][0]["model_name"] == "bert"
    doc = baseline.compare_runs(loaded, run(record(seed=2)))
    assert doc["verdicts"][0]["verdict"] == "unchanged"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": "2.0"}))
    with pytest.raises(metrics.SchemaVersionError, match="major 2"):
        baseline.load(bad)


def _drifting(n_runs, seed, scale=1.0, names=("a", "b", "c")):
    """Runs whose every request is tight around its median, but whose median moves from run to run by
    up to +-15% (a shared machine): what one run's interval cannot see."""
    rng = np.random.default_rng(seed)
    return [run(*(record(name, seed=int(rng.integers(1 << 30)), scale=scale * float(rng.uniform(0.85, 1.15)))
                  for name in names)) for _ in range(n_runs)]


def test_replicated_runs_see_the_drift_that_one_run_cannot():
    base, same = _drifting(4, seed=11), _drifting(1, seed=12)
    one_run = baseline.compare_runs(base[-1], same[0])
    replicas = baseline.compare_runs(base, same[0])
    # one run a side: tight per-request intervals call the machine's drift a change
    assert one_run["counts"]["unchanged"] < 3
    # four baseline runs: their spread is part of the interval, and nothing is called
    assert replicas["counts"]["unchanged"] == 3
    lat = [m for r in replicas["verdicts"] for m in r["metrics"] if m["kind"] == "latency"]
    assert all("t-interval over 4 baseline and 1 candidate runs" in m["note"] for m in lat)
    assert all(m["ratio"]["n"] == 5 for m in lat)
    # a real slowdown stands out of that spread once it is well past it: with four runs (3 degrees
    # of freedom) and 6 tests, the band is about 2x wide here
    slow = baseline.compare_runs(base, _drifting(1, seed=13, scale=3.0)[0])
    assert slow["counts"]["regression"] == 3
    assert all(m["ratio"]["ci_low"] > 1.1 for r in slow["verdicts"] for m in r["metrics"] if m["kind"] == "latency")


def test_the_level_holds_for_the_whole_comparison():
    doc = baseline.compare_runs(run(record("a", seed=1), record("b", seed=2)),
                                run(record("a", seed=3), record("b", seed=4)), baseline.Options(level=0.95))
    assert doc["options"]["latency_tests"] == 4
    assert doc["options"]["level_per_test"] == pytest.approx(1 - 0.05 / 4)


def test_a_directory_of_runs_is_replicas(tmp_path):
    for i, r in enumerate(_drifting(3, seed=5)):
        metrics.write_latest(tmp_path / "baseline" / f"run{i}" / "userspace", r["summary"])
    runs = baseline.load(tmp_path / "baseline")
    assert [r["label"] for r in runs] == ["run0", "run1", "run2"]
    assert baseline.load(tmp_path / "baseline" / "run1")[0]["label"] == "run1"     # the runner's --out: one run
    doc = baseline.compare_runs(runs, _drifting(1, seed=6)[0])
    assert doc["baseline"]["runs"] == 3 and doc["counts"]["unchanged"] == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(metrics.MetricsError, match="holds no validator run"):
        baseline.load(tmp_path / "empty")


def test_run_refuses_a_bad_baseline_before_running(tmp_path, capsys):
    from validation.cli_run import main as run_main

    assert run_main(["--model", "bert", "--out", str(tmp_path / "out"), "--baseline", str(tmp_path / "nope")]) == 2
    assert "--baseline: " in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert run_main(["--baseline", str(tmp_path), "--fail-on", "bogus", "--out", str(tmp_path / "out")]) == 2
    assert "unknown verdict 'bogus'" in capsys.readouterr().err
