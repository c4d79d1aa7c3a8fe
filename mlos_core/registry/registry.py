"""The model registry: what is registered, in which state, and what is loaded.

States: ``registered`` (known, loads on first use), ``loading``, ``ready``, ``failed`` (the
reason is kept and persisted), ``evicted`` (unloaded by the memory budget or keep-alive; loads
again on next use) and ``unloaded`` (unloaded by a client; loads again only when asked).

The registry only registers, loads and unloads. It never unloads a model with requests in
flight: a request holds the model from ``use()`` until its answer, and eviction and keep-alive
check that count and detach the model with no ``await`` in between.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from .. import batch_probe
from ..config import Settings
from ..errors import (BadRequest, Conflict, MLOSError, ModelNotFound, ModelNotReady, ModelUnavailable, QueueFull,
                      UnprocessableModel)
from ..execution import LocalRunner, ModelRunner
from ..plugins import plugin_for
from ..scheduler import ModelScheduler
from ..smi import LoadOptions, Model, ModelSource
from ..sources import resolve
from ..thread_priority import ThreadPriority
from ..datadir import DataDir
from .ids import ID_PATTERN, find, split_id, validate_model_id
from .loading import estimate_bytes, framework_of, instances_for, load_model
from .store import ModelRecord, RegistryStore, reset as reset_store

log = logging.getLogger(__name__)



class State(str, enum.Enum):
    REGISTERED = "registered"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    EVICTED = "evicted"
    UNLOADED = "unloaded"


def _cores() -> int:
    return os.cpu_count() or 1


# Per-model options a register request may set: type, lower bound, upper bound (a number, or a
# function of the machine). Every option is bounded: a client must not be able to make the server
# start a million threads or allocate a context of a billion tokens. Bounds that depend on the
# model (n_ctx <= its trained context) are checked by its plugin before anything is allocated.
_OPTIONS: dict[str, tuple[type, float, Any]] = {
    "keep_alive": (float, -1, 365 * 86400),
    "max_queue": (int, 1, 100_000),
    "max_batch_size": (int, 1, 4096),
    "max_batch_delay_us": (int, 0, 1_000_000),
    "instances": (int, 0, lambda: max(4, 4 * _cores())),
    "intra_op_threads": (int, 0, _cores),
    "inter_op_threads": (int, 0, _cores),
    # GGUF runtime settings (llama.cpp; see mlos_core/plugins/gguf/config.py)
    "n_ctx": (int, 16, 1 << 20),
    "n_ctx_seq": (int, 16, 1 << 20),
    "parallel": (int, 1, 64),
    "n_threads": (int, 1, _cores),
    "n_batch": (int, 1, 1 << 16),
    # the task served (e.g. feature-extraction, text-generation), and a Jinja chat template
    "task": (str, 0, 256),
    "chat_template": (str, 0, 100_000),
    # dynamic batching: auto (proved at load: mlos_core.batch_probe), or forced on/off
    "batching": (str, 0, ("auto", "on", "off")),
    # on a Ray cluster (mlos_core.cluster): a deployment of the model's own, scaled by these; a
    # single server records them and serves as always
    "min_replicas": (int, 0, 1000), "max_replicas": (int, 1, 1000), "target_ongoing_requests": (float, 0.001, 1e6),
    "upscale_delay_s": (float, 0, 86400), "downscale_delay_s": (float, 0, 86400),
    "look_back_period_s": (float, 0.1, 3600), "max_ongoing_requests": (int, 1, 100_000),
}
_RUNTIME_OPTIONS = ("n_ctx", "n_ctx_seq", "parallel", "n_threads", "n_batch")


def validate_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object")
    out = {}
    for key, value in options.items():
        if key not in _OPTIONS:
            raise BadRequest(f"unknown option {key!r}; known options: {', '.join(_OPTIONS)}")
        kind, low, high = _OPTIONS[key]
        high = high() if callable(high) else high
        if key == "batching" and isinstance(value, bool):
            value = "on" if value else "off"
        if kind is str:
            if isinstance(high, tuple):
                if value not in high:
                    raise BadRequest(f"option {key} must be one of {', '.join(high)}")
            elif not isinstance(value, str) or not value.strip() or len(value) > high:
                raise BadRequest(f"option {key} must be a non-empty string of at most {high} characters")
            out[key] = value
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise BadRequest(f"option {key} must be a number from {low:g} to {high:g}")
        if kind is int and value != int(value):
            raise BadRequest(f"option {key} must be an integer")
        if key == "keep_alive" and value < 0 and value != -1:
            raise BadRequest("keep_alive is seconds >= 0, or -1 to keep the model loaded")
        if not low <= value <= high:
            raise BadRequest(f"option {key} must be from {low:g} to {high:g} on this server, not {value}"
                             + (f" ({_cores()} cores)" if key in ("instances", "intra_op_threads", "inter_op_threads",
                                                                  "n_threads") else ""))
        out[key] = kind(value)
    if out.get("min_replicas", 0) > out.get("max_replicas", out.get("min_replicas", 0)):
        raise BadRequest("option min_replicas must not exceed max_replicas")
    return out


def manifest_options(source: ModelSource) -> dict[str, Any]:
    """A package's ``x-mlos.runtime``: the per-model options its author (or ``mlos-tune --apply
    manifest``) chose, bounded like register options; options given at register win over them.
    Keys this core does not know are left alone (a newer packager's)."""
    runtime = ((source.manifest or {}).get("x-mlos") or {}).get("runtime")
    if runtime is None:
        return {}
    if not isinstance(runtime, dict):
        raise UnprocessableModel("package manifest x-mlos.runtime must be a mapping of option -> value")
    try:
        return validate_options({k: v for k, v in runtime.items() if k in _OPTIONS})
    except BadRequest as e:
        raise UnprocessableModel(f"package manifest x-mlos.runtime: {e.message}") from None


@dataclass
class RegisterSpec:
    model_id: str
    path: str
    plugin_id: str | None = None
    framework: str = ""
    execution_format: str = ""
    name: str = ""
    description: str = ""
    manifest_path: str = ""
    options: dict[str, Any] = field(default_factory=dict)


class ModelEntry:
    def __init__(self, record: ModelRecord, state: State = State.REGISTERED, error: str | None = None):
        self.record = record
        self.state = state
        self.error = error
        self.source: ModelSource | None = None
        self.model: Model | None = None
        self.scheduler: ModelScheduler | None = None  # this process's, when the model runs here
        self.runner: ModelRunner | None = None  # where its requests execute (mlos_core.execution)
        self.pending = 0
        self.last_used = time.monotonic()
        self.lock = asyncio.Lock()
        self.idle = asyncio.Event()
        self.idle.set()
        self.removed = False
        self.batching: batch_probe.BatchDecision | None = None  # decided at each load
        # set when an unload's drain timeout passed: running generations stop at their next token
        self.cancel = threading.Event()

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        """The id without its version: what the Open Inference Protocol calls the model's name."""
        return split_id(self.record.id)[0]

    @property
    def version(self) -> str:
        return split_id(self.record.id)[1]

    @property
    def memory_bytes(self) -> int:
        """Read live: a model's footprint can grow after load (a GGUF's embedding context)."""
        return self.model.memory_bytes() if self.model is not None else 0

    def option(self, name: str, settings: Settings):
        return self.record.options.get(name, getattr(settings, name))


class Registry:
    shared_store = False  # true when other servers register into the same store (a cluster)

    def __init__(self, settings: Settings, metrics=None, store=None):
        """``store`` persists registrations (default: SQLite in the data dir, opened by start()
        once the data dir is ours); a cluster front door gives its cluster-wide store."""
        self.settings = settings
        self.metrics = metrics
        self._entries: dict[str, ModelEntry] = {}
        self._data_dir = DataDir(settings.data_path)
        self._store = store
        self._packages = settings.data_path / "packages"
        # register and unregister change the store, then the entries; one at a time, so that what
        # is served always equals what is stored
        self._mutation = asyncio.Lock()
        # Model inference threads; loads get their own pool so a slow load never blocks serving.
        # Both take the configured scheduling class as they start (a session's own thread pool,
        # created in a load thread, inherits it). A streamed generation holds one of these threads
        # while its tokens come (mostly waiting on its model's engine), hence more than the cores.
        self.thread_priority = ThreadPriority(settings.inference_priority, settings.shim_socket)
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="mlos-infer",
                                           initializer=self.thread_priority)
        self._load_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlos-load",
                                                 initializer=self.thread_priority)
        self._budget_lock = asyncio.Lock()
        self._reaper: asyncio.Task | None = None
        self.running = False  # between start() and close(): what readiness and health checks read

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._open_store)
        for record, state, error in await asyncio.to_thread(self._store.load_all):
            kept = State(state) if state in (State.FAILED, State.UNLOADED) else State.REGISTERED
            self._entries[record.id] = ModelEntry(record, kept, error if kept == State.FAILED else None)
        await self.scan_repository()
        if self.settings.load_on_start == "eager":
            for entry in list(self._entries.values()):
                if entry.state == State.REGISTERED:
                    asyncio.get_running_loop().create_task(self._load_quietly(entry))
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())
        self.running = True

    async def close(self) -> None:
        self.running = False
        if self._reaper:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for entry in list(self._entries.values()):
            if entry.model is not None:
                await self._unload(entry, State.REGISTERED, persist=False)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._load_executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.thread_priority.close)
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
        self._data_dir.close()

    def _open_store(self) -> None:
        self._data_dir.open()
        if self._store is not None:
            return
        path = self.settings.data_path / "registry.db"
        try:
            if self.settings.reset_registry:
                aside = reset_store(path)
                if aside is not None:
                    log.warning("the registry %s was unreadable: moved to %s; starting with an empty registry",
                                path, aside)
            self._store = RegistryStore(path)
        except BaseException:
            self._data_dir.close()
            raise

    async def _load_quietly(self, entry: ModelEntry) -> None:
        with contextlib.suppress(MLOSError):
            await self.ensure_loaded(entry)

    async def scan_repository(self) -> list[str]:
        """Register ``<ns>/<name...>/<version>/manifest.yaml`` packages of the models directory."""
        root = Path(self.settings.models_dir).expanduser()
        if not root.is_dir():
            return []
        found = []
        for manifest in sorted(root.rglob("manifest.yaml")):
            parts = manifest.parent.relative_to(root).parts
            if len(parts) < 3:
                continue
            model_id = "/".join(parts[:-1]) + "@" + parts[-1]
            if model_id in self._entries or not ID_PATTERN.match(model_id):
                continue
            try:
                # checksums are verified when the model first loads, not for every package at start
                await self.register(RegisterSpec(model_id, str(manifest.parent)), load=False, verify=False)
                found.append(model_id)
            except MLOSError as e:
                log.warning("models directory: %s not registered: %s", model_id, e.message)
        return found

    # ---- lookup ----------------------------------------------------------------------------
    def lookup(self, name: str, version: str | None = None) -> ModelEntry:
        """Find a model by its full id; by name and '@version' or ``version``; by name alone
        ('name@latest', else its only version). An id registered without a version is version
        "1", as the Open Inference Protocol numbers them. The seeds' dash form
        ('hf-distilgpt2@latest' for 'hf/distilgpt2@latest') resolves when it names one model."""
        version = version or None
        entry = find(self._entries, name, version)
        if entry is None:
            dashed: dict[str, ModelEntry | None] = {}
            for key, e in self._entries.items():
                k = key.replace("/", "-")
                dashed[k] = None if k in dashed else e  # two ids with one dash form: ambiguous
            entry = find(dashed, name.replace("/", "-"), version)
        if entry is None:
            key = f"{name}@{version}" if version else name
            raise ModelNotFound(f"model {key!r} is not registered", model_id=key, name=name, version=version)
        return entry

    async def find(self, name: str, version: str | None = None) -> ModelEntry:
        """``lookup``, after catching up with registrations made elsewhere when the name is unknown."""
        try:
            return self.lookup(name, version)
        except ModelNotFound:
            if not await self._refresh():
                raise
            return self.lookup(name, version)

    async def _refresh(self) -> bool:
        """Adopt registrations made through another server sharing the store (none locally)."""
        return False

    def entries(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def ids(self) -> set[str]:
        return set(self._entries)

    def used_bytes(self) -> int:
        return sum(e.memory_bytes for e in self._entries.values() if e.model is not None)

    # ---- register / unregister ---------------------------------------------------------------
    async def register(self, spec: RegisterSpec, load: bool | None = None,
                       verify: bool = True) -> tuple[ModelEntry, bool]:
        """Register (and by default load) a model. Returns the entry and whether it is new."""
        validate_model_id(spec.model_id)
        if not isinstance(spec.path, str) or not spec.path:
            raise BadRequest("path (or model_path) is required: a model file, a model directory or an .axon package")
        path = str(Path(spec.path).expanduser().resolve())
        existing = self._entries.get(spec.model_id)
        if existing is not None and existing.record.path != path and existing.state != State.FAILED:
            raise Conflict(
                f"model {spec.model_id} is already registered from {existing.record.path}; "
                "unregister it first (DELETE /v1/models/{id})",
                model_id=spec.model_id,
            )
        source = None
        if existing is None or existing.record.path != path:
            try:
                source = await asyncio.to_thread(resolve, path, self._packages, verify)
                plugin = plugin_for(source.format, spec.plugin_id)
            except UnprocessableModel as e:
                kept = (f"; the earlier registration of {spec.model_id} (failed) is unchanged" if existing is not None
                        else "; nothing was registered")
                raise UnprocessableModel(e.message + kept, model_id=spec.model_id, detail=e.detail) from None
            if existing is not None and existing.state == State.FAILED and self._entries.get(spec.model_id) is existing:
                # a registration that failed to load is replaced by one from another path, not a conflict
                log.info("register %s: replacing its failed registration from %s", spec.model_id, existing.record.path)
                await self.unregister(spec.model_id)
                existing = None
            # options that cannot work are refused here, with the plugin's reasons, before anything is kept
            plugin.check_options(source, self._load_options(spec.options, source))
        created = existing is None
        if created:
            record = ModelRecord(
                id=spec.model_id, path=path, format=source.format, plugin_id=plugin.id,
                name=spec.name or spec.model_id.split("@")[0].rsplit("/", 1)[-1],
                description=spec.description, framework=spec.framework or framework_of(source),
                execution_format=spec.execution_format or source.format,
                manifest_path=spec.manifest_path or (str(source.package_dir / "manifest.yaml") if source.package_dir else ""),
                options={**manifest_options(source), **spec.options},
            )
            async with self._mutation:
                existing = self._entries.get(spec.model_id)  # a concurrent register may have won
                if existing is not None and existing.record.path != path:
                    raise Conflict(f"model {spec.model_id} is already registered from {existing.record.path}",
                                   model_id=spec.model_id)
                created = existing is None
                if created:
                    entry = ModelEntry(record)
                    entry.source = source if verify else None  # unverified: resolved (and verified) again at load
                    # stored first: an answer of success means the registration survives a restart,
                    # and a failed write (a full disk) leaves nothing served that is not stored
                    await asyncio.to_thread(self._store.upsert, record, entry.state.value)
                    self._entries[spec.model_id] = entry
                else:
                    entry = existing
        else:
            entry = existing
        if load if load is not None else self.settings.load_on_register:
            try:
                await self.ensure_loaded(entry, explicit=True)
            except UnprocessableModel as e:
                raise UnprocessableModel(
                    f"{e.message}. The registration is kept in state failed with this reason (GET /v1/models/"
                    f"{{id}}); register {entry.id} again with a corrected path to replace it, or DELETE it",
                    model_id=entry.id, detail=e.detail) from None
        return entry, created

    async def unregister(self, model_id: str) -> ModelEntry:
        async with self._mutation:
            entry = self._entries.get(model_id)
            if entry is None:
                raise ModelNotFound(f"model {model_id!r} is not registered", model_id=model_id)
            # forgotten on disk first: a failed write keeps the model registered and served, and
            # a registration of the same id made after this answer can never be deleted by it
            await asyncio.to_thread(self._store.delete, model_id)
            del self._entries[model_id]
            entry.removed = True
        await self._drain(entry)
        async with entry.lock:
            if entry.model is not None:
                await self._unload(entry, State.UNLOADED, persist=False)
        return entry

    async def _drain(self, entry: ModelEntry) -> None:
        """Before a model goes: queued requests are answered 503 at once, running ones get
        ``drain_timeout`` seconds, then running generations are cancelled (they end with
        finish_reason "cancelled" at their next token). Returns once nothing holds the model, so
        that it is never unloaded under a running call."""
        if entry.scheduler is not None:
            refused = entry.scheduler.refuse(ModelUnavailable(f"model {entry.id} is unloading", model_id=entry.id,
                                                              retry_after=1))
            if refused:
                log.info("%s: %d queued requests answered 503 (unloading)", entry.id, refused)
        timeout = self.settings.drain_timeout
        try:
            await asyncio.wait_for(entry.idle.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("%s: %d requests still running after the drain timeout (%gs): cancelling generations",
                        entry.id, entry.pending, timeout)
            entry.cancel.set()
            await entry.idle.wait()

    # ---- load / unload ---------------------------------------------------------------------
    async def ensure_loaded(self, entry: ModelEntry, explicit: bool = False) -> None:
        if entry.state == State.READY:
            return
        async with entry.lock:
            if entry.state == State.READY:
                return
            if entry.removed:
                raise ModelNotFound(f"model {entry.id!r} was unregistered", model_id=entry.id)
            if entry.state == State.FAILED and not explicit:
                raise ModelUnavailable(f"model {entry.id} failed to load: {entry.error}", model_id=entry.id)
            if entry.state == State.UNLOADED and not explicit:
                raise ModelNotReady(
                    f"model {entry.id} was unloaded; load it again (POST /v2/repository/models/{{id}}/load)",
                    model_id=entry.id,
                )
            try:
                await self._load(entry)
            except ModelUnavailable as e:
                if explicit and entry.state == State.FAILED:
                    # the caller asked for this load: its file (or its options: 400) is at fault,
                    # not the server's state
                    kind = BadRequest if isinstance(e.__cause__, BadRequest) else UnprocessableModel
                    raise kind(e.message, model_id=entry.id, detail=e.detail) from None
                raise

    async def _load(self, entry: ModelEntry) -> None:
        previous = entry.state
        entry.state = State.LOADING
        try:
            source, model, runner = await self._open(entry)
        except ModelUnavailable:
            entry.state = previous if previous != State.LOADING else State.REGISTERED
            raise
        except MLOSError as e:
            entry.state, entry.error = State.FAILED, e.message
            log.warning("model %s failed to load from %s: %s%s", entry.id, entry.record.path, e.message,
                        f" ({e.detail})" if e.detail and e.detail not in e.message else "")
            await self._note_state(entry, e.message)
            raise ModelUnavailable(f"model {entry.id} failed to load: {e.message}", model_id=entry.id,
                                   detail=e.detail) from e
        except Exception as e:
            log.exception("loading %s", entry.id)
            entry.state, entry.error = State.FAILED, f"{type(e).__name__}: {e}"[:500]
            await self._note_state(entry, entry.error)
            raise ModelUnavailable(f"model {entry.id} failed to load: {entry.error}", model_id=entry.id) from None
        entry.source = source
        entry.model = model
        entry.runner = runner
        entry.scheduler = getattr(runner, "scheduler", None)
        entry.batching = getattr(runner, "decision", None)
        entry.cancel = runner.cancel
        entry.error = None
        entry.state = State.READY
        entry.last_used = time.monotonic()
        await self._note_state(entry)
        log.info("loaded %s (%s, %.1f MB)", entry.id, entry.record.format, entry.memory_bytes / 1e6)

    async def _open(self, entry: ModelEntry) -> tuple[ModelSource | None, Model, ModelRunner]:
        """Load the model in this process (within the memory budget), decide its batching, give
        it a scheduler. A ``ClusterRegistry`` opens models on replicas instead."""
        source = entry.source or await asyncio.to_thread(resolve, entry.record.path, self._packages)
        plugin = plugin_for(source.format, entry.record.plugin_id)
        options = self._load_options(entry.record.options, source)
        loop = asyncio.get_running_loop()
        if self.settings.memory_budget_mb > 0:
            async with self._budget_lock:
                await self._make_room(entry, estimate_bytes(source))
                model = await loop.run_in_executor(self._load_executor, load_model, plugin, source, options)
        else:
            model = await loop.run_in_executor(self._load_executor, load_model, plugin, source, options)
        max_rows = entry.option("max_batch_size", self.settings)
        try:
            batching = await loop.run_in_executor(self._load_executor, batch_probe.decide, model,
                                                  entry.record.options.get("batching", "auto"), max_rows)
        except MLOSError:
            await loop.run_in_executor(self._load_executor, model.unload)
            raise
        hook = self.metrics.execution_hook(entry.id) if self.metrics else None
        scheduler = ModelScheduler(
            model, self.executor,
            batching=batching.enabled,
            max_batch_size=max_rows,
            max_batch_delay_s=entry.option("max_batch_delay_us", self.settings) / 1e6,
            instances=instances_for(entry.option("instances", self.settings), model),
            on_execution=hook,
        )
        return source, model, LocalRunner(entry.id, model, scheduler, decision=batching)

    def _load_options(self, options: dict[str, Any], source: ModelSource) -> LoadOptions:
        """Register-time options win over the package manifest's ``x-mlos`` settings."""
        ext = (source.manifest or {}).get("x-mlos") or {}
        runtime = {k: v for k, v in (ext.get("runtime") or {}).items() if k in _RUNTIME_OPTIONS}
        runtime.update({k: options[k] for k in _RUNTIME_OPTIONS if k in options})
        return LoadOptions(
            cache_dir=self.settings.data_path,
            intra_op_threads=options.get("intra_op_threads", self.settings.intra_op_threads),
            inter_op_threads=options.get("inter_op_threads", self.settings.inter_op_threads),
            task=options.get("task") or ext.get("task"),
            task_from_manifest=not options.get("task") and bool(ext.get("task")),
            chat_template=options.get("chat_template") or ext.get("chat_template"),
            extra=runtime,
        )

    async def load(self, model_id: str) -> ModelEntry:
        entry = self.lookup(model_id)
        await self.ensure_loaded(entry, explicit=True)
        return entry

    async def reconfigure(self, model_id: str, options: dict[str, Any]) -> ModelEntry:
        """Change some of a model's options and load it again with them, once the requests it is
        serving are answered. The new options are stored before they take effect."""
        entry = self.lookup(model_id)
        options = validate_options(options)
        if entry.model is not None:
            await self._drain(entry)
        async with entry.lock:
            record = dataclasses.replace(entry.record, options={**entry.record.options, **options})
            state = State.REGISTERED if entry.model is not None else entry.state
            await asyncio.to_thread(self._store.upsert, record, state.value, entry.error)
            entry.record = record
            if entry.model is not None:
                await self._unload(entry, State.REGISTERED, persist=False)
        await self.ensure_loaded(entry, explicit=True)
        return entry

    async def unload(self, model_id: str) -> ModelEntry:
        entry = self.lookup(model_id)
        if entry.model is not None:
            await self._drain(entry)
        async with entry.lock:
            if entry.state == State.FAILED:
                return entry
            # stored first: a client's unload survives a restart, or fails and changes nothing
            await asyncio.to_thread(self._store.set_state, entry.id, State.UNLOADED.value, None)
            if entry.model is not None:
                await self._unload(entry, State.UNLOADED, persist=False)
            entry.state = State.UNLOADED
        return entry

    async def _note_state(self, entry: ModelEntry, error: str | None = None) -> None:
        """Record a state the server reached by itself (loaded, failed, evicted). These rows only
        inform: a restart begins every model as registered except failed and unloaded ones, so a
        write lost to a full disk is logged, never turned into a failed request."""
        try:
            await asyncio.to_thread(self._store.set_state, entry.id, entry.state.value, error)
        except MLOSError as e:
            log.warning("%s: %s", entry.id, e.message)

    def _detach(self, entry: ModelEntry, state: State):
        """Synchronously take the model away from new requests; the caller awaits the cleanup."""
        model, runner = entry.model, entry.runner
        entry.model = entry.scheduler = entry.runner = None
        entry.state = state
        return model, runner

    async def _unload(self, entry: ModelEntry, state: State, persist: bool = True) -> None:
        model, scheduler = self._detach(entry, state)
        await self._release(entry, model, scheduler, persist)

    async def _release(self, entry, model, runner, persist=True) -> None:
        if runner is not None:
            await runner.close()
        if model is not None:
            await asyncio.get_running_loop().run_in_executor(self._load_executor, model.unload)
        if persist and not entry.removed:
            await self._note_state(entry)
        log.info("unloaded %s (%s)", entry.id, entry.state.value)

    async def _make_room(self, loading: ModelEntry, need: int) -> None:
        budget = int(self.settings.memory_budget_mb * 1024 * 1024)
        if need > budget:
            raise ModelUnavailable(
                f"model {loading.id} needs {need / 2**20:.1f} MiB, more than the whole memory budget "
                f"of {budget / 2**20:.1f} MiB", model_id=loading.id,
            )
        while self.used_bytes() + need > budget:
            idle = [e for e in self._entries.values()
                    if e is not loading and e.model is not None and e.pending == 0 and e.state == State.READY]
            if not idle:
                raise ModelUnavailable(
                    f"model {loading.id} needs {need / 2**20:.1f} MiB; {self.used_bytes() / 2**20:.1f} of "
                    f"{budget / 2**20:.1f} MiB are held by models serving requests", model_id=loading.id,
                    retry_after=1,
                )
            victim = min(idle, key=lambda e: e.last_used)
            model, scheduler = self._detach(victim, State.EVICTED)
            log.info("evicting %s (least recently used) to load %s", victim.id, loading.id)
            await self._release(victim, model, scheduler)

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for entry in list(self._entries.values()):
                keep = entry.option("keep_alive", self.settings)
                if keep < 0 or entry.model is None or entry.pending or entry.state != State.READY:
                    continue
                if now - entry.last_used >= keep and not entry.lock.locked():
                    model, scheduler = self._detach(entry, State.EVICTED)
                    await self._release(entry, model, scheduler)

    # ---- serving ---------------------------------------------------------------------------
    def check_queue(self, entry: ModelEntry) -> None:
        limit = entry.option("max_queue", self.settings)
        if entry.pending >= limit:
            raise QueueFull(
                f"model {entry.id} has {entry.pending} requests waiting or running (limit {limit})",
                model_id=entry.id, retry_after=1,
            )

    @contextlib.asynccontextmanager
    async def use(self, name: str, version: str | None = None) -> AsyncIterator[ModelEntry]:
        """Hold a loaded model for one request; loads it on demand, bounded by ``max_queue``."""
        entry = await self.find(name, version)
        self.check_queue(entry)
        entry.pending += 1
        entry.idle.clear()
        try:
            if entry.state != State.READY:
                await self.ensure_loaded(entry)
            yield entry
        finally:
            entry.pending -= 1
            entry.last_used = time.monotonic()
            if entry.pending == 0:
                entry.idle.set()
