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
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("tune-models")
    return {"matmul": onnx_models.matmul(d / "matmul.onnx", width=64)[0],
            "deep": onnx_models.deep_matmul(d / "deep.onnx"),
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
