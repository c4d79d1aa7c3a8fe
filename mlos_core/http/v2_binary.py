"""The binary tensor data extension of the Open Inference Protocol, and tensors that live in
registered system shared memory.

A request body may be a JSON header of ``Inference-Header-Content-Length`` bytes followed by
raw tensor bytes: each input whose ``parameters`` carry ``binary_data_size`` takes that many
bytes, in the order the inputs are listed, and together they must use the binary part exactly.
An input may instead name ``shared_memory_region`` (with ``shared_memory_offset`` and
``shared_memory_byte_size``), or carry JSON ``data``; the three mix freely in one request.
Outputs come back as JSON data, as raw bytes after a JSON header (``binary_data`` per output,
or ``binary_data_output`` for all), or written into a registered region. The raw form of each
datatype is ``mlos_core.tensors``'s (little-endian; BYTES elements length-prefixed).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from aiohttp import web
from aiohttp.web import ContentCoding

from ..errors import BadRequest, InvalidTensor
from ..oip.tensor_io import parameters_of, read_shared_input, write_shared_output
from ..shm_regions import SharedMemoryRegions
from .json_body import JsonParser, MalformedJson
from ..tensors import decode_raw_tensor, decode_v2_tensor, encode_raw_tensor, encode_v2_tensor, v2_datatype

HEADER_LENGTH = "Inference-Header-Content-Length"


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary part of a request body (the header is parsed by ``parse_head``)."""
    if header_length is None:
        head, binary = memoryview(body), memoryview(b"")
    else:
        text = header_length.strip()
        if not text.isdigit():
            raise BadRequest(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length!r}")
        n = int(text)
        if n > len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {n} but the request body is only {len(body)} bytes")
        head, binary = memoryview(body)[:n], memoryview(body)[n:]
    if not len(head):
        raise BadRequest("request body is empty; expected a JSON object")
    return head, binary


async def parse_head(parser: JsonParser, head: memoryview, header_length: str | None) -> Any:
    try:
        return await parser.loads(head)
    except MalformedJson as e:
        if header_length is not None:
            raise BadRequest(f"malformed JSON in the first {len(head)} bytes ({HEADER_LENGTH}): {e}") from None
        hint = (f" (binary tensor data needs an {HEADER_LENGTH} header)"
                if "unexpected content after document" in str(e) else "")
        raise BadRequest(f"malformed JSON in the body: {e}{hint}") from None


def decode_inputs(inputs: list, binary: memoryview, regions: SharedMemoryRegions) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    pos = 0
    for obj in inputs:
        if not isinstance(obj, dict):
            raise InvalidTensor("each input must be an object with name, shape, datatype and data")
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidTensor("input without a 'name'")
        what = f"input {name!r}"
        params = parameters_of(obj, what)
        if "binary_data_size" in params or "shared_memory_region" in params:
            if "data" in obj:
                raise InvalidTensor(f"{what} has both 'data' and binary or shared-memory parameters; give one")
            for key in ("shape", "datatype"):
                if key not in obj:
                    raise InvalidTensor(f"{what} has no {key!r}")
        if "binary_data_size" in params:
            if "shared_memory_region" in params:
                raise InvalidTensor(f"{what} has both binary_data_size and shared_memory_region; give one")
            size = params["binary_data_size"]
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise InvalidTensor(f"{what}: binary_data_size must be a non-negative integer, got {size!r}")
            if size > len(binary) - pos:
                raise InvalidTensor(
                    f"{what}: binary_data_size {size} runs past the binary data: {len(binary) - pos} of its "
                    f"{len(binary)} bytes remain" + ("" if len(binary) else f" (no {HEADER_LENGTH} header?)"))
            arr = decode_raw_tensor(name, obj["datatype"], obj["shape"], binary[pos: pos + size])
            pos += size
        elif "shared_memory_region" in params:
            arr = read_shared_input(name, obj["datatype"], obj["shape"], params, regions)
        else:
            name, arr = decode_v2_tensor(obj)
        if name in out:
            raise InvalidTensor(f"input {name!r} given twice")
        out[name] = arr
    if pos != len(binary):
        raise InvalidTensor(f"the request carries {len(binary)} bytes of binary data after its JSON header; "
                            f"its inputs' binary_data_size add up to {pos}")
    return out


def encode_outputs(outputs: dict[str, np.ndarray], params: dict[str, dict], binary_default: bool,
                   regions: SharedMemoryRegions) -> tuple[list[dict], list]:
    """JSON output entries, and the raw chunks that follow the JSON header in order."""
    entries, chunks = [], []
    for name, arr in outputs.items():
        p = params.get(name, {})
        head = {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape)}
        if "shared_memory_region" in p:
            entry = {**head, "parameters": write_shared_output(name, arr, p, regions)}
        elif p.get("binary_data", binary_default):
            raw = encode_raw_tensor(arr)
            entry = {**head, "parameters": {"binary_data_size": len(raw)}}
            chunks.append(raw)
        else:
            entry = encode_v2_tensor(name, arr)
        entries.append(entry)
    return entries, chunks


def _compression(request: web.Request) -> ContentCoding | None:
    offered = {}
    for part in request.headers.get("Accept-Encoding", "").lower().split(","):
        coding, _, q = part.strip().partition(";")
        q = q.strip()
        offered[coding.strip()] = not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    for coding in (ContentCoding.gzip, ContentCoding.deflate):
        if offered.get(coding.value):
            return coding
    return None


def infer_response(answer: dict, chunks: list, request: web.Request) -> web.Response:
    head = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if chunks:
        resp = web.Response(body=b"".join([head, *chunks]), content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(len(head))})
    else:
        resp = web.Response(body=head, content_type="application/json")
    coding = _compression(request)
    if coding is not None:
        resp.enable_compression(coding)
    return resp
