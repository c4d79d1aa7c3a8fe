"""``/v2/systemsharedmemory``: clients register the shared-memory regions their tensors live in
(``mlos_core.shm_regions`` checks and maps them); ``/v2/cudasharedmemory`` answers that this
server has no CUDA memory to share."""
from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest
from ..shm_regions import NO_CUDA, SharedMemoryRegions
from .common import json_response, read_json, require_object



class SharedMemoryApi:
    def __init__(self, regions: SharedMemoryRegions):
        self.regions = regions

    def routes(self) -> list[web.RouteDef]:
        sys_, cuda = "/v2/systemsharedmemory", "/v2/cudasharedmemory"
        return [
            web.get(sys_ + "/status", self.status),
            web.get(sys_ + "/region/{region}/status", self.status),
            web.post(sys_ + "/region/{region}/register", self.register),
            web.post(sys_ + "/unregister", self.unregister),
            web.post(sys_ + "/region/{region}/unregister", self.unregister),
            web.get(cuda + "/status", self.cuda_status),
            web.get(cuda + "/region/{region}/status", self.cuda_status),
            web.post(cuda + "/region/{region}/register", self.cuda_register),
            web.post(cuda + "/unregister", self.cuda_unregister),
            web.post(cuda + "/region/{region}/unregister", self.cuda_unregister),
        ]

    async def status(self, request: web.Request) -> web.Response:
        return json_response(self.regions.status(request.match_info.get("region")))

    async def register(self, request: web.Request) -> web.Response:
        body = require_object(await read_json(request))
        unknown = sorted(set(body) - {"key", "offset", "byte_size"})
        if unknown:
            raise BadRequest(f"unknown field {', '.join(map(repr, unknown))}; a region takes key, offset, byte_size")
        if "key" not in body or "byte_size" not in body:
            raise BadRequest("registering a region needs 'key' and 'byte_size' ('offset' defaults to 0)")
        self.regions.register(request.match_info["region"], body["key"], body.get("offset", 0), body["byte_size"])
        return json_response({})

    async def unregister(self, request: web.Request) -> web.Response:
        await read_json(request, required=False)
        self.regions.unregister(request.match_info.get("region"))
        return json_response({})

    async def cuda_status(self, request: web.Request) -> web.Response:
        name = request.match_info.get("region")
        if name is not None:
            raise BadRequest(f"no CUDA shared memory region {name!r}: {NO_CUDA}")
        return json_response([])

    async def cuda_register(self, request: web.Request) -> web.Response:
        raise BadRequest(NO_CUDA)

    async def cuda_unregister(self, request: web.Request) -> web.Response:
        return json_response({})  # nothing can be registered, so every region is already gone
