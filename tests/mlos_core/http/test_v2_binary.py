"""The binary tensor data extension over real HTTP: request and response bodies of a JSON header
plus raw bytes, every datatype, mixed with JSON tensors, compressed, and every malformed case."""
from __future__ import annotations

import gzip
import json
import struct
import zlib

import numpy as np
import pytest

ID = "test/identity@1"
URL = "/v2/models/test%2Fidentity%401/infer"
HDR = "Inference-Header-Content-Length"
DATATYPE = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16", np.dtype(np.int64): "INT64",
            np.dtype(np.bool_): "BOOL", np.dtype(object): "BYTES"}
NUMPY = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "BOOL": np.bool_}


def raw(arr: np.ndarray) -> bytes:
    """The protocol's raw form, written here independently of the server's codec."""
    if arr.dtype == object:
        return b"".join(struct.pack("<I", len(v)) + v for v in arr.reshape(-1))
    return arr.astype(arr.dtype.newbyteorder("<")).tobytes()


def unraw(datatype: str, shape, data: bytes) -> np.ndarray:
    if datatype == "BYTES":
        out, pos = [], 0
        while pos < len(data):
            (n,) = struct.unpack_from("<I", data, pos)
            out.append(data[pos + 4: pos + 4 + n])
            pos += 4 + n
        return np.array(out, dtype=object).reshape(shape)
    return np.frombuffer(data, dtype=np.dtype(NUMPY[datatype]).newbyteorder("<")).reshape(shape)


def sample(finite: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "FP32": rng.standard_normal((2, 5)).astype(np.float32),
        "FP16": np.array([[0.5, -65504.0, 6.1e-5, 1.0 if finite else np.inf]], dtype=np.float16),
        "INT64": np.array([[2**62, -(2**63), 0], [1, -1, 7]], dtype=np.int64),
        "BOOL": np.array([[True, False, True]]),
        "BYTES": np.array([["héllo".encode(), b"", "✓ ok".encode()]], dtype=object),
    }


def binary_request(arrays: dict, json_types=(), outputs=None, params=None) -> tuple[bytes, dict]:
    inputs, chunks = [], []
    for t, arr in arrays.items():
        entry = {"name": f"in_{t}", "shape": list(arr.shape), "datatype": t}
        if t in json_types:
            entry["data"] = [v.decode() for v in arr.reshape(-1)] if t == "BYTES" else arr.reshape(-1).tolist()
        else:
            chunk = raw(arr)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        inputs.append(entry)
    doc = {"inputs": inputs}
    if outputs is not None:
        doc["outputs"] = outputs
    if params:
        doc["parameters"] = params
    head = json.dumps(doc).encode()
    return head + b"".join(chunks), {HDR: str(len(head)), "Content-Type": "application/octet-stream"}


def parse_response(body: bytes, headers) -> tuple[dict, dict[str, np.ndarray]]:
    n = headers.get(HDR)
    if n is None:
        doc = json.loads(body)
        return doc, {o["name"]: (np.array(o["data"], dtype=object if o["datatype"] == "BYTES" else NUMPY[o["datatype"]])
                                 .reshape(o["shape"])) for o in doc["outputs"]}
    doc, pos, out = json.loads(body[: int(n)]), int(n), {}
    for o in doc["outputs"]:
        if "data" in o:
            out[o["name"]] = np.array(o["data"], dtype=object if o["datatype"] == "BYTES" else NUMPY[o["datatype"]]).reshape(o["shape"])
        else:
            size = o["parameters"]["binary_data_size"]
            out[o["name"]] = unraw(o["datatype"], o["shape"], body[pos: pos + size])
            pos += size
    assert pos == len(body), "response carries bytes no output accounts for"
    return doc, out


def assert_same(got: np.ndarray, want: np.ndarray):
    assert got.shape == want.shape
    if want.dtype == object:
        assert [bytes(v) if isinstance(v, bytes) else v.encode() for v in got.reshape(-1)] == list(want.reshape(-1))
    else:
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()  # bit-exact, -0.0 and inf included


@pytest.fixture
async def client(serving, models):
    return await serving({ID: models.identity})


async def post(client, body: bytes, headers: dict):
    r = await client.post(URL, data=body, headers=headers)
    return r, await r.read()


async def test_binary_inputs_and_outputs_of_every_datatype(client):
    arrays = sample()
    body, headers = binary_request(arrays, params={"binary_data_output": True})
    r, payload = await post(client, body, headers)
    assert r.status == 200, payload
    assert r.headers["Content-Type"] == "application/octet-stream"
    doc, out = parse_response(payload, r.headers)
    assert doc["model_name"] == ID
    assert [o["datatype"] for o in doc["outputs"]] == list(arrays)
    for t, arr in arrays.items():
        assert "data" not in doc["outputs"][list(arrays).index(t)]
        assert_same(out[f"out_{t}"], arr)


