"""The registry's persistence: one SQLite table of registered models.

SQLite gives atomic, durable writes (WAL, synchronous=FULL): a crash mid-write leaves the
previous state, and a write that returns has reached the disk. Calls are short and synchronous;
the registry runs them off the event loop, and answers a client only after its write returned.

A registry file that cannot be read is never silently replaced by an empty one: an empty (0-byte,
e.g. truncated) file, one SQLite cannot open, one that fails ``PRAGMA quick_check`` or lacks the
models table raises ``RegistryCorrupt``, naming the file and the fix (``--reset-registry`` moves
it and its WAL aside, keeping them for inspection). SQLite's WAL is already the journal: what a
crash can leave is recovered by SQLite itself, so what is left unreadable is not ours to guess at.
The file is created 0600 (SQLite gives its -wal and -shm files the database's mode).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import InsufficientStorage, MLOSError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    format TEXT NOT NULL,
    plugin_id TEXT NOT NULL,
    record TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    registered_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass
class ModelRecord:
    """What survives a restart: how the model was registered, and whether it failed."""

    id: str
    path: str
    format: str
    plugin_id: str
    name: str = ""
    description: str = ""
    framework: str = ""
    execution_format: str = ""
    manifest_path: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # keep_alive, threads, batching...
    registered_at: float = field(default_factory=time.time)


class RegistryCorrupt(ConfigError):
    """The registry file cannot be read: the server refuses to start rather than forget models."""


class RegistryWriteFailed(MLOSError):
    status = 500
    code = "registry_write_failed"


_SQLITE_FULL = 13


def _write_error(e: sqlite3.Error, what: str) -> MLOSError:
    if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL or "full" in str(e):
        return InsufficientStorage(f"{what} was not saved: the registry's disk is full ({e}); nothing changed")
    return RegistryWriteFailed(f"{what} was not saved: the registry could not be written ({e}); nothing changed")


def _corrupt(path: Path, why: str) -> RegistryCorrupt:
    return RegistryCorrupt(
        f"the registry {path} cannot be used: {why}. Nothing was changed. Start with --reset-registry to "
        f"move it aside (to {path.name}.corrupt-<time>) and start with an empty registry, or restore it "
        "from a backup")


def reset(path: Path) -> Path | None:
    """Move an unreadable registry (and its WAL files) aside; returns where, or None if it was healthy."""
    try:
        RegistryStore(path).close()
        return None
    except RegistryCorrupt:
        pass
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            os.replace(src, aside.with_name(aside.name + suffix))
    return aside


def _create(path: Path) -> None:
    """A new registry, made under a temporary name and renamed into place whole: a crash while
    creating it leaves no half-made file that a later start would have to call corrupt."""
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        tmp.with_name(tmp.name + suffix).unlink(missing_ok=True)
    os.close(os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
    finally:
        db.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class RegistryStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        if not path.exists():
            _create(path)
        elif path.stat().st_size == 0:
            # never ours: a new registry appears only whole, by rename (see _create)
            raise _corrupt(path, "the file is empty (0 bytes; truncated?)")
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise _corrupt(path, f"SQLite cannot open it ({e})") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _corrupt(path, f"SQLite's integrity check failed ({check})")
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "models" not in tables:
                raise _corrupt(path, "it is an SQLite file without the registry's models table")
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise _corrupt(path, f"SQLite cannot read it ({e})") from None
        except RegistryCorrupt:
            self._db.close()
            raise
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists() and side.stat().st_mode & 0o077:
                os.chmod(side, 0o600)

    def _write(self, what: str, sql: str, args: tuple) -> None:
        with self._lock:
            try:
                self._db.execute(sql, args)
            except sqlite3.Error as e:
                raise _write_error(e, what) from None

    def load_all(self) -> list[tuple[ModelRecord, str, str | None]]:
        with self._lock:
            rows = self._db.execute("SELECT record, state, error FROM models ORDER BY registered_at").fetchall()
        out = []
        for record, state, error in rows:
            out.append((ModelRecord(**json.loads(record)), state, error))
        return out

    def upsert(self, record: ModelRecord, state: str, error: str | None = None) -> None:
        now = time.time()
        self._write(
                f"the registration of {record.id}",
                "INSERT INTO models (id, path, format, plugin_id, record, state, error, registered_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET path=excluded.path, format=excluded.format,"
                " plugin_id=excluded.plugin_id, record=excluded.record, state=excluded.state,"
                " error=excluded.error, updated_at=excluded.updated_at",
                (record.id, record.path, record.format, record.plugin_id, json.dumps(asdict(record)),
                 state, error, record.registered_at, now),
        )

    def set_state(self, model_id: str, state: str, error: str | None = None) -> None:
        self._write(f"the state {state} of {model_id}",
                    "UPDATE models SET state=?, error=?, updated_at=? WHERE id=?", (state, error, time.time(), model_id))

    def delete(self, model_id: str) -> None:
        self._write(f"the removal of {model_id}", "DELETE FROM models WHERE id=?", (model_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
