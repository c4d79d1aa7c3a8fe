"""The baseline comparison's false alarms and its power (``make bench-baseline``): the validator run
N times on the same code, then S times with its core slowed from outside (validation.cpu_hog:
its threads lowered to NICE beside a busy process per CPU, or pinned with one to CPU PIN),
and every split of those runs into baseline and candidate compared (benchmarks/baseline_noise.py).
The result, with the ratios of every latency row, goes to benchmarks/results/baseline-noise.json.

Knobs (MLOS_BENCH_BASE_*): RUNS same-code runs (default 6), SLOWED slowed runs (2), NICE of the
slowed core (10), PIN a CPU to pin it to (none), MODELS dot-separated offline-suite models (silero-vad.bert.resnet.sentence-
transformers), REPS requests per phase (the suite's 10), DIR where the runs go (kept, so
``python -m benchmarks.baseline_noise analyse`` can look again). About 2 minutes a run on an idle
2-CPU machine, many more on a busy one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from validation.cpu_hog import CpuHog
from validation.runner import RunOptions, run

from . import baseline_noise

_env = os.environ.get
RUNS = int(_env("MLOS_BENCH_BASE_RUNS", "6"))
SLOWED = int(_env("MLOS_BENCH_BASE_SLOWED", "2"))
NICE = int(_env("MLOS_BENCH_BASE_NICE", "10"))
PIN = int(_env("MLOS_BENCH_BASE_PIN")) if _env("MLOS_BENCH_BASE_PIN") else None
MODELS = _env("MLOS_BENCH_BASE_MODELS", "silero-vad.bert.resnet.sentence-transformers").split(".")
REPS = int(_env("MLOS_BENCH_BASE_REPS", "0")) or None
OUT = Path(__file__).resolve().parent / "results" / "baseline-noise.json"


def _run(out: Path, cache: Path) -> Path:
    outcome = run(RunOptions(suite="offline", models=MODELS, mode="userspace", out_dir=out, repetitions=REPS,
                             progress=False, cache_dir=cache))
    assert outcome.results, f"nothing ran in {out}"
    return out


def test_false_alarms_and_detection(benchmark):
    d = Path(_env("MLOS_BENCH_BASE_DIR") or tempfile.mkdtemp(prefix="mlos-baseline-noise-"))
    cache = d / "cache"
    same, slowed = [], []

    def make_runs():
        for i in range(RUNS):
            same.append(_run(d / "same" / f"run{i}", cache))
        for i in range(SLOWED):
            with CpuHog(renice="mlos_core", nice=NICE, pin=PIN, delay_s=2 if PIN is not None else 0):
                slowed.append(_run(d / "slowed" / f"run{i}", cache))

    benchmark.pedantic(make_runs, rounds=1, iterations=1)
    result = baseline_noise.analyse(same, slowed)
    result.update(models=MODELS, nice=NICE, pin=PIN, runs_dir=str(d))
    benchmark.extra_info.update(result)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print("\n" + baseline_noise.render(result))
