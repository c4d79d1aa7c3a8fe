"""The registry: states, persistence across restarts, memory budget, keep-alive, concurrency."""
from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest

from mlos_core.errors import (BadRequest, Conflict, ModelNotFound, ModelNotReady, ModelUnavailable, QueueFull,
                               UnprocessableModel)
from mlos_core.registry import Registry, RegisterSpec, State

from .. import onnx_models
from ..conftest import make_settings


@pytest.fixture
async def registry_factory(tmp_path):
    made = []

    async def make(**overrides) -> Registry:
        reg = Registry(make_settings(tmp_path, **overrides))
        await reg.start()
        made.append(reg)
        return reg

    yield make
    for reg in made:
        await reg.close()


async def infer(reg: Registry, model_id: str, x: np.ndarray):
    async with reg.use(model_id) as entry:
        return (await entry.runner.infer({"x": x})).outputs["y"]


async def test_register_loads_and_serves(registry_factory, models):
    reg = await registry_factory()
    entry, created = await reg.register(RegisterSpec("t/mm@1", str(models.matmul)))
    assert created and entry.state == State.READY and entry.memory_bytes > 64 * 64 * 4
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(await infer(reg, "t/mm@1", x), x @ models.matmul_w, rtol=1e-5)


async def test_lookup_by_name_latest_and_single_version(registry_factory, models):
    reg = await registry_factory()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul)), load=False)
    assert reg.lookup("t/mm").id == "t/mm@1"
    assert reg.lookup("t/mm", "1").id == "t/mm@1"
    await reg.register(RegisterSpec("t/mm@latest", str(models.matmul)), load=False)
    assert reg.lookup("t/mm").id == "t/mm@latest"
    with pytest.raises(ModelNotFound):
        reg.lookup("t/mm", "2")


async def test_lookup_versions_dash_form_and_ambiguity(registry_factory, models):
    reg = await registry_factory()
    for model_id in ("hf/distilgpt2@latest", "simple", "t/two@1", "t/two@2", "a/b-c@1", "a-b/c@1"):
        await reg.register(RegisterSpec(model_id, str(models.matmul)), load=False)
    # a full id with its own version given again; an id without a version is version "1"
    assert reg.lookup("hf/distilgpt2@latest", "latest").id == "hf/distilgpt2@latest"
    with pytest.raises(ModelNotFound):
        reg.lookup("hf/distilgpt2@latest", "1")
    assert reg.lookup("simple", "1").id == "simple"
    with pytest.raises(ModelNotFound) as e:
        reg.lookup("simple", "2")
    assert (e.value.name, e.value.version) == ("simple", "2")
    # the seeds' dash form, with or without the version
    assert reg.lookup("hf-distilgpt2@latest").id == "hf/distilgpt2@latest"
    assert reg.lookup("hf-distilgpt2").id == "hf/distilgpt2@latest"
    assert reg.lookup("t-two", "2").id == "t/two@2"
    # two ids with one dash form name neither; a name with two versions says which exist
    with pytest.raises(ModelNotFound):
        reg.lookup("a-b-c@1")
    assert reg.lookup("a/b-c@1").id == "a/b-c@1"
    with pytest.raises(BadRequest) as e:
        reg.lookup("t/two")
    assert e.value.message == "model 't/two' has several versions (1, 2): name one, e.g. 't/two@1'"


async def test_restart_keeps_registry_and_loads_lazily(tmp_path, models):
    settings = make_settings(tmp_path)
    reg = Registry(settings)
    await reg.start()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul), description="kept", options={"keep_alive": 30}))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07" + b"\xff" * 40)
    await reg.close()

    reg = Registry(settings)
    await reg.start()
    try:
        entry = reg.lookup("t/mm@1")
        assert entry.state == State.REGISTERED and entry.model is None  # lazy by default
        assert entry.record.description == "kept" and entry.record.options == {"keep_alive": 30}
        x = np.full((2, 64), 0.5, np.float32)
        np.testing.assert_allclose(await infer(reg, "t/mm@1", x), x @ models.matmul_w, rtol=1e-5)
        assert entry.state == State.READY
    finally:
        await reg.close()


async def test_eager_start_loads_everything(tmp_path, models):
    settings = make_settings(tmp_path)
    reg = Registry(settings)
    await reg.start()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul)), load=False)
    await reg.close()
    reg = Registry(make_settings(tmp_path, load_on_start="eager"))
    await reg.start()
    try:
        for _ in range(100):
            if reg.lookup("t/mm@1").state == State.READY:
                break
            await asyncio.sleep(0.05)
        assert reg.lookup("t/mm@1").state == State.READY
    finally:
        await reg.close()


