"""System shared memory over real HTTP: register, infer with inputs read from and outputs written
into client regions, status, unregister, and every malformed or refused case."""
from __future__ import annotations

import struct

import numpy as np
import pytest

ID = "test/identity@1"
URL = "/v2/models/test%2Fidentity%401/infer"
SHM = "/v2/systemsharedmemory"


async def register(client, name, key, offset, byte_size):
    r = await client.post(f"{SHM}/region/{name}/register", json={"key": key, "offset": offset, "byte_size": byte_size})
    return r.status, await r.json()


async def test_inputs_and_outputs_through_regions(serving, models, shm):
    client = await serving({ID: models.identity})
    x = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    words = np.array([["héllo".encode(), b"", b"ok"]], dtype=object)
    packed = b"".join(struct.pack("<I", len(w)) + w for w in words.reshape(-1))
    inp, out = shm(4096), shm(4096)
    inp.buf[64: 64 + x.nbytes] = x.tobytes()
    inp.buf[512: 512 + len(packed)] = packed
    assert await register(client, "in", "/" + inp.name, 0, 4096) == (200, {})
    assert await register(client, "out", "/" + out.name, 1024, 2048) == (200, {})
    status = await (await client.get(f"{SHM}/status")).json()
    assert sorted(status, key=lambda s: s["name"]) == [
        {"name": "in", "key": "/" + inp.name, "offset": 0, "byte_size": 4096},
        {"name": "out", "key": "/" + out.name, "offset": 1024, "byte_size": 2048},
    ]
    assert await (await client.get(f"{SHM}/region/out/status")).json() == [status[1] if status[1]["name"] == "out" else status[0]]

    body = {
        "inputs": [
            {"name": "in_FP32", "shape": [3, 4], "datatype": "FP32",
             "parameters": {"shared_memory_region": "in", "shared_memory_offset": 64, "shared_memory_byte_size": 48}},
            {"name": "in_BYTES", "shape": [1, 3], "datatype": "BYTES",
             "parameters": {"shared_memory_region": "in", "shared_memory_offset": 512,
                            "shared_memory_byte_size": len(packed)}},
            {"name": "in_INT64", "shape": [1, 2], "datatype": "INT64", "data": [2**40, -3]},
            {"name": "in_FP16", "shape": [1, 1], "datatype": "FP16", "data": [0.25]},
            {"name": "in_BOOL", "shape": [1, 1], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [
            {"name": "out_FP32", "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 48}},
            {"name": "out_BYTES", "parameters": {"shared_memory_region": "out", "shared_memory_offset": 100,
                                                 "shared_memory_byte_size": 200}},
            {"name": "out_INT64"},
        ],
    }
    r = await client.post(URL, json=body)
    doc = await r.json()
    assert r.status == 200, doc
    assert doc["outputs"] == [
        {"name": "out_FP32", "datatype": "FP32", "shape": [3, 4],
         "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 48}},
        {"name": "out_BYTES", "datatype": "BYTES", "shape": [1, 3],
         "parameters": {"shared_memory_region": "out", "shared_memory_offset": 100, "shared_memory_byte_size": len(packed)}},
        {"name": "out_INT64", "datatype": "INT64", "shape": [1, 2], "data": [2**40, -3]},
    ]
    # the region starts 1024 bytes into the object
    assert bytes(out.buf[1024: 1024 + 48]) == x.tobytes()
    assert bytes(out.buf[1124: 1124 + len(packed)]) == packed

    assert (await client.post(f"{SHM}/region/in/unregister")).status == 200
    r = await client.post(URL, json=body)
    assert r.status == 400
    assert (await r.json())["error"] == "input 'in_FP32': shared memory region 'in' is not registered"
    assert (await client.post(f"{SHM}/unregister")).status == 200
    assert await (await client.get(f"{SHM}/status")).json() == []


BASE = {"name": "in_FP32", "shape": [1, 4], "datatype": "FP32"}


@pytest.mark.parametrize("params,message", [
    ({"shared_memory_region": "r", "shared_memory_byte_size": 12},
     "tensor 'in_FP32': shape [1, 4] of FP32 is 16 bytes, 12 given"),
    ({"shared_memory_region": "r", "shared_memory_offset": 60, "shared_memory_byte_size": 16},
     "input 'in_FP32': bytes 60..76 lie outside shared memory region 'r' of 64 bytes"),
    ({"shared_memory_region": "r", "shared_memory_offset": 4096, "shared_memory_byte_size": 16},
     "input 'in_FP32': bytes 4096..4112 lie outside shared memory region 'r' of 64 bytes"),
    ({"shared_memory_region": "r", "shared_memory_offset": -16, "shared_memory_byte_size": 16},
     "input 'in_FP32': 'shared_memory_offset' must be at least 0, got -16"),
    ({"shared_memory_region": "r", "shared_memory_offset": 2**62, "shared_memory_byte_size": 2**62},
     "input 'in_FP32': bytes 4611686018427387904..9223372036854775808 lie outside shared memory region 'r' of 64 bytes"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 2**64},
     "input 'in_FP32': 'shared_memory_byte_size' must be an integer, got 1.8446744073709552e+19"),
    ({"shared_memory_region": "r"}, "input 'in_FP32': 'shared_memory_byte_size' is required"),
    ({"shared_memory_region": "nope", "shared_memory_byte_size": 16},
     "input 'in_FP32': shared memory region 'nope' is not registered"),
    ({"shared_memory_region": "r", "shared_memory_byte_size": 16, "binary_data_size": 16},
     "input 'in_FP32' has both binary_data_size and shared_memory_region; give one"),
])
async def test_malformed_region_inputs_are_400(serving, models, shm, params, message):
    client = await serving({ID: models.identity})
    s = shm(4096)
    assert (await register(client, "r", "/" + s.name, 0, 64))[0] == 200
    r = await client.post(URL, json={"inputs": [{**BASE, "parameters": params}]})
    doc = await r.json()
    assert r.status == 400, doc
    assert message in doc["error"]


async def test_output_regions_are_checked_before_the_model_runs(serving, models, shm):
    client = await serving({ID: models.identity})
    s = shm(4096)
    await register(client, "r", "/" + s.name, 0, 64)
    x = [{**BASE, "data": [1, 2, 3, 4]}, {"name": "in_FP16", "shape": [1, 1], "datatype": "FP16", "data": [1]},
         {"name": "in_INT64", "shape": [1, 1], "datatype": "INT64", "data": [1]},
         {"name": "in_BOOL", "shape": [1, 1], "datatype": "BOOL", "data": [True]},
         {"name": "in_BYTES", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]
    for params, message in [
        ({"shared_memory_region": "r", "shared_memory_offset": 56, "shared_memory_byte_size": 16},
         "output 'out_FP32': bytes 56..72 lie outside shared memory region 'r' of 64 bytes"),
        ({"shared_memory_region": "gone", "shared_memory_byte_size": 16},
         "output 'out_FP32': shared memory region 'gone' is not registered"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 8},
         "output 'out_FP32' is 16 bytes; shared memory region 'r' gives 8 bytes at offset 0"),
    ]:
        r = await client.post(URL, json={"inputs": x, "outputs": [{"name": "out_FP32", "parameters": params}]})
        doc = await r.json()
        assert r.status == 400, doc
        assert doc["error"] == message
    stats = await (await client.get("/v2/models/test%2Fidentity%401/stats")).json()
    assert stats["model_stats"][0]["execution_count"] == 1  # only the last one ran the model


@pytest.mark.parametrize("body,status,message", [
    ({"key": "/a/b", "byte_size": 8}, 400, "must name an object directly under /dev/shm"),
    ({"key": "/../etc/passwd", "byte_size": 8}, 400, "must name an object directly under /dev/shm"),
    ({"key": "/mlos-no-such-object", "byte_size": 8}, 400, "no shared-memory object '/mlos-no-such-object' exists"),
    ({"key": "{key}", "byte_size": 8192}, 400, "offset 0 + byte_size 8192 runs past the end of"),
    ({"key": "{key}", "offset": 4096, "byte_size": 1}, 400, "offset 4096 + byte_size 1 runs past the end of"),
    ({"key": "{key}", "byte_size": -1}, 400, "'byte_size' must be at least 1, got -1"),
    ({"key": "{key}"}, 400, "registering a region needs 'key' and 'byte_size'"),
    ({"key": "{key}", "byte_size": 8, "device_id": 0}, 400, "unknown field 'device_id'"),
])
async def test_malformed_registrations_are_400(app_factory, shm, body, status, message):
    client = await app_factory()
    s = shm(4096)
    body = {k: (v.format(key="/" + s.name) if isinstance(v, str) else v) for k, v in body.items()}
    r = await client.post(f"{SHM}/region/r/register", json=body)
    doc = await r.json()
    assert r.status == status, doc
    assert message in doc["error"]
    assert await (await client.get(f"{SHM}/status")).json() == []


async def test_registration_refused_off_loopback_unless_allowed(app_factory, shm):
    s = shm(4096)
    client = await app_factory(host="0.0.0.0", allow_unauthenticated=True)
    r = await client.post(f"{SHM}/region/r/register", json={"key": "/" + s.name, "byte_size": 64})
    doc = await r.json()
    assert r.status == 403 and doc["code"] == "forbidden"
    assert doc["error"] == ("client shared memory is refused while the server listens on 0.0.0.0: start it with "
                            "--allow-client-shm=true (MLOS_ALLOW_CLIENT_SHM=true) to allow it from any client that "
                            "reaches the port")
    client = await app_factory(host="0.0.0.0", allow_client_shm="true", allow_unauthenticated=True)
    assert (await register(client, "r", "/" + s.name, 0, 64))[0] == 200
    client = await app_factory(allow_client_shm="false")
    status, doc = await register(client, "r", "/" + s.name, 0, 64)
    assert status == 403 and doc["error"] == "client shared memory is disabled on this server (allow_client_shm=false)"


async def test_cuda_shared_memory_is_a_clear_400(app_factory):
    client = await app_factory()
    assert await (await client.get("/v2/cudasharedmemory/status")).json() == []
    r = await client.post("/v2/cudasharedmemory/region/g/register", json={"raw_handle": {"b64": ""}, "device_id": 0, "byte_size": 8})
    doc = await r.json()
    assert r.status == 400 and doc["error"].startswith("CUDA shared memory is not supported")
    r = await client.get("/v2/cudasharedmemory/region/g/status")
    assert r.status == 400 and "no CUDA shared memory region 'g'" in (await r.json())["error"]
    assert (await client.post("/v2/cudasharedmemory/unregister")).status == 200
