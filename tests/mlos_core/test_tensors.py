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
