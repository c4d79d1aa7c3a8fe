"""Dynamic batching, priority order and failure handling of the per-model scheduler.

A toy SMI model records every call so the tests can see how requests were grouped; the
real onnxruntime path is exercised by the API and registry tests.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mlos_core.errors import InferenceFailed
from mlos_core.scheduler import ModelScheduler, RequestTimedOut
from mlos_core.smi import Model, ModelMetadata, TensorSpec


class Doubler(Model):
    """y = 2x over [batch, 2]; blocks on ``gate`` so tests can let requests pile up."""

    def __init__(self, batchable=True, reduce_batch=False):
        spec = (-1, 2)
        self.metadata = ModelMetadata((TensorSpec("x", np.dtype(np.float32), spec),),
                                      (TensorSpec("y", np.dtype(np.float32), spec),), "toy", batchable)
        self.calls: list[np.ndarray] = []
        self.gate = threading.Event()
        self.gate.set()
        self.reduce_batch = reduce_batch

    def infer(self, inputs, outputs=None):
        self.gate.wait(5)
        x = inputs["x"]
        self.calls.append(x.copy())
        if x[0, 0] < 0:
            raise InferenceFailed("negative input")
        y = 2 * x
        return {"y": y.sum(axis=0, keepdims=True) if self.reduce_batch else y}

    def memory_bytes(self):
        return 0


@pytest.fixture
def executor():
    with ThreadPoolExecutor(4) as ex:
        yield ex


async def _pile_up(model, sched, xs, priorities=None):
    """Hold the model busy with a first request, queue the rest, then release it."""
    model.gate.clear()
    first = asyncio.create_task(sched.submit({"x": np.full((1, 2), 100, np.float32)}))
    await asyncio.sleep(0.05)
    tasks = [asyncio.create_task(sched.submit({"x": x}, priority=(priorities or [0] * len(xs))[i]))
             for i, x in enumerate(xs)]
    await asyncio.sleep(0.05)
    model.gate.set()
    await first
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_queued_requests_run_as_one_batch_and_get_their_own_rows(executor):
    model = Doubler()
    sched = ModelScheduler(model, executor, batching=model.metadata.batchable, max_batch_size=16)
    xs = [np.full((1 + i % 2, 2), i, np.float32) for i in range(6)]
    results = await _pile_up(model, sched, xs)
    for x, r in zip(xs, results):
        np.testing.assert_array_equal(r.outputs["y"], 2 * x)
        assert r.batch_size == 6
    assert [c.shape[0] for c in model.calls] == [1, sum(x.shape[0] for x in xs)]
    await sched.close()


async def test_batch_respects_max_rows(executor):
    model = Doubler()
    sched = ModelScheduler(model, executor, batching=model.metadata.batchable, max_batch_size=4)
    await _pile_up(model, sched, [np.ones((1, 2), np.float32)] * 10)
    assert [c.shape[0] for c in model.calls[1:]] == [4, 4, 2]
    await sched.close()


async def test_unbatchable_model_runs_requests_one_by_one(executor):
    model = Doubler(batchable=False)
    sched = ModelScheduler(model, executor, batching=model.metadata.batchable, max_batch_size=16)
    await _pile_up(model, sched, [np.ones((1, 2), np.float32)] * 3)
    assert [c.shape[0] for c in model.calls] == [1, 1, 1, 1]
    await sched.close()


async def test_model_that_does_not_keep_the_batch_axis_falls_back(executor):
    model = Doubler(reduce_batch=True)
    sched = ModelScheduler(model, executor, batching=model.metadata.batchable, max_batch_size=16)
    xs = [np.full((1, 2), i + 1, np.float32) for i in range(3)]
    results = await _pile_up(model, sched, xs)
    for x, r in zip(xs, results):
        np.testing.assert_array_equal(r.outputs["y"], 2 * x)
    assert not sched.batching
    await sched.close()


async def test_higher_priority_runs_first(executor):
    model = Doubler(batchable=False)
    sched = ModelScheduler(model, executor)
    xs = [np.full((1, 2), i, np.float32) for i in range(4)]
    await _pile_up(model, sched, xs, priorities=[0, 0, 5, 1])
    assert [int(c[0, 0]) for c in model.calls[1:]] == [2, 3, 0, 1]
    await sched.close()


async def test_a_failing_batch_fails_every_request_in_it_and_the_worker_survives(executor):
    model = Doubler()
    sched = ModelScheduler(model, executor, batching=model.metadata.batchable, max_batch_size=16)
    xs = [np.full((1, 2), -1, np.float32), np.ones((1, 2), np.float32)]
    results = await _pile_up(model, sched, xs)
    assert all(isinstance(r, InferenceFailed) for r in results)
    ok = await sched.submit({"x": np.ones((1, 2), np.float32)})
    np.testing.assert_array_equal(ok.outputs["y"], [[2, 2]])
    await sched.close()


async def test_request_past_its_timeout_is_rejected_not_run(executor):
    model = Doubler(batchable=False)
    sched = ModelScheduler(model, executor)
    model.gate.clear()
    busy = asyncio.create_task(sched.submit({"x": np.ones((1, 2), np.float32)}))
    await asyncio.sleep(0.02)
    late = asyncio.create_task(sched.submit({"x": np.full((1, 2), 7, np.float32)}, timeout_s=0.01))
    await asyncio.sleep(0.1)
    model.gate.set()
    await busy
    with pytest.raises(RequestTimedOut):
        await late
    assert all(c[0, 0] != 7 for c in model.calls)
    await sched.close()


async def test_cancelled_request_is_skipped(executor):
    model = Doubler(batchable=False)
    sched = ModelScheduler(model, executor)
    model.gate.clear()
    busy = asyncio.create_task(sched.submit({"x": np.ones((1, 2), np.float32)}))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(sched.submit({"x": np.full((1, 2), 9, np.float32)}))
    await asyncio.sleep(0.02)
    gone.cancel()  # the client went away
    model.gate.set()
    await busy
    await asyncio.sleep(0.05)
    assert all(c[0, 0] != 9 for c in model.calls)
    await sched.close()
