"""``GET /openapi.json``: the HTTP API as one OpenAPI 3.1 document (``openapi.yaml`` beside this
module), read once and served as JSON."""
from __future__ import annotations

import functools
from pathlib import Path

import orjson
import yaml
from aiohttp import web

DOCUMENT = Path(__file__).with_name("openapi.yaml")


@functools.cache
def document() -> dict:
    with open(DOCUMENT, "rb") as f:
        return yaml.safe_load(f)


@functools.cache
def _body() -> bytes:
    return orjson.dumps(document())


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=_body(), content_type="application/json")


def routes() -> list[web.RouteDef]:
    return [web.get("/openapi.json", serve)]
