"""Fixtures of the tuner's tests: small ONNX models in a session directory, workload and space
files, and the CLI run in-process (``tune(...)``) or as a subprocess (kill -9 tests)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import onnx_models
from validation.core_proc import ROOT


@pytest.fixture(scope="session")
def tune_models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tune-models")
    return {"matmul": onnx_models.matmul(d / "matmul.onnx", width=64)[0],
            "deep": onnx_models.deep_matmul(d / "deep.onnx"),
            "fixed": onnx_models.fixed_cost_matmul(d / "fixed.onnx"),
            "center": onnx_models.center_rows(d / "center.onnx")}


def write(path: Path, doc) -> str:
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def short_load(concurrency=32, duration=1.0, warmup=0.3) -> dict:
    return {"load": {"concurrency": concurrency, "duration_s": duration, "warmup_s": warmup}}


def tune_args(model: Path, out: Path, workload: str, space: str, *extra: str, repeats: int = 2) -> list[str]:
    return [str(model), "--workload", workload, "--space", space, "--repeats", str(repeats), "--out", str(out),
            "--no-report", *extra]


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def tune_process(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mlos_tune", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


MODEL_ID = "tune/fixed@1"


@pytest.fixture(scope="session")
def batching_run(tune_models, tmp_path_factory):
    """The fixed-cost MatMul model at concurrency 32, max_batch_size 1 against 32, tuned with --apply
    against a running core that serves it unbatched. Shared by the tuning, --apply and report tests."""
    from mlos_tune.cli import main
    from validation.core_proc import CoreServer

    d = tmp_path_factory.mktemp("batching")
    core = CoreServer(d / "core", "userspace").start()
    try:
        status, answer = core.call("POST", "/v1/models/register",
                                   {"model_id": MODEL_ID, "path": str(tune_models["fixed"]), "options": {"max_batch_size": 1}})
        assert status == 200, answer
        before = core.call("GET", "/v1/models/tune%2Ffixed%401")[1]
        out = d / "out"
        rc = main(tune_args(tune_models["fixed"], out, write(d / "w.yaml", short_load(32)),
                            write(d / "s.yaml", {"base": "none", "max_batch_size": [1, 32]}),
                            "--model-id", MODEL_ID, "--apply", "--core", core.url, repeats=3))
        yield {"rc": rc, "out": out, "core": core, "before": before, "results": results(out)}
    finally:
        core.stop()
