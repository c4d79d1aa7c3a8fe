"""The front door: connects this server to a Ray cluster and routes its models' work there.

``python -m mlos_core --ray-address auto|HOST:PORT`` builds the usual aiohttp application
with a ``FrontDoor``: the HTTP layer, its middlewares and the data plane are unchanged; the
registry is a ``ClusterRegistry`` and every loaded model's runner a ``ClusterRunner``. Starting
connects as a Ray driver, starts Ray Serve without its HTTP proxy (this server is the proxy),
and finds or starts the cluster store on the head node.

Deployments (Ray Serve applications, each of one ``ModelReplica`` deployment):

- ``mlos-models``: shared by every model registered without replica options; multiplexed, and
  autoscaled within the front door's ``cluster.min_replicas..max_replicas``;
- ``mlos-m-<digest of the id>``: a model registered with any of ``min_replicas``,
  ``max_replicas``, ``target_ongoing_requests``, ``upscale_delay_s``, ``downscale_delay_s``,
  ``look_back_period_s`` or ``max_ongoing_requests`` in its options gets a deployment of its
  own, autoscaled by those.

The first front door that needs a deployment deploys it with its own settings; the others find
it running. Deployments outlive front doors (Ray Serve's controller owns them).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
from collections import Counter
from typing import Any

import ray
from ray import serve
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..config import ConfigError, Settings
from ..errors import ModelUnavailable
from ..registry.registry import ModelEntry
from .registry import ClusterRegistry, StoreClient
from .replica import ModelReplica
from .runner import ClusterRunner
from .store import ClusterStore
from .wire import STORE_NAME, model_key

log = logging.getLogger(__name__)

SHARED_APP = "mlos-models"
DEPLOYMENT = "ModelReplica"
DEPLOYMENT_OPTIONS = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s",
                      "downscale_delay_s", "look_back_period_s", "max_ongoing_requests")
# What a replica's own registry takes from the front door's settings.
REPLICA_SETTINGS = ("memory_budget_mb", "keep_alive", "max_queue", "max_batch_size", "max_batch_delay_us",
                    "instances", "intra_op_threads", "inter_op_threads", "inference_priority", "log_level")
HEAD_RESOURCE = "node:__internal_head__"


def app_for(model_id: str, options: dict) -> str:
    if any(k in options for k in DEPLOYMENT_OPTIONS):
        return "mlos-m-" + hashlib.sha256(model_id.encode()).hexdigest()[:12]
    return SHARED_APP


class FrontDoor:
    def __init__(self, settings: Settings, metrics):
        self.settings = settings
        self.store = StoreClient()
        self.registry = ClusterRegistry(settings, metrics, self)
        self.answers: Counter = Counter()  # (model, replica, node) -> answers
        self.retries: Counter = Counter()  # model -> requests retried after a replica was lost
        self._deploying: dict[str, asyncio.Lock] = {}
        metrics.registry.register(_ClusterCollector(self))

    # ---- connection ---------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._connect)

    def _connect(self) -> None:
        s = self.settings
        _check_reachable(s.ray_address)
        ray.init(address=s.ray_address, namespace=s.ray_namespace, logging_level=logging.WARNING,
                 log_to_driver=s.log_level == "debug", configure_logging=False)
        serve.start(proxy_location="Disabled")  # this server is the HTTP front door
        self.store.actor = self._store_actor()
        self.store.version()  # waits until the store answers
        log.info("front door on Ray cluster %s (namespace %s)", s.ray_address, s.ray_namespace)

    def _store_actor(self):
        """The one cluster store: found by name, or started detached on the head node."""
        head = next((n for n in ray.nodes() if n.get("Alive") and HEAD_RESOURCE in n.get("Resources", {})), None)
        if head is None:
            raise ModelUnavailable("the Ray cluster reports no live head node")
        actor = ray.remote(ClusterStore).options(
            name=STORE_NAME, namespace=self.settings.ray_namespace, get_if_exists=True, lifetime="detached",
            max_restarts=-1, max_concurrency=8, num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(head["NodeID"], soft=False))
        return actor.remote(self.settings.cluster_store_dir)

    async def close(self) -> None:
        await asyncio.to_thread(ray.shutdown)  # disconnects; deployments and the store live on

    # ---- deployments --------------------------------------------------------------------------
    async def runner_for(self, entry: ModelEntry, generation: int | None) -> ClusterRunner:
        if generation is None:
            raise ModelUnavailable(f"model {entry.id} is not in the cluster store", model_id=entry.id)
        app = app_for(entry.id, entry.record.options)
        async with self._deploying.setdefault(app, asyncio.Lock()):
            handle = await asyncio.to_thread(self._deployed, app, entry.record.options)
        return ClusterRunner(handle, entry.id, model_key(entry.id, generation), self.answers, self.retries)

    def _deployed(self, app: str, options: dict):
        """A handle to ``app``, deployed first if it is not running (checked at every model open,
        which is rare: another front door may have deleted it)."""
        found = serve.status().applications.get(app)
        if found is None or found.status not in ("RUNNING", "DEPLOYING"):
            log.info("deploying %s on the cluster", app)
            serve.run(self.deployment(app, options), name=app, route_prefix=None)
        return serve.get_app_handle(app)

    async def delete_app(self, model_id: str, options: dict) -> None:
        """A model's own deployment goes with it; the shared one stays."""
        app = app_for(model_id, options)
        if app != SHARED_APP:
            async with self._deploying.setdefault(app, asyncio.Lock()):
                await asyncio.to_thread(serve.delete, app, False)

    def deployment(self, app: str, options: dict):
        """The Ray Serve application for ``app``: bounds from the model's options or the settings."""
        s = self.settings
        low = options.get("min_replicas", s.cluster_min_replicas if app == SHARED_APP else 1)
        high = max(low, 1, options.get("max_replicas", s.cluster_max_replicas))
        autoscaling = {
            "min_replicas": low, "max_replicas": high,
            "target_ongoing_requests": options.get("target_ongoing_requests", s.cluster_target_ongoing_requests),
            "upscale_delay_s": options.get("upscale_delay_s", s.cluster_upscale_delay_s),
            "downscale_delay_s": options.get("downscale_delay_s", s.cluster_downscale_delay_s),
            "look_back_period_s": options.get("look_back_period_s", s.cluster_look_back_period_s),
        }
        actor_options: dict[str, Any] = {"num_cpus": s.cluster_replica_cpus}
        if s.cluster_replica_resources:
            actor_options["resources"] = json.loads(s.cluster_replica_resources)
        config = {
            "settings": {k: getattr(s, k) for k in REPLICA_SETTINGS},
            "node_dir": s.cluster_node_dir,
            "namespace": s.ray_namespace,
            "models_per_replica": s.cluster_models_per_replica if app == SHARED_APP else 1,
        }
        # no per-request access log line in the replicas: the front door's metrics count requests
        logging = {"enable_access_log": s.log_level == "debug", "log_level": s.log_level.upper()}
        return serve.deployment(ModelReplica, name=DEPLOYMENT).options(
            autoscaling_config=autoscaling, logging_config=logging,
            max_ongoing_requests=options.get("max_ongoing_requests", s.cluster_max_ongoing_requests),
            ray_actor_options=actor_options).bind(config)

    # ---- what it tells ------------------------------------------------------------------------
    async def status(self) -> dict:
        apps = await asyncio.to_thread(_apps)
        models = {}
        for (model, replica, node), n in self.answers.items():
            models.setdefault(model, {"answers": {}, "retries": self.retries.get(model, 0)})
            models[model]["answers"].setdefault(replica, {"node": node, "answers": 0})["answers"] += n
        return {"ray_address": self.settings.ray_address, "namespace": self.settings.ray_namespace,
                "applications": apps, "models": models}


