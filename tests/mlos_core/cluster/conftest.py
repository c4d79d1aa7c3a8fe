"""A Ray cluster of a head and two worker nodes (one CPU each) on this machine, and front doors
(real ``python -m mlos_core --ray-address ...`` subprocesses) joined to it. One cluster per test
module: it takes tens of seconds to start, and is always shut down at the module's end."""
from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pytest

from tests.conftest import CoreProcess
from validation.ray_cluster import WORKER_RESOURCE, LocalRayCluster

# Ray Serve reads its autoscaling metric intervals from the environment (default 10 s): short
# ones let the scaling test see decisions in seconds. Nodes and front doors get them.
RAY_ENV = {"RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5",
           "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "0.5"}
# Replicas go to the worker nodes only (the front doors run beside the head), a quarter of a
# node each, so the shared deployment's two replicas and a model's own two fit on two nodes.
FRONT_DOOR_ENV = {
    "MLOS_CLUSTER_REPLICA_CPUS": "0.25",
    "MLOS_CLUSTER_REPLICA_RESOURCES": json.dumps({WORKER_RESOURCE: 0.25}),
    "MLOS_CLUSTER_MIN_REPLICAS": "2", "MLOS_CLUSTER_MAX_REPLICAS": "2",
    "MLOS_ZEROCOPY": "false",
}


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray.serve", reason="Ray Serve is the 'ray' extra (pip install .[ray]; make test installs it)")
    cluster = LocalRayCluster(workers=2, env=RAY_ENV).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def front_door(ray_cluster, tmp_path_factory):
    """``front_door(name, **env)`` starts a front door; every one is stopped at the module's end."""
    started: list[CoreProcess] = []

    def start(name: str, **env: str) -> CoreProcess:
        work = tmp_path_factory.mktemp(f"door-{name}")
        door = CoreProcess(work / "data", "--ray-address", ray_cluster.address, env={
            **ray_cluster.env(), **FRONT_DOOR_ENV, "MLOS_CLUSTER_STORE_DIR": str(ray_cluster.dir / "store"), **env})
        started.append(door)
        return door.start(timeout=240)

    yield start
    for door in started:
        door.stop()


def path_of(model_id: str) -> str:
    return quote(model_id, safe="")


def register(door: CoreProcess, model_id: str, path, **options):
    body = {"model_id": model_id, "path": str(path)}
    if options:
        body["options"] = options
    status, _, answer = door.call("POST", "/v1/models/register", body, timeout=300)
    assert status == 200, answer
    return answer


def infer(door: CoreProcess, model_id: str, x: np.ndarray, name: str = "x", timeout: float = 120):
    """(status, outputs or the error body) of one MLOS API inference."""
    status, _, answer = door.call("POST", f"/v1/models/{path_of(model_id)}/inference", {name: x.tolist()},
                                  timeout=timeout)
    return status, (answer["outputs"] if status == 200 else answer)


def served_by(door: CoreProcess, model_id: str) -> dict:
    """replica -> {node, answers}, as the front door counted them."""
    _, _, status = door.call("GET", "/status")
    return status["cluster"]["models"].get(model_id, {}).get("answers", {})
