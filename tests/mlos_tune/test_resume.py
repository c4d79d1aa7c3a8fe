"""A tuning killed with SIGKILL leaves no core behind, and the same command resumes it from
results.json: what was measured stays, the interrupted experiment runs again, the rest follows."""
from __future__ import annotations

import json
import os
import signal
import time

from mlos_tune.cli import main
from mlos_tune.results import pid_alive

from .conftest import results, short_load, tune_args, tune_process, write


def test_resume_after_kill_9(tune_models, tmp_path, capsys):
    out = tmp_path / "out"
    args = tune_args(tune_models["matmul"], out, write(tmp_path / "w.yaml", short_load(8)),
                     write(tmp_path / "s.yaml", {"base": "none", "instances": [1, 2, 3]}), repeats=1)
    proc = tune_process(args)
    core_pid = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                doc = json.loads((out / "results.json").read_text())
            except (OSError, ValueError):
                doc = {"experiments": []}
            running = [e for e in doc["experiments"] if e["status"] == "running" and e.get("core_pid")]
            if len(doc["experiments"]) == 3 and running:
                core_pid = running[0]["core_pid"]
                break
            time.sleep(0.05)
        assert core_pid, f"the tuner never reached its third experiment: {proc.stdout.read() if proc.poll() else ''}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the core of the interrupted experiment died with the tuner
    deadline = time.monotonic() + 15
    while pid_alive(core_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(core_pid), "a core outlived the tuner killed with SIGKILL"
    before = results(out)
    done = [e for e in before["experiments"] if e["status"] == "measured"]
    assert [e["id"] for e in done] == ["exp-000", "exp-001"] and before["best"] is None

    assert main(args) == 0
    assert "resumed: 2 configuration(s) measured before" in capsys.readouterr().out
    after = results(out)
    exps = after["experiments"]
    for old in done:                  # kept as they were, not measured again
        new = next(e for e in exps if e["id"] == old["id"])
        assert new["started_at"] == old["started_at"] and new["options"] == old["options"]
    assert exps[2]["status"] == "interrupted"
    measured = [e["options"] for e in exps if e["status"] == "measured"]
    assert measured == [{}, {"instances": 1}, {"instances": 2}, {"instances": 3}]
    assert len(after["sessions"]) == 2 and after["best"] is not None
    assert (out / "best.yaml").exists()


def test_results_of_another_tuning_are_not_resumed(tune_models, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"schema": "mlos-tune/1", "tuning": {
        "fingerprint": "0000", "model_id": "other/model@1", "objective": "minimize_latency", "strategy": "grid"}}))
    assert main([str(tune_models["matmul"]), "--out", str(out), "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another tuning (model other/model@1, objective minimize_latency" in err
    assert "--fresh to discard it" in err
