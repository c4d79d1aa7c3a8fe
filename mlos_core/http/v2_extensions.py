"""The Open Inference Protocol extensions that describe and tune a server, as Triton serves them:
model configuration, statistics, logging and trace settings."""
from __future__ import annotations

import logging

from aiohttp import web

from ..dataplane import DataPlane
from ..errors import BadRequest
from ..registry.registry import instances_for
from ..tensors import v2_datatype
from .common import json_response, read_json, require_object
from .v2_params import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVELS

_PLATFORM_BACKEND = {"onnxruntime_onnx": "onnxruntime"}
_LOG_FLAGS = {"log_error": logging.ERROR, "log_warning": logging.WARNING, "log_info": logging.INFO}


def _version(model_id: str) -> str:
    return model_id.rsplit("@", 1)[1] if "@" in model_id else "1"


def _config_type(dtype) -> str:
    name = v2_datatype(dtype)
    return "TYPE_STRING" if name == "BYTES" else "TYPE_" + name


class V2Extensions:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    def routes(self, m: str) -> list[web.RouteDef]:
        """Routes to add before ``m`` (the greedy model-name route) so they win over it."""
        return [
            web.get("/v2/models/stats", self.stats),
            web.get(m + "/versions/{version}/stats", self.stats),
            web.get(m + "/versions/{version}/config", self.config),
            web.get(m + "/stats", self.stats),
            web.get(m + "/config", self.config),
            web.get(m + "/trace/setting", self.get_trace),
            web.post(m + "/trace/setting", self.update_trace),
            web.get("/v2/trace/setting", self.get_trace),
            web.post("/v2/trace/setting", self.update_trace),
            web.get("/v2/logging", self.get_logging),
            web.post("/v2/logging", self.update_logging),
        ]

    async def config(self, request: web.Request) -> web.Response:
        entry, meta, model_id = await self.plane.metadata(request.match_info["name"], request.match_info.get("version"))
        settings = self.plane.registry.settings
        rows = entry.option("max_batch_size", settings)
        batching = bool(entry.scheduler and entry.scheduler.batching)

        def tensor(t):
            dims = list(t.shape[1:] if batching else t.shape)
            return {"name": t.name, "data_type": _config_type(t.dtype), "dims": dims}

        config = {
            "name": model_id,
            "platform": meta.platform,
            "backend": _PLATFORM_BACKEND.get(meta.platform, meta.platform),
            "version_policy": {"specific": {"versions": [_version(entry.id)]}},
            "max_batch_size": rows if batching else 0,
            "input": [tensor(t) for t in meta.inputs],
            "output": [tensor(t) for t in meta.outputs],
            "instance_group": [{"name": entry.id, "kind": "KIND_CPU",
                                "count": instances_for(entry.option("instances", settings), entry.model)}],
            "parameters": {"batching_reason": {"string_value": entry.batching.reason}} if entry.batching else {},
        }
        if batching:
            config["dynamic_batching"] = {
                "preferred_batch_size": [],
                "max_queue_delay_microseconds": entry.option("max_batch_delay_us", settings),
                "preserve_ordering": False,
                "priority_levels": PRIORITY_LEVELS,
                "default_priority_level": DEFAULT_PRIORITY_LEVEL,
                "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": 0,
                                         "allow_timeout_override": True,
                                         "max_queue_size": entry.option("max_queue", settings)},
            }
        return json_response(config)

    async def stats(self, request: web.Request) -> web.Response:
        stats = self.plane.metrics.stats
        name = request.match_info.get("name")
        if name is None:
            entries = self.plane.registry.entries()
        else:
            entries = [self.plane.registry.lookup(name, request.match_info.get("version"))]
        return json_response({"model_stats": [stats.model(e.id, _version(e.id)) for e in entries]})

    # ---- logging and trace: what is cheap to honour -----------------------------------------
    def _logging(self) -> dict:
        level = logging.getLogger().getEffectiveLevel()
        return {"log_file": "", "log_info": level <= logging.INFO, "log_warning": level <= logging.WARNING,
                "log_error": level <= logging.ERROR, "log_verbose_level": 1 if level <= logging.DEBUG else 0,
                "log_format": "default"}

    async def get_logging(self, request: web.Request) -> web.Response:
        return json_response(self._logging())

    async def update_logging(self, request: web.Request) -> web.Response:
        body = require_object(await read_json(request))
        known = {*_LOG_FLAGS, "log_verbose_level", "log_file", "log_format"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise BadRequest(f"unknown logging setting {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        if body.get("log_file") not in (None, ""):
            raise BadRequest("log_file cannot be changed: the server logs to its standard error")
        if body.get("log_format") not in (None, "default"):
            raise BadRequest("log_format must be 'default'")
        current = self._logging()
        for key, value in body.items():
            if key in _LOG_FLAGS and not isinstance(value, bool):
                raise BadRequest(f"{key} must be true or false")
        verbose = body.get("log_verbose_level", current["log_verbose_level"])
        if isinstance(verbose, bool) or not isinstance(verbose, int) or verbose < 0:
            raise BadRequest("log_verbose_level must be a non-negative integer")
        flags = {k: body.get(k, current[k]) for k in _LOG_FLAGS}
        # the most verbose level any enabled flag asks for; all off leaves only critical messages
        level = logging.DEBUG if verbose else min((lv for k, lv in _LOG_FLAGS.items() if flags[k]),
                                                  default=logging.CRITICAL)
        logging.getLogger().setLevel(level)
        return json_response(self._logging())

    async def get_trace(self, request: web.Request) -> web.Response:
        if "name" in request.match_info:
            self.plane.registry.lookup(request.match_info["name"])
        return json_response({"trace_level": ["OFF"], "trace_rate": "1000", "trace_count": "-1",
                              "log_frequency": "0", "trace_file": "", "trace_mode": "triton"})

    async def update_trace(self, request: web.Request) -> web.Response:
        body = require_object(await read_json(request))
        level = body.get("trace_level")
        if level not in (None, ["OFF"], "OFF", []):
            raise BadRequest("tracing is not supported by this server: trace_level can only be OFF; "
                             "request timings are in /v2/models/{m}/stats and /metrics")
        return await self.get_trace(request)