async def test_mixed_json_and_binary_inputs_per_output_choice(client):
    arrays = sample()
    outputs = [{"name": "out_FP32", "parameters": {"binary_data": False}},
               {"name": "out_BYTES", "parameters": {"binary_data": True}},
               {"name": "out_INT64"}, {"name": "out_BOOL", "parameters": {"binary_data": True}}]
    body, headers = binary_request(arrays, json_types=("INT64", "BYTES"), outputs=outputs)
    r, payload = await post(client, body, headers)
    assert r.status == 200, payload
    doc, out = parse_response(payload, r.headers)
    assert [o["name"] for o in doc["outputs"]] == ["out_FP32", "out_BYTES", "out_INT64", "out_BOOL"]  # as asked
    by_name = {o["name"]: o for o in doc["outputs"]}
    assert "data" in by_name["out_FP32"] and "data" in by_name["out_INT64"]
    assert by_name["out_BOOL"]["parameters"] == {"binary_data_size": 3}
    for t in ("FP32", "INT64", "BOOL", "BYTES"):
        assert_same(out[f"out_{t}"], arrays[t])


async def test_all_json_request_gets_json_unless_binary_asked(client):
    arrays = sample(finite=True)  # JSON has no infinity
    body, headers = binary_request(arrays, json_types=tuple(arrays))
    assert json.loads(body[: int(headers[HDR])])  # the whole body is the header
    r, payload = await post(client, body, {"Content-Type": "application/json"})
    assert r.status == 200 and HDR not in r.headers
    _, out = parse_response(payload, r.headers)
    for t in ("FP32", "FP16", "INT64", "BOOL"):
        assert_same(out[f"out_{t}"], arrays[t])
    assert list(out["out_BYTES"].reshape(-1)) == [v.decode() for v in arrays["BYTES"].reshape(-1)]


@pytest.mark.parametrize("coding,compress,decompress", [
    ("gzip", gzip.compress, gzip.decompress),
    ("deflate", zlib.compress, zlib.decompress),
])
async def test_compressed_request_and_response(client, coding, compress, decompress):
    arrays = sample()
    body, headers = binary_request(arrays, params={"binary_data_output": True})
    r = await client.post(URL, data=compress(body), headers={**headers, "Content-Encoding": coding,
                                                             "Accept-Encoding": coding},
                          auto_decompress=False)
    payload = await r.read()
    assert r.status == 200, payload
    assert r.headers["Content-Encoding"] == coding
    _, out = parse_response(decompress(payload), r.headers)
    for t, arr in arrays.items():
        assert_same(out[f"out_{t}"], arr)


FP32_2x5 = {"name": "in_FP32", "shape": [2, 5], "datatype": "FP32"}


def one_input(entry: dict, chunk: bytes = b"", header: str | None = "auto") -> tuple[bytes, dict]:
    head = json.dumps({"inputs": [entry]}).encode()
    headers = {} if header is None else {HDR: str(len(head)) if header == "auto" else header}
    return head + chunk, headers


@pytest.mark.parametrize("entry,chunk,header,message", [
    ({**FP32_2x5, "parameters": {"binary_data_size": 40}}, b"\0" * 40, "forty",
     "Inference-Header-Content-Length must be a non-negative integer, got 'forty'"),
    ({**FP32_2x5, "parameters": {"binary_data_size": 40}}, b"\0" * 40, "99999",
     "Inference-Header-Content-Length is 99999 but the request body is only"),
    ({**FP32_2x5, "parameters": {"binary_data_size": 40}}, b"\0" * 48, "auto",
     "the request carries 48 bytes of binary data after its JSON header; its inputs' binary_data_size add up to 40"),
    ({**FP32_2x5, "parameters": {"binary_data_size": 44}}, b"\0" * 40, "auto",
     "input 'in_FP32': binary_data_size 44 runs past the binary data: 40 of its 40 bytes remain"),
    ({**FP32_2x5, "parameters": {"binary_data_size": 36}}, b"\0" * 36, "auto",
     "tensor 'in_FP32': shape [2, 5] of FP32 is 40 bytes, 36 given"),
    ({**FP32_2x5, "parameters": {"binary_data_size": -4}}, b"", "auto",
     "input 'in_FP32': binary_data_size must be a non-negative integer, got -4"),
    ({**FP32_2x5, "parameters": {"binary_data_size": True}}, b"\0", "auto",
     "input 'in_FP32': binary_data_size must be a non-negative integer, got True"),
    ({**FP32_2x5, "parameters": {"binary_data_size": 40}}, b"", None,
     "input 'in_FP32': binary_data_size 40 runs past the binary data: 0 of its 0 bytes remain "
     "(no Inference-Header-Content-Length header?)"),
    ({**FP32_2x5, "parameters": {"binary_data_size": 40}}, b"\0" * 40, None,
     "(binary tensor data needs an Inference-Header-Content-Length header)"),
    ({**FP32_2x5, "data": [0] * 10, "parameters": {"binary_data_size": 40}}, b"\0" * 40, "auto",
     "input 'in_FP32' has both 'data' and binary or shared-memory parameters; give one"),
    ({"name": "in_FP32", "datatype": "FP32", "parameters": {"binary_data_size": 4}}, b"\0" * 4, "auto",
     "input 'in_FP32' has no 'shape'"),
    ({**FP32_2x5, "shape": [2**40, 2**40], "parameters": {"binary_data_size": 4}}, b"\0" * 4, "auto",
     "tensor 'in_FP32': shape [1099511627776, 1099511627776] is too large"),
    ({**FP32_2x5, "datatype": "FP8", "parameters": {"binary_data_size": 4}}, b"\0" * 4, "auto",
     "unknown datatype 'FP8'"),
    ({"name": "in_BOOL", "shape": [1, 3], "datatype": "BOOL", "parameters": {"binary_data_size": 3}}, b"\1\2\0", "auto",
     "tensor 'in_BOOL': BOOL bytes must be 0 or 1"),
    ({"name": "in_BYTES", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 10}},
     struct.pack("<I", 2) + b"ab" + struct.pack("<I", 2**32 - 1)[:2] + b"xx", "auto",
     "tensor 'in_BYTES': BYTES element 1 declares"),
    ({"name": "in_BYTES", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 8}},
     struct.pack("<I", 2) + b"ab" + b"\0\0", "auto",
     "tensor 'in_BYTES': BYTES data ends inside the length of element 1 of 2"),
    ({"name": "in_BYTES", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}},
     struct.pack("<I", 2) + b"abzz", "auto",
     "tensor 'in_BYTES': 2 bytes left over after 1 BYTES elements"),
    ({"name": "in_BYTES", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}},
     struct.pack("<I", 2**31) + b"abcd", "auto",
     "tensor 'in_BYTES': BYTES element 0 declares 2147483648 bytes, only 4 remain"),
    ({**FP32_2x5, "parameters": "binary"}, b"", "auto", "input 'in_FP32': 'parameters' must be a JSON object"),
])
async def test_malformed_binary_requests_are_400_with_the_reason(client, entry, chunk, header, message):
    body, headers = one_input(entry, chunk, header)
    r, payload = await post(client, body, headers)
    doc = json.loads(payload)
    assert r.status == 400, doc
    assert message in doc["error"], doc
    assert doc["status"] == "error" and doc["message"] == doc["error"]


