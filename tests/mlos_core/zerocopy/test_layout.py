import json
import struct

import numpy as np
import pytest

from mlos_core.errors import InvalidTensor
from mlos_core.zerocopy.layout import read_tensors, required_size, write_tensors


def test_round_trip_without_copies():
    t = {"x": np.arange(12, dtype=np.float32).reshape(3, 4), "ids": np.array([[1, 2]], dtype=np.int64),
         "mask": np.array([True, False])}
    buf = bytearray(required_size(t))
    write_tensors(buf, t)
    out = read_tensors(buf)
    for k, v in t.items():
        np.testing.assert_array_equal(out[k], v)
        assert out[k].dtype == v.dtype
    assert np.shares_memory(out["x"], np.frombuffer(buf, dtype=np.uint8))  # a view, not a copy
    assert not out["x"].flags.writeable


def test_too_small_buffer_names_the_size():
    t = {"x": np.zeros(1000, np.float32)}
    with pytest.raises(InvalidTensor, match=f"need {required_size(t)} bytes"):
        write_tensors(bytearray(100), t)


def _forge(entries, size=4096, hlen=None):
    raw = json.dumps({"tensors": entries}).encode()
    buf = bytearray(size)
    struct.pack_into("<4sIII", buf, 0, b"MLZC", 1, len(raw) if hlen is None else hlen, 0)
    buf[16:16 + len(raw)] = raw
    return buf


@pytest.mark.parametrize("entries, hlen, message", [
    ([{"name": "x", "datatype": "FP32", "shape": [4], "offset": 4088, "nbytes": 16}], None, "outside"),
    ([{"name": "x", "datatype": "FP32", "shape": [4], "offset": 0, "nbytes": 16}], None, "outside"),
    ([{"name": "x", "datatype": "FP32", "shape": [5], "offset": 1024, "nbytes": 16}], None, "is not 16 bytes"),
    ([{"name": "x", "datatype": "FP32", "shape": [4], "offset": 1026, "nbytes": 16}], None, "outside"),
    ([{"name": "x", "datatype": "BYTES", "shape": [1], "offset": 1024, "nbytes": 8}], None, "BYTES"),
    ([{"name": "x", "datatype": "FP99", "shape": [1], "offset": 1024, "nbytes": 4}], None, "unknown datatype"),
    ([], 10**9, "runs past"),
    ([{"name": "x", "datatype": "FP32", "shape": [-1], "offset": 1024, "nbytes": 4}], None, "invalid shape"),
])
def test_hostile_headers_are_refused(entries, hlen, message):
    with pytest.raises(InvalidTensor, match=message):
        read_tensors(_forge(entries, hlen=hlen))


def test_not_a_zero_copy_buffer():
    with pytest.raises(InvalidTensor, match="does not hold zero-copy tensors"):
        read_tensors(bytearray(64))
