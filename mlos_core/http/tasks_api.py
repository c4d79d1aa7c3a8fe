"""Task-level requests on the MLOS inference route: text, prompts, chat messages and images in,
text, embeddings and labels out (the seeds' ``{"text": ...}``, ``{"input": ..., "max_length": 50}``,
``{"prompt": ...}``), for any format whose model serves the task."""
from __future__ import annotations

import base64
import binascii
from typing import Callable

import numpy as np

from ..dataplane import DataPlane
from ..errors import BadRequest, UnprocessableModel
from ..smi import CHAT, CLASSIFY, CLASSIFY_IMAGE, EMBED, FILL_MASK, GENERATE, Model
from ..tasks import TASKS, normalize_task
from ..generation_params import generation_params, text_value

TASK_KEYS = ("messages", "prompt", "text", "inputs", "input", "image")
_TEXT_ORDER = (GENERATE, CLASSIFY, FILL_MASK, EMBED)
MAX_IMAGE_BYTES = 20 * 2**20


def is_task_request(body: dict) -> bool:
    """Text, prompts, messages or images, as opposed to named tensors (which are never strings)."""
    for key in TASK_KEYS:
        value = body.get(key)
        if key == "messages" and isinstance(value, list):
            return True
        if isinstance(value, str) or (key == "text" and isinstance(value, list) and value
                                      and all(isinstance(v, str) for v in value)):
            return True
    return False


def _texts(value) -> list[str]:
    if isinstance(value, str):
        return [text_value(value, "text")]
    if not value or len(value) > 2048:
        raise BadRequest("text must be a string or a list of 1 to 2048 strings")
    return [text_value(v, "text") for v in value]


def _image(value) -> bytes:
    if not isinstance(value, str):
        raise BadRequest("image must be base64-encoded image bytes (a string)")
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    if len(value) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise BadRequest(f"image is over {MAX_IMAGE_BYTES // 2**20} MB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image is not valid base64") from None


def _task_for(body: dict, model_tasks: frozenset[str]) -> str:
    if body.get("task") is not None:
        name = body["task"]
        if name == CHAT:
            return CHAT
        try:
            pipeline = normalize_task(name) if isinstance(name, str) else None
        except UnprocessableModel as e:
            raise BadRequest(e.message) from None
        if pipeline is None:
            raise BadRequest(f"task must name a task (e.g. feature-extraction, text-generation), not {name!r}")
        return next(iter(TASKS[pipeline]))
    if "messages" in body:
        return CHAT
    if "prompt" in body:
        return GENERATE
    if "image" in body:
        return CLASSIFY_IMAGE
    return next((t for t in _TEXT_ORDER if t in model_tasks), EMBED)


async def run(plane: DataPlane, model_name: str, body: dict,
              disconnected: Callable[[], bool] = lambda: False) -> tuple[str, dict, object]:
    """Returns (task, outputs, TaskResult). A generation stops early once ``disconnected()``."""
    entry = await plane.registry.find(model_name)
    if entry.model is None:  # the task depends on what the model serves: load it first
        await plane.registry.ensure_loaded(entry)
    task = _task_for(body, entry.model.tasks if entry.model else frozenset())
    if task in (GENERATE, CHAT):
        params = generation_params(body, default_max_tokens=50, max_tokens_keys=("max_tokens", "max_length", "max_new_tokens"))
        if task == CHAT:
            messages = body.get("messages")

            def call(m: Model, cancelled):
                return _collect(m.chat(messages, params, cancelled))
        else:
            raw = next(body[k] for k in ("prompt", "text", "inputs", "input") if k in body)
            if isinstance(raw, list):   # several prompts, generated together where the model batches
                prompts = _texts(raw)
                result = await plane.run_task(model_name, lambda m, cancelled: m.generate_batch(prompts, params, cancelled),
                                              api="mlos", cancellable=True, disconnected=disconnected)
                texts = [c.text for c in result.value]
                outputs = {"generated_text": texts, "text": texts,
                           "finish_reason": [c.finish_reason for c in result.value], "usage": _usage(result.value)}
                if all(c.token_ids is not None for c in result.value):
                    outputs["token_ids"] = [c.token_ids for c in result.value]
                return task, outputs, result
            prompt = text_value(raw, "prompt")

            def call(m: Model, cancelled):
                return _collect(m.generate(prompt, params, cancelled))
        result = await plane.run_task(model_name, call, api="mlos", cancellable=True, disconnected=disconnected)
        text, finish, usage, token_ids = result.value
        outputs = {"generated_text": text, "text": text, "finish_reason": finish, "usage": usage}
        if token_ids is not None:
            outputs["token_ids"] = token_ids
        return task, outputs, result
    if task == CLASSIFY_IMAGE:
        image = _image(body.get("image"))
        top_k = _top_k(body)
        result = await plane.run_task(model_name, lambda m: m.classify_image(image, top_k), api="mlos")
        return task, {"labels": result.value, "label": result.value[0]["label"] if result.value else None}, result
    texts = _texts(next(body[k] for k in ("text", "inputs", "input", "prompt") if k in body))
    if task == EMBED:
        result = await plane.run_task(model_name, lambda m: m.embed(texts), api="mlos")
        emb = np.asarray(result.value, dtype=np.float32)
        return task, {"embeddings": emb, "dimensions": int(emb.shape[-1])}, result
    if task == CLASSIFY:
        result = await plane.run_task(model_name, lambda m: m.classify(texts), api="mlos")
        first = result.value[0][0] if result.value and result.value[0] else {}
        return task, {"labels": result.value, "label": first.get("label"), "score": first.get("score")}, result
    if task == FILL_MASK:
        top_k = _top_k(body)
        result = await plane.run_task(model_name, lambda m: [m.fill_mask(t, top_k) for t in texts], api="mlos")
        return task, {"predictions": result.value if len(texts) > 1 else result.value[0]}, result
    raise BadRequest(f"task {task} is not served on this route")


def _top_k(body: dict) -> int:
    k = body.get("top_k", 5)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise BadRequest("top_k must be an integer between 1 and 1000")
    return k


def _usage(chunks) -> dict:
    usage = {"prompt_tokens": sum(c.prompt_tokens for c in chunks),
             "completion_tokens": sum(c.completion_tokens for c in chunks)}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    usage["prompt_tokens_details"] = {"cached_tokens": sum(c.cached_tokens for c in chunks)}
    return usage


def _collect(chunks) -> tuple[str, str | None, dict, list[int] | None]:
    parts, last = [], None
    for chunk in chunks:
        parts.append(chunk.text)
        last = chunk
    return ("".join(parts), last.finish_reason if last else None, _usage([last] if last else []),
            last.token_ids if last else None)
