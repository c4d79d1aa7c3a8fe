"""The offload API of the second seed (a local LLM gateway in front of llama.cpp), in its shapes:

- ``GET /api/health``: ``{"status", "backends": {name: {"available", "ready", "details"}}}``, one
  backend per format plugin (its runtime importable, a model of it ready, and which);
- ``GET /api/backend/info[?model=<id>]``: the llama.cpp settings of a loaded GGUF model (the only
  one when no model is named): ``model, n_ctx, n_gpu_layers, n_threads, n_batch``, and the
  parallel slots where the plugin has them;
- ``GET /vram``: GPU memory through NVML (``mlos_core.resources.vram``).
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from ..dataplane import DataPlane
from ..errors import BadRequest, ModelNotFound, ModelUnavailable
from ..plugins import all_plugins
from ..registry import State
from ..resources import vram
from .common import json_response



class OffloadApi:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/health", self.health),
            web.get("/api/backend/info", self.backend_info),
            web.get("/vram", self.vram),
        ]

    async def health(self, request: web.Request) -> web.Response:
        entries = self.plane.registry.entries()
        backends = {}
        for plugin in all_plugins():
            available, version = plugin.availability()
            mine = [e for e in entries if e.record.plugin_id == plugin.id]
            ready = [e.id for e in mine if e.state == State.READY]
            failed = {e.id: e.error for e in mine if e.state == State.FAILED}
            details = {"format": plugin.format, ("version" if available else "reason"): version,
                       "models_ready": ready, "models_registered": len(mine)}
            if failed:
                details["models_failed"] = failed
            backends[plugin.id] = {"available": available, "ready": bool(ready), "details": details}
        degraded = any(e.state == State.FAILED for e in entries) or any(
            not b["available"] and b["details"]["models_registered"] for b in backends.values())
        return json_response({"status": "degraded" if degraded else "healthy", "backends": backends})

    async def backend_info(self, request: web.Request) -> web.Response:
        name = request.query.get("model")
        gguf = [e for e in self.plane.registry.entries() if e.record.format == "gguf"]
        if name:
            entry = self.plane.registry.lookup(name)
            if entry.record.format != "gguf":
                raise BadRequest(f"model {entry.id} is {entry.record.format}, not a llama.cpp (GGUF) model")
        else:
            loaded = [e for e in gguf if e.model is not None]
            if len(loaded) > 1:
                raise BadRequest("several GGUF models are loaded: name one with ?model=<id> ("
                                 + ", ".join(e.id for e in loaded) + ")")
            if not loaded:
                registered = ", ".join(e.id for e in gguf) or "none registered"
                raise ModelNotFound(f"no GGUF model is loaded ({registered}); register one, or name it with "
                                    "?model=<id> once it has served a request")
            entry = loaded[0]
        model = entry.model
        if model is None:
            raise ModelUnavailable(f"model {entry.id} is {entry.state.value}, not loaded: it loads on its first "
                                   "request", model_id=entry.id)
        p = model.metadata.properties
        info = {"model": entry.id, "model_path": entry.record.path, "n_ctx": p.get("n_ctx", p.get("context_length")),
                # this build runs llama.cpp on the CPU: no layer is offloaded
                "n_gpu_layers": p.get("n_gpu_layers", 0), "n_threads": p.get("n_threads"),
                "n_batch": p.get("n_batch"), "architecture": p.get("architecture"),
                "trained_context_length": p.get("trained_context_length")}
        for key in ("n_parallel", "parallel_slots", "n_ctx_seq"):
            if key in p:
                info[key] = p[key]
        return json_response(info)

    async def vram(self, request: web.Request) -> web.Response:
        return json_response(await asyncio.to_thread(vram))