def _check_reachable(address: str) -> None:
    """Fail at once on a head that does not answer (Ray's own connect retries for minutes)."""
    if address == "auto" or address.startswith("ray://"):
        return  # Ray resolves these itself, and says so when it finds nothing
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"ray_address must be 'auto' or the head's HOST:PORT, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise ConnectionError(f"no Ray cluster answers at {address}: {e.strerror or e}") from None


def _apps() -> dict:
    """Every mlos application's state and how many replicas are in each state, from Ray Serve."""
    out = {}
    status = serve.status()
    for name, app in status.applications.items():
        if not name.startswith("mlos-"):
            continue
        dep = app.deployments.get(DEPLOYMENT)
        out[name] = {"status": str(app.status), "replica_states": dict(dep.replica_states) if dep else {}}
    return out


class _ClusterCollector:
    """Prometheus series of the cluster path, read at scrape time (see docs/scaling-out.md)."""

    def __init__(self, door: FrontDoor):
        self.door = door

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        answers = CounterMetricFamily("mlos_cluster_answers", "Answers from replicas, by model, replica and node",
                                      labels=["model", "replica", "node"])
        for (model, replica, node), n in sorted(self.door.answers.items()):
            answers.add_metric([model, replica, node], n)
        retries = CounterMetricFamily("mlos_cluster_retries", "Requests retried once after their replica was lost",
                                      labels=["model"])
        for model, n in sorted(self.door.retries.items()):
            retries.add_metric([model], n)
        yield answers
        yield retries
