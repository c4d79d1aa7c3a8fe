"""Packages travel through the cluster; no node reads another node's disk.

What a client registers (a model file, a model directory, an ``.axon`` directory or archive)
becomes a *listing*: its files with size and sha256, in the shape of an axon manifest's
``spec.format.files``. The front door uploads each file once, content-addressed, to the package
store on the head node (``mlos_core.cluster.store``). A replica on any node downloads the blobs
of a listing into its node's private directory and checks every size and sha256 with
``axon_pkg.manifest.verify_files`` before the model loads, including when it reuses a copy it
downloaded earlier.

Layout of a node directory::

    <node_dir>/packages/<listing digest>/<entry>            the registered file or directory
    <node_dir>/packages/<listing digest>/.complete          written last: the copy is whole
    <node_dir>/packages/.incomplete-*                       downloads in progress (renamed when done)

This module knows nothing of Ray: the store is reached through the two callables it is given,
so that the transfer is tested without a cluster.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from axon_pkg.manifest import ManifestError, is_valid_digest, safe_member, sha256_file, verify_files

from ..errors import UnprocessableModel

CHUNK = 4 * 2**20  # bytes per store call: large enough to stream, small enough for one message
MAX_FILES = 10_000
COMPLETE = ".complete"

ReadChunk = Callable[[str, int, int], bytes]  # (sha256, offset, length) -> bytes


@dataclass(frozen=True)
class Listing:
    """A registered path as files. ``files`` are ``{"path", "size", "sha256"}`` with paths
    relative to the registered path's parent; ``entry`` is the registered path's own name (kept,
    since formats are detected by name as well as content): the file, or the directory."""

    entry: str
    files: tuple[dict, ...]

    @property
    def digest(self) -> str:
        """Identifies the package: the same files under the same names give the same digest."""
        doc = json.dumps({"entry": self.entry, "files": sorted(self.files, key=lambda f: f["path"])},
                         sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(doc.encode()).hexdigest()

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.files)

    def to_wire(self) -> dict:
        return {"entry": self.entry, "files": [dict(f) for f in self.files]}

    @classmethod
    def from_wire(cls, doc: dict) -> "Listing":
        entry, files = doc.get("entry"), doc.get("files")
        if not isinstance(entry, str) or not entry or "/" in entry or entry in (".", ".."):
            raise UnprocessableModel(f"package listing: invalid entry {entry!r}")
        if not isinstance(files, list) or not files or len(files) > MAX_FILES:
            raise UnprocessableModel(f"package listing: expected 1 to {MAX_FILES} files")
        for f in files:
            if (not isinstance(f, dict) or not isinstance(f.get("path"), str) or not is_valid_digest(f.get("sha256"))
                    or isinstance(f.get("size"), bool) or not isinstance(f.get("size"), int) or f["size"] < 0):
                raise UnprocessableModel(f"package listing: invalid file entry {str(f)[:200]}")
        if not any(f["path"] == entry or f["path"].startswith(entry + "/") for f in files):
            raise UnprocessableModel(f"package listing: no file under its entry {entry!r}")
        return cls(entry, tuple(files))

    def as_manifest(self) -> dict:
        """The listing in the shape ``verify_files`` checks."""
        return {"spec": {"format": {"files": list(self.files)}}}


def _entry(path: Path, rel: str) -> dict:
    return {"path": rel, "size": path.stat().st_size, "sha256": sha256_file(path)}


def list_package(path: Path) -> Listing:
    """The files a registered path stands for. A file brings the external-data files beside it
    that the registry counts as the model's (``<name>*`` ending ``_data`` or ``.data``); a
    directory brings every regular file under it. Links are refused: a package holds files."""
    path = Path(path)
    if path.is_symlink():
        raise UnprocessableModel(f"{path}: a link; register the file it points to")
    name = path.name
    if path.is_file():
        files = [_entry(path, name)]
        for sib in sorted(path.parent.iterdir()):
            if (sib != path and sib.name.startswith(name) and sib.name.endswith(("_data", ".data"))
                    and sib.is_file() and not sib.is_symlink()):
                files.append(_entry(sib, sib.name))
        return Listing(name, tuple(files))
    if not path.is_dir():
        raise UnprocessableModel(f"{path}: no such file or directory")
    files = []
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            raise UnprocessableModel(f"{p}: a link inside the model directory; packages may not hold links")
        if p.is_file():
            files.append(_entry(p, name + "/" + p.relative_to(path).as_posix()))
            if len(files) > MAX_FILES:
                raise UnprocessableModel(f"{path}: more than {MAX_FILES} files")
    if not files:
        raise UnprocessableModel(f"{path}: an empty directory")
    return Listing(name, tuple(files))


def fetch(listing: Listing, read_chunk: ReadChunk, node_dir: Path) -> Path:
    """Make the listing's files present and verified in ``node_dir``; return the path to register.

    A complete earlier copy is verified again (every sha256) and reused; a copy that fails is
    removed and downloaded anew. Downloads go to a temporary directory renamed into place, so a
    crash never leaves a directory that looks whole, and replicas of one node share copies."""
    base = Path(node_dir) / "packages"
    base.mkdir(parents=True, exist_ok=True)
    dest = base / listing.digest
    if (dest / COMPLETE).is_file():
        try:
            verify_files(dest, listing.as_manifest())
            return dest / listing.entry
        except ManifestError:
            shutil.rmtree(dest, ignore_errors=True)  # altered on this node's disk: fetch it again
    tmp = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=base))
    try:
        for f in listing.files:
            target = safe_member(tmp, f["path"])
            target.parent.mkdir(parents=True, exist_ok=True)
            _download(f, target, read_chunk)
        try:
            verify_files(tmp, listing.as_manifest())
        except ManifestError as e:
            raise UnprocessableModel(f"package from the cluster store failed verification: {e}") from None
        (tmp / COMPLETE).write_text(listing.digest)
        _fsync_dir(tmp)
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / COMPLETE).is_file():  # not another replica's finished copy: a real error
                raise
    except ManifestError as e:
        raise UnprocessableModel(f"package listing: {e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest / listing.entry


def _download(f: dict, target: Path, read_chunk: ReadChunk) -> None:
    size, offset = f["size"], 0
    with open(target, "wb") as out:
        while offset < size:
            data = read_chunk(f["sha256"], offset, min(CHUNK, size - offset))
            if not data:
                raise UnprocessableModel(f"{f['path']}: the cluster store's copy ends at {offset} of {size} bytes")
            out.write(data)
            offset += len(data)
        out.flush()
        os.fsync(out.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def upload(listing: Listing, base: Path, missing: Callable[[list[str]], list[str]],
           send: Callable[[str, int, Path], None]) -> int:
    """Send the files of ``listing`` (found under ``base``, the registered path's parent) that
    the store lacks; returns the bytes sent. ``send(sha256, size, path)`` streams one file and
    has the store check its digest. The same content under two names travels once."""
    wanted = set(missing(sorted({f["sha256"] for f in listing.files})))
    sent = 0
    for f in listing.files:
        if f["sha256"] in wanted:
            send(f["sha256"], f["size"], safe_member(base, f["path"]))
            wanted.discard(f["sha256"])
            sent += f["size"]
    return sent
