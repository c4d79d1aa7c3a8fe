"""Server and model metadata, readiness, statistics, the repository index and model control, as
the Open Inference Protocol answers them on every transport. The server keeps its own name in
its metadata: it is not Triton, and says so."""
from __future__ import annotations

from typing import Any

from .. import __version__
from ..dataplane import DataPlane
from ..errors import BadRequest, MLOSError, ModelNotFound
from ..registry import ModelEntry, State
from ..tensors import v2_datatype
from .model_config import model_config, override_options, parse_override
from .names import answer_version, protocol_error, resolve

SERVER_NAME = "mlos-core"
EXTENSIONS = ["binary_tensor_data", "system_shared_memory", "model_repository", "model_configuration",
              "statistics", "schedule_policy", "logging"]

# Triton's model states, and the reason each of ours is not READY
_STATES = {
    State.READY: ("READY", ""),
    State.LOADING: ("LOADING", "loading"),
    State.REGISTERED: ("UNAVAILABLE", "registered: loads on its first request or an explicit load"),
    State.EVICTED: ("UNAVAILABLE", "evicted (memory budget or keep-alive): loads again on its next request"),
    State.UNLOADED: ("UNAVAILABLE", "unloaded: load it again to serve"),
    State.FAILED: ("UNAVAILABLE", "failed"),
}


def server_metadata() -> dict:
    return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}


def state_of(entry: ModelEntry) -> tuple[str, str]:
    state, reason = _STATES[entry.state]
    if entry.state == State.FAILED and entry.error:
        reason = f"failed: {entry.error}"
    return state, reason


def model_ready(plane: DataPlane, name: str, version: str | None) -> tuple[bool, dict]:
    entry = resolve(plane.registry, name, version)
    return entry.state == State.READY, {"name": name, "ready": entry.state == State.READY, "state": entry.state.value}


async def _loaded(plane: DataPlane, name: str, version: str | None) -> ModelEntry:
    entry = resolve(plane.registry, name, version)
    try:
        found, _, _ = await plane.metadata(entry.id)
    except MLOSError as e:
        raise protocol_error(e) from None
    return found


async def model_metadata(plane: DataPlane, name: str, version: str | None) -> dict:
    try:
        entry = await _loaded(plane, name, version)
        meta, answered = entry.model.metadata, answer_version(entry, version)
    except ModelNotFound as missing:   # maybe one graph of a model made of several: org/model/encoder
        try:
            entry, meta, _ = await plane.metadata(name, version)
        except ModelNotFound:
            raise missing from None
        answered = answer_version(entry, version)
    out = {
        "name": name,
        "versions": [answered],
        "platform": meta.platform,
        "inputs": [_spec(t) for t in meta.inputs],
        "outputs": [_spec(t) for t in meta.outputs],
    }
    unavailable = meta.properties.get("unavailable_outputs")
    if unavailable:
        out["parameters"] = {"unavailable_outputs": unavailable}
    return out


def _spec(t) -> dict:
    return {"name": t.name, "datatype": v2_datatype(t.dtype), "shape": list(t.shape)}


async def config(plane: DataPlane, name: str, version: str | None) -> dict:
    entry = await _loaded(plane, name, version)
    return model_config(entry, plane.registry.settings, name)


def statistics(plane: DataPlane, name: str | None = None, version: str | None = None) -> list[dict]:
    stats = plane.metrics.stats
    if not name:
        return [{**stats.model(e.id, e.version), "name": e.name} for e in plane.registry.entries()]
    entry = resolve(plane.registry, name, version)
    return [{**stats.model(entry.id, entry.version), "name": name, "version": answer_version(entry, version)}]


def repository_index(plane: DataPlane, ready_only: bool = False) -> list[dict]:
    rows = []
    for e in plane.registry.entries():
        if ready_only and e.state != State.READY:
            continue
        state, reason = state_of(e)
        row = {"name": e.name, "version": e.version, "state": state}
        if reason:
            row["reason"] = reason
        rows.append(row)
    return rows


async def load(plane: DataPlane, name: str, parameters: dict[str, Any]) -> ModelEntry:
    """Load a model, with the configuration override the parameters carry, if any. Every failure
    says "failed to load", as Triton's clients expect."""
    registry = plane.registry
    try:
        entry = registry.lookup(name)
    except ModelNotFound:
        raise ModelNotFound(f"failed to load '{name}': no model of that name is registered (register its file "
                            "with POST /v1/models/register, then load it by name)", model_id=name) from None
    files = sorted(k for k in parameters if k.startswith("file:"))
    if files:
        raise BadRequest(f"failed to load '{name}': model files sent with the load request ({files[0]}...) are not "
                         "accepted; register the model file with POST /v1/models/register, then load it by name",
                         model_id=name)
    unknown = sorted(k for k in parameters if k != "config")
    if unknown:
        raise BadRequest(f"failed to load '{name}': unknown load parameter {unknown[0]!r}; a load takes 'config'",
                         model_id=name)
    try:
        if "config" not in parameters:
            await registry.load(entry.id)
            return entry
        doc = parse_override(name, parameters["config"])
        await registry.ensure_loaded(entry, explicit=True)  # the current configuration is what doc changes
        current = model_config(entry, registry.settings, name)
        options = override_options(name, doc, current, entry.model.metadata.batchable, registry.settings,
                                   aliases=(entry.id, entry.name))
        return await registry.reconfigure(entry.id, options)
    except MLOSError as e:
        if "failed to load" in e.message:
            raise
        raise type(e)(f"failed to load '{name}': {e.message}", model_id=e.model_id, detail=e.detail) from None


async def unload(plane: DataPlane, name: str) -> ModelEntry:
    try:
        return await plane.registry.unload(plane.registry.lookup(name).id)
    except ModelNotFound as e:
        raise protocol_error(e) from None
