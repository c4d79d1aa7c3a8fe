"""Safe unpacking of `.axon` archives (tar.gz).

Refused outright: absolute paths, `..` components, symbolic and hard links, device and FIFO
entries, and members that would land outside the destination. Extraction goes to a temporary
sibling directory that is renamed into place only when complete, so an interrupted unpack
never leaves a directory that looks like a package.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from .errors import IntegrityError


class ArchiveError(IntegrityError):
    """An archive that is unreadable or holds something a package may not hold."""


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    p = PurePosixPath(name)
    if name.startswith(("/", "\\")) or p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in p.parts:
        raise ArchiveError(f"archive member {name!r} climbs out of the package with '..'")
    if member.issym() or member.islnk():
        raise ArchiveError(f"archive member {name!r} is a link; packages may not hold links")
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"archive member {name!r} is a device, FIFO or other special file")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` (which must not exist) and return ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=dest.parent))
    try:
        try:
            tar = tarfile.open(archive, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise ArchiveError(f"{archive}: not a readable tar archive ({e})") from None
        with tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m)
            for m in members:
                target = (tmp / m.name).resolve()
                if tmp.resolve() not in target.parents and target != tmp.resolve():
                    raise ArchiveError(f"archive member {m.name!r} leaves the destination")
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        root = _package_root(tmp)
        os.replace(root, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _package_root(tmp: Path) -> Path:
    """Archives made with a single top directory are unwrapped to it."""
    entries = list(tmp.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not (tmp / "manifest.yaml").exists():
        return entries[0]
    return tmp


def safe_extract_zip(archive: Path, dest: Path) -> Path:
    """Extract a zip (a GitHub zipball) into ``dest`` under the same rules as :func:`safe_extract`:
    no absolute paths, no ``..``, no symbolic links; a single top directory is unwrapped."""
    import stat
    import zipfile

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=dest.parent))
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as e:
            raise ArchiveError(f"{archive}: not a readable zip archive ({e})") from None
        with zf:
            for info in zf.infolist():
                name = info.filename
                p = PurePosixPath(name)
                if name.startswith(("/", "\\")) or p.is_absolute() or (len(name) > 1 and name[1] == ":"):
                    raise ArchiveError(f"archive member {name!r} has an absolute path")
                if ".." in p.parts:
                    raise ArchiveError(f"archive member {name!r} climbs out with '..'")
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise ArchiveError(f"archive member {name!r} is a symbolic link")
                target = (tmp / name).resolve()
                if tmp.resolve() not in target.parents and target != tmp.resolve():
                    raise ArchiveError(f"archive member {name!r} leaves the destination")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        entries = list(tmp.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        os.replace(root, dest)
        return dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
