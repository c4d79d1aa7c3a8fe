"""Building a package: files into the blob store and the staging directory, the manifest,
the io schema, and the `.axon` archive."""
from __future__ import annotations

import datetime as dt
import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Callable, Any

from . import __version__
from .errors import IntegrityError
from .manifest import (API_VERSION, MANIFEST_NAME, manifest_bytes, read_manifest, sha256_file, verify_files,
                       write_manifest)
from .store import Cache

FRAMEWORK = {"onnx": "ONNX", "gguf": "GGUF", "safetensors": "Transformers"}
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64", 8: "string",
                9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16"}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs of an ONNX graph, read without loading external weights."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}

    def spec(v) -> dict:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return {"name": v.name, "dtype": _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), "shape": shape}

    return ([spec(v) for v in model.graph.input if v.name not in inits], [spec(v) for v in model.graph.output])


def io_schema(fmt: str, model_file: Path | None, tokenizer: str | None) -> dict:
    if fmt == "onnx" and model_file is not None:
        inputs, outputs = onnx_io(model_file)
        if tokenizer:
            for t in inputs:
                if t["name"] in ("input_ids", "attention_mask", "token_type_ids"):
                    t["preprocessing"] = {"type": "tokenizer", "tokenizer": tokenizer, "tokenizer_type": "huggingface"}
        return {"inputs": inputs, "outputs": outputs}
    if fmt == "gguf":
        return {"inputs": [{"name": "prompt", "dtype": "string", "shape": [-1],
                            "preprocessing": {"type": "tokenizer", "tokenizer": "gguf", "tokenizer_type": "llama.cpp"}}],
                "outputs": [{"name": "text", "dtype": "string", "shape": [-1]}]}
    return {"inputs": [], "outputs": []}


def add_files(cache: Cache, staging: Path, files: dict[str, Path], expected: dict[str, str] | None = None,
              refetch: Callable[[str], Path] | None = None) -> list[dict]:
    """Store each file once in the blob store and link it into the package at its path. A file
    whose digest differs from the one announced is fetched once more (``refetch``: a download
    cache's copy can be corrupt) before the install fails."""
    entries = []
    for rel, src in sorted(files.items()):
        digest, size = cache.add_blob(src)
        want = (expected or {}).get(rel)
        if want and want != digest and refetch is not None:
            digest, size = cache.add_blob(refetch(rel))
        if want and want != digest:
            raise IntegrityError(f"{rel}: downloaded content has sha256 {digest}, the hub announced {want}")
        dest = staging / rel
        if not (dest.exists() and os.path.samefile(dest, cache.blob_path(digest))):
            if dest.exists():
                dest.unlink()
            cache.link_blob(digest, dest)
        entries.append({"path": rel, "size": size, "sha256": digest})
    return entries


def build_manifest(*, namespace: str, name: str, version: str, fmt: str, files: list[dict], execution_files: list[str],
                   io: dict, description: str = "", license: str = "", tags: list[str] | None = None,
                   framework_version: str = "", extension: dict | None = None) -> dict:
    weights = sum(f["size"] for f in files)
    gb = weights / 2**30
    manifest: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Model",
        "metadata": {
            "name": name, "namespace": namespace, "version": version, "description": description,
            "license": license or "unknown", "created": now_iso(), "tags": list(tags or []),
        },
        "spec": {
            "framework": {"name": FRAMEWORK.get(fmt, fmt), "version": framework_version},
            "format": {"type": fmt, "execution_format": fmt, "multi_encoder": False, "files": files,
                       "execution_files": execution_files},
            "io": io,
            "requirements": {
                "compute": {"cpu": {"min_cores": 1, "recommended_cores": 2},
                            "memory": {"min_gb": round(max(gb * 1.2, 0.1), 2), "recommended_gb": round(max(gb * 2, 0.5), 2)},
                            "gpu": {"required": False, "recommended": fmt == "gguf"}},
                "storage": {"min_gb": round(max(gb, 0.01), 3), "recommended_gb": round(max(gb * 2, 0.02), 3)},
            },
        },
        "distribution": {"package": {}},
        "x-mlos": {"axon_py_version": __version__, **{k: v for k, v in (extension or {}).items() if v is not None}},
    }
    return manifest


def finish(staging: Path, manifest: dict) -> None:
    write_manifest(staging, manifest)
    verify_files(staging, manifest)  # the package checks out before anyone can see it


def make_archive(package_dir: Path, out: Path) -> tuple[int, str]:
    """A reproducible tar.gz of the package: the same package gives the same bytes, whatever the
    output name, the time, or earlier packs (sorted members, zero mtimes and owners, no name in
    the gzip header, and the manifest without ``distribution.package``: the digest an earlier
    pack recorded is about that archive, and an archive cannot hold its own). Returns (size, sha256)."""
    members = sorted(p for p in package_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.incomplete")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in members:
            rel = p.relative_to(package_dir).as_posix()
            info = tarfile.TarInfo(rel)
            info.mode = 0o644
            info.mtime = 0
            if rel == MANIFEST_NAME:
                manifest = read_manifest(package_dir)
                if isinstance(manifest.get("distribution"), dict):
                    manifest["distribution"] = {**manifest["distribution"], "package": {}}
                data = manifest_bytes(manifest)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.size = p.stat().st_size
            with open(p, "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp, out)
    return out.stat().st_size, sha256_file(out)


def package_bytes(package_dir: Path) -> int:
    return sum(p.stat().st_size for p in package_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
