"""The Open Inference Protocol extensions that describe and tune a server, as Triton serves them:
model configuration, statistics, logging and trace settings."""
from __future__ import annotations

from aiohttp import web

from ..dataplane import DataPlane
from ..oip import repository, server_settings
from ..oip.names import resolve
from .common import json_response, read_json, require_object


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
        return json_response(await repository.config(self.plane, request.match_info["name"],
                                                      request.match_info.get("version")))

    async def stats(self, request: web.Request) -> web.Response:
        return json_response({"model_stats": repository.statistics(
            self.plane, request.match_info.get("name"), request.match_info.get("version"))})

    # ---- logging and trace: what is cheap to honour -----------------------------------------
    async def get_logging(self, request: web.Request) -> web.Response:
        return json_response(server_settings.log_settings())

    async def update_logging(self, request: web.Request) -> web.Response:
        return json_response(server_settings.update_log_settings(require_object(await read_json(request))))

    async def get_trace(self, request: web.Request) -> web.Response:
        if "name" in request.match_info:
            resolve(self.plane.registry, request.match_info["name"], None)
        return json_response(server_settings.TRACE)

    async def update_trace(self, request: web.Request) -> web.Response:
        server_settings.check_trace_update(require_object(await read_json(request)).get("trace_level"))
        return await self.get_trace(request)
