"""The registry's persistence: one SQLite table of registered models.

SQLite gives atomic, durable writes (WAL, synchronous=FULL): a crash mid-write leaves the
previous state. Calls are short and synchronous; the registry runs them off the event loop.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


class RegistryStore:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def load_all(self) -> list[tuple[ModelRecord, str, str | None]]:
        with self._lock:
            rows = self._db.execute("SELECT record, state, error FROM models ORDER BY registered_at").fetchall()
        out = []
        for record, state, error in rows:
            out.append((ModelRecord(**json.loads(record)), state, error))
        return out

    def upsert(self, record: ModelRecord, state: str, error: str | None = None) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO models (id, path, format, plugin_id, record, state, error, registered_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET path=excluded.path, format=excluded.format,"
                " plugin_id=excluded.plugin_id, record=excluded.record, state=excluded.state,"
                " error=excluded.error, updated_at=excluded.updated_at",
                (record.id, record.path, record.format, record.plugin_id, json.dumps(asdict(record)),
                 state, error, record.registered_at, now),
            )

    def set_state(self, model_id: str, state: str, error: str | None = None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE models SET state=?, error=?, updated_at=? WHERE id=?", (state, error, time.time(), model_id)
            )

    def delete(self, model_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM models WHERE id=?", (model_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
