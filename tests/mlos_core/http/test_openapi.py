"""The HTTP API as one OpenAPI 3.1 document, and schemathesis against the live server with it
(issue 11, finding 6/7: no 5xx from bad input, zero schema violations).

The schemathesis run is bounded (a fixed number of examples per operation and a fixed seed) and
writes its figures (requests sent, operations covered, failures) to the test's output and to
``schemathesis-summary.json`` in the test's temporary directory."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlos_core.config import load_settings
from mlos_core.http.app import create_app
from mlos_core.http.openapi import document

ROOT = Path(__file__).resolve().parents[3]


def _template(path: str) -> str:
    return re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)


def test_every_route_is_documented_and_nothing_else(tmp_path):
    app = create_app(load_settings(None, {"data_dir": str(tmp_path / "d")}, environ={}))
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info()
        served.add((route.method.lower(), _template(info.get("path") or info.get("formatter"))))
    documented = {(m, p) for p, ops in document()["paths"].items() for m in ops if m in ("get", "post", "delete")}
    assert served - documented == set(), "routes without documentation"
    assert documented - served == set(), "documented operations the server does not have"


async def test_the_document_is_served(app_factory):
    client = await app_factory()
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"] == "3.1.0" and doc == json.loads(json.dumps(document()))


@pytest.fixture
def fuzz_target(core_process, models):
    core = core_process("--max-request-mb", "8", "--max-body-memory-mb", "64", "--request-timeout", "10")
    for model_id, path in (("t/mm@1", models.matmul), ("t/strings@1", models.string),
                           ("t/center@1", models.center)):
        status, _, body = core.call("POST", "/v1/models/register", {"model_id": model_id, "path": str(path)})
        assert status == 200, body
    return core


def test_schemathesis_finds_no_server_error_and_no_schema_violation(fuzz_target, tmp_path, capsys):
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is in the test extra (make test installs it)")
    report = tmp_path / "run.json"
    cmd = [exe, "run", fuzz_target.url + "/openapi.json", "--url", fuzz_target.url,
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                       "response_schema_conformance",
           "--phases", "examples,coverage,fuzzing", "--max-examples", "30", "--seed", "20261202",
           "--workers", "1", "--request-timeout", "60", "--no-shrink", "--generation-database", "none",
           "--report", "json", "--report-json-path", str(report), "--no-color",
           "--exclude-path", "/openapi.json"]  # the document itself: test_the_document_is_served
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert report.exists(), done.stdout[-3000:]
    summary = _summarise(report)
    (tmp_path / "schemathesis-summary.json").write_text(json.dumps(summary, indent=2))
    with capsys.disabled():
        print(f"\nschemathesis: {summary}")
    assert done.returncode == 0, done.stdout[-6000:]
    # schemathesis does not test the document it reads (GET /openapi.json): every other operation
    assert summary["operations_tested"] == summary["operations"] == len(
        [1 for path, ops in document()["paths"].items() for m in ops if m in ("get", "post", "delete")
         and path != "/openapi.json"])
    assert summary["failures"] == 0 and summary["errored"] == 0 and summary["requests"] > 1000
    assert fuzz_target.alive()
    assert "Traceback" not in fuzz_target.log.read_text()


def _summarise(report: Path) -> dict:
    """Requests sent (one per test case), operations covered and failures, from the JSON report."""
    data = json.loads(report.read_text())
    return {"requests": data["test_cases"]["generated"], "operations_tested": data["operations"]["tested"],
            "operations": data["operations"]["total"], "failures": data["test_cases"]["unique_failures"],
            "errored": data["test_cases"]["errored"] + data["operations"]["errored"],
            "seconds": round(data["running_time"], 1)}
