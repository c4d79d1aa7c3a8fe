"""Resolving registered paths: plain files, package directories, `.axon` archives."""
from __future__ import annotations

import io
import shutil
import tarfile

import pytest

from axon_pkg.manifest import sha256_file
from mlos_core.errors import UnprocessableModel
from mlos_core.sources import resolve


def make_package(models, root, *, digest=None):
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(models.matmul, root / "model.onnx")
    sha = digest or sha256_file(root / "model.onnx")
    (root / "manifest.yaml").write_text(
        "apiVersion: axon.mlos.io/v1\nkind: Model\nmetadata: {name: mm, namespace: t, version: '1'}\n"
        f"spec:\n  framework: {{name: PyTorch}}\n  format:\n    type: onnx\n    execution_format: onnx\n    files:\n"
        f"      - {{path: model.onnx, size: {(root / 'model.onnx').stat().st_size}, sha256: '{sha}'}}\n"
    )
    return root


def test_plain_file(models, tmp_path):
    src = resolve(models.matmul, tmp_path)
    assert src.format == "onnx" and src.model_path == models.matmul and src.manifest is None


def test_package_directory_is_verified(models, tmp_path):
    pkg = make_package(models, tmp_path / "pkg")
    src = resolve(pkg, tmp_path / "cache")
    assert src.package_dir == pkg and src.model_path == pkg / "model.onnx"
    assert src.manifest["spec"]["framework"]["name"] == "PyTorch"


def test_altered_file_is_refused(models, tmp_path):
    pkg = make_package(models, tmp_path / "pkg")
    data = bytearray((pkg / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (pkg / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(UnprocessableModel, match="sha256 .* does not match"):
        resolve(pkg, tmp_path / "cache")


def test_digest_that_is_not_hex_is_refused_before_use(models, tmp_path):
    pkg = make_package(models, tmp_path / "pkg", digest="../../etc/passwd")
    with pytest.raises(UnprocessableModel, match="64 lowercase hex"):
        resolve(pkg, tmp_path / "cache")


def test_axon_archive_is_unpacked_once(models, tmp_path):
    pkg = make_package(models, tmp_path / "pkg")
    archive = tmp_path / "t-mm-1.axon"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(pkg, arcname="mm")
    first = resolve(archive, tmp_path / "cache")
    assert first.format == "onnx" and first.package_dir.parent == tmp_path / "cache"
    again = resolve(archive, tmp_path / "cache")
    assert again.package_dir == first.package_dir


def _tar_with(tmp_path, member: tarfile.TarInfo, data: bytes = b"") -> object:
    archive = tmp_path / "evil.axon"
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return archive


@pytest.mark.parametrize("name, kind, message", [
    ("../escape.txt", tarfile.REGTYPE, "climbs out"),
    ("/etc/evil", tarfile.REGTYPE, "absolute path"),
    ("link", tarfile.SYMTYPE, "is a link"),
    ("hard", tarfile.LNKTYPE, "is a link"),
    ("dev", tarfile.CHRTYPE, "device"),
    ("fifo", tarfile.FIFOTYPE, "device, FIFO"),
])
def test_malicious_archives_are_refused(tmp_path, name, kind, message):
    member = tarfile.TarInfo(name)
    member.type = kind
    data = b"x" if kind == tarfile.REGTYPE else b""
    member.size = len(data)
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        member.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path, member, data)
    with pytest.raises(UnprocessableModel, match=message):
        resolve(archive, tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()
    assert not any(p.name.startswith(".incomplete") for p in (tmp_path / "cache").glob("*"))


def test_package_of_the_original_axon_loads(models, tmp_path):
    """The Go Axon (v3.1.9) wrote manifests with apiVersion v1 and an empty files list: such a
    package still loads (nothing to verify), found by its execution format."""
    pkg = tmp_path / "orig"
    pkg.mkdir()
    shutil.copy(models.matmul, pkg / "model.onnx")
    (pkg / "manifest.yaml").write_text(
        "apiVersion: v1\nkind: Model\nmetadata: {name: distilgpt2, namespace: nlp, version: 1.0.0}\n"
        "spec:\n  framework: {name: PyTorch, version: 2.0.0}\n"
        "  format: {type: pytorch, execution_format: onnx, files: []}\n"
    )
    src = resolve(pkg, tmp_path / "cache")
    assert src.format == "onnx" and src.model_path == pkg / "model.onnx"
