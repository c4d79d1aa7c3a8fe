"""Tensors of a gRPC infer request and response, onto ``mlos_core.tensors``.

An input comes from a registered shared-memory region (its parameters say which), from the
request's ``raw_input_contents`` (one entry per input not in shared memory, in input order; the
raw form of ``mlos_core.tensors``), or from its typed ``contents`` list. Outputs always go back
raw, one ``raw_output_contents`` entry per output (empty for an output written into shared
memory), as Triton answers and tritonclient reads them.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import InvalidTensor
from ..oip.tensor_io import read_shared_input, write_shared_output
from ..shm_regions import SharedMemoryRegions
from ..tensors import check_shape, decode_raw_tensor, encode_raw_tensor, numpy_dtype, shape_str, v2_datatype
from .protocol import pb

# datatype -> the typed contents field that carries it
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}
_FIELDS = tuple(dict.fromkeys(_CONTENTS.values()))


def parameter_value(p) -> Any:
    """The Python value of an ``InferParameter`` or ``ModelRepositoryParameter``."""
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def parameters(m: Mapping) -> dict[str, Any]:
    return {k: parameter_value(v) for k, v in m.items()}


def set_parameter(target, key: str, value: Any) -> None:
    p = target[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def _from_contents(name: str, datatype: str, shape, contents) -> np.ndarray:
    shape, count = check_shape(name, shape)
    dtype = numpy_dtype(datatype)
    field = _CONTENTS.get(datatype)
    given = [f for f in _FIELDS if len(getattr(contents, f))]
    if field is None:
        raise InvalidTensor(f"tensor {name!r}: {datatype} has no typed contents list; send it in raw_input_contents")
    if given and given != [field]:
        raise InvalidTensor(f"tensor {name!r}: {datatype} data goes in contents.{field}, got {', '.join(given)}")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidTensor(f"tensor {name!r}: shape {shape_str(shape)} needs {count} elements, "
                            f"contents.{field} has {len(values)}")
    if dtype == np.object_:
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
        return arr.reshape(shape)
    wide = np.asarray(values)
    if dtype.kind in "iu" and wide.size:
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise InvalidTensor(f"tensor {name!r}: values out of range for {datatype}")
    return wide.astype(dtype, copy=False).reshape(shape)


def decode_inputs(request, regions: SharedMemoryRegions) -> dict[str, np.ndarray]:
    raw = request.raw_input_contents
    used = 0
    out: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        name = tensor.name
        if not name:
            raise InvalidTensor("input without a 'name'")
        params = parameters(tensor.parameters)
        has_contents = tensor.HasField("contents")
        if "shared_memory_region" in params:
            if has_contents:
                raise InvalidTensor(f"input {name!r} has both contents and a shared memory region; give one")
            arr = read_shared_input(name, tensor.datatype, list(tensor.shape), params, regions)
        elif len(raw):
            if has_contents:
                raise InvalidTensor(f"input {name!r} has contents while the request carries raw_input_contents; "
                                    "give every input's data one way")
            if used >= len(raw):
                raise InvalidTensor(f"input {name!r} has no raw_input_contents entry: {len(raw)} given for the "
                                    "inputs not in shared memory")
            arr = decode_raw_tensor(name, tensor.datatype, list(tensor.shape), raw[used])
            used += 1
        else:
            arr = _from_contents(name, tensor.datatype, list(tensor.shape), tensor.contents)
        if name in out:
            raise InvalidTensor(f"input {name!r} given twice")
        out[name] = arr
    if used != len(raw):
        raise InvalidTensor(f"the request carries {len(raw)} raw_input_contents entries for {used} inputs")
    return out


def encode_outputs(response, outputs: Mapping[str, np.ndarray], params: Mapping[str, dict],
                   regions: SharedMemoryRegions) -> None:
    for name, arr in outputs.items():
        out = response.outputs.add(name=name, datatype=v2_datatype(arr.dtype), shape=list(arr.shape))
        p = params.get(name, {})
        if "shared_memory_region" in p:
            for key, value in write_shared_output(name, arr, p, regions).items():
                set_parameter(out.parameters, key, value)
            response.raw_output_contents.append(b"")
        else:
            response.raw_output_contents.append(bytes(encode_raw_tensor(arr)))


def requested(request) -> list[dict] | None:
    """The request's outputs in the Open Inference Protocol's JSON form."""
    if not len(request.outputs):
        return None
    return [{"name": o.name, "parameters": parameters(o.parameters)} for o in request.outputs]


def text_response(response, name: str, text: str) -> None:
    response.outputs.add(name=name, datatype="BYTES", shape=[1])
    response.raw_output_contents.append(bytes(encode_raw_tensor(np.array([text.encode()], dtype=object))))


__all__ = ["decode_inputs", "encode_outputs", "parameters", "parameter_value", "pb", "requested", "set_parameter",
           "text_response"]
