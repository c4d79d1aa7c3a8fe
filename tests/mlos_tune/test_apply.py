"""``--apply manifest``: the best options written into a package's manifest (validated, atomic),
which a core registering the package then serves with."""
from __future__ import annotations

import yaml

from axon_pkg.manifest import read_manifest
from mlos_tune.apply import ApplyError, apply_to_manifest

from tests.mlos_core.test_sources import make_package


def results(options: dict) -> dict:
    return {"tuning": {"objective": "maximize_throughput"}, "updated_at": "2026-12-02T00:00:00Z",
            "best": {"options": options, "verdict_vs_default": "throughput 2x the default's [1.8, 2.2]"}}


def test_apply_to_manifest(models, tmp_path, core_process):
    pkg = make_package(models, tmp_path / "pkg")
    before = (pkg / "manifest.yaml").read_text()
    message = apply_to_manifest(pkg, results({"max_batch_size": 1, "instances": 2}))
    assert message.startswith(f"mlos-tune: applied to {pkg / 'manifest.yaml'}")
    manifest = read_manifest(pkg, validate=True)
    assert manifest["x-mlos"]["runtime"] == {"max_batch_size": 1, "instances": 2}
    assert manifest["x-mlos"]["tuned_by"]["tool"] == "mlos-tune"
    assert manifest["spec"] == yaml.safe_load(before)["spec"]          # the rest as it was
    # a core registering the package serves with them
    core = core_process()
    status, _, answer = core.call("POST", "/v1/models/register", {"model_id": "t/pkg@1", "path": str(pkg)})
    assert status == 200, answer
    d = core.call("GET", "/v1/models/t%2Fpkg%401")[2]
    assert d["options"] == {"max_batch_size": 1, "instances": 2} and d["batching"]["enabled"] is False


def test_apply_to_a_broken_package(tmp_path):
    (tmp_path / "manifest.yaml").write_text("apiVersion: [not, valid")
    try:
        apply_to_manifest(tmp_path, results({"instances": 1}))
    except ApplyError as e:
        assert "not valid YAML" in str(e)
    else:
        raise AssertionError("a broken manifest was written over")
    assert (tmp_path / "manifest.yaml").read_text() == "apiVersion: [not, valid"
