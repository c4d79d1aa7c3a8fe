"""Open Inference request parameters on a real model: ``priority`` reorders the queue,
``timeout`` rejects a request that waited too long without running it, ``sequence_id`` is refused."""
from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

SLOW, SLOW_URL = "test/slow@1", "/v2/models/test%2Fslow%401/infer"
HDR = "Inference-Header-Content-Length"


def slow_request(rows: int, **params) -> tuple[bytes, dict]:
    x = np.full((rows, 1024), 0.5, dtype=np.float32).tobytes()
    doc = {"inputs": [{"name": "x", "shape": [rows, 1024], "datatype": "FP32",
                       "parameters": {"binary_data_size": len(x)}}],
           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    if params:
        doc["parameters"] = params
    head = json.dumps(doc).encode()
    return head + x, {HDR: str(len(head))}


async def _model_row(client, model_id):
    rows = (await (await client.get("/status")).json())["models"]
    return next(r for r in rows if r["id"] == model_id)


async def _busy_with(client, queued: int, blocker: asyncio.Task):
    """Wait until the blocker runs and ``queued`` requests wait behind it."""
    for _ in range(500):
        row = await _model_row(client, SLOW)
        if row["running"] == 1 and row["queued"] >= queued:
            return
        assert not blocker.done(), "the blocking request finished before the others queued: make it bigger"
        await asyncio.sleep(0.005)
    raise AssertionError(f"never saw {queued} queued requests: {row}")


@pytest.fixture
async def slow_client(serving, models):
    # one execution at a time and no batching, so queued requests run one by one in queue order
    return await serving({SLOW: models.slow}, max_batch_size=1, instances=1)


async def test_higher_priority_overtakes_queued_lower_ones(slow_client):
    client = slow_client
    finished: list[str] = []

    async def send(tag, rows, **params):
        body, headers = slow_request(rows, **params)
        r = await client.post(SLOW_URL, data=body, headers=headers)
        payload = await r.read()
        assert r.status == 200, payload
        if tag:  # the blocker's 8 MB answer takes longer to read than the others take to run
            finished.append(tag)
        return r.headers, payload

    # the queued ones take long enough (16 rows) that the order they finish in is the order they ran,
    # not the order the client happened to read two answers that came a millisecond apart
    blocker = asyncio.create_task(send(None, 2048))
    await _busy_with(client, 0, blocker)
    low = asyncio.create_task(send("low", 16, priority=9))
    await _busy_with(client, 1, blocker)
    default = asyncio.create_task(send("default", 16))
    await _busy_with(client, 2, blocker)
    high = asyncio.create_task(send("high", 16, priority=1))
    await _busy_with(client, 3, blocker)
    headers, payload = (await asyncio.gather(blocker, low, default, high))[3]
    assert finished == ["high", "default", "low"]  # sent low, default, high
    y = np.frombuffer(payload[int(headers[HDR]):], np.float32)
    assert y.shape == (16 * 1024,) and np.all(np.isfinite(y))


async def test_a_request_that_waited_past_its_timeout_is_rejected_not_run(slow_client):
    client = slow_client
    body, headers = slow_request(2048)
    blocker = asyncio.create_task(client.post(SLOW_URL, data=body, headers=headers))
    await _busy_with(client, 0, blocker)
    body, headers = slow_request(1, timeout=1000)  # 1 ms, in microseconds as the protocol says
    late = asyncio.create_task(client.post(SLOW_URL, data=body, headers=headers))
    body, headers = slow_request(1, timeout=60_000_000)
    patient = asyncio.create_task(client.post(SLOW_URL, data=body, headers=headers))
    await _busy_with(client, 2, blocker)
    assert (await blocker).status == 200
    r = await late
    doc = await r.json()
    assert r.status == 504, doc
    assert doc["error"] == "the request waited past its timeout and was not run"
    assert (await patient).status == 200
    stats = (await (await client.get("/v2/models/test%2Fslow%401/stats")).json())["model_stats"][0]
    # the late one never ran; unbatched, a request counts as one inference, as in Triton
    assert stats["execution_count"] == 2 and stats["inference_count"] == 2
    assert stats["inference_stats"]["fail"]["count"] == 1
    assert stats["inference_stats"]["success"]["count"] == 2


@pytest.mark.parametrize("params,message", [
    ({"sequence_id": 42, "sequence_start": True}, "model test/slow@1 does not support sequences (sequence_id 42 given)"),
    ({"sequence_id": "abc"}, "does not support sequences (sequence_id 'abc' given)"),
    ({"priority": 11}, "parameter 'priority' must be between 0 and 10, got 11"),
    ({"priority": -1}, "parameter 'priority' must be between 0 and 10, got -1"),
    ({"priority": "high"}, "parameter 'priority' must be an integer, got 'high'"),
    ({"timeout": -5}, "parameter 'timeout' must be between 0 and 3600000000, got -5"),
    ({"timeout": 1.5}, "parameter 'timeout' must be an integer, got 1.5"),
    ({"binary_data_output": 1}, "parameter 'binary_data_output' must be true or false, got 1"),
])
async def test_bad_request_parameters_are_400(slow_client, params, message):
    body, headers = slow_request(1, **params)
    r = await slow_client.post(SLOW_URL, data=body, headers=headers)
    doc = await r.json()
    assert r.status == 400, doc
    assert message in doc["error"]
    body, headers = slow_request(1, sequence_id=0, priority=0, custom_flag="kept")  # 0 means none
    assert (await slow_client.post(SLOW_URL, data=body, headers=headers)).status == 200
