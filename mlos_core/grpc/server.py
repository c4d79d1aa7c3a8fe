"""The gRPC front door: a ``grpc.aio`` server on the core's event loop, serving
``inference.GRPCInferenceService`` through ``InferenceServicer`` (the same data plane, shared
memory regions and limits as HTTP)."""
from __future__ import annotations

import logging

import grpc

from ..auth import ApiKeys
from ..config import Settings
from ..dataplane import DataPlane
from ..shm_regions import SharedMemoryRegions
from .protocol import SERVICE, SERVICE_NAME, pb
from .servicer import InferenceServicer

log = logging.getLogger(__name__)


def _handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    handlers = {}
    for method in SERVICE.methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        make = (grpc.stream_stream_rpc_method_handler if method.client_streaming
                else grpc.unary_unary_rpc_method_handler)
        handlers[method.name] = make(getattr(servicer, method.name), request_deserializer=request.FromString,
                                     response_serializer=response.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _address(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    def __init__(self, plane: DataPlane, regions: SharedMemoryRegions, settings: Settings, keys: ApiKeys,
                 admission):
        """``keys`` and ``admission`` are the HTTP application's own: one key check, one set of
        server-wide bounds for both transports."""
        self.settings = settings
        self.servicer = InferenceServicer(plane, regions, keys, admission)
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None

    def bind(self) -> int:
        """Take the port (``--grpc-port 0`` picks a free one) before anything else starts, so a
        port in use stops the core at once. SO_REUSEPORT is off: two servers never share a port."""
        limit = int(self.settings.max_request_mb * 2**20)
        server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", -1),
        ])
        server.add_generic_rpc_handlers((_handlers(self.servicer),))
        address = _address(self.settings.host, self.settings.grpc_port)
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"gRPC cannot listen on {address}: {e} (choose --grpc-port, or --no-grpc)") from None
        if not port:
            raise OSError(f"gRPC cannot listen on {address}: the address is in use or not available "
                          "(choose --grpc-port, or --no-grpc)")
        self._server, self.port = server, port
        return port

    async def start(self) -> None:
        await self._server.start()
        log.info("gRPC (Open Inference Protocol, Triton extensions) on %s", _address(self.settings.host, self.port))

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
