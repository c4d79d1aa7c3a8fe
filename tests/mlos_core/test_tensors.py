"""The one tensor conversion and the schema check."""
from __future__ import annotations

import numpy as np
import pytest

from mlos_core.errors import InvalidTensor
from mlos_core.smi import ModelMetadata, TensorSpec
from mlos_core.tensors import decode_flat_tensor, decode_v2_tensor, encode_v2_tensor, validate_inputs

META = ModelMetadata(
    inputs=(TensorSpec("input_ids", np.dtype(np.int64), (-1, -1)), TensorSpec("scale", np.dtype(np.float32), (-1, 4))),
    outputs=(TensorSpec("y", np.dtype(np.float32), (-1, 4)),),
    platform="test",
)


@pytest.mark.parametrize("datatype, data, dtype", [
    ("FP32", [1.5, 2], np.float32), ("FP16", [0.5, 1], np.float16), ("FP64", [1e300, 0], np.float64),
    ("INT64", [2**40, -1], np.int64), ("INT8", [-128, 127], np.int8), ("UINT8", [0, 255], np.uint8),
    ("BOOL", [True, False], np.bool_),
])
def test_v2_datatypes_round_trip(datatype, data, dtype):
    name, arr = decode_v2_tensor({"name": "t", "shape": [2], "datatype": datatype, "data": data})
    assert name == "t" and arr.dtype == dtype and arr.shape == (2,)
    np.testing.assert_array_equal(arr, np.array(data, dtype=dtype))
    enc = encode_v2_tensor("t", arr)
    assert enc["datatype"] == datatype and enc["shape"] == [2]


def test_v2_bytes_tensor():
    _, arr = decode_v2_tensor({"name": "s", "shape": [2], "datatype": "BYTES", "data": ["héllo", "x"]})
    assert arr.dtype == object and arr[0] == "héllo".encode()
    assert encode_v2_tensor("s", arr)["data"] == ["héllo", "x"]


def test_v2_nested_data_is_accepted_and_reshaped():
    _, arr = decode_v2_tensor({"name": "t", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]})
    assert arr.shape == (2, 2) and arr[1, 0] == 3


@pytest.mark.parametrize("obj, message", [
    ({"name": "t", "shape": [3], "datatype": "FP32", "data": [1, 2]}, "needs 3 elements, data has 2"),
    ({"name": "t", "shape": [2], "datatype": "FP99", "data": [1, 2]}, "unknown datatype 'FP99'"),
    ({"name": "t", "shape": [-1], "datatype": "FP32", "data": [1]}, "non-negative integers"),
    ({"name": "t", "shape": [2], "datatype": "INT64", "data": [1.5, 2]}, "expects integers"),
    ({"name": "t", "shape": [1], "datatype": "UINT8", "data": [300]}, "out of range"),
    ({"name": "t", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}, "must be numbers"),
    ({"name": "t", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}, "ragged"),
    ({"name": "t", "shape": [1], "datatype": "BYTES", "data": [5]}, "must be strings"),
    ({"name": "t", "datatype": "FP32", "data": [1]}, "no 'shape'"),
    ({"shape": [1], "datatype": "FP32", "data": [1]}, "without a 'name'"),
    ({"name": "t", "shape": [2**20, 2**20], "datatype": "FP32", "data": [1]}, "too large"),
])
def test_v2_malformed_tensors(obj, message):
    with pytest.raises(InvalidTensor, match=message):
        decode_v2_tensor(obj)


def test_flat_tensor_follows_schema_and_gains_batch_dim():
    arr = decode_flat_tensor("scale", [1, 2, 3, 4], META.input("scale"))
    assert arr.dtype == np.float32 and arr.shape == (1, 4)  # integers accepted as FP32 by schema
    ids = decode_flat_tensor("input_ids", [101, 2023, 102], META.input("input_ids"))
    assert ids.dtype == np.int64 and ids.shape == (1, 3)


def test_flat_tensor_without_schema_uses_the_seeds_rule():
    assert decode_flat_tensor("a", [1, 2], None).dtype == np.int64
    assert decode_flat_tensor("a", [1.5, 2], None).dtype == np.float32


def test_flat_decimals_for_integer_input_are_refused():
    with pytest.raises(InvalidTensor, match="INT64 expects integers"):
        decode_flat_tensor("input_ids", [1.5], META.input("input_ids"))


