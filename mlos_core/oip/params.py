"""The request-level ``parameters`` of an Open Inference Protocol infer request.

``priority`` follows Triton: 0 is the default level, 1 the highest, ``PRIORITY_LEVELS`` the
lowest; it maps onto the scheduler's scale (higher runs first) so that the default level is the
scheduler's 0, where every other API's requests wait. ``timeout`` is in microseconds: a request
still queued when it expires is rejected, never run. Sequences (stateful models) are not served
by any plugin, so ``sequence_id`` is refused rather than silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest

PRIORITY_LEVELS = 10
DEFAULT_PRIORITY_LEVEL = 5
MAX_TIMEOUT_US = 3600 * 10**6


@dataclass(frozen=True)
class InferParams:
    priority: int = 0  # on the scheduler's scale
    timeout_s: float | None = None
    binary_output: bool = False


def _flag(params: dict, key: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {key!r} must be true or false, got {value!r}")
    return value


def _integer(params: dict, key: str, high: int) -> int:
    value = params.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"parameter {key!r} must be an integer, got {value!r}")
    if not 0 <= value <= high:
        raise BadRequest(f"parameter {key!r} must be between 0 and {high}, got {value}")
    return value


def infer_params(body: dict, model: str) -> InferParams:
    params: Any = body.get("parameters")
    if params is None:
        return InferParams()
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be a JSON object")
    seq = params.get("sequence_id", 0)
    if seq not in (0, "") or params.get("sequence_start") is True or params.get("sequence_end") is True:
        raise BadRequest(f"model {model} does not support sequences (sequence_id {seq!r} given): it serves "
                         "stateless requests only")
    level = _integer(params, "priority", PRIORITY_LEVELS)
    timeout_us = _integer(params, "timeout", MAX_TIMEOUT_US)
    return InferParams(
        priority=DEFAULT_PRIORITY_LEVEL - (level or DEFAULT_PRIORITY_LEVEL),
        timeout_s=timeout_us / 1e6 if timeout_us else None,
        binary_output=_flag(params, "binary_data_output"),
    )
