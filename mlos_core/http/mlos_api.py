"""The MLOS API of the seeds (MLOS Core 3.1.6 shapes), on /v1/... and plain paths alike."""
from __future__ import annotations

from urllib.parse import quote

import numpy as np
from aiohttp import web

from ..dataplane import DataPlane
from ..errors import BadRequest, InvalidTensor, MethodNotAllowed
from ..plugins import all_plugins
from ..registry import RegisterSpec, validate_options
from ..smi import ModelMetadata
from ..tensors import decode_flat_tensor, encode_json_data, v2_datatype
from . import tasks_api
from .common import describe_model, json_response, read_json, require_object

# Keys of an inference body that steer a request rather than carry a tensor (the seeds send
# them alongside tensors); a model input of the same name still wins.
_CONTROL_KEYS = {"batch_size", "input_format", "parameters", "max_length", "max_tokens",
                 "temperature", "top_p", "top_k", "seed", "stream"}
# the routes below a model id, and beside it, with the methods they take
_MODEL_ROUTES = {"inference": ("POST",), "status": ("GET",)}
_COLLECTION_ROUTES = {"register": ("POST",), "scan": ("POST",)}
_STR_FIELDS = ("plugin_id", "framework", "execution_format", "name", "description", "manifest_path")


def _inference_endpoint(model_id: str) -> str:
    return f"/v1/models/{quote(model_id, safe='')}/inference"


def _flat_decoder(body: dict):
    if isinstance(body.get("inputs"), dict) and all(k in _CONTROL_KEYS for k in body if k != "inputs"):
        # the seeds' {"inputs": {"input_ids": [[...]]}} form, with or without control keys beside it
        body = body["inputs"]

    def decode(meta: ModelMetadata) -> dict[str, np.ndarray]:
        names = {t.name for t in meta.inputs}
        fields = {k: v for k, v in body.items() if k in names or k not in _CONTROL_KEYS}
        if "input" in fields and "input" not in names:
            if len(meta.inputs) != 1:
                raise InvalidTensor(
                    "'input' names no input of this model, and it has several: "
                    + ", ".join(repr(t.name) for t in meta.inputs)
                )
            fields = {meta.inputs[0].name: fields.pop("input"), **fields}
        if any(isinstance(v, str) for v in fields.values()):
            raise InvalidTensor(
                "text given where the model takes tensors; this model's inputs are "
                + ", ".join(repr(t.name) for t in meta.inputs)
            )
        return {k: decode_flat_tensor(k, v, meta.input(k)) for k, v in fields.items()}

    return decode


def _include_outputs(request: web.Request) -> bool:
    value = request.query.get("include_outputs", "true").lower()
    if value not in ("true", "false", "1", "0"):
        raise BadRequest("include_outputs must be true or false")
    return value in ("true", "1")


