"""Cluster mode (``mlos-tune --ray-address ADDRESS``): the experiments run on a node of a Ray
cluster, the way the seed's Kubernetes mode runs them on cluster machines instead of the laptop.

One Ray actor (``NodeAgent``) per tuning, pinned to one node (a hard
``NodeAffinitySchedulingStrategy``) and holding every CPU of that node, so that Ray places
nothing else there while it measures: no other tuning's agent, no Ray Serve replica of the
cluster's front doors (``mlos_core.cluster``), no task asking for a CPU. The agent runs what local
mode runs, ``mlos_tune.trial.Trial`` (a fresh core subprocess per configuration, the load
generators in their own processes beside it), so client and server share the node as they share
the machine locally and the network between the tuner and the cluster is never measured.

The model travels as the front door's packages do (``mlos_core.cluster.packages``): a listing of
files with size and sha256, the bytes through Ray's object store, verified on the node before a
core registers it; no node reads the tuner's disk. Request bodies travel with each run.

One node at a time, not one experiment on every node at once: a configuration is judged by runs
interleaved with the incumbent's on the same machine in the same minutes, so that noise hits both
alike; a candidate on one node against an incumbent on another would compare machines.

Importing this module imports Ray; the CLI imports it only when ``--ray-address`` is given.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from mlos_core.cluster.packages import Listing, fetch, list_package
from mlos_core.errors import MLOSError

from .errors import ExperimentFailed, TuneError
from .trial import Trial

NODE_DIR_ENV = "MLOS_NODE_DIR"     # a node's private directory (validation.ray_cluster sets it)
READY_TIMEOUT_S = 45.0             # a node busy that long is passed over for the next one
HEAD_RESOURCE = "node:__internal_head__"


class NodeAgent:
    """On its node: the package copy, the request files, and the trials by handle. Every call
    answers a dict, so that an experiment's failure crosses Ray as data, not as a wrapped error."""

    def __init__(self, session: str):
        self.dir = Path(os.environ.get(NODE_DIR_ENV) or tempfile.gettempdir()) / "mlos-tune"
        self.work = self.dir / "sessions" / session
        self.work.mkdir(parents=True, exist_ok=True)
        self.trials: dict[int, Trial] = {}
        self.next_handle = 0

    def describe(self) -> dict:
        from validation.environment import hardware

        return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
                "pid": os.getpid(), "dir": str(self.dir), "hardware": hardware(), "loadavg": list(os.getloadavg())}

    def fetch(self, listing: dict, refs: dict) -> str:
        def read_chunk(sha256: str, offset: int, length: int) -> bytes:
            return ray.get(refs[sha256])[offset:offset + length].tobytes()

        return str(fetch(Listing.from_wire(listing), read_chunk, self.dir))

    def open(self, exp_id: str, options: dict, model, workload, name: str) -> int:
        self.next_handle += 1
        self.trials[self.next_handle] = Trial(exp_id, options, model, workload, self.work / name,
                                              core_args=["--model-root", str(self.dir / "packages")])
        return self.next_handle

    def call(self, handle: int, method: str, *args) -> dict:
        trial = self.trials[handle]
        try:
            value = getattr(trial, method)(*args)
        except ExperimentFailed as e:
            return {"failed": [e.kind, e.reason], "info": trial.info, "pid": trial.pid}
        except TuneError as e:
            return {"tune_error": str(e)}
        return {"value": value, "info": trial.info, "pid": trial.pid}

    def measure(self, handle: int, concurrency: int, files: dict) -> dict:
        local = {"path": files["path"]}
        for name in ("body", "bodies"):
            if name in files:
                text = files[name]
                path = self.work / "requests" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
                local[name] = path
        return self.call(handle, "measure", concurrency, local)

    def log(self, handle: int) -> str:
        trial = self.trials.get(handle)
        if trial is None or trial.core is None or not trial.core.log.exists():
            return ""
        return trial.core.log.read_text(errors="replace")[-200_000:]

    def stop(self, handle: int) -> None:
        trial = self.trials.pop(handle, None)
        if trial is not None:
            trial.stop()
            shutil.rmtree(trial.workdir, ignore_errors=True)

    def close(self) -> None:
        for handle in list(self.trials):
            self.stop(handle)
        shutil.rmtree(self.work, ignore_errors=True)