async def test_bad_json_header_encodings_and_outputs(client):
    head = b'{"inputs": [' + b"\0" * 8
    r, payload = await post(client, head, {HDR: str(len(head))})
    assert r.status == 400 and "malformed JSON in the first 20 bytes (Inference-Header-Content-Length)" in json.loads(payload)["error"]
    r, payload = await post(client, b"", {HDR: "0"})
    assert r.status == 400 and json.loads(payload)["error"] == "request body is empty; expected a JSON object"
    r, payload = await post(client, b"\x1f\x8bnot really gzip", {"Content-Encoding": "gzip", "Connection": "close"})
    assert r.status == 400 and json.loads(payload)["error"] == "the request body is not valid gzip: it could not be decoded"
    r, payload = await post(client, b"{}", {"Content-Encoding": "gzip, deflate"})
    assert r.status == 400
    assert json.loads(payload)["error"] == "Content-Encoding 'gzip, deflate' is not supported; send gzip, deflate or no encoding"
    body, headers = binary_request(sample(), outputs=[{"name": "out_FP32", "parameters": {"classification": 3}}])
    r, payload = await post(client, body, headers)
    assert r.status == 400
    assert json.loads(payload)["error"] == "output 'out_FP32': the classification extension is not supported; ask for the tensor"
    body, headers = binary_request(sample(), outputs=[{"name": "out_FP32", "parameters": {"binary_data": "yes"}}])
    r, payload = await post(client, body, headers)
    assert r.status == 400 and json.loads(payload)["error"] == "output 'out_FP32': binary_data must be true or false"
    # the server is unharmed: a good request still round-trips
    arrays = sample()
    body, headers = binary_request(arrays, params={"binary_data_output": True})
    r, payload = await post(client, body, headers)
    assert r.status == 200
    assert_same(parse_response(payload, r.headers)[1]["out_FP32"], arrays["FP32"])


async def test_decompressed_size_is_bounded_by_the_request_limit(serving, models):
    client = await serving({ID: models.identity}, max_request_mb=1)
    bomb = gzip.compress(b"\0" * (4 << 20))
    r, payload = await post(client, bomb, {"Content-Encoding": "gzip", HDR: "2"})
    assert len(bomb) < 1 << 20
    assert r.status == 413, payload
    assert json.loads(payload)["error"] == "request body over the limit of 1048576 bytes"


async def test_bytes_that_are_not_utf8_are_refused_not_replaced(client):
    """ONNX string tensors hold text: a BYTES element that is not UTF-8 must not come back altered."""
    arrays = sample()
    arrays["BYTES"] = np.array([[b"ok", b"\xff\xfe", b"fine"]], dtype=object)
    body, headers = binary_request(arrays, params={"binary_data_output": True})
    r, payload = await post(client, body, headers)
    assert r.status == 400
    assert "input 'in_BYTES' element 1 is not UTF-8 (invalid start byte at byte 0)" in json.loads(payload)["error"]
