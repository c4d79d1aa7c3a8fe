"""How tensors lie in a shared buffer, for the zero-copy path.

    offset 0   b"MLZC"  u32 version (1)  u32 header length  u32 reserved
    offset 16  header: UTF-8 JSON {"tensors": [{"name", "datatype", "shape", "offset", "nbytes"}]}
    then       each tensor's bytes, row-major, at its offset (64-byte aligned)

Reading never copies: each tensor is a numpy view of the buffer. Every offset, size, shape
and datatype coming from the other process is checked against the buffer before use.
"""
from __future__ import annotations

import json
import struct
from typing import Mapping

import numpy as np

from ..errors import InvalidTensor
from ..tensors import decode_raw_tensor, numpy_dtype, v2_datatype

MAGIC = b"MLZC"
VERSION = 1
_HEAD = struct.Struct("<4sIII")
ALIGN = 64
MAX_HEADER = 1 << 20
MAX_TENSORS = 1024


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _header(tensors: Mapping[str, np.ndarray]) -> tuple[bytes, list[int]]:
    """The JSON header and the data offsets; offsets depend on the header's length, which
    depends on the offsets' digits: iterate until stable (twice in practice)."""
    start = _HEAD.size + 256
    for _ in range(8):
        offsets, pos, entries = [], _align(start), []
        for name, arr in tensors.items():
            offsets.append(pos)
            entries.append({"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape),
                            "offset": pos, "nbytes": int(arr.nbytes)})
            pos = _align(pos + arr.nbytes)
        raw = json.dumps({"tensors": entries}, separators=(",", ":")).encode()
        if _HEAD.size + len(raw) <= offsets[0] if offsets else True:
            return raw, offsets
        start = _HEAD.size + len(raw)
    raise InvalidTensor("could not lay out the tensor header")


def required_size(tensors: Mapping[str, np.ndarray]) -> int:
    raw, offsets = _header(tensors)
    if not offsets:
        return _HEAD.size + len(raw)
    last = list(tensors.values())[-1]
    return offsets[-1] + last.nbytes


def write_tensors(buf, tensors: Mapping[str, np.ndarray]) -> int:
    """Lay ``tensors`` into ``buf`` (a writable buffer); returns the bytes used."""
    mv = memoryview(buf).cast("B")
    for name, arr in tensors.items():
        if arr.dtype.kind in ("O", "U", "S"):
            raise InvalidTensor(f"tensor {name!r}: BYTES tensors do not travel on the zero-copy path")
    raw, offsets = _header(tensors)
    need = required_size(tensors)
    if need > len(mv):
        raise InvalidTensor(f"the tensors need {need} bytes; the buffer holds {len(mv)}")
    mv[: _HEAD.size] = _HEAD.pack(MAGIC, VERSION, len(raw), 0)
    mv[_HEAD.size: _HEAD.size + len(raw)] = raw
    for (name, arr), off in zip(tensors.items(), offsets):
        dst = np.frombuffer(mv, dtype=arr.dtype, count=arr.size, offset=off).reshape(arr.shape)
        np.copyto(dst, arr)
    return need


def read_tensors(buf, writable: bool = False) -> dict[str, np.ndarray]:
    """The tensors a buffer holds, as views of it (no copy), after checking every bound."""
    mv = memoryview(buf).cast("B")
    if len(mv) < _HEAD.size:
        raise InvalidTensor("the buffer is smaller than the zero-copy header")
    magic, version, hlen, _ = _HEAD.unpack_from(mv, 0)
    if magic != MAGIC or version != VERSION:
        raise InvalidTensor(f"the buffer does not hold zero-copy tensors (magic {magic!r}, version {version})")
    if hlen > MAX_HEADER or _HEAD.size + hlen > len(mv):
        raise InvalidTensor(f"header length {hlen} runs past the buffer of {len(mv)} bytes")
    try:
        doc = json.loads(bytes(mv[_HEAD.size: _HEAD.size + hlen]))
        entries = doc["tensors"]
        assert isinstance(entries, list) and len(entries) <= MAX_TENSORS
    except (ValueError, KeyError, TypeError, AssertionError):
        raise InvalidTensor("the zero-copy header is not a valid tensor table") from None
    out = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise InvalidTensor("a zero-copy tensor entry has no name")
        name = e["name"]
        dtype = numpy_dtype(e.get("datatype"))
        if dtype == np.object_:
            raise InvalidTensor(f"tensor {name!r}: BYTES tensors do not travel on the zero-copy path")
        shape, off, nbytes = e.get("shape"), e.get("offset"), e.get("nbytes")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidTensor(f"tensor {name!r}: invalid shape {shape!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (off, nbytes)):
            raise InvalidTensor(f"tensor {name!r}: offset and nbytes must be integers")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count * dtype.itemsize != nbytes:
            raise InvalidTensor(f"tensor {name!r}: shape {shape} of {e['datatype']} is not {nbytes} bytes")
        if off < _HEAD.size + hlen or off % dtype.itemsize or off + nbytes > len(mv):
            raise InvalidTensor(f"tensor {name!r}: bytes {off}..{off + nbytes} lie outside the buffer's data")
        # the same raw-tensor decoding as the Open Inference binary and shared-memory paths
        view = decode_raw_tensor(name, e["datatype"], shape, mv[off: off + nbytes])
        if not writable:
            view.flags.writeable = False
        if name in out:
            raise InvalidTensor(f"tensor {name!r} appears twice")
        out[name] = view
    return out


ERROR_MAGIC = b"MLZE"


def write_error(buf, message: str) -> None:
    """Put a failed request's reason where its outputs would have gone."""
    mv = memoryview(buf).cast("B")
    raw = message.encode("utf-8", "replace")[: max(0, len(mv) - _HEAD.size)]
    if len(mv) >= _HEAD.size:
        mv[: _HEAD.size] = _HEAD.pack(ERROR_MAGIC, VERSION, len(raw), 0)
        mv[_HEAD.size: _HEAD.size + len(raw)] = raw


def read_error(buf) -> str | None:
    mv = memoryview(buf).cast("B")
    if len(mv) < _HEAD.size:
        return None
    magic, _, n, _ = _HEAD.unpack_from(mv, 0)
    if magic != ERROR_MAGIC:
        return None
    return bytes(mv[_HEAD.size: _HEAD.size + min(n, len(mv) - _HEAD.size)]).decode("utf-8", "replace")
