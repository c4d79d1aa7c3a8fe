"""The one tensor conversion: protocol datatypes, JSON data and numpy arrays.

Every transport decodes request tensors and encodes response tensors through these
functions, and ``validate_inputs`` is the single check of a request against a model's schema.
"""
from __future__ import annotations

import struct
from typing import Any, Mapping

import numpy as np

from .errors import InvalidTensor
from .smi import ModelMetadata, TensorSpec

_V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_NUMPY_TO_V2 = {v: k for k, v in _V2_TO_NUMPY.items()}
_MAX_ELEMENTS = 1 << 31
MAX_RANK = 32  # numpy's own limit is 64 (32 before numpy 2); no model here takes more than a handful


def v2_datatype(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    try:
        return _NUMPY_TO_V2[dtype]
    except KeyError:
        raise InvalidTensor(f"dtype {dtype} has no Open Inference Protocol datatype") from None


def numpy_dtype(datatype: str) -> np.dtype:
    try:
        return _V2_TO_NUMPY[datatype]
    except (KeyError, TypeError):
        raise InvalidTensor(
            f"unknown datatype {datatype!r}; expected one of {', '.join(_V2_TO_NUMPY)}"
        ) from None


def shape_str(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_shape(name: str, shape: Any) -> tuple[tuple[int, ...], int]:
    """The shape as a tuple, and its element count."""
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidTensor(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > MAX_RANK:
        raise InvalidTensor(f"tensor {name!r}: shape has {len(shape)} dimensions; at most {MAX_RANK} are allowed")
    count = 1
    for d in shape:
        count *= d
        if count > _MAX_ELEMENTS:
            raise InvalidTensor(f"tensor {name!r}: shape {shape_str(shape)} is too large")
    return tuple(shape), count


def _as_array(name: str, data: Any, dtype: np.dtype) -> np.ndarray:
    if dtype == np.object_:
        arr = np.asarray(data, dtype=object)
        flat = arr.reshape(-1)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                flat[i] = v.encode("utf-8")
            elif not isinstance(v, bytes):
                raise InvalidTensor(f"tensor {name!r}: BYTES elements must be strings, got {type(v).__name__}")
        return arr
    try:
        arr = np.asarray(data)
    except ValueError:
        raise InvalidTensor(f"tensor {name!r}: data is a ragged nested list") from None
    if arr.dtype == np.object_ or arr.dtype.kind in ("U", "S"):
        raise InvalidTensor(f"tensor {name!r}: data must be numbers for {v2_datatype(dtype)}")
    if arr.dtype.kind == "b" and dtype.kind != "b":
        raise InvalidTensor(f"tensor {name!r}: {v2_datatype(dtype)} expects numbers, got booleans (true/false); "
                            "send 1 and 0, or declare the tensor BOOL if the model takes booleans")
    if arr.dtype.kind == "f" and dtype.kind in ("i", "u", "b"):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InvalidTensor(f"tensor {name!r}: {v2_datatype(dtype)} expects integers, got decimals")
    if arr.dtype.kind in ("i", "u", "f") and dtype.kind == "b":
        if not np.all((arr == 0) | (arr == 1)):
            raise InvalidTensor(f"tensor {name!r}: BOOL expects true/false")
    if dtype.kind in ("i", "u") and arr.size:
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidTensor(f"tensor {name!r}: values out of range for {v2_datatype(dtype)}")
    return arr.astype(dtype, copy=False)


def decode_v2_tensor(obj: Any) -> tuple[str, np.ndarray]:
    """A JSON ``{name, shape, datatype, data}`` tensor of the Open Inference Protocol."""
    if not isinstance(obj, dict):
        raise InvalidTensor("each input must be an object with name, shape, datatype and data")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidTensor("input without a 'name'")
    for key in ("shape", "datatype", "data"):
        if key not in obj:
            raise InvalidTensor(f"input {name!r} has no {key!r}")
    shape, expected = check_shape(name, obj["shape"])
    dtype = numpy_dtype(obj["datatype"])
    arr = _as_array(name, obj["data"], dtype)
    if arr.size != expected:
        raise InvalidTensor(
            f"tensor {name!r}: shape {shape_str(shape)} needs {expected} elements, data has {arr.size}"
        )
    return name, arr.reshape(shape)


def decode_flat_tensor(name: str, value: Any, spec: TensorSpec | None) -> np.ndarray:
    """A tensor of the MLOS API: nested JSON lists, typed by the model's schema when known.

    Without a schema, JSON integers become INT64 and decimals FP32 (the seeds' rule). A value of
    lower rank than the model declares gets leading 1-dims, so ``[101, 2023]`` feeds a
    ``[batch, sequence]`` input.
    """
    if spec is not None:
        arr = _as_array(name, value, spec.dtype)
        if 0 <= arr.ndim < spec.rank:
            arr = arr.reshape((1,) * (spec.rank - arr.ndim) + arr.shape)
        return arr
    try:
        arr = np.asarray(value)
    except ValueError:
        raise InvalidTensor(f"tensor {name!r}: data is a ragged nested list") from None
    if arr.dtype.kind == "f":
        return arr.astype(np.float32)
    if arr.dtype.kind in ("i", "u"):
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr
    raise InvalidTensor(f"tensor {name!r}: data must be numbers or booleans")


def validate_inputs(inputs: Mapping[str, np.ndarray], metadata: ModelMetadata) -> None:
    """Refuse a request that does not match the model's io schema, saying what it expects."""
    declared = {t.name for t in metadata.inputs}
    unknown = [n for n in inputs if n not in declared]
    if unknown:
        raise InvalidTensor(
            f"unknown input {', '.join(map(repr, unknown))}; the model's inputs are "
            + ", ".join(_describe(t) for t in metadata.inputs)
        )
    missing = [t for t in metadata.inputs if t.name not in inputs]
    if missing:
        raise InvalidTensor("missing input " + ", ".join(_describe(t) for t in missing))
    for spec in metadata.inputs:
        arr = inputs[spec.name]
        if arr.dtype != spec.dtype and not (spec.dtype == np.object_ and arr.dtype.kind in ("O", "S", "U")):
            raise InvalidTensor(
                f"input {spec.name!r} expects {v2_datatype(spec.dtype)}, got {v2_datatype(arr.dtype)}"
            )
        if arr.ndim != spec.rank or any(d != -1 and d != a for d, a in zip(spec.shape, arr.shape)):
            raise InvalidTensor(
                f"input {spec.name!r} expects shape {shape_str(spec.shape)}, got {shape_str(arr.shape)}"
            )
    _check_shared_dimensions(inputs, metadata)


def _check_shared_dimensions(inputs: Mapping[str, np.ndarray], metadata: ModelMetadata) -> None:
    """Inputs that declare the same named dimension (``sequence`` of input_ids and attention_mask)
    must give it one size: otherwise the runtime fails deep inside the graph."""
    seen: dict[str, tuple[str, int, int]] = {}
    for spec in metadata.inputs:
        for axis, dim in enumerate(spec.dim_names):
            if dim is None:
                continue
            size = inputs[spec.name].shape[axis]
            first = seen.setdefault(dim, (spec.name, axis, size))
            if first[2] != size:
                raise InvalidTensor(
                    f"inputs {first[0]!r} and {spec.name!r} must agree on dimension {dim!r} (axis {first[1]} of "
                    f"{first[0]!r}, axis {axis} of {spec.name!r}): {first[0]!r} has {first[2]}, {spec.name!r} has "
                    f"{size}; shapes {shape_str(inputs[first[0]].shape)} and {shape_str(inputs[spec.name].shape)}")


def _describe(t: TensorSpec) -> str:
    return f"{t.name!r} ({v2_datatype(t.dtype)} {shape_str(t.shape)})"


def encode_json_data(arr: np.ndarray) -> Any:
    """Flat row-major data for a JSON body; numeric arrays stay numpy for orjson to write."""
    flat = arr.reshape(-1)
    if flat.dtype.kind in ("O", "S", "U"):
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat.tolist()]
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    return flat


def encode_v2_tensor(name: str, arr: np.ndarray) -> dict:
    return {"name": name, "datatype": v2_datatype(arr.dtype), "shape": list(arr.shape), "data": encode_json_data(arr)}


# ---- raw tensor bytes: the binary-data and shared-memory extensions ---------------------------
# Fixed-size datatypes travel as their little-endian row-major bytes; BYTES elements as a
# 4-byte little-endian length followed by that many bytes, one after the other.
_LEN = struct.Struct("<I")


def raw_nbytes(datatype_or_arr, shape=None) -> int | None:
    """Bytes a fixed-size tensor takes raw; None for BYTES, whose size depends on its content."""
    if isinstance(datatype_or_arr, np.ndarray):
        arr = datatype_or_arr
        return None if arr.dtype.kind in ("O", "S", "U") else int(arr.nbytes)
    dtype = numpy_dtype(datatype_or_arr)
    if dtype == np.object_:
        return None
    count = 1
    for d in shape:
        count *= d
    return count * dtype.itemsize


def decode_raw_tensor(name: str, datatype: Any, shape: Any, raw) -> np.ndarray:
    """A tensor from its raw bytes (a bytes-like object, often a view of a request body or of
    shared memory). Fixed-size types come back as a read-only view, without a copy."""
    shape, count = check_shape(name, shape)
    dtype = numpy_dtype(datatype)
    mv = memoryview(raw).cast("B")
    if dtype == np.object_:
        return _decode_bytes_elements(name, mv, count).reshape(shape)
    need = count * dtype.itemsize
    if len(mv) != need:
        raise InvalidTensor(
            f"tensor {name!r}: shape {shape_str(shape)} of {datatype} is {need} bytes, {len(mv)} given"
        )
    arr = np.frombuffer(mv, dtype=dtype.newbyteorder("<"), count=count)
    if dtype.kind == "b" and count and np.frombuffer(mv, np.uint8, count).max() > 1:
        # numpy would carry a byte of 2 as a "true" that compares unequal to True
        raise InvalidTensor(f"tensor {name!r}: BOOL bytes must be 0 or 1")
    return arr.reshape(shape)


def _decode_bytes_elements(name: str, mv: memoryview, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    pos, end = 0, len(mv)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidTensor(f"tensor {name!r}: BYTES data ends inside the length of element {i} of {count}")
        (n,) = _LEN.unpack_from(mv, pos)
        pos += 4
        if n > end - pos:
            raise InvalidTensor(
                f"tensor {name!r}: BYTES element {i} declares {n} bytes, only {end - pos} remain"
            )
        out[i] = bytes(mv[pos: pos + n])
        pos += n
    if pos != end:
        raise InvalidTensor(f"tensor {name!r}: {end - pos} bytes left over after {count} BYTES elements")
    return out


def encode_raw_tensor(arr: np.ndarray) -> bytes | memoryview:
    """The raw bytes of a tensor: a view of the array when it is contiguous and fixed-size."""
    if arr.dtype.kind in ("O", "S", "U"):
        parts = []
        for v in arr.reshape(-1).tolist():
            b = v if isinstance(v, bytes) else str(v).encode("utf-8")
            parts.append(_LEN.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    if arr.size == 0:
        return b""  # memoryview cannot cast a view with a zero in its shape
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(arr)).cast("B")
