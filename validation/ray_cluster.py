"""A multi-node Ray cluster on this machine, as Ray's own tests make one, for the cluster tests
and ``make bench-cluster``.

``LocalRayCluster`` starts a head and worker nodes with ``ray.cluster_utils.Cluster``, each node
its own raylet with its own CPU count, a custom ``worker`` resource on workers (so replicas can
be kept off the head, where the front doors run) and its own private directory, passed to that
node's processes as ``MLOS_NODE_DIR``: what a replica stores on its node no other node sees by
path, as on machines without a shared file system. Every port is chosen free, and Ray's session
files go to a directory of its own (``RAY_TMPDIR``), so that clusters of concurrent runs never
meet; ``stop()`` removes the nodes and the directory.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .core_proc import free_port

WORKER_RESOURCE = "worker"


class LocalRayCluster:
    def __init__(self, workers: int = 2, cpus_per_node: float = 1, head_cpus: float = 1, env: dict | None = None):
        """``env``: environment of every node (and of front doors, through ``env()``), e.g. Ray
        Serve's autoscaling metric intervals, which it reads from the environment."""
        self.extra_env = dict(env or {})
        self.workers_wanted = workers
        self.cpus = cpus_per_node
        self.head_cpus = head_cpus
        # short: Ray's Unix sockets live below it and a socket path is at most 107 bytes
        self.dir = Path(tempfile.mkdtemp(prefix="mlos-ray-", dir="/tmp"))
        self.cluster = None
        self.workers: list = []
        self._previous_env: dict = {}

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_dir(self, name: str) -> Path:
        return self.dir / "nodes" / name

    def env(self) -> dict:
        """What a process joining this cluster (a front door) needs in its environment."""
        return {"RAY_TMPDIR": str(self.dir), **self.extra_env}

    def start(self) -> "LocalRayCluster":
        from ray.cluster_utils import Cluster

        self._previous_env = {k: os.environ.get(k) for k in self.env()}
        os.environ.update(self.env())  # the nodes' processes inherit it
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": self.head_cpus, "include_dashboard": False, "gcs_server_port": free_port(),
            "ray_client_server_port": free_port(), "dashboard_agent_listen_port": free_port(),
            "metrics_export_port": free_port(), "env_vars": {"MLOS_NODE_DIR": str(self.node_dir("head"))},
        })
        for _ in range(self.workers_wanted):
            self.add_worker()
        return self

    def add_worker(self):
        name = f"worker-{len(self.workers) + 1}"
        node = self.cluster.add_node(num_cpus=self.cpus, resources={WORKER_RESOURCE: self.cpus},
                                     env_vars={"MLOS_NODE_DIR": str(self.node_dir(name))})
        node.mlos_name = name
        self.workers.append(node)
        return node

    def remove_worker(self, node) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def stop(self) -> None:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
            if self.cluster is not None:
                self.cluster.shutdown()
        finally:
            for k, v in self._previous_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
