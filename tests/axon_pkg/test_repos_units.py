"""The adapters' pieces that need no server: zipball unpacking, converter environments, selection
rules of the tfhub/ and pytorch/ adapters, the hash-prefix convention."""
from __future__ import annotations

import stat
import sys
import zipfile

import pytest

from axon_pkg.archive import ArchiveError, safe_extract_zip
from axon_pkg.converter_envs import ConverterMissing, python_for
from axon_pkg.errors import SelectionError
from axon_pkg.repos import RemoteFile, Resolved
from axon_pkg.repos import pytorch, tfhub
from axon_pkg.repos.http_download import hash_prefix_of


def zip_with(tmp_path, entries):
    path = tmp_path / "repo.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


def test_a_github_zipball_unpacks_to_its_top_directory(tmp_path):
    z = zip_with(tmp_path, [("o-r-abc1234/hubconf.py", b"dependencies = []\n", 0o100644),
                            ("o-r-abc1234/pkg/model.py", b"x = 1\n", 0o100644)])
    out = safe_extract_zip(z, tmp_path / "out")
    assert (out / "hubconf.py").read_text() == "dependencies = []\n" and (out / "pkg/model.py").is_file()
    assert pytorch.repo_dir_from_zip(z, tmp_path / "again") == tmp_path / "again"


@pytest.mark.parametrize("name, mode, message", [
    ("../evil.py", 0o100644, "climbs out"),
    ("/etc/evil", 0o100644, "absolute path"),
    ("top/link", stat.S_IFLNK | 0o777, "symbolic link"),
])
def test_zip_traversal_and_links_are_refused(tmp_path, name, mode, message):
    z = zip_with(tmp_path, [(name, b"x", mode)])
    with pytest.raises(ArchiveError, match=message):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".incomplete-*"))


def test_a_repo_without_hubconf_is_refused(tmp_path):
    z = zip_with(tmp_path, [("o-r-1/README.md", b"hi", 0o100644)])
    with pytest.raises(SelectionError, match="no hubconf.py"):
        pytorch.repo_dir_from_zip(z, tmp_path / "out")


def test_converter_environments_are_found_or_named(tmp_path, monkeypatch):
    monkeypatch.setenv("AXON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AXON_TF_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ConverterMissing, match="AXON_TF_PYTHON names .*nope/python, which does not exist"):
        python_for("tf")
    monkeypatch.setenv("AXON_TF_PYTHON", sys.executable)
    assert python_for("tf") == sys.executable
    monkeypatch.delenv("AXON_VISION_PYTHON", raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere"))
    with pytest.raises(ConverterMissing) as e:
        python_for("vision")
    assert "no environment with torchvision" in e.value.message and "convert-vision" in e.value.hint


def kaggle_resolved(*paths):
    return Resolved("o/m/tensorFlow2/v", "latest", "kaggle-v1", [RemoteFile(p, 1, None) for p in paths], {},
                    {"kaggle_handle": "o/m/tensorFlow2/v/1"})


def test_tfhub_selection_takes_a_savedmodel_whole_and_refuses_tflite():
    sel = tfhub.select(kaggle_resolved("saved_model.pb", "variables/variables.index",
                                       "variables/variables.data-00000-of-00001", "assets/labels.txt"))
    assert sel.format == "savedmodel" and len(sel.files) == 4
    with pytest.raises(SelectionError, match="TFLite"):
        tfhub.select(kaggle_resolved("model.tflite"))
    with pytest.raises(SelectionError, match="no SavedModel, ONNX or GGUF"):
        tfhub.select(kaggle_resolved("weights.h5"))


def test_kaggle_handles_are_recognised_by_their_framework():
    from axon_pkg.refs import parse_ref

    handle, version, how = tfhub.kaggle_handle(parse_ref("tfhub/google/resnet-v2/tensorFlow2/50-classification/2"))
    assert (handle, version, how) == ("google/resnet-v2/tensorFlow2/50-classification", 2, "a Kaggle handle")


def test_pytorch_selection_is_onnx_only():
    resolved = Resolved("vision/x", "latest", "W-abc", [RemoteFile("x-abc.pth", None, None)], {},
                        {"hub": "pytorch", "weights": "W"})
    assert pytorch.select(resolved).format == "pytorch"
    with pytest.raises(SelectionError, match="ONNX only"):
        pytorch.select(resolved, "native")


@pytest.mark.parametrize("name, prefix", [("resnet50-11ad3fa6.pth", "11ad3fa6"),
                                          ("vit_b_16_swag-9ac1b537.pth", "9ac1b537"), ("plain.pth", None)])
def test_the_hash_prefix_convention_of_torch_hub(name, prefix):
    assert hash_prefix_of(name) == prefix
