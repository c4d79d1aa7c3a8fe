"""OpenAI-compatible endpoints: chat completions and completions (plain and SSE streaming),
embeddings, for any registered model that serves the task, whatever its format. Requests are
routed by their ``model`` field; a registered model is loaded on demand. Errors on these paths
take OpenAI's shape (see ``common.error_response``)."""
from __future__ import annotations

import base64
import logging
import time
import uuid

import numpy as np
import orjson
from aiohttp import web

from ..dataplane import DataPlane
from ..errors import BadRequest, MLOSError
from ..smi import GenerationChunk, Model
from ..generation_params import generation_params, text_value
from .common import error_body, json_response, read_json, require_object

MAX_EMBED_INPUTS = 2048
log = logging.getLogger(__name__)


def _model_name(body: dict) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("model is required: the id of a registered model (GET /v1/models lists them)")
    return name


def _stream_options(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream must be true or false")
    opts = body.get("stream_options")
    if opts is not None and (not isinstance(opts, dict) or not stream):
        raise BadRequest("stream_options is only allowed with stream: true, as an object")
    return stream, bool((opts or {}).get("include_usage", False))


def _usage(chunk: GenerationChunk | None) -> dict:
    """OpenAI's usage object; ``cached_tokens``: prompt tokens reused from the prompt cache."""
    p = chunk.prompt_tokens if chunk else 0
    c = chunk.completion_tokens if chunk else 0
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": chunk.cached_tokens if chunk else 0}}


class OpenAIApi:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/completions", self.completions),
            web.post("/v1/embeddings", self.embeddings),
        ]

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = require_object(await read_json(request))
        name = _model_name(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list of {role, content}")
        params = generation_params(body, max_tokens_keys=("max_completion_tokens", "max_tokens"))
        stream, include_usage = _stream_options(body)
        return await self._generate(request, name, lambda m, c: m.chat(messages, params, c), stream, include_usage,
                                    chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = require_object(await read_json(request))
        name = _model_name(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        prompt = text_value(prompt, "prompt")
        params = generation_params(body, default_max_tokens=16)
        stream, include_usage = _stream_options(body)
        return await self._generate(request, name, lambda m, c: m.generate(prompt, params, c), stream, include_usage,
                                    chat=False)

    async def _generate(self, request, name, call, stream: bool, include_usage: bool, chat: bool):
        kind = "chat.completion" if chat else "text_completion"
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        model_id = (await self.plane.registry.find(name)).id
        transport = request.transport

        def disconnected() -> bool:
            return transport is None or transport.is_closing()

        chunks = self.plane.stream_task(name, call, api="openai", disconnected=disconnected)
        if not stream:
            parts, last = [], None
            async for chunk in chunks:
                parts.append(chunk.text)
                last = chunk
            text = "".join(parts)
            choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                       "finish_reason": last.finish_reason if last else "stop"} if chat else
                      {"index": 0, "text": text, "logprobs": None, "finish_reason": last.finish_reason if last else "stop"})
            return json_response({"id": ident, "object": kind, "created": created, "model": model_id,
                                  "choices": [choice], "usage": _usage(last)})

        # Take the first chunk before answering, so a refused request still gets its 4xx status.
        first = await anext(chunks, None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)

        def event(delta_or_text, finish=None) -> bytes:
            if chat:
                choice = {"index": 0, "delta": delta_or_text, "logprobs": None, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta_or_text, "logprobs": None, "finish_reason": finish}
            obj = {"id": ident, "object": kind + ("" if not chat else ".chunk"), "created": created,
                   "model": model_id, "choices": [choice]}
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        last = None
        try:
            if chat:
                await resp.write(event({"role": "assistant", "content": ""}))
            chunk = first
            while chunk is not None:
                last = chunk
                if chunk.text:
                    await resp.write(event({"content": chunk.text} if chat else chunk.text))
                chunk = await anext(chunks, None)
            await resp.write(event({} if chat else "", last.finish_reason if last else "stop"))
            if include_usage:
                usage = {"id": ident, "object": kind + (".chunk" if chat else ""), "created": created,
                         "model": model_id, "choices": [], "usage": _usage(last)}
                await resp.write(b"data: " + orjson.dumps(usage) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, ConnectionError):
            await chunks.aclose()  # the client left: stop generating
            return resp
        except MLOSError as e:
            # The status line is gone: say it in the stream, as OpenAI does (its clients raise
            # APIError with the message), and end the stream without [DONE].
            log.warning("stream of %s ended by an error: %s", model_id, e.message)
            await resp.write(b"data: " + orjson.dumps(error_body(e.status, e.code, e.message, openai=True)) + b"\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(self, request: web.Request) -> web.Response:
        body = require_object(await read_json(request))
        name = _model_name(body)
        raw = body.get("input")
        if isinstance(raw, str):
            texts = [text_value(raw, "input")]
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            if len(raw) > MAX_EMBED_INPUTS:
                raise BadRequest(f"input holds {len(raw)} texts; at most {MAX_EMBED_INPUTS} per request")
            texts = [text_value(t, "input[]") for t in raw]
        else:
            raise BadRequest("input must be a non-empty string or a non-empty list of strings")
        fmt = body.get("encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise BadRequest("encoding_format must be float or base64")
        dims = body.get("dimensions")

        def call(m: Model):
            vectors = np.asarray(m.embed(texts), dtype=np.float32)
            try:
                tokens = sum(m.count_tokens(t) for t in texts)
            except Exception:
                tokens = 0
            return vectors, tokens

        result = await self.plane.run_task(name, call, api="openai")
        vectors, tokens = result.value
        if dims is not None and dims != vectors.shape[1]:
            raise BadRequest(f"dimensions: this model gives {vectors.shape[1]}-dimensional embeddings, not {dims}")
        data = []
        for i, v in enumerate(vectors):
            emb = base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode() if fmt == "base64" else v
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return json_response({"object": "list", "data": data, "model": result.model_id,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
