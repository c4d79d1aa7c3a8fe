"""The kernel path against the userspace path and against JSON over HTTP. Needs /dev/mlos-ml:
natively where the module is loaded, else inside the TCG guest of ``make bench-kmod`` (then
every figure is emulated: read the ratios, not the milliseconds).

1. Transport (``test_transport``), per input size (4 KB, 600 KB = one 1x3x224x224 FP32 image,
   20 MB): the same model (a row sum, so moving the input is the cost) reached three ways:
   zero-copy through /dev/mlos-ml, zero-copy through the userspace broker, and v2 JSON over
   keep-alive HTTP to the same core. Rounds are interleaved (the order rotates every round) and
   every call is timed from the numpy array in the client's hand to the answer in its hand.
2. Priority under a CPU hog: benchmarks/test_kernel_priority.py.

Every figure goes into the benchmark's ``extra_info``; ``python -m benchmarks.report_kernel``
renders them. Knob: MLOS_BENCH_KPATH_SCALE multiplies the rounds.
"""
from __future__ import annotations

import http.client
import json
import os
import time
from urllib.parse import quote

import numpy as np
import pytest

from .conftest import kernel_path_core, needs_mlos_device
from validation.stats import percentile_ci, ratio_ci

SCALE = float(os.environ.get("MLOS_BENCH_KPATH_SCALE", "1"))
EMULATED = os.environ.get("MLOS_BENCH_EMULATED") == "1"
# size label -> (float32 elements, interleaved rounds, zero-copy calls and JSON calls per round):
# a 20 MB JSON request takes tens of seconds in the guest, so it gets fewer samples
SIZES = {"4KB": (1024, 10, 20, 20), "600KB": (3 * 224 * 224, 10, 5, 3), "20MB": (5 * 2**20, 4, 5, 1)}
PATHS = ("zerocopy-kernel", "zerocopy-userspace", "json-http")

pytestmark = needs_mlos_device


def _ms(samples) -> list[float]:
    return [s * 1e3 for s in samples]


class JsonClient:
    """v2 JSON over one keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, model: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        self.path = f"/v2/models/{quote(model, safe='')}/infer"

    def infer(self, x: np.ndarray) -> np.ndarray:
        body = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.reshape(-1).tolist()}]})
        self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        doc = json.loads(r.read())
        assert r.status == 200, doc
        out = doc["outputs"][0]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])

    def close(self):
        self.conn.close()


@pytest.fixture(scope="module")
def transport_cores(kernel_path_models, tmp_path_factory):
    """One core on the kernel backend, one on the userspace backend, the row sum on both."""
    d = tmp_path_factory.mktemp("kpath-cores")
    sock = str(d / "shim.sock")
    cores = {}
    try:
        cores["kernel"] = kernel_path_core(d / "kernel", "kernel")
        cores["userspace"] = kernel_path_core(d / "userspace", "userspace", socket=sock)
        for c in cores.values():
            c.register("bench/sum@1", kernel_path_models["sum"], timeout=600)
        yield cores, sock
    finally:
        for c in cores.values():
            c.stop()


@pytest.mark.parametrize("size", list(SIZES))
def test_transport(benchmark, transport_cores, size):
    from kernel_shim import open_device
    from mlos_core.zerocopy.client import LocalClient

    cores, sock = transport_cores
    n, rounds, zc_calls, json_calls = SIZES[size]
    calls = {"zerocopy-kernel": zc_calls, "zerocopy-userspace": zc_calls, "json-http": json_calls}
    rounds = max(2, int(rounds * SCALE))
    x = np.random.default_rng(7).random((1, n), dtype=np.float32)
    want = float(x.astype(np.float64).sum())
    kernel = LocalClient(open_device("on"))
    user = LocalClient(open_device("off", socket_path=sock))
    js = JsonClient(cores["kernel"].port, "bench/sum@1")
    out = 1 << 16                                     # the answer is one float
    call = {"zerocopy-kernel": lambda: kernel.infer("bench/sum@1", {"x": x}, output_bytes=out, timeout=600)["y"],
            "zerocopy-userspace": lambda: user.infer("bench/sum@1", {"x": x}, output_bytes=out, timeout=600)["y"],
            "json-http": lambda: js.infer(x)}
    times: dict[str, list[float]] = {p: [] for p in PATHS}

    def interleaved():
        for p in PATHS:                               # warm-up: buffers sized, model hot
            np.testing.assert_allclose(float(call[p]()[0, 0]), want, rtol=1e-3)
        for r in range(rounds):
            order = PATHS[r % 3:] + PATHS[:r % 3]
            for p in order:
                for _ in range(calls[p]):
                    t0 = time.perf_counter()
                    y = call[p]()
                    times[p].append(time.perf_counter() - t0)
                    assert y.shape == (1, 1)

    try:
        benchmark.pedantic(interleaved, rounds=1, iterations=1)
    finally:
        for c in (kernel, user, js):
            c.close()
    ms = {p: _ms(times[p]) for p in PATHS}
    benchmark.extra_info.update({
        "kind": "transport", "size": size, "input_bytes": 4 * n, "emulated": EMULATED,
        "samples": {p: len(ms[p]) for p in PATHS},
        "median_ms": {p: percentile_ci(ms[p], 50) for p in PATHS},
        "p99_ms": {p: float(np.percentile(ms[p], 99)) for p in PATHS},
        # < 1: the first path is faster
        "kernel_vs_userspace": ratio_ci(ms["zerocopy-kernel"], ms["zerocopy-userspace"]),
        "kernel_vs_json": ratio_ci(ms["zerocopy-kernel"], ms["json-http"]),
        "userspace_vs_json": ratio_ci(ms["zerocopy-userspace"], ms["json-http"]),
    })
