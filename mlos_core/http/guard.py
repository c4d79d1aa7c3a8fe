"""What stands between a client and any work: its key, and the server's admission limits.

Both run as middlewares, before a handler reads a body: a request without a valid key, or one
that would exceed the server-wide bounds on requests in flight and on body bytes held, is answered
at once (401, or 503 with Retry-After) and costs the server no parsing and no memory. Per-model
queue limits are checked by the handlers that know the model from the path
(``DataPlane.admit``), also before the body is read.
"""
from __future__ import annotations

import contextlib

from aiohttp import web

from ..auth import ApiKeys
from ..errors import QueueFull, Unauthorized

_BODYLESS = ("GET", "HEAD", "OPTIONS")


def auth_middleware(keys: ApiKeys):
    hint = f"Authorization: Bearer <key> (or the bare key in the {keys.header} header)"

    @web.middleware
    async def check_key(request: web.Request, handler):
        if not keys.authorized(request.headers, request.path):
            what = "the API key is not valid" if keys.presented(request.headers) else "an API key is required"
            raise Unauthorized(f"{what}: send {hint}")
        return await handler(request)

    return check_key


class Admission:
    def __init__(self, max_inflight: int, max_body_bytes: int):
        self.max_inflight = max_inflight
        self.max_body_bytes = max_body_bytes
        self.inflight = 0
        self.body_bytes = 0
        self.refused = 0

    @contextlib.contextmanager
    def admitted(self, size: int):
        """Hold a place for one request of ``size`` body bytes, or refuse it (503, Retry-After):
        the same bounds for every transport (HTTP here, gRPC in ``mlos_core.grpc``)."""
        if self.inflight >= self.max_inflight:
            self.refused += 1
            raise QueueFull(f"the server has {self.inflight} requests in flight (limit {self.max_inflight}); "
                            "retry later", retry_after=1)
        if size and self.body_bytes + size > self.max_body_bytes and self.body_bytes:
            self.refused += 1
            raise QueueFull(f"the server holds {self.body_bytes / 2**20:.0f} MiB of request bodies (limit "
                            f"{self.max_body_bytes / 2**20:.0f} MiB); retry later", retry_after=1)
        self.inflight += 1
        self.body_bytes += size
        try:
            yield
        finally:
            self.inflight -= 1
            self.body_bytes -= size

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        if request.method in _BODYLESS:  # probes, listings and metrics stay answerable under load
            return await handler(request)
        with self.admitted(request.content_length or 0):
            return await handler(request)
