"""Read a few metadata values from a GGUF file's header without loading the model.

Used before anything is allocated: a client's ``n_ctx`` is checked against the context the model
was trained for before llama.cpp sizes a KV cache for it. Reading stops as soon as the wanted keys
are found (they precede the large tokenizer arrays in every file llama.cpp writes); every count and
length read from the file is checked against the file's size, so a hostile header cannot make this
allocate or loop without bound. Format: github.com/ggml-org/ggml docs/gguf.md (version 2 and 3).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

# value type -> struct format of one scalar
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
MAX_KEYS = 1 << 16


class GgufHeaderError(ValueError):
    pass


class _Reader:
    def __init__(self, f: BinaryIO, size: int):
        self.f, self.size = f, size

    def take(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise GgufHeaderError("the header runs past the end of the file")
        return self.f.read(n)

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8", "replace")

    def skip(self, n: int) -> None:
        if n < 0 or self.f.tell() + n > self.size:
            raise GgufHeaderError("the header runs past the end of the file")
        self.f.seek(n, 1)

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip(self.unpack("<Q"))
            return None
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if count > self.size:  # every element takes at least a byte
                raise GgufHeaderError("an array claims more elements than the file has bytes")
            if etype in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[etype]))
            elif etype == _STRING:
                for _ in range(count):
                    self.skip(self.unpack("<Q"))
            else:
                raise GgufHeaderError(f"an array of value type {etype}, which GGUF does not define")
            return None
        raise GgufHeaderError(f"value type {vtype}, which GGUF does not define")


def read_values(path: str | Path, wanted: set[str] | None = None, *, arch_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Scalar and string values of ``wanted`` keys, and of ``<general.architecture>.<k>`` for each
    ``k`` in ``arch_keys``; stops once all are found."""
    wanted = set(wanted or ()) | {"general.architecture"}
    found: dict[str, Any] = {}
    path = Path(path)
    with open(path, "rb") as f:
        r = _Reader(f, path.stat().st_size)
        if r.take(4) != b"GGUF":
            raise GgufHeaderError("not a GGUF file")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise GgufHeaderError(f"GGUF version {version}; this reader knows 2 and 3")
        r.unpack("<Q")  # tensor count
        n_kv = r.unpack("<Q")
        if n_kv > MAX_KEYS:
            raise GgufHeaderError(f"the header claims {n_kv} metadata keys")
        for _ in range(n_kv):
            key = r.string()
            vtype = r.unpack("<I")
            keep = key in wanted
            value = r.value(vtype, keep)
            if keep:
                found[key] = value
                if key == "general.architecture":
                    wanted |= {f"{value}.{k}" for k in arch_keys}
            if wanted <= found.keys():
                break
    return found


def trained_context(path: str | Path) -> int | None:
    """``<arch>.context_length``: the context the model was trained for, if the header says."""
    values = read_values(path, arch_keys=("context_length",))
    arch = values.get("general.architecture")
    ctx = values.get(f"{arch}.context_length") if arch else None
    return int(ctx) if isinstance(ctx, int) and ctx > 0 else None
