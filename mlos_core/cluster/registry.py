"""The front door's registry: this project's ``Registry``, persisted in the cluster store, whose
models run on replicas.

Registering through a front door verifies the file where the client named it (as a single
server does), uploads its package to the cluster store and records the registration there
(compare-and-set on the id). Every front door follows the store: it adopts registrations made
through another within ``sync_interval`` seconds, and at once when a request names a model it
does not know yet. A front door restarted, or started on another node, knows every model.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import ray
import ray.exceptions

from ..errors import Conflict, ModelNotFound, ModelUnavailable, UnprocessableModel
from ..registry import Registry, State
from ..registry.registry import ModelEntry
from ..registry.store import ModelRecord
from .packages import CHUNK, list_package, upload
from .store import StoreError
from .wire import model_key

if TYPE_CHECKING:
    from .frontdoor import FrontDoor

log = logging.getLogger(__name__)


class StoreClient:
    """The registry store interface (``load_all``, ``upsert``, ``set_state``, ``delete``) over
    the cluster store actor. Called from worker threads: each call blocks on its answer."""

    def __init__(self):
        self.actor = None  # set when the front door has connected
        self.generations: dict[str, int] = {}

    def _call(self, method: str, *args):
        try:
            return ray.get(getattr(self.actor, method).remote(*args), timeout=120)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, StoreError):
                raise UnprocessableModel(f"cluster store: {e.cause}") from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
            raise ModelUnavailable(f"the cluster store did not answer ({type(e).__name__}); try again",
                                   retry_after=2) from None

    def version(self) -> int:
        return self._call("version")

    def load_all(self) -> list[tuple[ModelRecord, str, str | None]]:
        out = []
        for row in self._call("load_all"):
            record = ModelRecord(**row["record"])
            self.generations[record.id] = row["generation"]
            out.append((record, row["state"], row["error"]))
        return out

    def upsert(self, record: ModelRecord, state: str, error: str | None = None) -> None:
        path = Path(record.path)
        listing = list_package(path)
        sent = upload(listing, path.parent, lambda digests: self._call("missing", digests), self._send)
        answer = self._call("register", asdict(record), state, listing.to_wire())
        if answer["status"] == "conflict":
            raise Conflict(f"model {record.id} is already registered in the cluster from {answer['path']}; "
                           "unregister it first (DELETE /v1/models/{id})", model_id=record.id)
        self.generations[record.id] = answer["generation"]
        log.info("published %s to the cluster store (%d files, %.1f MB sent)", record.id, len(listing.files),
                 sent / 1e6)

    def _send(self, digest: str, size: int, path: Path) -> None:
        token = self._call("begin", digest, size)
        with open(path, "rb") as f:
            offset = 0
            while chunk := f.read(CHUNK):
                self._call("write", token, offset, chunk)
                offset += len(chunk)
        self._call("commit", token)

    def set_state(self, model_id: str, state: str, error: str | None = None) -> None:
        self._call("set_state", model_id, state, error)

    def delete(self, model_id: str) -> None:
        self._call("delete", model_id)
        self.generations.pop(model_id, None)

    def close(self) -> None:
        pass


class ClusterRegistry(Registry):
    shared_store = True

    def __init__(self, settings, metrics, door: "FrontDoor", sync_interval: float = 0.5):
        self.door = door
        self.sync_interval = sync_interval
        self._follower: asyncio.Task | None = None
        self._seen = -1
        super().__init__(settings, metrics, store=door.store)

    @property
    def store(self) -> StoreClient:
        return self._store

    async def start(self) -> None:
        self._seen = await asyncio.to_thread(self.store.version)
        await super().start()
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    async def close(self) -> None:
        if self._follower:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await super().close()

    async def unregister(self, model_id: str, *args, **kwargs) -> ModelEntry:
        entry = await super().unregister(model_id, *args, **kwargs)
        await self.door.delete_app(model_id, entry.record.options)
        return entry

    async def _open(self, entry: ModelEntry):
        """Open a model on the replicas: one of them loads it and describes it. A replica that
        finds another registration under the id (registered anew through another front door)
        sends this front door back to the store once."""
        for attempt in (1, 2):
            runner = await self.door.runner_for(entry, self.store.generations.get(entry.id))
            try:
                return None, await runner.describe(), runner
            except ModelNotFound:
                await self._refresh()
                if entry.removed:
                    raise
                if attempt == 2:
                    raise ModelUnavailable(f"model {entry.id} changed in the cluster while it was opened; "
                                           "send the request again", model_id=entry.id, retry_after=1) from None
        raise AssertionError("unreachable")

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval)
            try:
                if await asyncio.to_thread(self.store.version) != self._seen:
                    await self._refresh()
            except Exception as e:  # the store restarting: keep serving what is known
                log.warning("following the cluster store: %s", e)

    async def _refresh(self) -> bool:
        version = await asyncio.to_thread(self.store.version)  # before the rows: never miss a change
        # only ids the store had before this read can have been unregistered elsewhere; one not
        # in it yet may be a registration of this front door still uploading its package
        published = set(self.store.generations)
        rows = await asyncio.to_thread(self.store.load_all)
        self._seen = version
        current = {}
        for record, state, error in rows:
            current[record.id] = record
            entry = self._entries.get(record.id)
            if entry is None:
                kept = State(state) if state in (State.FAILED, State.UNLOADED) else State.REGISTERED
                self._entries[record.id] = ModelEntry(record, kept, error if kept == State.FAILED else None)
            elif entry.runner is not None and entry.runner.key != model_key(record.id, self.store.generations[record.id]):
                # registered anew through another front door: the next request opens the new one
                entry.record = record
                await self._drop(entry, State.REGISTERED)
        for model_id in [m for m in self._entries if m not in current and m in published]:
            self.store.generations.pop(model_id, None)
            entry = self._entries.pop(model_id)  # unregistered through another front door
            entry.removed = True
            asyncio.get_running_loop().create_task(self._drop(entry, State.UNLOADED))
        return True

    async def _drop(self, entry: ModelEntry, state: State) -> None:
        await entry.idle.wait()
        async with entry.lock:
            if entry.model is not None:
                await self._unload(entry, state, persist=False)
            else:
                entry.state = state