async def test_failure_reason_is_kept_and_persisted(tmp_path, models):
    model = tmp_path / "vanishing.onnx"
    shutil.copy(models.matmul, model)
    settings = make_settings(tmp_path)
    reg = Registry(settings)
    await reg.start()
    await reg.register(RegisterSpec("t/gone@1", str(model)), load=False)
    model.write_bytes(b"not a model any more")
    entry = reg.lookup("t/gone@1")
    entry.source = None  # force a fresh resolve, as after a restart
    with pytest.raises(ModelUnavailable, match="not an ONNX, GGUF or SafeTensors model"):
        async with reg.use("t/gone@1"):
            pass
    assert entry.state == State.FAILED and "JSON" not in entry.error and "found" in entry.error
    # a failed model answers 503 with the reason, without retrying on every request
    with pytest.raises(ModelUnavailable, match="failed to load"):
        async with reg.use("t/gone@1"):
            pass
    await reg.close()
    reg = Registry(settings)
    await reg.start()
    try:
        again = reg.lookup("t/gone@1")
        assert again.state == State.FAILED and again.error == entry.error
        # an explicit load retries, and succeeds once the file is fixed
        shutil.copy(models.matmul, model)
        await reg.load("t/gone@1")
        assert again.state == State.READY and again.error is None
    finally:
        await reg.close()


async def test_register_refuses_unloadable_file_with_reason(registry_factory, tmp_path):
    reg = await registry_factory()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x80\x04\x95pickle")
    with pytest.raises(UnprocessableModel, match="pickle"):
        await reg.register(RegisterSpec("t/bad@1", str(bad)))
    with pytest.raises(ModelNotFound):
        reg.lookup("t/bad@1")


async def test_concurrent_registrations_of_one_id(registry_factory, models, tmp_path):
    reg = await registry_factory()
    results = await asyncio.gather(*[reg.register(RegisterSpec("t/mm@1", str(models.matmul))) for _ in range(8)])
    assert sum(created for _, created in results) == 1
    assert len({id(entry) for entry, _ in results}) == 1
    assert results[0][0].state == State.READY
    other = tmp_path / "other.onnx"
    shutil.copy(models.matmul, other)
    with pytest.raises(Conflict, match="already registered"):
        await reg.register(RegisterSpec("t/mm@1", str(other)))


async def test_budget_evicts_least_recently_used_idle_model(registry_factory, tmp_path):
    paths = [onnx_models.padded(tmp_path / f"p{i}.onnx", 4) for i in range(3)]
    reg = await registry_factory(memory_budget_mb=10)
    for i, p in enumerate(paths):
        await reg.register(RegisterSpec(f"t/p{i}@1", str(p)), load=False)
    x = np.eye(8, dtype=np.float32)[:1]
    await infer(reg, "t/p0@1", x)
    await infer(reg, "t/p1@1", x)
    await infer(reg, "t/p0@1", x)  # p1 is now the least recently used
    await infer(reg, "t/p2@1", x)
    states = {e.id: e.state for e in reg.entries()}
    assert states == {"t/p0@1": State.READY, "t/p1@1": State.EVICTED, "t/p2@1": State.READY}
    assert reg.used_bytes() <= 10 * 2**20
    # an evicted model comes back on next use, evicting the LRU again (p0)
    np.testing.assert_allclose(await infer(reg, "t/p1@1", x), x)
    assert reg.lookup("t/p0@1").state == State.EVICTED


async def test_budget_never_evicts_a_model_with_requests_in_flight(registry_factory, tmp_path):
    paths = [onnx_models.padded(tmp_path / f"p{i}.onnx", 4) for i in range(2)]
    reg = await registry_factory(memory_budget_mb=6)
    for i, p in enumerate(paths):
        await reg.register(RegisterSpec(f"t/p{i}@1", str(p)), load=False)
    async with reg.use("t/p0@1") as busy:
        with pytest.raises(ModelUnavailable, match="held by models serving requests") as err:
            async with reg.use("t/p1@1"):
                pass
        assert err.value.retry_after == 1
        assert busy.state == State.READY
    async with reg.use("t/p1@1"):
        pass
    assert reg.lookup("t/p0@1").state == State.EVICTED


async def test_model_larger_than_budget_is_refused_clearly(registry_factory, tmp_path):
    reg = await registry_factory(memory_budget_mb=1)
    await reg.register(RegisterSpec("t/big@1", str(onnx_models.padded(tmp_path / "big.onnx", 3))), load=False)
    with pytest.raises(ModelUnavailable, match="more than the whole memory budget"):
        async with reg.use("t/big@1"):
            pass
    assert reg.lookup("t/big@1").state == State.REGISTERED


async def test_keep_alive_unloads_idle_model_and_reloads(registry_factory, models):
    reg = await registry_factory()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul), options={"keep_alive": 0.3}))
    await reg.register(RegisterSpec("t/forever@1", str(models.matmul), options={"keep_alive": -1}))
    entry = reg.lookup("t/mm@1")
    await asyncio.sleep(1.0)
    assert entry.state == State.EVICTED and entry.model is None
    assert reg.lookup("t/forever@1").state == State.READY
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(await infer(reg, "t/mm@1", x), x @ models.matmul_w, rtol=1e-5)
    assert entry.state == State.READY


