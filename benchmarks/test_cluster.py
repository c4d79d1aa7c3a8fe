"""The cluster path measured (``make bench-cluster``), in one run on one Ray cluster of a head
and two worker nodes (one CPU each) on this machine:

(a) throughput of a compute-bound ONNX model (20 chained 1024x1024 MatMuls, ``ROWS`` rows per
    request, one intra-op thread, one execution at a time per replica) through the front door
    with 1 replica and with 2 replicas (one per worker node), and through the single-process
    server with the same settings, each at ``COMPUTE_CLIENTS`` closed-loop clients;
(b) the cluster path's overhead at one client: a 1x64 MatMul through the front door vs through
    the single-process server (p50, p99).

Both servers are ``python -m mlos_core`` subprocesses; the load generator is
``benchmarks/loadgen.py`` in its own process. ``python -m benchmarks.report_cluster
benchmarks/results/cluster.json`` prints the table, the 2-vs-1 replica ratio (target 1.7x on a
quiet 2-core machine) and the overhead.

Knobs: MLOS_BENCH_CLUSTER_DURATION (measured seconds per point, default 10),
MLOS_BENCH_CLUSTER_WARMUP (default 3), MLOS_BENCH_CLUSTER_ROWS (default 48: about 2 GFLOP per request).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from .conftest import ModelCase, Server, _v2_body, launch_mlos, run_load

DURATION_S = float(os.environ.get("MLOS_BENCH_CLUSTER_DURATION", "10"))
WARMUP_S = float(os.environ.get("MLOS_BENCH_CLUSTER_WARMUP", "3"))
ROWS = int(os.environ.get("MLOS_BENCH_CLUSTER_ROWS", "48"))
COMPUTE_CLIENTS = 4
# one execution at a time on one thread, per replica and in the single process alike
SERVING_ARGS = ["--intra-op-threads", "1", "--instances", "1", "--max-batch-size", "1", "--log-level", "warning"]
# Two replicas may share a node (half a node each), and Ray Serve spreads a deployment's replicas
# over nodes; a replica holding the model takes at most 2 requests (one running, one waiting) before
# the router sends the next to the other replica.
FRONT_DOOR_ENV = {"MLOS_CLUSTER_REPLICA_CPUS": "0.5", "MLOS_CLUSTER_REPLICA_RESOURCES": json.dumps({"worker": 0.5}),
                  "MLOS_CLUSTER_MIN_REPLICAS": "1", "MLOS_CLUSTER_MAX_REPLICAS": "1", "MLOS_ZEROCOPY": "false"}


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray.serve", reason="Ray Serve is the 'ray' extra (make bench-cluster installs it)")
    from validation.ray_cluster import LocalRayCluster

    c = LocalRayCluster(workers=2, cpus_per_node=1, head_cpus=1).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def front_door(cluster, tmp_path_factory):
    d = tmp_path_factory.mktemp("front-door")
    env = {**cluster.env(), **FRONT_DOOR_ENV, "MLOS_CLUSTER_STORE_DIR": str(cluster.dir / "store")}
    server = launch_mlos(d, [*SERVING_ARGS, "--ray-address", cluster.address], env=env, timeout=300)
    server.name = "front door"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    server = launch_mlos(tmp_path_factory.mktemp("single"), SERVING_ARGS)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    from tests import onnx_models

    d = tmp_path_factory.mktemp("cluster-models")
    rng = np.random.default_rng(2)
    mm, _ = onnx_models.matmul(d / "matmul.onnx")
    return {"compute": (onnx_models.slow(d / "compute.onnx"), {"x": rng.standard_normal((ROWS, 1024)).astype(np.float32)}),
            "matmul": (mm, {"x": rng.standard_normal((1, 64)).astype(np.float32)}),
            "dir": d}


def _case(cases, key: str, model_id: str) -> ModelCase:
    path, feed = cases[key]
    body = _v2_body(feed)
    body_file = cases["dir"] / f"{model_id.replace('/', '_').replace('@', '_')}.json"
    body_file.write_bytes(body)
    return ModelCase("matmul" if key == "matmul" else key, model_id, path, feed, body, body_file)


def _check(server: Server, case: ModelCase) -> None:
    """One request before measuring: the answer is the model's (onnxruntime in this process)."""
    import onnxruntime as ort

    [out] = server.post(case.url_path, case.body)["outputs"]
    ref = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"]).run(None, case.feed)[0]
    np.testing.assert_allclose(np.asarray(out["data"], np.float32).reshape(ref.shape), ref, rtol=1e-3, atol=1e-3)


def _serving_nodes(server: Server, model_id: str) -> dict:
    answers = server.get("/status")["cluster"]["models"].get(model_id, {}).get("answers", {})
    return {replica: info["node"][:12] for replica, info in answers.items()}


def _record(benchmark, result: dict, **info) -> None:
    assert result["errors"] == 0, f"{result['errors']} failed requests, e.g. {result['error_sample']}"
    benchmark.extra_info.update({**info, "throughput_rps": result["throughput_rps"], "p50_ms": result["p50_ms"],
                                 "p99_ms": result["p99_ms"], "completed": result["completed"],
                                 "server_cpu_s": result["server_cpu_s"], "duration_s": DURATION_S})


@pytest.mark.parametrize("replicas", [1, 2], ids=lambda n: f"{n}-replica")
def test_compute_bound_throughput_on_the_cluster(benchmark, front_door, cases, replicas):
    model_id = f"bench/compute-{replicas}r@1"
    case = _case(cases, "compute", model_id)
    front_door.register(model_id, case.path, options={"min_replicas": replicas, "max_replicas": replicas,
                                                      "max_ongoing_requests": 2})
    _check(front_door, case)
    benchmark.group = "compute"
    result = benchmark.pedantic(run_load, args=(front_door, case, COMPUTE_CLIENTS, DURATION_S, WARMUP_S),
                                rounds=1, iterations=1)
    nodes = _serving_nodes(front_door, model_id)
    _record(benchmark, result, figure="compute", path=f"cluster, {replicas} replica(s)", replicas=replicas,
            concurrency=COMPUTE_CLIENTS, rows=ROWS, serving_nodes=nodes)
    if replicas == 2:
        assert len(set(nodes.values())) == 2, f"the two replicas did not both serve, on two nodes: {nodes}"


def test_compute_bound_throughput_single_process(benchmark, single, cases):
    case = _case(cases, "compute", "bench/compute@1")
    single.register(case.model_id, case.path)
    _check(single, case)
    benchmark.group = "compute"
    result = benchmark.pedantic(run_load, args=(single, case, COMPUTE_CLIENTS, DURATION_S, WARMUP_S),
                                rounds=1, iterations=1)
    _record(benchmark, result, figure="compute", path="single process", replicas=0,
            concurrency=COMPUTE_CLIENTS, rows=ROWS)


@pytest.mark.parametrize("where", ["single", "cluster"])
def test_overhead_at_one_client(benchmark, request, cases, where):
    server = request.getfixturevalue("single" if where == "single" else "front_door")
    case = _case(cases, "matmul", "bench/matmul@1")
    server.register(case.model_id, case.path)
    _check(server, case)
    benchmark.group = "overhead"
    result = benchmark.pedantic(run_load, args=(server, case, 1, DURATION_S, WARMUP_S), rounds=1, iterations=1)
    _record(benchmark, result, figure="overhead", path="cluster front door" if where == "cluster" else "single process",
            concurrency=1)
