"""The Open Inference Protocol (KServe v2) core, as Triton and MLServer speak it.

Model names in paths are full ids, URL-encoded (``hf%2Fdistilgpt2%40latest``), or a name
whose version comes from ``/versions/{v}``.
"""
from __future__ import annotations

from aiohttp import web

from ..dataplane import DataPlane, graph_id
from ..errors import BadRequest, MethodNotAllowed
from ..oip import repository
from ..oip.names import answer_version, resolve
from ..oip.params import infer_params
from ..oip.tensor_io import requested_outputs
from ..shm_regions import SharedMemoryRegions
from .common import json_response, parser_of, read_body, read_json, require_object
from .v2_binary import HEADER_LENGTH, decode_inputs, encode_outputs, infer_response, parse_head, split_body
from .v2_extensions import V2Extensions


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
        return json_response(repository.server_metadata())

    async def live(self, request: web.Request) -> web.Response:
        return json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        state = self.plane.readiness()
        return json_response(state, status=200 if state["ready"] else 503)

    async def model_ready(self, request: web.Request) -> web.Response:
        ok, answer = repository.model_ready(self.plane, request.match_info["name"], request.match_info.get("version"))
        return json_response(answer, status=200 if ok else 400)

    async def model_metadata(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name.endswith("/infer") and name not in self.plane.registry.ids() and "version" not in request.match_info:
            raise MethodNotAllowed(f"method {request.method} is not allowed on {request.path}; use POST",
                                   allow=("POST",))
        return json_response(await repository.model_metadata(
            self.plane, request.match_info["name"], request.match_info.get("version")))

    async def infer(self, request: web.Request) -> web.Response:
        self.plane.admit(request.match_info["name"], request.match_info.get("version"), api="v2")  # before the body is read
        head, binary = split_body(await read_body(request), request.headers.get(HEADER_LENGTH))
        body = require_object(await parse_head(parser_of(request), head, request.headers.get(HEADER_LENGTH)))
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("'inputs' must be a non-empty list of tensors {name, shape, datatype, data}")
        name, version = request.match_info["name"], request.match_info.get("version")
        params = infer_params(body, name)
        outputs, out_params = requested_outputs(body.get("outputs"), self.regions)
        graph = self.plane.graph_of(name, version)   # one graph of a model of several: org/model/encoder
        entry = graph[0] if graph else resolve(self.plane.registry, name, version)
        result = await self.plane.infer(
            graph_id(entry.id, graph[1]) if graph else entry.id, lambda meta: decode_inputs(inputs, binary, self.regions),
            outputs=outputs, priority=params.priority, timeout_s=params.timeout_s, api="v2",
        )
        entries, chunks = encode_outputs(result.outputs, out_params, params.binary_output, self.regions)
        answer = {"model_name": name, "model_version": answer_version(entry, version), "outputs": entries}
        if "id" in body:
            answer["id"] = body["id"]
        return infer_response(answer, chunks, request)

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=False)
        ready_only = bool(body.get("ready")) if isinstance(body, dict) else False
        return json_response(repository.repository_index(self.plane, ready_only))

    async def load(self, request: web.Request) -> web.Response:
        body = await read_json(request, required=False)
        params = body.get("parameters") if isinstance(body, dict) else None
        if params is not None and not isinstance(params, dict):
            raise BadRequest(f"failed to load '{request.match_info['name']}': 'parameters' must be a JSON object")
        await repository.load(self.plane, request.match_info["name"], params or {})
        return json_response({})

    async def unload(self, request: web.Request) -> web.Response:
        await read_json(request, required=False)
        await repository.unload(self.plane, request.match_info["name"])
        return json_response({})
