"""Reading and verifying an `.axon` manifest (`manifest.yaml`).

This module is light on purpose: the core imports it to verify a package before loading it.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import IntegrityError

MANIFEST_NAME = "manifest.yaml"
API_VERSION = "axon.mlos.io/v1"
SCHEMA_PATH = Path(__file__).parent / "schema" / "manifest.schema.json"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(IntegrityError):
    """The manifest is missing, unreadable, invalid, or names a file that is missing or altered."""


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    with open(SCHEMA_PATH) as f:
        return jsonschema.Draft202012Validator(json.load(f))


def validate_manifest(manifest: Any) -> None:
    """Refuse a manifest that does not follow the schema, naming the first offending field."""
    errors = sorted(_validator().iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ManifestError(f"manifest field {where}: {e.message}")


def manifest_bytes(manifest: dict) -> bytes:
    """The manifest as written: one serialisation, for the file and for archives."""
    return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True).encode("utf-8")


def write_manifest(package_dir: Path, manifest: dict) -> Path:
    """Validate, then write through a temporary file, fsync and rename: never half a manifest."""
    validate_manifest(manifest)
    target = Path(package_dir) / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=package_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(manifest_bytes(manifest))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def is_valid_digest(digest: Any) -> bool:
    """A sha256 as 64 lowercase hex characters; checked before a digest is ever used in a path."""
    return isinstance(digest, str) and bool(_DIGEST.match(digest))


def read_manifest(package_dir: Path, validate: bool = False) -> dict:
    path = Path(package_dir) / MANIFEST_NAME
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {package_dir}") from None
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a mapping at the top level")
    data = _plain(data)
    if validate:
        validate_manifest(data)
    return data


def _plain(value: Any) -> Any:
    """YAML reads an unquoted ``created: 2024-11-10T12:00:00Z`` (as the original Go Axon writes
    it) as a datetime: keep it as the ISO text a manifest means."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat().replace("+00:00", "Z")
    return value


def listed_files(manifest: dict) -> list[dict]:
    files = ((manifest.get("spec") or {}).get("format") or {}).get("files") or []
    if not isinstance(files, list):
        raise ManifestError("spec.format.files must be a list")
    return files


def safe_member(package_dir: Path, rel: Any) -> Path:
    """Resolve a manifest path inside the package, refusing anything that escapes it."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\x00" in rel:
        raise ManifestError(f"spec.format.files: invalid path {rel!r}")
    root = Path(package_dir).resolve()
    target = (root / rel).resolve()
    if target != root and root not in target.parents:
        raise ManifestError(f"spec.format.files: path {rel!r} leaves the package")
    return target


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class FileCheck:
    """One listed file as found: its actual size and sha256, and whether the manifest recorded
    them to compare against (the original Go Axon writes ``size: 0`` and ``sha256: ""``)."""

    path: str
    size: int
    sha256: str
    size_recorded: bool
    sha256_recorded: bool


def check_files(package_dir: Path, manifest: dict) -> list[FileCheck]:
    """Check the size and sha256 of every listed file against what the manifest records; an
    empty ``sha256`` or a zero ``size`` means "not recorded": the file is hashed and reported,
    not compared. Anything recorded that differs, or a file missing, is refused."""
    checks = []
    for entry in listed_files(manifest):
        if not isinstance(entry, dict):
            raise ManifestError("spec.format.files entries must be mappings with path, size and sha256")
        path = safe_member(package_dir, entry.get("path"))
        digest = entry.get("sha256") or ""
        if digest and not is_valid_digest(digest):
            raise ManifestError(f"spec.format.files[{entry.get('path')}].sha256 is not 64 lowercase hex characters")
        if not path.is_file() or path.is_symlink():
            raise ManifestError(f"{entry['path']}: listed in the manifest but missing from the package")
        size = entry.get("size")
        actual_size = path.stat().st_size
        size_recorded = isinstance(size, int) and not isinstance(size, bool) and size > 0
        if size_recorded and actual_size != size:
            raise ManifestError(f"{entry['path']}: size {actual_size} differs from the manifest's {size}")
        actual = sha256_file(path)
        if digest and actual != digest:
            raise ManifestError(f"{entry['path']}: sha256 {actual} does not match the manifest's {digest}")
        checks.append(FileCheck(entry["path"], actual_size, actual, size_recorded, bool(digest)))
    return checks


def verify_files(package_dir: Path, manifest: dict) -> int:
    """Check every listed file (``check_files``); return how many had a recorded sha256 that matched."""
    return sum(c.sha256_recorded for c in check_files(package_dir, manifest))
