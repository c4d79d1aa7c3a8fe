"""The Open Inference Protocol (KServe v2) core, as Triton and MLServer speak it.

Model names in paths are full ids, URL-encoded (``hf%2Fdistilgpt2%40latest``), or a name
whose version comes from ``/versions/{v}``.
"""
from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..dataplane import DataPlane
from ..errors import BadRequest
from ..shm_regions import SharedMemoryRegions
from .common import json_response, parser_of, read_body, read_json, require_object, tensor_spec
from .v2_binary import (HEADER_LENGTH, decode_inputs, encode_outputs, infer_response, parse_head, requested_outputs,
                        split_body)
from .v2_extensions import V2Extensions
from .v2_params import infer_params

EXTENSIONS = ["binary_tensor_data", "system_shared_memory", "model_repository", "model_configuration",
              "statistics", "schedule_policy", "logging"]


class V2Api:
    def __init__(self, plane: DataPlane, regions: SharedMemoryRegions):
        self.plane = plane
        self.regions = regions

    def routes(self) -> list[web.RouteDef]:
        m = "/v2/models/{name:.+}"
        return V2Extensions(self.plane).routes(m) + [
            web.get("/v2", self.server_metadata),
            web.get("/v2/health/live", self.live),
            web.get("/v2/health/ready", self.ready),
            web.post("/v2/repository/index", self.repository_index),
            web.post("/v2/repository/models/{name:.+}/load", self.load),
            web.post("/v2/repository/models/{name:.+}/unload", self.unload),
            web.get(m + "/versions/{version}/ready", self.model_ready),
            web.post(m + "/versions/{version}/infer", self.infer),
            web.get(m + "/versions/{version}", self.model_metadata),
            web.get(m + "/ready", self.model_ready),
            web.post(m + "/infer", self.infer),
            web.get(m, self.model_metadata),
        ]

    async def server_metadata(self, request: web.Request) -> web.Response:
        return json_response({"name": "mlos-core", "version": __version__, "extensions": EXTENSIONS})

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        # Ready when serving: no model is still loading or starting up.
        loading = [e.id for e in self.plane.registry.entries() if e.state.value == "loading"]
        ok = not loading
        return json_response({"ready": ok, **({"loading": loading} if loading else {})}, status=200 if ok else 503)

    async def model_ready(self, request: web.Request) -> web.Response:
        entry = self.plane.registry.lookup(request.match_info["name"], request.match_info.get("version"))
        ok = entry.state.value == "ready"
        return json_response({"name": entry.id, "ready": ok, "state": entry.state.value}, status=200 if ok else 400)

    async def model_metadata(self, request: web.Request) -> web.Response:
        _, meta, model_id = await self.plane.metadata(request.match_info["name"], request.match_info.get("version"))
        version = model_id.rsplit("@", 1)[1] if "@" in model_id else "1"
        return json_response({
            "name": model_id,
            "versions": [version],
            "platform": meta.platform,
            "inputs": [tensor_spec(t) for t in meta.inputs],
            "outputs": [tensor_spec(t) for t in meta.outputs],
        })

    async def infer(self, request: web.Request) -> web.Response:
        self.plane.admit(request.match_info["name"], request.match_info.get("version"), api="v2")  # before the body is read
        head, binary = split_body(await read_body(request), request.headers.get(HEADER_LENGTH))
        body = require_object(await parse_head(parser_of(request), head, request.headers.get(HEADER_LENGTH)))
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
        name = request.match_info["name"]
        params = infer_params(body, name)
        outputs, out_params = requested_outputs(body, self.regions)
        result = await self.plane.infer(
            name, lambda meta: decode_inputs(inputs, binary, self.regions), version=request.match_info.get("version"),
            outputs=outputs, priority=params.priority, timeout_s=params.timeout_s, api="v2",
        )
        entries, chunks = encode_outputs(result.outputs, out_params, params.binary_output, self.regions)
        answer = {"model_name": result.model_id, "model_version": result.version, "outputs": entries}
        if "id" in body:
            answer["id"] = body["id"]
        return infer_response(answer, chunks, request)

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=False)
        ready_only = bool(body.get("ready")) if isinstance(body, dict) else False
        out = []
        for e in self.plane.registry.entries():
            if ready_only and e.state.value != "ready":
                continue
            row = {"name": e.id, "version": e.id.rsplit("@", 1)[1] if "@" in e.id else "1", "state": e.state.value.upper()}
            if e.error:
                row["reason"] = e.error
            out.append(row)
        return json_response(out)

    async def load(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=False)
        params = body.get("parameters") if isinstance(body, dict) else None
        if isinstance(params, dict) and any(k == "config" or k.startswith("file:") for k in params):
            raise BadRequest("loading a model with a new configuration or files is not supported: register the "
                             "model file with POST /v1/models/register, then load it by name")
        await self.plane.registry.load(request.match_info["name"])
        return json_response({})

    async def unload(self, request: web.Request) -> web.Response:
        await read_json(request, required=False)
        await self.plane.registry.unload(request.match_info["name"])
        return json_response({})
