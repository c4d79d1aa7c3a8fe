"""A replica's own registry, in-process (no cluster): what the multiplexing LRU's eviction does to
it, and that its memory budget is the single server's."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from mlos_core.errors import ModelNotFound
from mlos_core.metrics import Metrics
from mlos_core.registry import RegisterSpec, Registry, State

from ... import onnx_models
from ...conftest import make_settings

replica = pytest.importorskip("mlos_core.cluster.replica", reason="Ray Serve is the 'ray' extra (make test installs it)")


@pytest.fixture
async def node_registry(tmp_path):
    made = []

    async def make(**overrides) -> Registry:
        reg = Registry(make_settings(tmp_path, **overrides), Metrics(), store=replica._NoStore())
        await reg.start()
        made.append(reg)
        return reg

    yield make
    for reg in made:
        await reg.close()


async def test_evicted_from_the_replica_lru_the_local_copy_is_unregistered(node_registry, models):
    reg = await node_registry()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul)))
    held = replica._Held(reg, "t/mm@1", str(models.matmul))
    await held.__del__()  # what Ray Serve's multiplexer calls when its LRU lets the model go
    with pytest.raises(ModelNotFound):
        reg.lookup("t/mm@1")
    await held.__del__()  # twice is harmless


async def test_an_older_generation_evicted_leaves_the_newer_one(node_registry, models, tmp_path):
    reg = await node_registry()
    newer = tmp_path / "newer.onnx"
    shutil.copy(models.matmul, newer)
    await reg.register(RegisterSpec("t/mm@1", str(newer)))
    await replica._Held(reg, "t/mm@1", str(models.matmul)).__del__()  # the earlier registration's copy
    assert reg.lookup("t/mm@1").state == State.READY


async def test_a_replica_registry_keeps_the_memory_budget(node_registry, tmp_path):
    """Same semantics as one server: the least recently used idle model is evicted to make room,
    and loads again (from the node's copy) when asked."""
    a = onnx_models.padded(tmp_path / "a.onnx", 6)
    b = onnx_models.padded(tmp_path / "b.onnx", 6)
    reg = await node_registry(memory_budget_mb=10)
    await reg.register(RegisterSpec("t/a@1", str(a)))
    await reg.register(RegisterSpec("t/b@1", str(b)))
    assert reg.lookup("t/a@1").state == State.EVICTED and reg.lookup("t/b@1").state == State.READY
    async with reg.use("t/a@1") as entry:
        out = (await entry.runner.infer({"x": np.eye(8, dtype=np.float32)})).outputs["y"]
    np.testing.assert_allclose(out, np.eye(8, dtype=np.float32))
    assert reg.lookup("t/b@1").state == State.EVICTED
