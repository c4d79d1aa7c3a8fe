"""The TCP listener: aiohttp's server behind a cap on open connections.

aiohttp closes a connection that stays idle (or half-sent: no complete request yet) for its
keep-alive timeout, which ``__main__`` sets from ``--idle-timeout``; this site adds the bound on how
many connections may be open at once. A connection past the cap gets a complete 503 answer and is
closed, rather than a silent reset, so a client can tell why.
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_runner import BaseSite

from .common import error_body


class _Refuse(asyncio.Protocol):
    def __init__(self, limit: int):
        self.limit = limit

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        body = orjson.dumps(error_body(503, "too_many_connections",
                                       f"the server has {self.limit} open connections (its limit); retry later"))
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        transport.write(head + body)
        transport.close()

    def data_received(self, data: bytes) -> None:
        pass


class CappedTCPSite(BaseSite):
    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int, backlog: int = 1024):
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self.max_connections = host, port, max_connections
        self.refused = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1] if self._server else self._port

    def _protocol(self):
        server = self._runner.server
        if len(server.connections) >= self.max_connections:
            self.refused += 1
            return _Refuse(self.max_connections)
        return server()

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=True)


class _ProtocolErrorFilter(logging.Filter):
    """aiohttp answers a malformed request (a bad header byte, an oversized line) with 400 itself,
    then logs it with a traceback at ERROR: any client could fill the log that way. Such records
    become one DEBUG line; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            if logging.getLogger(__name__).isEnabledFor(logging.DEBUG):
                logging.getLogger(__name__).debug("malformed request answered 400: %s", str(exc).splitlines()[0])
            return False
        return True


def quiet_protocol_errors() -> None:
    logging.getLogger("aiohttp.server").addFilter(_ProtocolErrorFilter())
