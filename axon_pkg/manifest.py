"""Reading and verifying an `.axon` manifest (`manifest.yaml`).

This module is light on purpose: the core imports it to verify a package before loading it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
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


def write_manifest(package_dir: Path, manifest: dict) -> Path:
    """Validate, then write through a temporary file, fsync and rename: never half a manifest."""
    validate_manifest(manifest)
    target = Path(package_dir) / MANIFEST_NAME
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=package_dir)
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(manifest, f, sort_keys=False, allow_unicode=True)
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
    if validate:
        validate_manifest(data)
    return data


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


def verify_files(package_dir: Path, manifest: dict) -> int:
    """Check the size and sha256 of every listed file; return how many were verified.

    A listed file without a digest is refused: a package that cannot be verified is not a
    verified package (the original Axon left ``files`` empty; packages made by it list none).
    """
    count = 0
    for entry in listed_files(manifest):
        if not isinstance(entry, dict):
            raise ManifestError("spec.format.files entries must be mappings with path, size and sha256")
        path = safe_member(package_dir, entry.get("path"))
        digest = entry.get("sha256")
        if not is_valid_digest(digest):
            raise ManifestError(f"spec.format.files[{entry.get('path')}].sha256 is not 64 lowercase hex characters")
        if not path.is_file() or path.is_symlink():
            raise ManifestError(f"{entry['path']}: listed in the manifest but missing from the package")
        size = entry.get("size")
        if isinstance(size, int) and path.stat().st_size != size:
            raise ManifestError(f"{entry['path']}: size {path.stat().st_size} differs from the manifest's {size}")
        actual = sha256_file(path)
        if actual != digest:
            raise ManifestError(f"{entry['path']}: sha256 {actual} does not match the manifest's {digest}")
        count += 1
    return count