class RemoteTrial:
    """``Trial``'s interface, run by the node's agent."""

    def __init__(self, cluster: "ClusterMode", exp_id: str, options: dict, model, workload, workdir: Path):
        self.cluster, self.exp_id, self.options = cluster, exp_id, options
        self.model, self.workload, self.workdir = model, workload, Path(workdir)
        self.info: dict = {}
        self.runs: list[dict] = []
        self.handle: int | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        return self._pid

    def _call(self, remote, what: str):
        try:
            answer = ray.get(remote)
        except RayError as e:
            raise ExperimentFailed("crash", f"the tuner's agent on node {self.cluster.node['hostname']} "
                                            f"failed {what}: {str(e)[-600:]}") from None
        if "tune_error" in answer:
            raise TuneError(answer["tune_error"])
        self.info.update(answer.get("info") or {})
        self._pid = answer.get("pid") or self._pid
        if "failed" in answer:
            raise ExperimentFailed(*answer["failed"])
        return answer.get("value")

    def start(self) -> None:
        agent = self.cluster.agent
        on_node = dataclasses.replace(self.model, path=Path(self.cluster.model_path), package_dir=None)
        self.handle = ray.get(agent.open.remote(self.exp_id, self.options, on_node, self.workload, self.workdir.name))
        self.info["node"] = {k: self.cluster.node[k] for k in ("node_id", "hostname")}
        self._call(agent.call.remote(self.handle, "start"), "starting a core")

    def metadata(self) -> dict | None:
        return self._call(self.cluster.agent.call.remote(self.handle, "metadata"), "asking for metadata")

    def check_answer(self, path: str, body: dict, reference: dict | None) -> dict | None:
        return self._call(self.cluster.agent.call.remote(self.handle, "check_answer", path, body, reference),
                          "on the first request")

    def measure(self, concurrency: int, files: dict, samples: bool = True) -> dict:
        wire = {"path": files["path"], **{k: Path(files[k]).read_text() for k in ("body", "bodies") if k in files}}
        return self._call(self.cluster.agent.measure.remote(self.handle, concurrency, wire), "during a run")

    def batch_ratio(self) -> float | None:
        return self._call(self.cluster.agent.call.remote(self.handle, "batch_ratio"), "reading metrics")

    @property
    def core(self):
        """The core's log, brought here (the tuner keeps failed experiments' logs)."""
        if self.handle is None:
            return None
        try:
            text = ray.get(self.cluster.agent.log.remote(self.handle), timeout=60)
        except RayError:
            return None
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "core.log"
        log.write_text(text)
        return SimpleNamespace(log=log)

    def stop(self) -> None:
        if self.handle is not None:
            try:
                ray.get(self.cluster.agent.stop.remote(self.handle), timeout=120)
            except RayError:
                pass            # the agent is gone, and its cores with it (they die with their parent)
            self.handle = None


def _reachable(address: str) -> None:
    """Ray's own connect retries for minutes; an address nothing listens on is told at once."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TuneError(f"--ray-address {address}: expected HOST:PORT of the cluster's head (or ray://HOST:PORT)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise TuneError(f"--ray-address {address}: cannot join the cluster: nothing answers there ({e})") from None


class ClusterMode:
    """The connection, the node chosen and its agent, the model copied there."""

    def __init__(self, address: str, log=print):
        self.address, self.log = address, log
        self.agent = None
        self.node: dict = {}
        self.model_path: str | None = None

    def connect(self, model) -> "ClusterMode":
        """Everything that can fail before the first experiment: the connection, a free node, the
        model's copy on it (TuneError with the reason)."""
        _reachable(self.address)
        try:
            ray.init(address=self.address, namespace="mlos-tune", log_to_driver=False, logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise TuneError(f"--ray-address {self.address}: cannot join the cluster: {e}") from None
        try:
            self._place()
            self._copy_model(model)
        except BaseException:
            self.close()
            raise
        return self

    def _place(self) -> None:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        if not nodes:
            raise TuneError(f"--ray-address {self.address}: no live node with a CPU")
        # worker nodes first (the head runs the cluster's services and often the front doors), larger first
        nodes.sort(key=lambda n: (HEAD_RESOURCE in n["Resources"], -n["Resources"]["CPU"]))
        agent_class = ray.remote(NodeAgent)
        session = uuid.uuid4().hex[:12]
        for n in nodes:
            agent = agent_class.options(
                num_cpus=n["Resources"]["CPU"], max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(session)
            try:
                self.node = ray.get(agent.describe.remote(), timeout=READY_TIMEOUT_S)
                self.agent = agent
                self.log(f"cluster: experiments on node {self.node['hostname']} ({self.node['node_id'][:12]}), "
                         f"its {n['Resources']['CPU']:g} CPU(s) held by the tuner")
                return
            except GetTimeoutError:
                ray.kill(agent)
        raise TuneError(f"--ray-address {self.address}: no node has all its CPUs free for the tuner within "
                        f"{READY_TIMEOUT_S:g} s each ({len(nodes)} tried); another tuning or Serve replicas hold them")

    def _copy_model(self, model) -> None:
        try:
            listing = list_package(model.path)
        except MLOSError as e:
            raise TuneError(f"{model.path}: {e}") from None
        base = Path(model.path).parent
        refs = {f["sha256"]: ray.put(np.fromfile(base / f["path"], dtype=np.uint8)) for f in listing.files}
        try:
            self.model_path = ray.get(self.agent.fetch.remote(listing.to_wire(), refs))
        except RayError as e:
            raise TuneError(f"copying {model.path} to node {self.node['hostname']} failed: {str(e)[-600:]}") from None
        self.log(f"cluster: {len(listing.files)} file(s), {listing.size / 2**20:.1f} MiB copied and verified on the node")

    def trial(self, exp_id: str, options: dict, model, workload, workdir: Path) -> RemoteTrial:
        return RemoteTrial(self, exp_id, options, model, workload, workdir)

    def record(self) -> dict:
        """For results.json: where the experiments ran (the node's own environment record)."""
        return {"ray_address": self.address, "node": self.node, "model_path_on_node": self.model_path}

    def close(self) -> None:
        if self.agent is not None:
            try:
                ray.get(self.agent.close.remote(), timeout=120)
            except RayError:
                pass
            ray.kill(self.agent)
            self.agent = None
        if ray.is_initialized():
            ray.shutdown()
