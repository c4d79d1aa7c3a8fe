"""Format detection reads content, never names."""
from __future__ import annotations

import json
import re
import shutil
import struct

import pytest

from mlos_core.detect import GGUF, ONNX, SAFETENSORS, detect, detect_file
from mlos_core.errors import UnprocessableModel


def safetensors_bytes(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + payload


def test_onnx_detected_whatever_its_name(models, tmp_path):
    disguised = tmp_path / "weights.bin"
    shutil.copy(models.matmul, disguised)
    assert detect_file(disguised) == ONNX


def test_real_silero_onnx_files_are_onnx(silero):
    for f in silero.parent.glob("*.onnx"):
        assert detect_file(f) == ONNX, f.name


def test_gguf_magic(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\0" * 32)
    assert detect_file(f) == GGUF


def test_safetensors_header(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(safetensors_bytes({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8))
    assert detect_file(f) == SAFETENSORS


def test_real_silero_safetensors(silero):
    assert detect_file(silero.parent / "silero_vad_16k.safetensors") == SAFETENSORS


@pytest.mark.parametrize("content, found", [
    (b"", "an empty file"),
    (b"\x80\x04\x95\x00\x00", "pickle"),
    (b"PK\x03\x04rest", "zip archive"),
    (b'{"architectures": []}', "JSON document"),
    (b"hello world, not a model", "content of no known model format"),
    (struct.pack("<Q", 10**12) + b"{}", "content of no known model format"),  # header length past the file
])
def test_unknown_content_is_named(tmp_path, content, found):
    f = tmp_path / "model.onnx"
    f.write_bytes(content)
    with pytest.raises(UnprocessableModel, match=found):
        detect_file(f)


def test_truncated_onnx_says_so_with_sizes(models, tmp_path):
    data = models.matmul.read_bytes()
    f = tmp_path / "cut.onnx"
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnprocessableModel) as e:
        detect_file(f)
    half = len(data) // 2
    m = re.fullmatch(rf"{re.escape(str(f))}: truncated ONNX model: field 7 \(graph\) at byte 14 needs the file to be "
                     rf"at least (\d+) bytes, it is {half} \((\d+) bytes missing; an interrupted download or copy\?\)",
                     e.value.message)
    assert m, e.value.message
    need, missing = int(m.group(1)), int(m.group(2))
    assert need - half == missing and len(data) - 16 < need <= len(data)  # the graph ends just before opset_import
    # in a directory, the damaged file is named rather than "no model here"
    d = tmp_path / "pkg"
    d.mkdir()
    (d / "model.onnx").write_bytes(data[:-100])
    (d / "config.json").write_text("{}")
    with pytest.raises(UnprocessableModel, match=r"model.onnx: truncated ONNX model: .* \(94 bytes missing"):
        detect(d)
    # a file that merely starts with an ONNX-like byte is not called a damaged model
    odd = tmp_path / "odd.bin"
    odd.write_bytes(b"\x08\x07" + b"\xff" * 30)
    with pytest.raises(UnprocessableModel, match="not an ONNX, GGUF or SafeTensors model"):
        detect_file(odd)


def test_directory_picks_model_onnx_among_several(models, tmp_path):
    shutil.copy(models.matmul, tmp_path / "model.onnx")
    shutil.copy(models.fp16, tmp_path / "other.onnx")
    (tmp_path / "README.md").write_text("docs")
    found = detect(tmp_path)
    assert found.format == ONNX and found.model_path.name == "model.onnx"


def test_directory_with_ambiguous_files_lists_them(models, tmp_path):
    shutil.copy(models.matmul, tmp_path / "a.onnx")
    shutil.copy(models.fp16, tmp_path / "b.onnx")
    with pytest.raises(UnprocessableModel, match="a.onnx, b.onnx"):
        detect(tmp_path)


def test_hf_directory_is_safetensors_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes({"__metadata__": {}}))
    found = detect(tmp_path)
    assert found.format == SAFETENSORS and found.model_path == tmp_path


def test_directory_without_model_says_what_it_holds(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UnprocessableModel, match="found: notes.txt"):
        detect(tmp_path)


def test_missing_path(tmp_path):
    with pytest.raises(UnprocessableModel, match="no such file"):
        detect(tmp_path / "nope.onnx")
