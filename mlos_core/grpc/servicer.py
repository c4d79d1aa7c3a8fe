"""``inference.GRPCInferenceService``: each call decoded from its message, answered by the same
data plane and Open Inference Protocol logic as HTTP (``mlos_core.oip``), encoded back. No logic
of its own beyond the wire: errors are the core's one error family, given a gRPC status here."""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, AsyncIterator

import grpc
from google.protobuf import json_format

from ..auth import ApiKeys
from ..dataplane import DataPlane
from ..errors import BadRequest, MLOSError, Unauthorized
from ..generation_params import generation_params
from ..oip import repository, server_settings
from ..oip.names import answer_version, protocol_error, resolve
from ..oip.params import infer_params
from ..oip.tensor_io import requested_outputs
from ..shm_regions import NO_CUDA, SharedMemoryRegions
from ..smi import GENERATE
from .tensors import decode_inputs, encode_outputs, parameters, pb, requested, set_parameter, text_response

if TYPE_CHECKING:  # the server-wide admission bounds, shared with HTTP (one object, made by the app)
    from ..http.guard import Admission

log = logging.getLogger(__name__)

_STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
           403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
           405: grpc.StatusCode.UNIMPLEMENTED, 409: grpc.StatusCode.ALREADY_EXISTS,
           413: grpc.StatusCode.RESOURCE_EXHAUSTED, 422: grpc.StatusCode.INVALID_ARGUMENT,
           503: grpc.StatusCode.UNAVAILABLE, 504: grpc.StatusCode.DEADLINE_EXCEEDED}
PROMPT_INPUTS = ("prompt", "text_input")  # the generation models' input, and Triton's name for it


def status_of(e: MLOSError) -> grpc.StatusCode:
    return _STATUS.get(e.status, grpc.StatusCode.INTERNAL)


# the RPCs that --public-health answers without a key, as the HTTP paths they stand for
_HEALTH = {"ServerLive": "/v2/health/live", "ServerReady": "/v2/health/ready"}


