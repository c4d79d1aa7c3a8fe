"""Batching that cannot change an answer: axis 0 is proved a batch axis at load before requests are
stacked on it, and max_batch_size is enforced (issue 11, finding 1).

Before: a model computing ``x - mean(x, axis=0)`` was batched because axis 0 is dynamic, and 10 of
24 concurrent answers were wrong; a 40-row request ran while max_batch_size was 32."""
from __future__ import annotations

import asyncio

import numpy as np
import onnxruntime as ort
import pytest

from mlos_core import batch_probe
from mlos_core.plugins.onnx_plugin import OnnxPlugin
from mlos_core.smi import LoadOptions, ModelSource

CENTER, CENTER_Q = "t/center@1", "t%2Fcenter%401"
MM, MM_Q = "t/mm@1", "t%2Fmm%401"


def _load(path):
    return OnnxPlugin().load(ModelSource(path, "onnx"), LoadOptions())


def test_probe_refuses_a_dynamic_axis_that_is_not_a_batch_axis(models):
    decision = batch_probe.decide(_load(models.center), "auto", 32)
    assert not decision.enabled and "changes when another row is beside it" in decision.reason
    assert decision.probe_ms is not None


def test_probe_proves_a_matmul_batchable(models):
    decision = batch_probe.decide(_load(models.matmul), "auto", 32)
    assert decision.enabled and "proved a batch axis" in decision.reason


def test_forcing_and_the_cases_that_need_no_probe(models):
    center = _load(models.center)
    assert batch_probe.decide(center, "on", 32).enabled  # the register option overrides the probe
    assert not batch_probe.decide(_load(models.matmul), "off", 32).enabled
    assert batch_probe.decide(_load(models.matmul), "auto", 1).reason == "max_batch_size is 1"


async def test_center_model_is_never_batched_and_every_answer_is_right(serving, models):
    client = await serving({CENTER: models.center, MM: models.matmul}, max_batch_delay_us=2000)
    ref = ort.InferenceSession(str(models.center), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) * 10 for i in range(32)]

    async def one(x):
        r = await client.post(f"/v1/models/{CENTER_Q}/inference", json={"x": x.tolist()})
        assert r.status == 200, await r.text()
        doc = await r.json()
        return doc["batch_size"], np.array(doc["outputs"]["y"], np.float32)

    for _ in range(3):
        answers = await asyncio.gather(*(one(x) for x in xs))
        for x, (batch, y) in zip(xs, answers):
            assert batch == 1
            np.testing.assert_allclose(y, ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
    described = await (await client.get(f"/v1/models/{CENTER_Q}")).json()
    assert described["batching"]["enabled"] is False and "not a batch axis" in described["batching"]["reason"]
    config = await (await client.get(f"/v2/models/{CENTER_Q}/config")).json()
    assert config["max_batch_size"] == 0 and "dynamic_batching" not in config
    assert "not a batch axis" in config["parameters"]["batching_reason"]["string_value"]


async def test_matmul_is_still_batched_under_load(serving, models):
    client = await serving({MM: models.matmul}, max_batch_delay_us=5000)
    xs = [np.full((1, 64), i, np.float32) for i in range(32)]

    async def one(x):
        r = await client.post(f"/v1/models/{MM_Q}/inference", json={"x": x.tolist()})
        doc = await r.json()
        np.testing.assert_allclose(np.array(doc["outputs"]["y"]), x @ models.matmul_w, rtol=1e-4)
        return doc["batch_size"]

    sizes = await asyncio.gather(*(one(x) for x in xs))
    assert max(sizes) > 1
    config = await (await client.get(f"/v2/models/{MM_Q}/config")).json()
    assert config["max_batch_size"] == 32 and "dynamic_batching" in config


async def test_more_rows_than_max_batch_size_is_a_400_naming_the_limit(serving, models):
    client = await serving({MM: models.matmul})
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [
        {"name": "x", "shape": [40, 64], "datatype": "FP32", "data": [0.0] * 40 * 64}]})
    doc = await r.json()
    assert r.status == 400
    assert "batch-size must be <= 32 for 't/mm@1'" in doc["error"] and "40 rows" in doc["error"]
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": [
        {"name": "x", "shape": [32, 64], "datatype": "FP32", "data": [0.0] * 32 * 64}]})
    assert r.status == 200


async def test_a_model_served_unbatched_takes_any_number_of_rows(serving, models):
    client = await serving({CENTER: models.center})
    x = np.arange(40 * 4, dtype=np.float32).reshape(40, 4)
    r = await client.post(f"/v1/models/{CENTER_Q}/inference", json={"x": x.tolist()})
    assert r.status == 200
    np.testing.assert_allclose(np.array((await r.json())["outputs"]["y"]), x - x.mean(axis=0), atol=1e-4)


@pytest.mark.parametrize("setting", ["on", "off", True, False])
async def test_the_batching_option_forces_the_choice(app_factory, models, setting):
    client = await app_factory()
    r = await client.post("/v1/models/register", json={"model_id": MM, "path": str(models.matmul),
                                                       "options": {"batching": setting}})
    assert r.status == 200, await r.text()
    described = await (await client.get(f"/v1/models/{MM_Q}")).json()
    assert described["batching"]["enabled"] is (setting in ("on", True))


async def test_batching_on_for_a_model_without_a_dynamic_axis_0_is_refused(app_factory, silero):
    client = await app_factory()
    r = await client.post("/v1/models/register", json={"model_id": "s/vad@1", "path": str(silero),
                                                       "options": {"batching": "on"}})
    assert r.status == 400 and "axis 0 is not dynamic" in (await r.json())["error"]
