"""Where a request's tensors come from and where its outputs go, beside the transport's own
encoding: the outputs a request names (checked before the model runs, so a bad region never costs
an inference), and tensors read from or written into registered system shared memory."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import BadRequest
from ..shm_regions import SharedMemoryRegions
from ..tensors import decode_raw_tensor, encode_raw_tensor

SHM_KEYS = ("shared_memory_region", "shared_memory_offset", "shared_memory_byte_size")


def parameters_of(obj: dict, what: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{what}: 'parameters' must be a JSON object")
    return params


def requested_outputs(outputs: Any, regions: SharedMemoryRegions) -> tuple[list[str] | None, dict[str, dict]]:
    """The output names a request asks for (None: all) and each one's parameters."""
    if outputs is None:
        return None, {}
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    params: dict[str, dict] = {}
    for o in outputs:
        what = f"output {o['name']!r}"
        p = parameters_of(o, what)
        if p.get("classification"):
            raise BadRequest(f"{what}: the classification extension is not supported; ask for the tensor")
        if "binary_data" in p and not isinstance(p["binary_data"], bool):
            raise BadRequest(f"{what}: binary_data must be true or false")
        if "shared_memory_region" in p:
            regions.check(p["shared_memory_region"], p.get("shared_memory_offset"),
                          p.get("shared_memory_byte_size"), what)
        params[o["name"]] = p
    return [o["name"] for o in outputs] or None, params


def read_shared_input(name: str, datatype: Any, shape: Any, params: dict, regions: SharedMemoryRegions) -> np.ndarray:
    raw = regions.read(params["shared_memory_region"], params.get("shared_memory_offset"),
                       params.get("shared_memory_byte_size"), f"input {name!r}")
    return decode_raw_tensor(name, datatype, shape, raw)


def write_shared_output(name: str, arr: np.ndarray, params: dict, regions: SharedMemoryRegions) -> dict:
    """Write an output into its region; the parameters its answer carries."""
    raw = encode_raw_tensor(arr)
    regions.write(params["shared_memory_region"], params.get("shared_memory_offset"),
                  params.get("shared_memory_byte_size"), raw, f"output {name!r}")
    return {**{k: params[k] for k in SHM_KEYS if k in params}, "shared_memory_byte_size": len(raw)}
