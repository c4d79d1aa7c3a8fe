"""The local package cache.

Layout (the original Axon's ``models/<ns>/<name>/<version>/``, plus a blob store so a file
shared by several packages is stored once)::

    <AXON_HOME>/cache/
      blobs/sha256/<digest>                      every file's content, once (read-only)
      models/<ns>/<org>/<model>/<version>/       a package: manifest.yaml + files, hard links
                                                 into blobs/ (copies where links are impossible)
      models/<ns>/<org>/<model>/refs/<revision>  "latest", a branch or a tag -> the <version> dir
      hub/                                       huggingface_hub's download cache (resumable)

``<version>`` is the resolved commit for hub models (immutable), so ``@latest`` today and
``@latest`` next month are two packages and ``refs/latest`` says which is current. A package
directory appears by one ``os.replace`` of a complete staging directory: a crash mid-install
leaves only a ``.incomplete-*`` directory, which nothing reads and ``cache clean`` removes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import IntegrityError, NotInstalled
from .manifest import MANIFEST_NAME, ManifestError, is_valid_digest, listed_files, read_manifest, sha256_file
from .refs import Ref

INCOMPLETE = ".incomplete-"


def axon_home() -> Path:
    return Path(os.environ.get("AXON_HOME") or Path.home() / ".axon").expanduser()


@dataclass(frozen=True)
class Installed:
    namespace: str
    repo: str
    version: str
    path: Path
    manifest: dict

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.repo}@{self.version}"


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else axon_home() / "cache"
        self.blobs = self.root / "blobs" / "sha256"
        self.models = self.root / "models"
        self.hub = self.root / "hub"

    # ---- blobs --------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        if not is_valid_digest(digest):  # never let an unchecked digest reach a path
            raise IntegrityError(f"invalid sha256 digest {digest!r}")
        return self.blobs / digest

    def add_blob(self, source: Path) -> tuple[str, int]:
        """Store a file's content once; returns (sha256, size). Links when it can, else copies."""
        source = Path(os.path.realpath(source))  # hub snapshots are symlinks into the hub's blobs
        h = hashlib.sha256()
        with open(source, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        digest = h.hexdigest()
        target = self.blob_path(digest)
        if target.exists() and sha256_file(target) != digest:
            # a blob is named by its digest, but its bytes can rot or be overwritten: never reuse it
            # unchecked (a corrupt blob would block every reinstall); replace it with the good copy
            os.chmod(target, 0o644)
            target.unlink()
        if not target.exists():
            self.blobs.mkdir(parents=True, exist_ok=True)
            tmp = self.blobs / f"{INCOMPLETE}{digest}-{os.getpid()}"
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        return digest, target.stat().st_size

    def link_blob(self, digest: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(self.blob_path(digest), dest)
        except OSError:
            shutil.copyfile(self.blob_path(digest), dest)

    # ---- packages -----------------------------------------------------------------------
    def package_root(self, namespace: str, repo: str) -> Path:
        return self.models / namespace / repo

    def staging(self, namespace: str, repo: str) -> Path:
        """A fresh staging directory named after this process, after removing those of processes
        that are gone (a kill -9 mid-install leaves its staging behind; a live install's is kept)."""
        root = self.package_root(namespace, repo)
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob(f"{INCOMPLETE}pid*-*"):
            pid = old.name[len(INCOMPLETE) + 3:].split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"{INCOMPLETE}pid{os.getpid()}-", dir=root))

    def commit_package(self, staging: Path, namespace: str, repo: str, version: str, refs: list[str]) -> Path:
        """Move a complete staging directory into place, then point the refs at it."""
        target = self.package_root(namespace, repo) / version
        if target.exists():
            shutil.rmtree(staging)  # the same immutable version is already installed
        else:
            os.replace(staging, target)
        self.point(namespace, repo, version, refs)
        return target

    def point(self, namespace: str, repo: str, version: str, refs: list[str]) -> None:
        """Make each ref (``latest``, a branch, a tag) name ``version``."""
        for ref in refs:
            if ref != version:
                _atomic_write_text(self.package_root(namespace, repo) / "refs" / ref, version + "\n")

    def resolve(self, ref: Ref) -> Installed:
        root = self.package_root(ref.namespace, ref.repo)
        version = ref.revision
        pointer = root / "refs" / ref.revision
        if pointer.is_file():
            version = pointer.read_text().strip()
        path = root / version
        if "/" in version or version.startswith(".") or not (path / MANIFEST_NAME).is_file():
            raise NotInstalled(f"{ref} is not installed", hint=f"axon-py install {ref}")
        return Installed(ref.namespace, ref.repo, version, path, read_manifest(path))

    def installed(self) -> list[Installed]:
        out = []
        if not self.models.is_dir():
            return out
        for manifest in sorted(self.models.rglob(MANIFEST_NAME)):
            pkg = manifest.parent
            if any(p.startswith(INCOMPLETE) for p in pkg.relative_to(self.models).parts):
                continue
            parts = pkg.relative_to(self.models).parts
            if len(parts) < 3:
                continue
            try:
                data = read_manifest(pkg)
            except ManifestError:
                data = {}
            out.append(Installed(parts[0], "/".join(parts[1:-1]), parts[-1], pkg, data))
        return out

    def refs_of(self, namespace: str, repo: str) -> dict[str, str]:
        d = self.package_root(namespace, repo) / "refs"
        if not d.is_dir():
            return {}
        return {p.name: p.read_text().strip() for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}

    def discard(self, pkg: Installed) -> None:
        """Take one package version away (atomically), keeping its refs: it is about to be rebuilt."""
        trash = self.package_root(pkg.namespace, pkg.repo) / f"{INCOMPLETE}removed-{pkg.version}"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(pkg.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def remove(self, ref: Ref) -> list[Path]:
        """Remove one package (the one the ref resolves to) and the refs pointing at it."""
        pkg = self.resolve(ref)
        root = self.package_root(pkg.namespace, pkg.repo)
        for name, version in self.refs_of(pkg.namespace, pkg.repo).items():
            if version == pkg.version:
                (root / "refs" / name).unlink()
        trash = root / f"{INCOMPLETE}removed-{pkg.version}"
        os.replace(pkg.path, trash)  # vanish atomically, then delete
        shutil.rmtree(trash, ignore_errors=True)
        removed = [pkg.path]
        for d in (root / "refs", root, root.parent):
            try:
                d.rmdir()
            except OSError:
                break
        return removed

    # ---- maintenance --------------------------------------------------------------------
    def referenced_blobs(self) -> set[str]:
        used = set()
        for pkg in self.installed():
            for entry in listed_files(pkg.manifest) if pkg.manifest else []:
                if isinstance(entry, dict) and is_valid_digest(entry.get("sha256")):
                    used.add(entry["sha256"])
        return used

    def stats(self) -> dict:
        def size(p: Path) -> int:
            return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink()) if p.is_dir() else 0

        blobs = [b for b in self.blobs.iterdir() if is_valid_digest(b.name)] if self.blobs.is_dir() else []
        used = self.referenced_blobs()
        return {
            "root": str(self.root),
            "packages": len(self.installed()),
            "blobs": len(blobs),
            "blob_bytes": sum(b.stat().st_size for b in blobs),
            "unreferenced_blobs": sum(1 for b in blobs if b.name not in used),
            "download_cache_bytes": size(self.hub),
            "incomplete": len(self._incomplete()),
        }

    def _incomplete(self) -> list[Path]:
        out = []
        for base in (self.models, self.blobs):
            if base.is_dir():
                out += [p for p in base.rglob(INCOMPLETE + "*")]
        return out

    def clean(self, downloads: bool = True) -> dict:
        """Remove unreferenced blobs, leftovers of interrupted installs and (by default) the
        download cache; installed packages are untouched."""
        removed_incomplete = 0
        for p in sorted(self._incomplete(), key=lambda p: len(p.parts), reverse=True):
            if p.exists():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed_incomplete += 1
        used = self.referenced_blobs()
        freed = removed_blobs = 0
        if self.blobs.is_dir():
            for b in self.blobs.iterdir():
                if is_valid_digest(b.name) and b.name not in used:
                    freed += b.stat().st_size
                    b.unlink()
                    removed_blobs += 1
        hub_bytes = 0
        if downloads and self.hub.is_dir():
            hub_bytes = sum(f.stat().st_size for f in self.hub.rglob("*") if f.is_file() and not f.is_symlink())
            shutil.rmtree(self.hub)
        return {"removed_blobs": removed_blobs, "freed_bytes": freed + hub_bytes,
                "removed_incomplete": removed_incomplete, "download_cache_bytes": hub_bytes}