async def test_keep_alive_never_unloads_with_requests_in_flight(registry_factory, models):
    reg = await registry_factory()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul), options={"keep_alive": 0}))
    async with reg.use("t/mm@1") as entry:
        await asyncio.sleep(0.8)  # several reaper passes while the request is held
        assert entry.state == State.READY
        out = await entry.runner.infer({"x": np.ones((1, 64), np.float32)})
        assert out.outputs["y"].shape == (1, 64)
    await asyncio.sleep(0.6)
    assert entry.state == State.EVICTED


async def test_queue_bound_holds_in_every_state(registry_factory, models):
    reg = await registry_factory()
    await reg.register(RegisterSpec("t/mm@1", str(models.matmul), options={"max_queue": 2}), load=False)
    async with reg.use("t/mm@1"):
        async with reg.use("t/mm@1"):
            with pytest.raises(QueueFull) as err:
                async with reg.use("t/mm@1"):
                    pass
            assert err.value.status == 503 and err.value.retry_after
    await reg.unload("t/mm@1")
    entry = reg.lookup("t/mm@1")
    assert entry.state == State.UNLOADED
    with pytest.raises(ModelNotReady, match="unloaded"):
        async with reg.use("t/mm@1"):
            pass


async def test_unregister_lets_running_requests_finish_and_answers_queued_ones_503(registry_factory, models):
    reg = await registry_factory(instances=1, max_batch_size=1)
    await reg.register(RegisterSpec("t/slow@1", str(models.slow)))
    x = np.full((256, 1024), 0.5, np.float32)
    order = []

    async def request(tag):
        async with reg.use("t/slow@1") as entry:
            y = (await entry.runner.infer({"x": x})).outputs["y"]
            order.append(tag)
            return y

    running = asyncio.create_task(request("running"))
    for _ in range(200):
        if reg.lookup("t/slow@1").scheduler.running:
            break
        await asyncio.sleep(0.005)
    queued = asyncio.create_task(request("queued"))
    await asyncio.sleep(0.02)
    await reg.unregister("t/slow@1")
    order.append("unregistered")
    y = await running
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-3)  # orthogonal W
    with pytest.raises(ModelUnavailable, match="is unloading"):
        await queued
    assert order == ["running", "unregistered"]
    with pytest.raises(ModelNotFound):
        reg.lookup("t/slow@1")


async def test_models_directory_is_scanned_at_start(tmp_path, models):
    pkg = tmp_path / "repo" / "hf" / "org" / "mm" / "v2"
    pkg.mkdir(parents=True)
    shutil.copy(models.matmul, pkg / "model.onnx")
    from axon_pkg.manifest import sha256_file

    (pkg / "manifest.yaml").write_text(
        "apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata: {name: mm, namespace: hf, version: v2}\n"
        "spec:\n  format:\n    type: onnx\n    files:\n"
        f"      - {{path: model.onnx, size: {(pkg / 'model.onnx').stat().st_size}, sha256: {sha256_file(pkg / 'model.onnx')}}}\n"
    )
    reg = Registry(make_settings(tmp_path))
    await reg.start()
    try:
        entry = reg.lookup("hf/org/mm@v2")
        assert entry.state == State.REGISTERED and entry.record.manifest_path.endswith("manifest.yaml")
        x = np.ones((1, 64), np.float32)
        np.testing.assert_allclose(await infer(reg, "hf/org/mm@v2", x), x @ models.matmul_w, rtol=1e-5)
    finally:
        await reg.close()


async def test_repository_packages_are_verified_when_they_load(tmp_path, models):
    """The start-up scan does not hash every package; the first load does, and refuses an
    altered one with the reason."""
    from axon_pkg.manifest import sha256_file

    pkg = tmp_path / "repo" / "hf" / "bad" / "v1"
    pkg.mkdir(parents=True)
    shutil.copy(models.matmul, pkg / "model.onnx")
    digest = sha256_file(pkg / "model.onnx")
    (pkg / "manifest.yaml").write_text(
        "apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata: {name: bad, namespace: hf, version: v1}\n"
        f"spec:\n  format:\n    type: onnx\n    files:\n      - {{path: model.onnx, size: {(pkg / 'model.onnx').stat().st_size}, sha256: {digest}}}\n"
    )
    data = bytearray((pkg / "model.onnx").read_bytes())
    data[-1] ^= 1
    (pkg / "model.onnx").write_bytes(bytes(data))
    reg = Registry(make_settings(tmp_path))
    await reg.start()
    try:
        assert reg.lookup("hf/bad@v1").state == State.REGISTERED
        with pytest.raises(ModelUnavailable, match="does not match the manifest"):
            async with reg.use("hf/bad@v1"):
                pass
    finally:
        await reg.close()
