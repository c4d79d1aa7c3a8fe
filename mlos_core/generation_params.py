"""Generation parameters from a request: one parser for the MLOS, OpenAI and Open Inference APIs."""
from __future__ import annotations

from typing import Any

from .errors import BadRequest
from .smi import GenerationParams

MAX_STOP = 16


def _number(body: dict, key: str, low: float, high: float, default, integer=False):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
        raise BadRequest(f"{key} must be {'an integer' if integer else 'a number'}")
    if not low <= value <= high:
        raise BadRequest(f"{key} must be between {low} and {high}, got {value}")
    return int(value) if integer else float(value)


def generation_params(body: dict, *, default_max_tokens: int = 128, max_tokens_keys=("max_tokens",)) -> GenerationParams:
    max_tokens = None
    for key in max_tokens_keys:
        if body.get(key) is not None:
            value = body[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequest(f"{key} must be an integer")
            if value <= 0:
                raise BadRequest(f"{key} must be at least 1, got {value}")
            max_tokens = value
            break
    stop: Any = body.get("stop")
    if stop is None:
        stop = ()
    elif isinstance(stop, str):
        stop = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stop = tuple(stop)
    else:
        raise BadRequest(f"stop must be a string or a list of at most {MAX_STOP} strings")
    if any(s == "" for s in stop):
        raise BadRequest("stop strings must not be empty")
    n = body.get("n")
    if n is not None and n != 1:
        raise BadRequest("n must be 1: one completion per request")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed must be an integer")
    cache_prompt = body.get("cache_prompt", True)  # llama.cpp server's name
    if not isinstance(cache_prompt, bool):
        raise BadRequest("cache_prompt must be true or false")
    return GenerationParams(
        max_tokens=max_tokens or default_max_tokens,
        temperature=_number(body, "temperature", 0.0, 2.0, 1.0),
        top_p=_number(body, "top_p", 0.0, 1.0, 1.0),
        top_k=_number(body, "top_k", 0, 1_000_000, 0, integer=True),
        seed=seed,
        stop=stop,
        repetition_penalty=_number(body, "repetition_penalty", 0.0, 10.0,
                                   _number(body, "repeat_penalty", 0.0, 10.0, 1.0)),
        cache_prompt=cache_prompt,
    )


def text_value(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    if not value.strip():
        raise BadRequest(f"{key} is empty")
    return value