class MlosApi:
    def __init__(self, plane: DataPlane):
        self.plane = plane

    def routes(self, prefix: str) -> list[web.RouteDef]:
        return [
            web.post(f"{prefix}/models/register", self.register),
            web.post(f"{prefix}/models/scan", self.scan),
            web.post(prefix + "/models/{model_id:.+}/inference", self.inference),
            web.get(prefix + "/models/{model_id:.+}/status", self.get_model),
            web.get(prefix + "/models/{model_id:.+}", self.get_model),
            web.delete(prefix + "/models/{model_id:.+}", self.unregister),
        ]

    async def register(self, request: web.Request) -> web.Response:
        body = require_object(await read_json(request))
        model_id = body.get("model_id")
        path = body.get("path", body.get("model_path"))
        for key in _STR_FIELDS:
            if key in body and body[key] is not None and not isinstance(body[key], str):
                raise BadRequest(f"{key} must be a string")
        options = validate_options(body.get("options"))
        if "keep_alive" in body:
            options.update(validate_options({"keep_alive": body["keep_alive"]}))
        spec = RegisterSpec(
            model_id=model_id, path=path, options=options,
            **{k: body.get(k) or "" for k in _STR_FIELDS if k != "plugin_id"},
            plugin_id=body.get("plugin_id") or None,
        )
        entry, created = await self.plane.register(spec)
        message = "model registered and loaded" if entry.state.value == "ready" else f"model registered ({entry.state.value})"
        if not created:
            message = f"model {entry.id} already registered; {entry.state.value}"
        return json_response({
            "status": "success",
            "model_id": entry.id,
            "plugin_id": entry.record.plugin_id,
            "message": message,
            "inference_endpoint": _inference_endpoint(entry.id),
            "state": entry.state.value,
            "created": created,
        })

    async def scan(self, request: web.Request) -> web.Response:
        found = await self.plane.registry.scan_repository()
        return json_response({"status": "success", "registered": found, "total": len(found)})

    async def inference(self, request: web.Request) -> web.Response:
        include = _include_outputs(request)
        self.plane.admit(request.match_info["model_id"], api="mlos")  # before the body is read
        body = require_object(await read_json(request))
        if not body:
            raise BadRequest("no inputs: send named tensors, e.g. {\"input_ids\": [101, 2023, 102]}")
        if tasks_api.is_task_request(body):
            return await self._task_inference(request, body, include)
        result = await self.plane.infer(request.match_info["model_id"], _flat_decoder(body), api="mlos")
        answer = {
            "status": "success",
            "model_id": result.model_id,
            "model_version": result.version,
            "message": "Inference completed successfully",
            "inference_time_us": result.compute_us,
            "queue_time_us": result.queue_us,
            "total_time_us": result.total_us,
            "batch_size": result.batch_size,
            "output_size": int(sum(v.size for v in result.outputs.values())),
        }
        if include:
            answer["outputs"] = {k: _nested(v) for k, v in result.outputs.items()}
            answer["output_shapes"] = {k: list(v.shape) for k, v in result.outputs.items()}
            answer["output_datatypes"] = {k: v2_datatype(v.dtype) for k, v in result.outputs.items()}
        return json_response(answer)

    async def _task_inference(self, request: web.Request, body: dict, include: bool) -> web.Response:
        transport = request.transport

        def disconnected() -> bool:
            return transport is None or transport.is_closing()

        task, outputs, result = await tasks_api.run(self.plane, request.match_info["model_id"], body, disconnected)
        size = outputs.get("usage", {}).get("completion_tokens") if "usage" in outputs else None
        if size is None:
            first = next(iter(outputs.values()))
            size = int(np.size(first)) if not isinstance(first, list) else len(first)
        answer = {
            "status": "success",
            "model_id": result.model_id,
            "model_version": result.model_id.rsplit("@", 1)[1] if "@" in result.model_id else "1",
            "task": task,
            "message": "Inference completed successfully",
            "inference_time_us": result.compute_us,  # pre- and post-processing included
            "queue_time_us": result.queue_us,
            "total_time_us": result.total_us,
            "output_size": size,
        }
        if include:
            answer["outputs"] = outputs
        return json_response(answer)

    def _method_check(self, request: web.Request) -> None:
        """A greedy model-id route also catches a known route asked with the wrong method
        (GET .../inference, GET /v1/models/register): 405 with Allow, not "model not registered"."""
        model_id = request.match_info["model_id"]
        if model_id in self.plane.registry.ids():
            return
        allow = _COLLECTION_ROUTES.get(model_id) or (
            _MODEL_ROUTES.get(model_id.rsplit("/", 1)[1]) if "/" in model_id else None)
        if allow and request.method not in allow:
            raise MethodNotAllowed(f"method {request.method} is not allowed on {request.path}; use {', '.join(allow)}",
                                   allow=allow)

    async def get_model(self, request: web.Request) -> web.Response:
        self._method_check(request)
        entry = self.plane.registry.lookup(request.match_info["model_id"])
        model = describe_model(entry, with_io=True)
        # the model's fields at the top level (as the original's clients read them) and under
        # "model"; "status" is the answer's, the model's own state is "state"
        return json_response({**model, "model": model, "state": entry.state.value, "status": "success",
                              **_openai_fields(model)})

    async def unregister(self, request: web.Request) -> web.Response:
        self._method_check(request)
        entry = await self.plane.registry.unregister(request.match_info["model_id"])
        return json_response({"status": "success", "model_id": entry.id, "message": "model unloaded and unregistered"})

    async def list_models(self, request: web.Request) -> web.Response:
        models = [describe_model(e) for e in self.plane.registry.entries()]
        return json_response({"status": "success", "models": models, "total": len(models)})

    async def list_models_v1(self, request: web.Request) -> web.Response:
        """One shape for MLOS and OpenAI clients: ``data`` as OpenAI's list, plus the MLOS fields."""
        models = [describe_model(e) for e in self.plane.registry.entries()]
        data = [{**m, **_openai_fields(m)} for m in models]
        return json_response({"object": "list", "data": data, "status": "success", "models": models, "total": len(models)})

    async def stats(self, request: web.Request) -> web.Response:
        return json_response(self.plane.stats())

    async def plugins(self, request: web.Request) -> web.Response:
        out = []
        for p in all_plugins():
            ok, detail = p.availability()
            out.append({"id": p.id, "format": p.format, "description": p.description, "available": ok,
                        ("version" if ok else "reason"): detail,
                        "loads": _LOADS.get(p.format, [])})
        return json_response({"status": "success", "plugins": out, "total": len(out)})


def _openai_fields(m: dict) -> dict:
    return {"object": "model", "created": m["registered_at"],
            "owned_by": m["id"].split("/")[0] if "/" in m["id"] else "mlos"}


_LOADS = {
    "onnx": ["a .onnx file (detected by its protobuf ModelProto)", "a directory holding one (model.onnx wins)",
             "an .axon package whose execution format is onnx"],
    "gguf": ["a .gguf file (detected by its magic)", "an .axon package whose execution format is gguf"],
    "safetensors": ["a Hugging Face model directory (config.json + *.safetensors + tokenizer), converted to ONNX",
                    "a bare .safetensors file (tensors listed, not run)"],
}


def _nested(arr: np.ndarray):
    """A JSON nested list with the tensor's real shape (orjson writes numpy arrays natively)."""
    data = encode_json_data(arr)
    if isinstance(data, list):
        return np.array(data, dtype=object).reshape(arr.shape).tolist() if arr.ndim else data[0]
    return np.ascontiguousarray(arr)
