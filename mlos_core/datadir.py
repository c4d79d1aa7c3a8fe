"""The server's data directory: private to its owner, held by one server at a time.

Everything the core writes (the registry, unpacked packages, converted models, its Unix sockets)
lives here, so the directory is made 0700 and its files 0600: a registry lists paths, and the
sockets accept requests. Two servers on one data directory would each believe their own view of
the registry, so the first one takes an exclusive lock and a second one refuses to start, naming
the pid that holds it. Staging folders a crashed conversion or unpacking left behind (their
names say they are incomplete) are removed at start: nothing can be using them once the lock is ours.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path

from .config import ConfigError

log = logging.getLogger(__name__)

# prefixes of staging folders (axon_pkg.convert, axon_pkg.archive) under these subdirectories
_STAGING = {"converted": (".axon-convert-",), "packages": (".incomplete-",)}


class DataDirInUse(ConfigError):
    pass


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


class DataDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def open(self) -> "DataDir":
        private_dir(self.path)
        lock = self.path / ".lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(f"data directory {self.path} is in use by another mlos-core (pid {holder}); "
                               "give each server its own --data-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        private_dir(self.path / "run")
        self._remove_staging()
        return self

    def _remove_staging(self) -> None:
        for sub, prefixes in _STAGING.items():
            folder = self.path / sub
            if not folder.is_dir():
                continue
            for child in folder.iterdir():
                if child.name.startswith(prefixes) and child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                    log.info("removed %s, left by an interrupted conversion or unpacking", child)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)   # releases the flock
            self._lock_fd = None