def test_validate_names_dtypes_shapes():
    good = {"input_ids": np.zeros((1, 3), np.int64), "scale": np.zeros((1, 4), np.float32)}
    validate_inputs(good, META)
    with pytest.raises(InvalidTensor, match=r"unknown input 'ids'.*'input_ids' \(INT64 \[-1, -1\]\)"):
        validate_inputs({**good, "ids": good["input_ids"]}, META)
    with pytest.raises(InvalidTensor, match=r"missing input 'scale' \(FP32 \[-1, 4\]\)"):
        validate_inputs({"input_ids": good["input_ids"]}, META)
    with pytest.raises(InvalidTensor, match="'scale' expects FP32, got FP64"):
        validate_inputs({**good, "scale": np.zeros((1, 4))}, META)
    with pytest.raises(InvalidTensor, match=r"'scale' expects shape \[-1, 4\], got \[1, 5\]"):
        validate_inputs({**good, "scale": np.zeros((1, 5), np.float32)}, META)
    with pytest.raises(InvalidTensor, match=r"expects shape \[-1, -1\], got \[3\]"):
        validate_inputs({**good, "input_ids": np.zeros(3, np.int64)}, META)


# ---- raw bytes (binary data and shared memory) ------------------------------------------------
from mlos_core.tensors import decode_raw_tensor, encode_raw_tensor, raw_nbytes  # noqa: E402


@pytest.mark.parametrize("arr", [
    np.array([[1.5, -0.0], [np.inf, np.nan]], dtype=np.float32),
    np.array([0.5, 65504], dtype=np.float16),
    np.array([[-(2**63), 2**63 - 1]], dtype=np.int64),
    np.array([[True, False, True]]),
    np.array([7, 0, 255], dtype=np.uint8),
    np.zeros((2, 0), dtype=np.float64),
])
def test_raw_round_trip_is_bit_exact_and_a_view(arr):
    raw = encode_raw_tensor(arr)
    assert bytes(raw) == arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    back = decode_raw_tensor("t", {np.dtype(np.bool_): "BOOL"}.get(arr.dtype) or
                             {"f": "FP", "i": "INT", "u": "UINT"}[arr.dtype.kind] + str(arr.dtype.itemsize * 8),
                             list(arr.shape), raw)
    assert back.shape == arr.shape and back.tobytes() == arr.tobytes()
    assert raw_nbytes(arr) == arr.nbytes
    body = bytearray(raw)
    if arr.size:  # no copy: the tensor reads the buffer it was given
        view = decode_raw_tensor("t", "UINT8", [len(body)], body)
        body[0] ^= 0xFF
        assert view[0] == body[0]


def test_raw_bytes_elements_are_length_prefixed():
    arr = np.array([["héllo".encode(), b""], [b"\x00\xff", "x".encode()]], dtype=object)
    raw = encode_raw_tensor(arr)
    assert bytes(raw) == b"\x06\x00\x00\x00h\xc3\xa9llo\x00\x00\x00\x00\x02\x00\x00\x00\x00\xff\x01\x00\x00\x00x"
    back = decode_raw_tensor("s", "BYTES", [2, 2], raw)
    assert back.tolist() == arr.tolist()
    assert raw_nbytes(arr) is None and raw_nbytes("BYTES", [2]) is None and raw_nbytes("FP32", [2, 3]) == 24
    # str elements (as onnxruntime returns them) are sent as UTF-8
    assert bytes(encode_raw_tensor(np.array(["ok"], dtype=object))) == b"\x02\x00\x00\x00ok"


@pytest.mark.parametrize("datatype,shape,raw,message", [
    ("FP32", [2], b"\0" * 7, "tensor 't': shape [2] of FP32 is 8 bytes, 7 given"),
    ("FP32", [-1], b"", "shape must be a list of non-negative integers"),
    ("FP32", [2**31, 2], b"", "is too large"),
    ("INT4", [1], b"\0", "unknown datatype 'INT4'"),
    ("BOOL", [2], b"\x01\x05", "BOOL bytes must be 0 or 1"),
    ("BYTES", [2], b"\x01\x00\x00\x00a", "BYTES data ends inside the length of element 1 of 2"),
    ("BYTES", [1], b"\xff\xff\xff\xffabc", "BYTES element 0 declares 4294967295 bytes, only 3 remain"),
    ("BYTES", [1], b"\x01\x00\x00\x00ab", "1 bytes left over after 1 BYTES elements"),
])
def test_raw_malformed(datatype, shape, raw, message):
    with pytest.raises(InvalidTensor) as e:
        decode_raw_tensor("t", datatype, shape, raw)
    assert message in e.value.message
