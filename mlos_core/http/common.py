"""What every route module shares: JSON in and out, the one error shape, model descriptions."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..dataplane import graph_id
from ..errors import BadRequest, MethodNotAllowed, MLOSError, PayloadTooLarge
from ..oip.names import protocol_error
from .json_body import JsonParser, MalformedJson
from ..registry import ModelEntry
from ..tensors import v2_datatype

log = logging.getLogger(__name__)
_DUMP_OPTS = orjson.OPT_SERIALIZE_NUMPY


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj, option=_DUMP_OPTS), status=status,
                        content_type="application/json", headers=headers)


@dataclass(frozen=True)
class Limits:
    """What every route reads its request under (from ``Settings``)."""

    request_timeout: float = 60.0


LIMITS = web.AppKey("limits", Limits)
JSON_PARSER = web.AppKey("json_parser", JsonParser)
_INLINE_PARSER = JsonParser()  # for apps without one of their own: parses inline up to its limit


def parser_of(request: web.Request) -> JsonParser:
    return request.app.get(JSON_PARSER) or _INLINE_PARSER


class RequestTimeout(MLOSError):
    status = 408
    code = "request_timeout"


class ClientGone(Exception):
    """The client closed the connection before its request was read or answered: nothing to tell
    it, and nothing worth more than a debug line in the log."""


# The Open Inference Protocol allows these request body encodings; aiohttp decodes them as it
# reads, within the request size limit, so a small compressed body cannot expand past it.
BODY_ENCODINGS = ("", "identity", "gzip", "deflate")


async def read_body(request: web.Request) -> bytes:
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in BODY_ENCODINGS:
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or no encoding")
    limits = request.app.get(LIMITS) or Limits()
    try:
        async with asyncio.timeout(limits.request_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(request) from None
    except web.RequestPayloadError:
        raise BadRequest(f"the request body is not valid {encoding or 'data'}: it could not be decoded") from None
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {limits.request_timeout:g} s") from None
    except ConnectionResetError:
        raise ClientGone() from None


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    body = await read_body(request)
    if not body:
        if required:
            raise BadRequest("request body is empty; expected a JSON object")
        return {}
    try:
        return await parser_of(request).loads(body)
    except MalformedJson as e:
        raise BadRequest(f"malformed JSON: {e}") from None


def _too_large(request: web.Request) -> PayloadTooLarge:
    # aiohttp's HTTPRequestEntityTooLarge does not keep the limit; the request does
    return PayloadTooLarge(f"request body over the limit of {request.client_max_size} bytes")


def require_object(doc: Any, what: str = "request body") -> dict:
    if not isinstance(doc, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return doc


OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def error_body(status: int, code: str, message: str, model_id: str | None = None, *, openai: bool = False,
               detail: str | None = None) -> dict:
    """The one error shape: MLOS clients read status/message, Open Inference clients read error;
    on the OpenAI paths, OpenAI's own shape, which its clients parse. ``detail`` keeps a runtime's
    own words beside the message that explains them."""
    if openai:
        kind = "invalid_request_error" if status < 500 else "server_error"
        err = {"message": message, "type": kind, "param": None, "code": code}
        return {"error": {**err, "detail": detail} if detail else err}
    body = {"status": "error", "error": message, "message": message, "code": code}
    if model_id:
        body["model_id"] = model_id
    if detail:
        body["detail"] = detail
    return body


def error_response(e: MLOSError, request: web.Request | None = None) -> web.Response:
    headers = None
    if e.status == 503:
        headers = {"Retry-After": str(max(1, int(round(e.retry_after or 1))))}
    elif e.status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="mlos-core"'}
    elif isinstance(e, MethodNotAllowed):
        headers = {"Allow": ", ".join(e.allow)}
    openai = request is not None and request.path in OPENAI_PATHS
    if request is not None and request.path.startswith("/v2/"):
        e = protocol_error(e)
    return json_response(error_body(e.status, e.code, e.message, e.model_id, openai=openai, detail=e.detail),
                         e.status, headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    openai = request.path in OPENAI_PATHS
    try:
        return await handler(request)
    except MLOSError as e:
        return error_response(e, request)
    except (ClientGone, ConnectionResetError):
        log.debug("%s %s: the client closed the connection", request.method, request.path)
        return web.Response(status=499)  # never sent: nobody is listening
    except web.HTTPRequestEntityTooLarge:
        return error_response(_too_large(request), request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        message = {404: f"no route for {request.method} {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}"}.get(e.status, e.reason)
        return json_response(error_body(e.status, e.reason.lower().replace(" ", "_"), message, openai=openai), e.status)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(error_body(500, "internal_error", "internal server error; see the server log",
                                        openai=openai), 500)


def describe_model(entry: ModelEntry, with_io: bool = False) -> dict:
    r = entry.record
    out = {
        "id": r.id,
        "name": r.name,
        "plugin_id": r.plugin_id,
        "status": entry.state.value,
        "framework": r.framework,
        "path": r.path,
        "format": r.format,
        "execution_format": r.execution_format,
        "description": r.description,
        "manifest_path": r.manifest_path,
        "registered_at": int(r.registered_at),
        "memory_bytes": entry.memory_bytes,
        "options": r.options,
    }
    if entry.error:
        out["error"] = entry.error
    if with_io and entry.model is not None:
        meta = entry.model.metadata
        out["inputs"] = [tensor_spec(t) for t in meta.inputs]
        out["outputs"] = [tensor_spec(t) for t in meta.outputs]
        out["batchable"] = meta.batchable
        graphs = entry.model.graphs() if hasattr(entry.model, "graphs") else {}
        if graphs:  # several graphs, each reachable as a tensor model of its own
            out["graphs"] = {name: {"id": graph_id(r.id, name),
                                    "inputs": [tensor_spec(t) for t in g.metadata.inputs],
                                    "outputs": [tensor_spec(t) for t in g.metadata.outputs]}
                             for name, g in graphs.items()}
        if meta.properties.get("unavailable_outputs"):
            out["unavailable_outputs"] = list(meta.properties["unavailable_outputs"])
        if entry.batching is not None:
            out["batching"] = {**entry.batching.describe(),
                               "max_batch_size": entry.scheduler.max_rows if entry.scheduler else None}
    return out


def tensor_spec(t) -> dict:
    return {"name": t.name, "datatype": v2_datatype(t.dtype), "shape": list(t.shape)}
