"""The inference threads' scheduling class: applied through kernel_shim as executor threads start,
inherited by the threads they create, reported in /status, restored when the core lets go."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from kernel_shim import start_broker
from mlos_core.config import ConfigError, load_settings
from mlos_core.thread_priority import ThreadPriority

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="raising a thread above nice 0 needs root "
                                                          "(the userspace backend's bound for others is NORMAL)")


def _nice(tid: int | None = None) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid or threading.get_native_id())


@pytest.fixture
def broker_socket(tmp_path):
    sock = str(tmp_path / "s.sock")
    broker = start_broker(sock)
    yield sock
    broker.close()


@needs_root
def test_executor_threads_and_their_children_take_the_class(broker_socket):
    prio = ThreadPriority("high", broker_socket)
    pool = ThreadPoolExecutor(max_workers=1, initializer=prio)

    def child_nice():               # a thread created by a raised thread (as onnxruntime's pool is)
        out = []
        t = threading.Thread(target=lambda: out.append(_nice()))
        t.start()
        t.join()
        return _nice(), threading.get_native_id(), out[0]

    own, tid, child = pool.submit(child_nice).result()
    assert (own, child) == (-5, -5)
    assert prio.status() == {"class": "high", "threads": 1, "backend": "userspace", "error": None}
    prio.close()                    # restores the threads it changed
    assert _nice(tid) == 0
    pool.shutdown()


def test_normal_asks_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOS_SHIM_SOCKET", str(tmp_path / "never.sock"))
    prio = ThreadPriority("normal")
    with ThreadPoolExecutor(max_workers=1, initializer=prio) as pool:
        assert pool.submit(_nice).result() == _nice()
    assert prio.status() == {"class": "normal", "threads": 0, "backend": None, "error": None}
    assert not (tmp_path / "never.sock").exists()     # no broker was started for nothing


def test_refusal_is_reported_not_fatal(broker_socket):
    prio = ThreadPriority("realtime", broker_socket)   # the userspace backend never grants SCHED_FIFO
    with ThreadPoolExecutor(max_workers=1, initializer=prio) as pool:
        assert pool.submit(lambda: 6 * 7).result() == 42
    status = prio.status()
    assert status["threads"] == 0 and "class 0" in status["error"]
    prio.close()


def test_bad_class_is_a_config_error(monkeypatch):
    monkeypatch.setenv("MLOS_INFERENCE_PRIORITY", "urgent")
    with pytest.raises(ConfigError, match="inference priority must be one of realtime, high, normal, batch"):
        load_settings(None)
    monkeypatch.setenv("MLOS_INFERENCE_PRIORITY", " HIGH ")
    assert load_settings(None).inference_priority == "high"


@needs_root
def test_core_raises_its_inference_threads(core_process, models, tmp_path):
    sock = str(tmp_path / "shim.sock")
    core = core_process("--inference-priority", "high",
                        env={"MLOS_KERNEL": "off", "MLOS_SHIM_SOCKET": sock, "MLOS_ZEROCOPY": "0"})
    assert core.call("POST", "/v1/models/register", {"model_id": "p/matmul@1", "path": str(models.matmul)})[0] == 200
    body = {"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}
    assert core.call("POST", "/v2/models/p%2Fmatmul%401/infer", body)[0] == 200
    status = core.call("GET", "/status")[2]["kernel"]["inference_priority"]
    assert status["class"] == "high" and status["threads"] >= 2 and status["error"] is None
    pid = core.proc.pid
    nices = {int(tid): _nice(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}
    assert nices[pid] == 0                              # the event loop's thread is left alone
    assert set(nices.values()) == {0, -5}
    assert sum(n == -5 for n in nices.values()) >= status["threads"]   # and what they started
