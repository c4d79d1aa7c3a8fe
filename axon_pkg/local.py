"""Packages from local files: ``axon-py install ./dir`` and ``axon-py pack <dir>``."""
from __future__ import annotations

import hashlib
import re
import shutil
import time
from pathlib import Path

from .errors import SelectionError
from .manifest import MANIFEST_NAME, read_manifest, verify_files
from .package import add_files, build_manifest, finish, io_schema, make_archive, now_iso, package_bytes
from .refs import Ref
from .store import Cache

_WEIGHTS = {".onnx": "onnx", ".gguf": "gguf", ".safetensors": "safetensors"}
_SKIP_DIRS = {".git", "__pycache__", ".cache"}
_REFUSED_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def _collect(src: Path) -> dict[str, Path]:
    if src.is_file():
        return {src.name: src}
    files = {}
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.is_symlink():
            raise SelectionError(f"{rel}: symbolic links are not packaged; copy the file in")
        if p.is_file() and p.name != MANIFEST_NAME:
            if p.suffix in _REFUSED_SUFFIXES:
                continue  # pickles never enter a package
            files[rel.as_posix()] = p
    return files


def _format(files: dict[str, Path]) -> tuple[str, list[str]]:
    from mlos_core.detect import detect_file  # content, not names, decides

    found: dict[str, list[str]] = {}
    for rel, p in files.items():
        if p.suffix in _WEIGHTS or p.suffix == "":
            try:
                found.setdefault(detect_file(p), []).append(rel)
            except Exception:
                continue
    for fmt in ("onnx", "gguf", "safetensors"):
        if fmt in found:
            return fmt, sorted(found[fmt])
    raise SelectionError("no ONNX, GGUF or SafeTensors model among the files: " + ", ".join(sorted(files)[:15]))


def build_local(src: Path, *, cache: Cache, name: str | None = None, progress=lambda s: None):
    from .install import InstallResult

    src = Path(src).expanduser().resolve()
    if not src.exists():
        raise SelectionError(f"{src}: no such file or directory")
    start = time.perf_counter()
    files = _collect(src)
    fmt, execution = _format(files)
    h = hashlib.sha256()
    for rel, p in sorted(files.items()):
        h.update(rel.encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    version = h.hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name or (src.stem if src.is_file() else src.name)) or "model"
    staging = cache.staging("local", name)
    try:
        entries = add_files(cache, staging, files)
        tokenizer = "tokenizer.json" if "tokenizer.json" in files else None
        manifest = build_manifest(
            namespace="local", name=name, version=version, fmt=fmt, files=entries, execution_files=execution,
            io=io_schema(fmt, staging / execution[0] if fmt == "onnx" else None, tokenizer),
            description=f"packed from {src}",
            extension={"source": {"hub": "local", "repo": str(src)}, "installed_at": now_iso()},
        )
        finish(staging, manifest)
        path = cache.commit_package(staging, "local", name, version, ["latest"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    progress(f"packaged {src} as local/{name}@{version}")
    return InstallResult(cache.resolve(Ref("local", name, version)), {"package_s": time.perf_counter() - start},
                         sum(p.stat().st_size for p in files.values()), package_bytes(path))


def pack(package_dir: Path, out: Path) -> tuple[int, str]:
    """Write a verified package directory as an `.axon` archive; returns (size, sha256)."""
    manifest = read_manifest(package_dir, validate=True)
    verify_files(package_dir, manifest)
    return make_archive(package_dir, out)
