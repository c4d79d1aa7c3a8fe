"""Configurations that fail are recorded with their reason and never win: a core killed mid-run
(SIGKILL, as the kernel's out-of-memory killer ends a process), and options the core refuses for
the workload's request."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

from mlos_tune.cli import main

from .conftest import results, short_load, tune_args, write


def kill_when_running(out, options: dict, stop: threading.Event, killed: list) -> None:
    """Watch results.json; SIGKILL the core of the experiment with ``options`` once it serves."""
    while not stop.is_set():
        try:
            doc = json.loads((out / "results.json").read_text())
        except (OSError, ValueError):
            doc = {"experiments": []}
        for e in doc["experiments"]:
            if e["status"] == "running" and e["options"] == options and e.get("core_pid"):
                time.sleep(0.8)                    # registered and checked: now under load
                os.kill(e["core_pid"], signal.SIGKILL)
                killed.append(e["id"])
                return
        time.sleep(0.05)


def test_a_crashing_configuration_is_recorded_and_skipped(tune_models, tmp_path):
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=kill_when_running, args=(out, {"instances": 2}, stop, killed), daemon=True)
    watcher.start()
    try:
        rc = main(tune_args(tune_models["matmul"], out, write(tmp_path / "w.yaml", short_load(8, duration=1.5)),
                            write(tmp_path / "s.yaml", {"base": "none", "instances": [2, 1]}), repeats=1))
    finally:
        stop.set()
        watcher.join(5)
    assert rc == 0 and killed == ["exp-001"]
    doc = results(out)
    crashed = doc["experiments"][1]
    assert crashed["status"] == "failed" and crashed["failure"] == "crash"
    assert "killed by SIGKILL" in crashed["reason"] and "out-of-memory killer" in crashed["reason"]
    assert (out / "logs" / "exp-001.log").exists()
    # the tuning went on: the next configuration was measured, and the answer is not the crashed one
    assert doc["experiments"][2]["options"] == {"instances": 1} and doc["experiments"][2]["status"] == "measured"
    assert doc["best"]["options"].get("instances") != 2
    assert all(c["source"] != "exp-001" for c in doc["final"])


def test_options_the_core_refuses_for_the_request(tune_models, tmp_path):
    """A request of 4 rows, and max_batch_size 2: the core answers 400 to every request of that
    configuration; it fails as refused, with the core's own message. (The load is an open loop:
    Poisson arrivals at 100/s, latency minimized.)"""
    out = tmp_path / "out"
    workload = {"load": {"rate": 100, "duration_s": 1.5, "warmup_s": 0.3},
                "inputs": {"x": {"shape": [4, 64], "datatype": "FP32"}}}
    assert main(tune_args(tune_models["matmul"], out, write(tmp_path / "w.yaml", workload),
                          write(tmp_path / "s.yaml", {"base": "none", "max_batch_size": [2]}),
                          "--objective", "minimize_latency", repeats=1)) == 0
    exps = results(out)["experiments"]
    assert exps[0]["status"] == "measured"
    # the open loop kept its rate: about 150 arrivals in the 1.5 s window
    assert 100 <= exps[0]["metrics"]["completed"] <= 170
    assert exps[1]["status"] == "failed" and exps[1]["failure"] == "refused"
    assert "max_batch_size" in exps[1]["reason"] and "HTTP 400" in exps[1]["reason"]
    assert results(out)["best"]["experiment"] == "exp-000"
