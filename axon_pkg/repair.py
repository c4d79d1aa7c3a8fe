"""Finding and mending installed packages whose files no longer match their manifest.

A package's files are hard links to the blob store (and, for downloads, to the download cache):
one rotten or overwritten inode spoils every name it has. ``damaged`` lists the files that fail
their size or sha256; ``repair`` fetches only those again at the package's recorded commit (the
download cache's copy is bypassed: it is the same inode) and links the fresh blob in place of each.
A file made by a conversion cannot be fetched: the package is then rebuilt from its sources, which
are checked against the hub's digests before the conversion runs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .repos import huggingface as hub
from .errors import IntegrityError
from .manifest import listed_files, safe_member, sha256_file
from .refs import Ref
from .store import Cache, Installed


def damaged(pkg_dir: Path, manifest: dict) -> list[dict]:
    """The manifest entries whose file is missing or differs in size or sha256."""
    bad = []
    for entry in listed_files(manifest):
        if not isinstance(entry, dict):
            continue
        try:
            path = safe_member(pkg_dir, entry.get("path"))
        except Exception:
            bad.append(entry)
            continue
        if not path.is_file() or path.is_symlink():
            bad.append(entry)
        elif isinstance(entry.get("size"), int) and path.stat().st_size != entry["size"]:
            bad.append(entry)
        elif sha256_file(path) != entry.get("sha256"):
            bad.append(entry)
    return bad


def source_of(pkg: Installed) -> dict:
    return ((pkg.manifest.get("x-mlos") or {}).get("source") or {})


def repair(pkg: Installed, cache: Cache, progress: Callable[[str], None] = lambda s: None) -> list[str]:
    """Mend an installed hub package in place; returns the paths fetched again ([] if none was bad)."""
    bad = damaged(pkg.path, pkg.manifest)
    if not bad:
        return []
    src = source_of(pkg)
    if src.get("hub") != "huggingface" or not src.get("resolved_commit"):
        raise IntegrityError(f"{pkg.ref}: {len(bad)} file(s) do not match the manifest, and the package records no "
                             "hub source to fetch them from", hint="install it again from where it came from")
    conversion = (pkg.manifest.get("x-mlos") or {}).get("conversion") or {}
    if conversion.get("converted"):
        raise RebuildNeeded(pkg)
    ref = Ref(pkg.namespace, pkg.repo, src["resolved_commit"], src.get("selector"))
    fixed = []
    for entry in bad:
        progress(f"{entry['path']}: does not match the manifest; fetching it again")
        fresh = hub.fetch(ref, src["resolved_commit"], entry["path"], cache.hub, again=True)
        digest, _ = cache.add_blob(fresh)
        if digest != entry["sha256"]:
            raise IntegrityError(f"{entry['path']}: fetched again, its sha256 is {digest}, not the manifest's "
                                 f"{entry['sha256']}", hint="the hub's file changed at that commit, or the network "
                                 "corrupts downloads")
        dest = safe_member(pkg.path, entry["path"])
        tmp = dest.with_name(f".{dest.name}.repair-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        cache.link_blob(digest, tmp)
        os.replace(tmp, dest)  # the package never shows a missing file
        fixed.append(entry["path"])
    return fixed


class RebuildNeeded(Exception):
    """The damaged package holds files a conversion made: only a rebuild can restore them."""

    def __init__(self, pkg: Installed):
        super().__init__(pkg.ref)
        self.pkg = pkg