def _unary(method):
    """Check the caller's key and the server's admission bounds, then answer; an MLOSError with
    its status and message (the runtime's words as ``detail`` trailing metadata); anything else
    is logged and answered INTERNAL, never a traceback."""

    @functools.wraps(method)
    async def handler(self, request, context):
        try:
            self.authorize(context, method.__name__)
            with self.admission.admitted(request.ByteSize() if method.__name__ == "ModelInfer" else 0):
                return await method(self, request, context)
        except MLOSError as e:
            e = protocol_error(e)
            if e.detail:
                context.set_trailing_metadata((("detail", e.detail[:4000]),))
            await context.abort(status_of(e), e.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("gRPC %s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error; see the server log")

    return handler


class InferenceServicer:
    def __init__(self, plane: DataPlane, regions: SharedMemoryRegions, keys: ApiKeys, admission: Admission):
        self.plane = plane
        self.regions = regions
        self.keys = keys
        self.admission = admission
        self._hint = f"metadata authorization: Bearer <key> (or the bare key in {keys.header})"

    def authorize(self, context, method: str) -> None:
        """The same keys as HTTP, from the call's metadata (``authorization: Bearer K``, or the
        configured header): one check for every transport (``mlos_core.auth``)."""
        if not self.keys.enabled:
            return
        metadata = {k.lower(): v for k, v in context.invocation_metadata() or ()}
        if not self.keys.authorized(metadata, _HEALTH.get(method)):
            what = "the API key is not valid" if self.keys.presented(metadata) else "an API key is required"
            raise Unauthorized(f"{what}: send {self._hint}")

    # ---- health and metadata --------------------------------------------------------------------
    @_unary
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_unary
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.plane.readiness()["ready"])

    @_unary
    async def ModelReady(self, request, context):
        ready, _ = repository.model_ready(self.plane, request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @_unary
    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(repository.server_metadata(), pb.ServerMetadataResponse())

    @_unary
    async def ModelMetadata(self, request, context):
        meta = await repository.model_metadata(self.plane, request.name, request.version)
        return json_format.ParseDict(meta, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    @_unary
    async def ModelConfig(self, request, context):
        config = await repository.config(self.plane, request.name, request.version)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    @_unary
    async def ModelStatistics(self, request, context):
        stats = repository.statistics(self.plane, request.name, request.version)
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse())

    # ---- inference ------------------------------------------------------------------------------
    @_unary
    async def ModelInfer(self, request, context):
        if await self._is_prompt(request):
            answer = None
            async for answer in self._generate(request, streamed=False):
                pass
            return answer
        return await self._infer(request)

    async def _infer(self, request):
        name, version = request.model_name, request.model_version
        params = infer_params({"parameters": parameters(request.parameters)}, name)
        outputs, out_params = requested_outputs(requested(request), self.regions)
        entry = resolve(self.plane.registry, name, version)
        result = await self.plane.infer(
            entry.id, lambda meta: decode_inputs(request, self.regions), outputs=outputs,
            priority=params.priority, timeout_s=params.timeout_s, api="grpc")
        response = pb.ModelInferResponse(model_name=name, model_version=answer_version(entry, version), id=request.id)
        encode_outputs(response, result.outputs, out_params, self.regions)
        return response

    async def _is_prompt(self, request) -> bool:
        """A text prompt for a model that generates: served by its generation, with the request's
        parameters (max_tokens, temperature, top_p, top_k, seed, stop, repetition_penalty)."""
        if len(request.inputs) != 1 or request.inputs[0].name not in PROMPT_INPUTS or request.inputs[0].datatype != "BYTES":
            return False
        entry, _, _ = await self.plane.metadata(resolve(self.plane.registry, request.model_name, request.model_version).id)
        return GENERATE in entry.model.tasks

    async def _generate(self, request, streamed: bool) -> AsyncIterator:
        name, version = request.model_name, request.model_version
        entry = resolve(self.plane.registry, name, version)
        params = parameters(request.parameters)
        prio = infer_params({"parameters": {k: v for k, v in params.items() if k in ("priority", "timeout")}}, name)
        gen = generation_params(params)
        (prompt,) = decode_inputs(request, self.regions).values()
        if prompt.size != 1:
            raise BadRequest(f"input {request.inputs[0].name!r}: one prompt per request, got {prompt.size}")
        try:
            text = prompt.reshape(-1)[0].decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"input {request.inputs[0].name!r} is not UTF-8 (bad byte at offset {e.start})") from None
        out_name = entry.model.metadata.outputs[0].name if entry.model and entry.model.metadata.outputs else "text"
        pieces: list[str] = []

        def answer(text_piece: str, chunk=None):
            response = pb.ModelInferResponse(model_name=name, model_version=answer_version(entry, version),
                                             id=request.id)
            text_response(response, out_name, text_piece)
            if chunk is not None and chunk.finish_reason:
                for key, value in (("triton_final_response", True), ("finish_reason", chunk.finish_reason),
                                   ("prompt_tokens", chunk.prompt_tokens),
                                   ("completion_tokens", chunk.completion_tokens)):
                    set_parameter(response.parameters, key, value)
            return response

        async for chunk in self.plane.stream_task(entry.id, lambda model, cancelled: model.generate(text, gen, cancelled),
                                                  api="grpc", priority=prio.priority):
            if streamed:
                yield answer(chunk.text, chunk)
            else:
                pieces.append(chunk.text)
                if chunk.finish_reason:
                    yield answer("".join(pieces), chunk)

    async def ModelStreamInfer(self, request_iterator, context):
        """Requests are served as they arrive, concurrently; each answer (or error) is sent as it
        is ready, carrying its request's id. A failed request does not end the stream."""
        try:
            self.authorize(context, "ModelStreamInfer")
        except MLOSError as e:
            await context.abort(status_of(e), e.message)
        answers: asyncio.Queue = asyncio.Queue()
        running: set[asyncio.Task] = set()

        async def serve(request):
            try:
                with self.admission.admitted(request.ByteSize()):
                    await answer(request)
            except MLOSError as e:
                await answers.put(pb.ModelStreamInferResponse(
                    error_message=protocol_error(e).message,
                    infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id)))
            except Exception:
                log.exception("gRPC stream request failed")
                await answers.put(pb.ModelStreamInferResponse(error_message="internal server error; see the server log"))

        async def answer(request):
            if await self._is_prompt(request):
                async for response in self._generate(request, streamed=True):
                    await answers.put(pb.ModelStreamInferResponse(infer_response=response))
            else:
                await answers.put(pb.ModelStreamInferResponse(infer_response=await self._infer(request)))

        async def read():
            async for request in request_iterator:
                task = asyncio.ensure_future(serve(request))
                running.add(task)
                task.add_done_callback(running.discard)
            await asyncio.gather(*running)
            await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await answers.get()
                if item is None:
                    break
                yield item
            await reader  # a failure reading the stream ends it with that error
        finally:
            for task in (reader, *running):
                task.cancel()

    # ---- model repository -----------------------------------------------------------------------
    @_unary
    async def RepositoryIndex(self, request, context):
        rows = repository.repository_index(self.plane, request.ready)
        return json_format.ParseDict({"models": rows}, pb.RepositoryIndexResponse())

    @_unary
    async def RepositoryModelLoad(self, request, context):
        await repository.load(self.plane, request.model_name, parameters(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @_unary
    async def RepositoryModelUnload(self, request, context):
        await repository.unload(self.plane, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # ---- shared memory --------------------------------------------------------------------------
    @_unary
    async def SystemSharedMemoryStatus(self, request, context):
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.regions.status(request.name or None):
            json_format.ParseDict(region, response.regions[region["name"]])
        return response

    @_unary
    async def SystemSharedMemoryRegister(self, request, context):
        self.regions.register(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_unary
    async def SystemSharedMemoryUnregister(self, request, context):
        self.regions.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_unary
    async def CudaSharedMemoryStatus(self, request, context):
        if request.name:
            raise BadRequest(f"no CUDA shared memory region {request.name!r}: {NO_CUDA}")
        return pb.CudaSharedMemoryStatusResponse()

    @_unary
    async def CudaSharedMemoryRegister(self, request, context):
        raise BadRequest(NO_CUDA)

    @_unary
    async def CudaSharedMemoryUnregister(self, request, context):
        return pb.CudaSharedMemoryUnregisterResponse()

    # ---- trace and log settings -----------------------------------------------------------------
    @_unary
    async def TraceSetting(self, request, context):
        if request.model_name:
            resolve(self.plane.registry, request.model_name, None)
        if "trace_level" in request.settings:
            server_settings.check_trace_update(list(request.settings["trace_level"].value))
        response = pb.TraceSettingResponse()
        for key, value in server_settings.TRACE.items():
            response.settings[key].value.extend(value if isinstance(value, list) else [value])
        return response

    @_unary
    async def LogSettings(self, request, context):
        asked = {k: getattr(v, v.WhichOneof("parameter_choice")) for k, v in request.settings.items()
                 if v.WhichOneof("parameter_choice")}
        current = server_settings.update_log_settings(asked) if asked else server_settings.log_settings()
        response = pb.LogSettingsResponse()
        for key, value in current.items():
            slot = response.settings[key]
            if isinstance(value, bool):
                slot.bool_param = value
            elif isinstance(value, int):
                slot.uint32_param = value
            else:
                slot.string_param = value
        return response
