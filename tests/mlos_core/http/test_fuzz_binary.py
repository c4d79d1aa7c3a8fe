"""A seeded fuzzer for what schemathesis cannot express: the binary-tensor body (a JSON header, its
length in a header, raw bytes after it) and system shared memory (regions, offsets, sizes). Valid
requests are mutated at random (lengths, sizes, shapes, datatypes, offsets, truncations, flipped
bytes); every answer must be a 2xx or a 4xx in the protocol's error shape, never a 5xx, and the
server must still answer correctly afterwards. Fixed seed: a failure reproduces."""
from __future__ import annotations

import json
import random

import numpy as np

ID, URL = "test/identity@1", "/v2/models/test%2Fidentity%401/infer"
SHM = "/v2/systemsharedmemory"
HDR = "Inference-Header-Content-Length"
DATATYPES = ["FP32", "FP16", "INT64", "BOOL", "BYTES", "UINT8", "FP64", "INT8", "nope", 7, None]


def _valid(rng: random.Random) -> tuple[dict, bytes]:
    """A valid binary request for the identity model (one input per datatype)."""
    rows, n = rng.randint(1, 3), rng.randint(1, 4)
    tensors = {
        "FP32": np.arange(rows * n, dtype=np.float32).reshape(rows, n),
        "FP16": np.full((rows, n), 1.5, np.float16),
        "INT64": np.arange(rows * n, dtype=np.int64).reshape(rows, n) - 7,
        "BOOL": (np.arange(rows * n) % 2 == 0).reshape(rows, n),
    }
    inputs, raw = [], b""
    for dtype, arr in tensors.items():
        inputs.append({"name": f"in_{dtype}", "shape": list(arr.shape), "datatype": dtype,
                       "parameters": {"binary_data_size": arr.nbytes}})
        raw += arr.tobytes()
    words = b"".join(len(w).to_bytes(4, "little") + w for w in [b"ab", b"", b"xyz"][:1] * rows)
    inputs.append({"name": "in_BYTES", "shape": [rows, 1], "datatype": "BYTES",
                   "parameters": {"binary_data_size": len(words)}})
    head = {"inputs": inputs, "outputs": [{"name": "out_FP32", "parameters": {"binary_data": True}}]}
    return head, raw + words


def _mutate(rng: random.Random, head: dict, raw: bytes) -> tuple[bytes, dict]:
    """One to three mutations of a valid request; returns the body and its headers."""
    header_mode = None
    for _ in range(rng.randint(0, 3)):  # 0: a valid request among the hostile ones
        raw, header_mode = _mutate_once(rng, head, raw, header_mode)
    text = json.dumps(head).encode()
    headers = {HDR: str(len(text))}
    if header_mode == "bad":
        headers[HDR] = rng.choice(["-1", "abc", str(len(text) + len(raw) + 5), "0", str(len(text) - 3), " 12 "])
    elif header_mode == "none":
        del headers[HDR]
    return text + raw, headers


def _mutate_once(rng: random.Random, head: dict, raw: bytes, header_mode):
    tensor = rng.choice(head["inputs"])
    if not isinstance(tensor.get("parameters"), dict):
        tensor["parameters"] = {}
    kind = rng.randrange(12)
    if kind == 0:
        tensor["parameters"]["binary_data_size"] = rng.choice([-1, 0, 2**31, 2**64, 1.5, "8", None, True])
    elif kind == 1:
        tensor["shape"] = rng.choice([[], [-1, 4], [2**40, 2**40], [1] * 70, ["a"], None, [0, 4]])
    elif kind == 2:
        tensor["datatype"] = rng.choice(DATATYPES)
    elif kind == 3:
        raw = raw[: rng.randrange(len(raw) + 1)]
    elif kind == 4:
        raw = raw + bytes(rng.randrange(1, 64))
    elif kind == 5 and raw:
        pos = rng.randrange(len(raw))
        raw = raw[:pos] + bytes([raw[pos] ^ 0xFF]) + raw[pos + 1:]
    elif kind == 6:
        tensor["parameters"] = rng.choice([{"shared_memory_region": "r", "shared_memory_byte_size": rng.randrange(-8, 9000),
                                            "shared_memory_offset": rng.choice([0, 8, 4090, -1, 2**63])},
                                           {"shared_memory_region": "none-such"}, [], "x"])
    elif kind == 7:
        head["outputs"] = rng.choice([[{"name": "out_FP32", "parameters": {"shared_memory_region": "r",
                                                                           "shared_memory_byte_size": rng.randrange(0, 80)}}],
                                      [{"name": "nope"}], "all", [{}]])
    elif kind == 8:
        head["inputs"].append(dict(tensor))  # the same input twice
    elif kind == 9:
        head["parameters"] = rng.choice([{"priority": -5}, {"timeout": "soon"}, {"binary_data_output": 3}, []])
    elif kind == 10:
        header_mode = "bad"
    elif kind == 11:
        header_mode = "none"
    return raw, header_mode


async def test_binary_and_shared_memory_paths_never_answer_5xx(serving, models, shm):
    client = await serving({ID: models.identity})
    region = shm(4096)
    r = await client.post(f"{SHM}/region/r/register", json={"key": "/" + region.name, "offset": 0, "byte_size": 4096})
    assert r.status == 200
    rng = random.Random(20261202)
    statuses: dict[int, int] = {}
    for _ in range(1500):
        head, raw = _valid(rng)
        body, headers = _mutate(rng, head, raw)
        r = await client.post(URL, data=body, headers=headers)
        payload = await r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1
        assert r.status < 500, (r.status, payload[:300], body[:300], headers)
        if r.status >= 400:
            doc = json.loads(payload)
            assert doc["status"] == "error" and doc["error"], doc
    for _ in range(200):  # region registrations with hostile offsets and sizes
        r = await client.post(f"{SHM}/region/f{rng.randrange(5)}/register", json={
            "key": rng.choice(["/" + region.name, "/nope", "../etc/passwd", "/dev/shm/../x", "", 5]),
            "offset": rng.choice([0, 1, 4095, 4096, 4097, -1, 2**63, 1.5]),
            "byte_size": rng.choice([0, 1, 4096, 4097, 2**40, -3, None])})
        assert r.status < 500, await r.text()
    assert statuses.get(200, 0) > 0 and sum(v for k, v in statuses.items() if 400 <= k < 500) > 500, statuses
    head, raw = _valid(random.Random(1))
    text = json.dumps(head).encode()
    r = await client.post(URL, data=text + raw, headers={HDR: str(len(text))})
    assert r.status == 200  # still serving, and right
    y = np.frombuffer((await r.read())[int(r.headers[HDR]):], np.float32)
    assert y.size and np.array_equal(y, np.arange(y.size, dtype=np.float32))
