"""validation.environment and validation.core_proc on this machine: versions with the git commit,
the kernel-module status as kernel_shim reports it, hardware, and resource sampling of real processes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest

import axon_pkg
from validation import environment as env
from validation.core_proc import KERNEL_DEVICE, CoreServer, kernel_available

ROOT = env.ROOT


def test_versions_carry_the_git_commit_and_component_versions():
    v = env.versions()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", v["git_commit"])
    assert v["git_commit"].startswith(head)
    assert v["axon"] == axon_pkg.__version__
    assert v["validation"] and v["core"]
    assert all(isinstance(x, str) for x in v.values())


def test_hardware_record_matches_the_machine(tmp_path):
    hw = env.hardware(tmp_path)
    assert hw["threads"] == psutil.cpu_count(logical=True) and hw["cores"] == psutil.cpu_count(logical=False)
    assert hw["ram_bytes"] == psutil.virtual_memory().total
    assert 0 < hw["disk_free_bytes"] <= hw["disk_total_bytes"]
    assert hw["kernel"] == os.uname().release
    assert hw["cpu_model"] and hw["cpu_model"] != "unknown"
    assert isinstance(hw["gpus"], list)
    if not hw["gpus"]:                       # no NVIDIA driver here: the reason is recorded, not a crash
        assert hw["gpu_note"]


@pytest.mark.parametrize("setting", ["off", "on", "auto"])
def test_kernel_status_agrees_with_kernel_shim_status(monkeypatch, setting):
    monkeypatch.setenv("MLOS_KERNEL", setting)
    ours = env.kernel_status()
    proc = subprocess.run([sys.executable, "-m", "kernel_shim", "status", "--json"], cwd=ROOT, text=True,
                          capture_output=True, env={**os.environ, "MLOS_KERNEL": setting,
                                                    "MLOS_SHIM_SOCKET": f"/tmp/mlos-test-{os.getpid()}.sock"})
    assert ours["mode"] == setting
    assert ours["device"]["present"] == os.path.exists(KERNEL_DEVICE)
    if proc.stdout.strip():
        theirs = json.loads(proc.stdout)
        assert theirs["mode"] == ours["mode"] and theirs["device"] == ours["device"]
        assert theirs["backend"] == ours["backend"]
    else:                                    # kernel_shim refused (MLOS_KERNEL=on without the device)
        assert ours["backend"] is None and "MLOS_KERNEL=on but" in ours["reason"]
    if setting == "off":
        assert ours == {**ours, "backend": "userspace", "reason": "MLOS_KERNEL=off"}


def test_resource_sampler_sees_idle_and_load_of_a_real_process():
    code = ("import sys, time\nblob = bytearray(80 * 2**20)\nsys.stdout.write('ready\\n'); sys.stdout.flush()\n"
            "sys.stdin.readline()\nend = time.time() + 1.5\nwhile time.time() < end: pass\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        sampler = env.ResourceSampler(proc.pid, interval=0.1).start()
        time.sleep(0.8)
        sampler.label = "load"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.wait(10)
        summary = sampler.stop()
    finally:
        proc.kill()
    assert summary["idle"]["cpu_percent"] < 20
    assert summary["load"]["cpu_percent_peak"] > 50          # a busy loop: most of one core
    assert summary["idle"]["rss_bytes"] > 80 * 2**20
    assert summary["samples"][0]["t"] < summary["samples"][-1]["t"]
    assert {s["label"] for s in summary["samples"]} == {"idle", "load"}


def test_core_start_time_and_kernel_mode_availability(tmp_path):
    ok, why = kernel_available()
    assert ok == os.path.exists(KERNEL_DEVICE) or "does not open" in why
    if not ok and not os.path.exists(KERNEL_DEVICE):
        assert why == f"{KERNEL_DEVICE} does not exist (mlos-ml.ko is not loaded on this machine)"
    with CoreServer(tmp_path, "userspace") as core:
        assert 0 < core.startup_s < 60
        status, health = core.call("GET", "/health")
        assert status == 200 and health["kernel"]["mode"] == "userspace"
        assert "MLOS_KERNEL=off" in health["kernel"]["reason"]
    assert not core.alive()
    with pytest.raises(ValueError, match="mode must be kernel or userspace, not 'both'"):
        CoreServer(tmp_path, "both")
