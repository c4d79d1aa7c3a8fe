"""axon-py commands on local packages: install ./dir, list, info, verify, pack, uninstall,
cache, config."""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile

import pytest
import yaml

from axon_pkg.store import Cache


@pytest.fixture
def model_dir(models, tmp_path):
    d = tmp_path / "mm"
    d.mkdir()
    shutil.copy(models.matmul, d / "model.onnx")
    (d / "README.md").write_text("a matmul")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")  # never packaged
    return d


def test_install_list_info_verify(axon, model_dir, axon_home):
    code, out, err = axon("install", model_dir, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["format"] == "onnx" and result["package"].startswith("local/mm@")
    pkg = result["path"]
    manifest = yaml.safe_load(open(os.path.join(pkg, "manifest.yaml")))
    files = {f["path"]: f for f in manifest["spec"]["format"]["files"]}
    assert set(files) == {"model.onnx", "README.md"}
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in files.values())
    assert manifest["spec"]["io"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": [-1, 64]}]
    assert manifest["spec"]["format"]["execution_files"] == ["model.onnx"]
    code, out, _ = axon("list", "-f", "names")
    assert out.strip() == result["package"]
    code, out, _ = axon("list", "-f", "json")
    assert json.loads(out)[0]["format"] == "onnx"
    code, out, _ = axon("info", "local/mm@latest")
    assert "input x float32 [-1, 64]" in out
    code, out, _ = axon("verify", "local/mm")
    assert code == 0 and "OK (2 files, manifest valid)" in out


def test_identical_files_are_stored_once(axon, model_dir, tmp_path, axon_home):
    other = tmp_path / "copy"
    shutil.copytree(model_dir, other)
    (other / "README.md").write_text("another readme")
    assert axon("install", model_dir)[0] == 0
    assert axon("install", other)[0] == 0
    cache = Cache()
    pkgs = cache.installed()
    assert len(pkgs) == 2
    a, b = (p.path / "model.onnx" for p in pkgs)
    assert os.path.samefile(a, b)  # one blob, two packages
    assert cache.stats()["blobs"] == 3


def test_verify_catches_a_corrupted_file(axon, model_dir):
    axon("install", model_dir)
    pkg = Cache().resolve(__import__("axon_pkg.refs", fromlist=["parse_ref"]).parse_ref("local/mm"))
    target = pkg.path / "model.onnx"
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF
    target.write_bytes(bytes(data))
    code, out, err = axon("verify", "local/mm")
    assert code == 1 and "model.onnx: sha256" in err and "does not match" in err


def test_verify_names_the_invalid_manifest_field(axon, model_dir):
    _, out, _ = axon("install", model_dir, "--json")
    path = os.path.join(json.loads(out)["path"], "manifest.yaml")
    m = yaml.safe_load(open(path))
    m["spec"]["format"]["files"][0]["sha256"] = "../../etc/passwd"
    yaml.safe_dump(m, open(path, "w"))
    code, _, err = axon("verify", "local/mm")
    assert code == 1 and "manifest field spec.format.files.0.sha256" in err


def test_pack_then_verify_the_archive(axon, model_dir, tmp_path):
    axon("install", model_dir)
    out_file = tmp_path / "mm.axon"
    code, out, _ = axon("pack", "local/mm", "-o", out_file)
    assert code == 0 and out_file.is_file()
    code, out, _ = axon("verify", out_file)
    assert code == 0 and "OK" in out
    _, info, _ = axon("info", "local/mm", "--json")
    package = json.loads(info)["distribution"]["package"]
    assert package["size"] == out_file.stat().st_size and len(package["sha256"]) == 64


@pytest.mark.parametrize("name, kind", [("../evil", tarfile.REGTYPE), ("link", tarfile.SYMTYPE), ("/abs", tarfile.REGTYPE)])
def test_verify_refuses_malicious_archives(axon, tmp_path, name, kind):
    archive = tmp_path / "evil.axon"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.type = kind
        data = b"x" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        tar.addfile(info, io.BytesIO(data))
    code, _, err = axon("verify", archive)
    assert code == 1 and ("climbs out" in err or "link" in err or "absolute" in err)
    assert not (tmp_path.parent / "evil").exists()


def test_uninstall_and_cache_clean(axon, model_dir):
    axon("install", model_dir)
    assert axon("uninstall", "local/mm")[0] == 0
    assert Cache().installed() == []
    code, _, err = axon("uninstall", "local/mm")
    assert code == 1 and "not installed" in err and "hint: axon-py install" in err
    stats = Cache().stats()
    assert stats["unreferenced_blobs"] == 2
    code, out, _ = axon("cache", "clean")
    assert "removed 2 unreferenced blobs" in out
    assert Cache().stats()["blobs"] == 0


def test_interrupted_install_leaves_nothing_that_looks_valid(axon, model_dir, monkeypatch):
    import axon_pkg.local as local

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "finish", boom)
    code, _, err = axon("install", model_dir)
    assert code == 130 and "interrupted" in err
    assert Cache().installed() == []
    assert Cache().stats()["incomplete"] == 0


def test_config_get_set_list_and_env_wins(axon, monkeypatch, axon_home):
    assert axon("config", "get", "mlos.endpoint")[1].strip() == "http://localhost:8080"
    assert axon("config", "set", "mlos.endpoint", "http://127.0.0.1:9999")[0] == 0
    assert axon("config", "get", "mlos.endpoint")[1].strip() == "http://127.0.0.1:9999"
    assert yaml.safe_load((axon_home / "config.yaml").read_text()) == {"mlos": {"endpoint": "http://127.0.0.1:9999"}}
    monkeypatch.setenv("MLOS_CORE_ENDPOINT", "http://127.0.0.1:7777")
    assert axon("config", "get", "mlos.endpoint")[1].strip() == "http://127.0.0.1:7777"
    assert "env MLOS_CORE_ENDPOINT" in axon("config", "list")[1]
    code, _, err = axon("config", "set", "nope", "1")
    assert code == 1 and "unknown setting 'nope'" in err
    code, _, err = axon("config", "set", "mlos.endpoint", "ftp://x")
    assert code == 1 and "http:// or https://" in err


def test_register_shows_the_core_unreachable(axon, model_dir):
    axon("install", model_dir)
    code, _, err = axon("register", "local/mm", "--endpoint", "http://127.0.0.1:9")
    assert code == 1 and "cannot reach the MLOS core at http://127.0.0.1:9" in err


def test_unknown_namespace_is_a_usage_error(axon):
    code, _, err = axon("install", "s3/bucket/model")
    assert code == 2 and "unknown namespace 's3'" in err and "hf/" in err and "modelscope/" in err


def test_pack_a_plain_model_directory(axon, model_dir, tmp_path, models, core_process):
    out_file = tmp_path / "plain.axon"
    code, out, err = axon("pack", model_dir, "-o", out_file)
    assert code == 0, err
    assert axon("verify", out_file)[0] == 0
    core = core_process()  # the core takes the archive itself
    status, _, answer = core.call("POST", "/v1/models/register", {"model_id": "local/plain@1", "path": str(out_file)})
    assert status == 200, answer
    status, _, answer = core.call("POST", "/v2/models/local%2Fplain%401/infer", {
        "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]})
    import numpy as np

    np.testing.assert_allclose(answer["outputs"][0]["data"], (np.full((1, 64), 0.5, np.float32) @ models.matmul_w).ravel(),
                               rtol=1e-5, atol=1e-5)


def test_hub_unreachable(axon, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    code, _, err = axon("install", "hf/org/model", "--quiet")
    assert code == 1 and "http://127.0.0.1:9" in err
