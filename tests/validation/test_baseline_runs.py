"""The baseline comparison on real runs of the validator (local hub, axon-py, a real core, PyTorch
references): two models, Silero VAD (a real ONNX model) and the tiny BERT (parity with PyTorch),
in userspace mode, sharing one axon-py cache (the ``axon_cache`` fixture) so that a model is
converted once.

- four runs of the same code: three as the baseline, the fourth as the candidate: no regression;
- two runs whose core is slowed from outside (validation.cpu_hog: the core's threads lowered to
  nice 17 and pinned to the CPU of a busy process, once it serves), against those four: both model
  rows a regression;
- a run where Silero VAD is made to fail (its suite sends 16 samples, which its STFT padding refuses)
  and BERT's hub repo holds other weights (a new revision): newly failing, not comparable.

One run a side would not do for the first two here: on this shared 2-CPU machine whole runs of
the same code drift by a median 2x (docs/validation-ci.md), which a bootstrap over one run's
requests cannot see, so the baseline is replicated, as that page advises for CI. The price is an
interval as wide as that drift: one run caught in a burst of the neighbours' load makes the
spread of four runs 2x (sd of log medians 0.8), and the interval of 4 + 1 runs about 125x wide. So
the slowed core is made tens to hundreds of times slower whatever else the machine does (lowered
to nice 17 and pinned to one CPU with a busy process; lowered but free to move, it ran at full
speed whenever its CPU was idle, and a row hid in the interval), and is run twice: 4 + 2 runs have
4 degrees of freedom and an interval about 25x wide at that spread. The same-code check runs at
99% for the whole comparison: at 95% this machine's bursts gave 1 false regression in 60
comparisons of its runs.
"""
from __future__ import annotations

import shutil
import statistics

import pytest
import yaml

from validation import baseline, metrics
from validation.cli_compare import main as compare_main
from validation.cli_run import main as run_main
from validation.config import CONFIG_ROOT
from validation.cpu_hog import CpuHog
from validation.runner import RunOptions, run

MODELS = ["silero-vad", "bert"]
REPS = 5          # per phase: the t-interval's unit is the run, so more runs beat more requests


def _run(out, cache, suite="offline"):
    outcome = run(RunOptions(suite=str(suite), models=MODELS, mode="userspace", out_dir=out, repetitions=REPS,
                             progress=False, cache_dir=cache))
    return outcome


