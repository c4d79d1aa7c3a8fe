"""Resolve what a client registers (a file, a directory, a package directory or an `.axon`
archive) into the ``ModelSource`` a plugin loads, verifying package checksums on the way."""
from __future__ import annotations

import tarfile
from pathlib import Path

from axon_pkg.archive import ArchiveError, safe_extract
from axon_pkg.manifest import MANIFEST_NAME, ManifestError, read_manifest, sha256_file, verify_files

from .detect import FORMATS, detect
from .errors import UnprocessableModel
from .smi import ModelSource


def _preferred_format(manifest: dict) -> str | None:
    fmt = (manifest.get("spec") or {}).get("format") or {}
    for key in ("execution_format", "type"):
        value = str(fmt.get(key) or "").lower()
        if value in FORMATS:
            return value
    return None


def _unpack(archive: Path, packages_dir: Path) -> Path:
    dest = packages_dir / sha256_file(archive)
    if (dest / MANIFEST_NAME).is_file():
        return dest
    try:
        return safe_extract(archive, dest)
    except ArchiveError as e:
        raise UnprocessableModel(f"{archive}: refused: {e}") from None
    except FileExistsError:
        return dest  # a concurrent registration unpacked it first
    except OSError:
        if (dest / MANIFEST_NAME).is_file():
            return dest
        raise


def resolve(path: str | Path, packages_dir: Path, verify: bool = True) -> ModelSource:
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = path.resolve()
    if not path.exists():
        raise UnprocessableModel(f"{path}: no such file or directory")
    if path.is_file() and tarfile.is_tarfile(path):
        path = _unpack(path, packages_dir)
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        try:
            manifest = read_manifest(path)
            if verify:
                verify_files(path, manifest)
        except ManifestError as e:
            raise UnprocessableModel(f"package {path}: {e}") from None
        found = detect(path, _preferred_format(manifest))
        return ModelSource(found.model_path, found.format, package_dir=path, manifest=manifest)
    found = detect(path)
    return ModelSource(found.model_path, found.format)
