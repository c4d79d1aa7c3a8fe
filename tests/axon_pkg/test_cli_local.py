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


def test_pack_is_reproducible_byte_for_byte(axon, model_dir, tmp_path):
    """Packing twice (the first pack records its digest in the cached manifest), under another
    name, a second later: the same bytes."""
    import hashlib
    import time

    axon("install", model_dir)
    digests = []
    for name in ("a.axon", "b.axon", "c/other-name.axon"):
        out_file = tmp_path / name
        code, out, err = axon("pack", "local/mm", "-o", out_file)
        assert code == 0, err
        digests.append(hashlib.sha256(out_file.read_bytes()).hexdigest())
        assert out.strip().endswith(f"sha256 {digests[-1]}")
        time.sleep(1.1)
    assert len(set(digests)) == 1, digests
    # the archived manifest never carries an archive digest; the cached one records the last pack
    with tarfile.open(tmp_path / "a.axon") as tar:
        archived = yaml.safe_load(tar.extractfile("manifest.yaml"))
    assert archived["distribution"]["package"] == {}
    _, info, _ = axon("info", "local/mm", "--json")
    assert json.loads(info)["distribution"]["package"]["sha256"] == digests[0]


# A manifest as the original Go Axon writes it: sizes and digests not recorded, an unquoted
# timestamp (YAML reads it as a datetime), files it names but never hashed.
GO_AXON_MANIFEST = """apiVersion: axon.mlos.io/v1
kind: Model
metadata:
  name: mm
  namespace: hf
  version: latest
  created: 2024-11-10T12:30:00Z
spec:
  framework:
    name: onnx
  format:
    type: onnx
    execution_format: onnx
    files:
    - path: model.onnx
      size: 0
      sha256: ""
  io:
    inputs: []
    outputs: []
distribution:
  package:
    url: ""
"""


def go_axon_package(models, tmp_path):
    d = tmp_path / "go-axon" / "hf" / "mm" / "latest"
    d.mkdir(parents=True)
    shutil.copy(models.matmul, d / "model.onnx")
    (d / "manifest.yaml").write_text(GO_AXON_MANIFEST)
    return d


def test_verify_accepts_a_go_axon_manifest_and_reports_what_it_could_not_compare(axon, models, tmp_path):
    import hashlib

    d = go_axon_package(models, tmp_path)
    code, out, err = axon("verify", d)
    assert code == 0, err
    digest = hashlib.sha256(models.matmul.read_bytes()).hexdigest()
    assert f"model.onnx: size {models.matmul.stat().st_size}, sha256 {digest} (computed: the manifest records no sha256)" in out
    assert "0 of 1 files verified; could not compare 1: their sha256 is not recorded" in out
    # what is recorded is still checked
    text = GO_AXON_MANIFEST.replace('sha256: ""', "sha256: " + "ab" * 32)
    (d / "manifest.yaml").write_text(text)
    code, _, err = axon("verify", d)
    assert code == 1 and "does not match the manifest's" in err


def test_the_core_loads_a_go_axon_package(models, tmp_path, core_process):
    d = go_axon_package(models, tmp_path)
    core = core_process()
    status, _, answer = core.call("POST", "/v1/models/register", {"model_id": "hf/mm@latest", "path": str(d)})
    assert status == 200, answer
    status, _, answer = core.call("POST", "/v2/models/hf%2Fmm%40latest/infer", {
        "inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})
    assert status == 200, answer
    import numpy as np

    np.testing.assert_allclose(answer["outputs"][0]["data"], (np.ones((1, 64), np.float32) @ models.matmul_w).ravel(),
                               rtol=1e-5, atol=1e-4)


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