def _changed_suite(d):
    """The offline suite, but Silero gets 1 ms of audio (16 samples) and BERT's repo other weights."""
    suite = d / "offline"                     # the suite's name is its directory's
    shutil.copytree(CONFIG_ROOT / "offline", suite)
    doc = yaml.safe_load((suite / "models.yaml").read_text())
    doc["models"]["silero-vad"]["small_input"] = {"duration_seconds": 0.001, "sample_rate": 16000}
    doc["models"]["bert"]["source"] = "tiny:distilbert"
    (suite / "models.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return suite


@pytest.fixture(scope="module")
def runs(tmp_path_factory, axon_cache):
    d = tmp_path_factory.mktemp("baseline-runs")
    cache = axon_cache
    same = []
    for i in range(4):
        outcome = _run(d / "same" / f"run{i}", cache)
        assert outcome.passed, [(r.model_name, r.status) for r in outcome.results]
        same.append(d / "same" / f"run{i}")
    for i in range(2):
        with CpuHog(renice="mlos_core", nice=17, pin=0, delay_s=2) as hog:
            slowed = _run(d / "slowed" / f"run{i}", cache)
        assert slowed.passed and hog.reniced, "the slowed run must run, on a lowered core"
    # this one through the command line, as CI runs it: compared with the first run at its end
    rc = run_main(["--suite", str(_changed_suite(d / "suite")), "--mode", "userspace", "--out", str(d / "changed"),
                   "--repetitions", str(REPS), "--cache", str(cache), "--quiet", "--baseline", str(same[0]),
                   *[a for m in MODELS for a in ("--model", m)]])
    return {"dir": d, "same": same, "slowed": d / "slowed", "changed": d / "changed", "changed_rc": rc}


def _latency_table(doc) -> str:
    return "\n".join(f"{r['model']} {m['phase']}: {m['baseline']:.3g} -> {m['candidate']:.3g} ms, "
                     f"{m['ratio']['value']:.3g}x [{m['ratio']['ci_low']:.3g}, {m['ratio']['ci_high']:.3g}] {m['verdict']}"
                     for r in doc["verdicts"] for m in r["metrics"] if m["kind"] == "latency")


def _by_model(doc):
    return {r["model"]: r for r in doc["verdicts"]}


def test_the_runs_record_what_a_comparison_needs(runs):
    doc = metrics.read_document(runs["same"][0] / "userspace" / "bert-result.json", "model_result")
    install = doc["phases"]["install"]["details"]
    assert len(install["revision"]) == 40
    assert metrics.read_document(runs["same"][1] / "userspace" / "bert-result.json",
                                 "model_result")["phases"]["install"]["details"]["reused"] is True   # converted once
    for p in ("inference_small", "inference_large"):
        ph = doc["phases"][p]
        assert len(ph["samples_ms"]) == REPS and min(ph["samples_ms"]) > 0
        assert ph["latency_ms"]["value"] == pytest.approx(statistics.median(ph["samples_ms"]), rel=1e-3)
        assert 0.99999 < ph["parity"]["cosine"] <= 1.0
    # the same content gives the same revision in every run (the local hub's commit ids are by content)
    revs = {metrics.read_document(r / "userspace" / "bert-result.json", "model_result")
            ["phases"]["install"]["details"]["revision"] for r in runs["same"]}
    assert len(revs) == 1


def test_the_same_code_again_is_no_regression(runs, tmp_path, capsys):
    base = tmp_path / "baseline"
    base.mkdir()
    for r in runs["same"][:3]:
        (base / r.name).symlink_to(r)
    rc = compare_main([str(base), str(runs["same"][3]), "--out", str(tmp_path / "c.json"), "--level", "0.99"])
    doc = metrics.read_document(tmp_path / "c.json", "baseline_comparison")
    out = capsys.readouterr().out + "\n" + _latency_table(doc)
    assert rc == 0, out
    assert doc["baseline"]["runs"] == 3 and doc["counts"]["unchanged"] == 2, out
    lat = [m for r in doc["verdicts"] for m in r["metrics"] if m["kind"] == "latency"]
    assert len(lat) == 4 and all("t-interval over 3 baseline and 1 candidate runs" in m["note"] for m in lat)


def test_runs_slowed_from_outside_are_a_regression_on_both_rows(runs, tmp_path, capsys):
    base = tmp_path / "baseline"
    base.mkdir()
    for r in runs["same"]:
        (base / r.name).symlink_to(r)
    rc = compare_main([str(base), str(runs["slowed"]), "--out", str(tmp_path / "c.json")])
    doc = metrics.read_document(tmp_path / "c.json", "baseline_comparison")
    out = capsys.readouterr().out + "\n" + _latency_table(doc)      # every row's figures, should it fail
    assert rc == 1 and doc["counts"]["regression"] == 2, out
    for r in doc["verdicts"]:
        lat = [m for m in r["metrics"] if m["kind"] == "latency"]
        assert all(m["ratio"]["value"] > 1.5 for m in lat), out
        # each row is flagged by at least one phase whose whole interval lies above 1 (on a machine
        # this busy the runs' spread can hide the other phase: it is then "unchanged", not "faster")
        assert any(m["verdict"] == "regression" and m["ratio"]["ci_low"] > 1.05 for m in lat), out
    assert "- REGRESSION silero-vad (userspace): inference_" in out
    assert "t-interval over 4 baseline and 2 candidate runs" in out


def test_a_failing_model_and_a_new_revision(runs):
    assert runs["changed_rc"] == 1                         # the gate: newly failing is in the default --fail-on
    doc = metrics.read_document(runs["changed"] / "comparison.json", "baseline_comparison")
    assert doc == {**baseline.compare_runs(baseline.load(runs["same"][0]), baseline.load(runs["changed"])),
                   "generated_at": doc["generated_at"]}
    v = _by_model(doc)
    assert v["silero-vad"]["verdict"] == "newly failing"
    assert v["silero-vad"]["reasons"][0].startswith("inference_small now failed: ")
    reason = v["silero-vad"]["reasons"][0]      # the core's words, then onnxruntime's own: 16 samples are too few
    assert "onnxruntime could not run the model" in reason and "Pad reflect" in reason, reason
    assert v["bert"]["verdict"] == "not comparable"
    diffs = {d["field"]: d for d in v["bert"]["not_comparable"]}
    assert diffs["revision"]["baseline"] != diffs["revision"]["candidate"]
    assert baseline.gate(doc) == [v["silero-vad"]]
