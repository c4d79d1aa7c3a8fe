"""A Ray Serve replica: the node-local half of the cluster path.

Each replica runs this project's own ``Registry`` (so its memory budget, keep-alive, queue
bound, batching and worker threads are the single server's) and serves the three kinds of work
of ``mlos_core.execution`` for the models the router sends it. The models it holds are Ray
Serve's multiplexed models: ``@serve.multiplexed`` keeps at most ``models_per_replica`` of them
per replica, least recently used out first, and tells the router which replica holds which, so
that a model's requests go where it is already loaded. Loading one means: read its registration
from the cluster store, fetch its package into this node's private directory (every sha256
verified, ``mlos_core.cluster.packages``), and register and load that local copy.

Answers are plain data: tensors and task values, the replica's queue and compute times, which
replica and node served, or the error as ``mlos_core.cluster.wire`` carries it.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import ray
from ray import serve

from ..config import load_settings
from ..dataplane import DataPlane
from ..errors import MLOSError, ModelNotFound
from ..metrics import Metrics
from ..registry import RegisterSpec, Registry
from ..scheduler import Execution
from .packages import Listing, fetch
from .wire import STORE_NAME, error_to_wire, split_key

log = logging.getLogger(__name__)
NODE_DIR_ENV = "MLOS_NODE_DIR"


class _NoStore:
    """A replica's registrations are a cache of the cluster store's: nothing to persist."""

    def load_all(self):
        return []

    def upsert(self, *a, **k):
        pass

    def set_state(self, *a, **k):
        pass

    def delete(self, *a, **k):
        pass

    def close(self):
        pass


class _Held:
    """What the multiplexer caches for a model; its eviction unregisters the local copy.

    Ray Serve awaits a cached model's ``__del__`` when its LRU lets it go. It is set on the
    instance, not the class, so that the garbage collector (which looks on the class) never
    calls a coroutine function as a finaliser."""

    def __init__(self, registry: Registry, model_id: str, path: str):
        self.registry, self.model_id, self.path = registry, model_id, path
        self.__del__ = self.release

    async def release(self) -> None:
        try:
            entry = self.registry.lookup(self.model_id)
        except ModelNotFound:
            return
        if entry.record.path == self.path:  # not a newer registration of the same id
            await self.registry.unregister(self.model_id)


class ModelReplica:
    async def __init__(self, config: dict):
        node_dir = Path(os.environ.get(NODE_DIR_ENV) or config["node_dir"]).expanduser()
        self.node_dir = node_dir
        replica_id = serve.get_replica_context().replica_id.unique_id
        # a data dir is held by one server: each replica has its own (package copies are the node's)
        self.data_dir = node_dir / "replicas" / replica_id
        settings = load_settings(None, {
            **config["settings"],
            "data_dir": str(self.data_dir),
            "models_dir": str(node_dir / "no-model-repository"),
            "http_enabled": False, "ipc_enabled": False, "zerocopy": False, "load_on_register": True,
            "load_on_start": "lazy", "demo": False,
        })
        metrics = Metrics()
        self.registry = Registry(settings, metrics, store=_NoStore())
        self.plane = DataPlane(self.registry, metrics)
        self.store = ray.get_actor(STORE_NAME, namespace=config["namespace"])
        self.where = {"replica": replica_id,
                      "node": ray.get_runtime_context().get_node_id()}
        self._models_lock = asyncio.Lock()

        async def load(key: str) -> _Held:
            return await self._load(key)

        # Wired at init so that the per-replica count comes from the configuration (Ray Serve
        # detects a multiplexed loader stored on the instance).
        self.get_model = serve.multiplexed(max_num_models_per_replica=int(config["models_per_replica"]))(load)
        await self.registry.start()

    # ---- loading ------------------------------------------------------------------------------
    async def _load(self, key: str) -> _Held:
        model_id, generation = split_key(key)
        found = await self.store.get.remote(model_id)
        if found is None or found["generation"] != generation:
            raise ModelNotFound(f"model {model_id!r} is no longer registered in the cluster", model_id=model_id)
        listing = Listing.from_wire(found["listing"])
        path = str(await asyncio.to_thread(fetch, listing, self._read_chunk, self.node_dir))
        record = found["record"]
        async with self._models_lock:
            with contextlib.suppress(ModelNotFound):
                if self.registry.lookup(model_id).record.path != path:
                    await self.registry.unregister(model_id)  # an earlier registration of this id
            spec = RegisterSpec(model_id, path, plugin_id=record.get("plugin_id") or None,
                                framework=record.get("framework", ""), name=record.get("name", ""),
                                description=record.get("description", ""), options=dict(record.get("options") or {}))
            await self.registry.register(spec, load=True)
        log.info("replica %s holds %s (generation %d) from %s", self.where["replica"], model_id, generation, path)
        return _Held(self.registry, model_id, path)

    def _read_chunk(self, digest: str, offset: int, length: int) -> bytes:
        return ray.get(self.store.read.remote(digest, offset, length))

    async def _model_id(self) -> str:
        key = serve.get_multiplexed_model_id()
        held = await self.get_model(key)
        return held.model_id

    def _answer(self, ex: Execution, value: Any) -> dict:
        return {"ok": True, "value": value, "queue_ns": ex.queue_ns, "compute_ns": ex.compute_ns,
                "batch_size": ex.batch_size, **self.where}

    # ---- the three kinds of work, and a description --------------------------------------------
    async def describe(self) -> dict:
        try:
            model_id = await self._model_id()
            async with self.registry.use(model_id) as entry:
                m = entry.model
                return {"ok": True, "metadata": m.metadata, "tasks": sorted(m.tasks),
                        "max_concurrency": m.max_concurrency, "memory_bytes": entry.memory_bytes,
                        "batching": entry.runner.batching, **self.where}
        except MLOSError as e:
            return {"ok": False, "error": error_to_wire(e)}

    async def infer(self, inputs, outputs, priority: int, timeout_s: float | None) -> dict:
        try:
            model_id = await self._model_id()
            async with self.registry.use(model_id) as entry:
                ex = await entry.runner.infer(inputs, outputs, priority, timeout_s)
            return self._answer(ex, ex.outputs)
        except MLOSError as e:
            return {"ok": False, "error": error_to_wire(e)}

    async def call(self, fn, priority: int, cancellable: bool = False) -> dict:
        left = threading.Event()  # the front door cancelled this request: its client went away
        try:
            model_id = await self._model_id()
            async with self.registry.use(model_id) as entry:
                ex = await entry.runner.call(fn, priority, cancellable, left.is_set)
            return self._answer(ex, ex.outputs)
        except MLOSError as e:
            return {"ok": False, "error": error_to_wire(e)}
        except asyncio.CancelledError:
            left.set()
            raise

    async def stream(self, generate, priority: int):
        """Chunks as ``("chunk", GenerationChunk)``, then ``("done", timings)`` or ``("error", ...)``.
        The front door closing the stream cancels this generator, which stops the generation."""
        try:
            model_id = await self._model_id()
            async with self.registry.use(model_id) as entry:
                async with contextlib.aclosing(entry.runner.stream(generate, priority)) as items:
                    async for item in items:
                        if isinstance(item, Execution):
                            yield ("done", self._answer(item, None))
                        else:
                            yield ("chunk", item)
        except MLOSError as e:
            yield ("error", error_to_wire(e))

    # ---- health and shutdown ------------------------------------------------------------------
    async def check_health(self) -> None:
        """The server's own readiness: a replica whose registry stopped is replaced. A model that
        is loading is no reason to replace the replica loading it."""
        state = self.plane.readiness()
        if state.get("reason"):
            raise RuntimeError(state["reason"])

    async def __del__(self):
        await self.registry.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)
