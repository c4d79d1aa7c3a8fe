"""Assembles the aiohttp application: the data plane, the route modules, and the front doors that
start and stop with it (gRPC)."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..config import Settings
from ..dataplane import DataPlane
from ..metrics import Metrics
from ..registry import Registry
from ..shm_regions import SharedMemoryRegions, client_shm_allowed
from ..zerocopy.server import ZeroCopyServer
from ..auth import ApiKeys
from .common import JSON_PARSER, LIMITS, Limits, error_middleware
from .json_body import JsonParser
from . import openapi
from .guard import Admission, auth_middleware
from .mlos_api import MlosApi
from .offload_api import OffloadApi
from .openai_api import OpenAIApi
from .ops_api import OpsApi
from .shm_api import SharedMemoryApi
from .v2_api import V2Api

log = logging.getLogger(__name__)
PLANE = web.AppKey("plane", DataPlane)


@dataclass
class FrontDoors:
    """Transports beside HTTP that the application starts and stops with itself."""

    grpc: Any = None  # mlos_core.grpc.server.GrpcServer, while it serves


FRONT_DOORS = web.AppKey("front_doors", FrontDoors)
ADMISSION = web.AppKey("admission", Admission)


def create_app(settings: Settings, on_started=None) -> web.Application:
    keys = ApiKeys.from_settings(settings)
    admission = Admission(settings.max_inflight, int(settings.max_body_memory_mb * 2**20))
    # error_middleware is outermost: what the others refuse is answered in the protocol's shape
    app = web.Application(middlewares=[error_middleware, auth_middleware(keys), admission.middleware],
                          client_max_size=int(settings.max_request_mb * 2**20))
    app[LIMITS] = Limits(request_timeout=settings.request_timeout)
    app[ADMISSION] = admission
    app[JSON_PARSER] = parser = JsonParser(int(settings.json_inline_max_mb * 2**20))
    holder: dict = {}
    metrics = Metrics(lambda: holder["plane"].model_rows() if "plane" in holder else [],
                      lambda: holder["plane"].zerocopy.backend["mode"] if holder.get("plane") and holder["plane"].zerocopy else "off")
    cluster = None
    if settings.ray_address:
        from ..cluster.frontdoor import FrontDoor  # Ray is imported only on this path

        cluster = FrontDoor(settings, metrics)
        registry = cluster.registry
    else:
        registry = Registry(settings, metrics)
    plane = DataPlane(registry, metrics)
    plane.cluster = cluster
    holder["plane"] = plane
    app[PLANE] = plane
    doors = app[FRONT_DOORS] = FrontDoors()

    tcp = settings.http_enabled or settings.grpc_enabled
    regions = SharedMemoryRegions(*client_shm_allowed(settings.allow_client_shm, settings.host, tcp))
    mlos, v2, ops = MlosApi(plane), V2Api(plane, regions), OpsApi(plane, metrics)
    app.add_routes(ops.routes())
    app.add_routes(openapi.routes())
    app.add_routes([
        web.get("/models", mlos.list_models),
        web.get("/v1/models", mlos.list_models_v1),
        web.get("/stats", mlos.stats),
        web.get("/v1/stats", mlos.stats),
        web.get("/plugins", mlos.plugins),
        web.get("/v1/plugins", mlos.plugins),
    ])
    app.add_routes(mlos.routes("/v1"))
    app.add_routes(mlos.routes(""))
    app.add_routes(SharedMemoryApi(regions).routes())
    app.add_routes(v2.routes())
    app.add_routes(OpenAIApi(plane).routes())
    app.add_routes(OffloadApi(plane).routes())

    async def lifecycle(app: web.Application):
        if settings.grpc_enabled:
            from ..grpc.server import GrpcServer  # grpcio only where gRPC serves

            doors.grpc = GrpcServer(plane, regions, settings, keys, admission)
            doors.grpc.bind()  # a port in use stops the start before anything else began
        if cluster is not None:
            await cluster.start()
        await registry.start()
        if settings.zerocopy:
            zc = ZeroCopyServer(plane, socket_path=settings.shim_socket)
            try:
                await zc.start()
                plane.zerocopy = zc
            except Exception as e:  # the HTTP API serves on; the local path says why it is off
                log.warning("zero-copy path disabled: %s", e)
        if doors.grpc is not None:
            await doors.grpc.start()
        if on_started is not None:
            await on_started(plane)
        yield
        if doors.grpc is not None:
            await doors.grpc.stop()
        if plane.zerocopy is not None:
            await plane.zerocopy.close()
        await registry.close()
        if cluster is not None:
            await cluster.close()
        regions.close()  # after the models: no request can still be reading a region
        await asyncio.to_thread(parser.close)

    app.cleanup_ctx.append(lifecycle)
    return app
