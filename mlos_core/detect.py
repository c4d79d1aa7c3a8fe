"""Format detection by file content, never by file name.

- GGUF: the magic ``GGUF`` at offset 0.
- SafeTensors: a little-endian u64 header length N, then N bytes of a JSON object.
- ONNX: a protobuf ``ModelProto`` whose top-level fields all carry ModelProto's field numbers
  and wire types, with lengths inside the file, and a ``graph`` (field 7).

A directory is a model when it holds one recognisable model (``model.onnx`` wins among several
ONNX files; optimum's encoder-decoder export, ``encoder_model.onnx`` with its decoder graphs, is one
ONNX model: the directory; a Hugging Face directory with ``config.json`` and ``*.safetensors`` is
SafeTensors), or holds nothing but an ``onnx/`` folder that does.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import UnprocessableModel

ONNX, GGUF, SAFETENSORS = "onnx", "gguf", "safetensors"
FORMATS = (ONNX, GGUF, SAFETENSORS)

# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited)
_MODELPROTO_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


class DamagedModel(UnprocessableModel):
    """A file that starts as a model of a known format and breaks off or lacks its model."""


@dataclass(frozen=True)
class Detected:
    format: str
    model_path: Path  # the file a plugin loads (or the directory, for SafeTensors model dirs)


def _read_varint(f) -> int | None:
    shift = result = 0
    for _ in range(10):
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
    return None


_FIELD_NAMES = {1: "ir_version", 2: "producer_name", 3: "producer_version", 4: "domain", 5: "model_version",
                6: "doc_string", 7: "graph", 8: "opset_import", 14: "metadata_props", 20: "training_info",
                25: "functions", 26: "configuration"}


def _scan_onnx(path: Path, size: int) -> tuple[bool, str | None]:
    """Whether the file is an ONNX ModelProto, and, when it starts as one but breaks off, what is
    missing (a truncated download must not be reported as "not a model")."""
    seen_graph = False
    fields = 0

    def cut(number: int, start: int, need: int) -> tuple[bool, str | None]:
        # only a file that already read as a ModelProto (two fields, or its version then the graph)
        if fields >= 2 or (fields == 1 and number == 7):
            what = f"field {number} ({_FIELD_NAMES.get(number, '?')}) at byte {start}"
            return False, (f"truncated ONNX model: {what} needs the file to be at least {need} bytes, it is "
                           f"{size} ({need - size} bytes missing; an interrupted download or copy?)")
        return False, None

    with open(path, "rb") as f:
        while f.tell() < size:
            start = f.tell()
            key = _read_varint(f)
            if key is None:
                return cut(0, start, size + 1)
            number, wire = key >> 3, key & 7
            if _MODELPROTO_FIELDS.get(number) != wire:
                return False, None
            value = _read_varint(f)
            if value is None:
                return cut(number, start, size + 1)
            if wire == 2:
                if f.tell() + value > size:
                    return cut(number, start, f.tell() + value)
                f.seek(value, 1)
            seen_graph |= number == 7
            fields += 1
            if fields > 100_000:
                return False, None
    if not seen_graph and fields >= 2:
        return False, "an ONNX ModelProto without a graph (field 7): the file holds no model"
    return seen_graph, None


def _looks_like_safetensors(path: Path, size: int) -> bool:
    if size < 10:
        return False
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n < 2 or n > _MAX_SAFETENSORS_HEADER or 8 + n > size:
            return False
        head = f.read(n)
    if head[:1] != b"{":
        return False
    try:
        return isinstance(json.loads(head), dict)
    except (UnicodeDecodeError, ValueError):
        return False


def _describe_unknown(path: Path, size: int) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        what = "an empty file"
    elif head[:2] == b"PK":
        what = "a zip archive (a PyTorch .pt/.bin checkpoint is one; pickles are never loaded)"
    elif head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        what = "a Python pickle (never loaded: convert it to SafeTensors or ONNX)"
    elif head[:2] == b"\x1f\x8b":
        what = "a gzip archive (an .axon package is a tar.gz: register it by its path)"
    elif head.lstrip()[:1] in (b"{", b"["):
        what = "a JSON document"
    else:
        what = "content of no known model format"  # never the bytes: an error must not leak a file's content
    return f"{path}: not an ONNX, GGUF or SafeTensors model: found {what}"


def detect_file(path: Path) -> str:
    """The format of one file, or UnprocessableModel naming what was found."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UnprocessableModel(f"{path}: cannot read ({e.strerror})") from None
    if magic == b"GGUF":
        return GGUF
    if _looks_like_safetensors(path, size):
        return SAFETENSORS
    onnx, damage = _scan_onnx(path, size)
    if onnx:
        return ONNX
    if damage:
        raise DamagedModel(f"{path}: {damage}")
    raise UnprocessableModel(_describe_unknown(path, size))


def _candidates(directory: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """The model files of a directory by format, and what was wrong with damaged ones."""
    found: dict[str, list[Path]] = {}
    damaged: list[str] = []
    for p in sorted(directory.iterdir()):
        if not p.is_file() or p.is_symlink() or p.name.startswith("."):
            continue
        try:
            fmt = detect_file(p)
        except DamagedModel as e:
            damaged.append(e.message)
            continue
        except UnprocessableModel:
            continue
        found.setdefault(fmt, []).append(p)
    return found, damaged


def _is_seq2seq_export(files: list[Path]) -> bool:
    names = {p.name for p in files}
    return "encoder_model.onnx" in names and bool(names & {"decoder_model.onnx", "decoder_model_merged.onnx"})


def detect(path: Path, preferred: str | None = None) -> Detected:
    """Find the model a path holds. ``preferred`` (a format name) picks among several formats."""
    path = Path(path)
    if not path.exists():
        raise UnprocessableModel(f"{path}: no such file or directory")
    if path.is_file():
        return Detected(detect_file(path), path)
    if not path.is_dir():
        raise UnprocessableModel(f"{path}: not a regular file or a directory")
    found, damaged = _candidates(path)
    if not found and damaged:
        raise UnprocessableModel(damaged[0])
    if not found and (path / "onnx").is_dir() and not (path / "onnx").is_symlink():
        return detect(path / "onnx", preferred)   # an export under onnx/ (transformers.js repos)
    if not found:
        names = ", ".join(sorted(p.name for p in path.iterdir())[:20]) or "nothing"
        raise UnprocessableModel(f"{path}: no ONNX, GGUF or SafeTensors model in this directory (found: {names})")
    if preferred and preferred not in found:
        raise UnprocessableModel(
            f"{path}: no {preferred} model here; found {', '.join(sorted(found))}"
        )
    order = [preferred] if preferred else [ONNX, GGUF, SAFETENSORS]
    fmt = next(f for f in order if f in found)
    files = found[fmt]
    if fmt == SAFETENSORS and (path / "config.json").is_file():
        return Detected(fmt, path)
    if fmt == ONNX and path / "model.onnx" not in files and _is_seq2seq_export(files):
        return Detected(fmt, path)
    if len(files) == 1:
        return Detected(fmt, files[0])
    for name in ("model.onnx", "model.gguf", "model.safetensors"):
        if path / name in files:
            return Detected(fmt, path / name)
    raise UnprocessableModel(
        f"{path}: several {fmt} files and none named model.{fmt}: "
        + ", ".join(p.name for p in files)
        + "; register the file itself"
    )
