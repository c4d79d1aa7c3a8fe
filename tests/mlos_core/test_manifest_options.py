"""A package manifest's ``x-mlos.runtime`` gives the model's per-model options (what ``mlos-tune
--apply manifest`` writes): the core serves with them, bounded like register options, and options
given at register win."""
from __future__ import annotations

import yaml

from .test_sources import make_package


def with_runtime(models, root, runtime):
    pkg = make_package(models, root)
    manifest = yaml.safe_load((pkg / "manifest.yaml").read_text())
    manifest["x-mlos"] = {"runtime": runtime}
    (pkg / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    return pkg


async def test_runtime_options_of_a_package_are_served(serving, models, tmp_path):
    pkg = with_runtime(models, tmp_path / "pkg", {"max_batch_size": 1, "instances": 3, "future_option": 7})
    client = await serving()
    r = await client.post("/v1/models/register", json={"model_id": "t/pkg@1", "path": str(pkg)})
    assert r.status == 200, await r.text()
    d = await (await client.get("/v1/models/t%2Fpkg%401")).json()
    assert d["options"] == {"max_batch_size": 1, "instances": 3}      # an option this core does not know is left alone
    assert d["batching"]["enabled"] is False and d["batching"]["reason"] == "max_batch_size is 1"


async def test_register_options_win_over_the_manifest(serving, models, tmp_path):
    pkg = with_runtime(models, tmp_path / "pkg", {"max_batch_size": 1})
    client = await serving()
    r = await client.post("/v1/models/register",
                          json={"model_id": "t/pkg@1", "path": str(pkg), "options": {"max_batch_size": 16}})
    assert r.status == 200, await r.text()
    d = await (await client.get("/v1/models/t%2Fpkg%401")).json()
    assert d["options"] == {"max_batch_size": 16} and d["batching"]["max_batch_size"] == 16


async def test_runtime_options_out_of_bounds_are_refused(serving, models, tmp_path):
    pkg = with_runtime(models, tmp_path / "pkg", {"instances": 10_000})
    client = await serving()
    r = await client.post("/v1/models/register", json={"model_id": "t/pkg@1", "path": str(pkg)})
    assert r.status == 422
    assert "package manifest x-mlos.runtime: option instances must be from 0 to" in (await r.json())["message"]
