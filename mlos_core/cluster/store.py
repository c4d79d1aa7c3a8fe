"""The cluster-wide registry and package store, kept on the head node.

One ``ClusterStore`` serves the whole cluster as a detached, named Ray actor pinned to the head
(``mlos_core.cluster.frontdoor`` starts it; it survives every front door, and restarts from its
files if its process dies). It keeps:

- registrations: the same ``ModelRecord`` a single server persists, with the model's state, a
  *generation* (a number that changes whenever the id is registered anew, so replicas never
  serve a previous registration's files under the same id) and the package listing;
- package blobs, content-addressed by sha256: uploads are written to a temporary file, their
  digest checked, then fsynced and renamed, so a crash never leaves a partial blob.

SQLite (WAL, synchronous=FULL) holds the registrations: a crash mid-write leaves the previous
state. The class knows nothing of Ray, so its rules are tested in-process; every argument a
client sends is checked (ids, digests, offsets and sizes) before it touches a path or a file.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from axon_pkg.manifest import is_valid_digest, sha256_file

from .packages import CHUNK, Listing

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    generation INTEGER NOT NULL,
    listing TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
MAX_BLOB = 64 * 2**30  # a single file of a package: larger is refused before a byte is written


class StoreError(ValueError):
    """A request the store refuses; the message says why."""


class ClusterStore:
    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.blobs = self.root / "blobs"
        self.uploads = self.root / "uploads"
        for d in (self.blobs, self.uploads):
            d.mkdir(parents=True, exist_ok=True)
        for stale in self.uploads.iterdir():  # uploads cut short by a restart start again
            stale.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.root / "registry.db"), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._open: dict[str, tuple[str, int, object]] = {}  # upload token -> (sha256, size, file)

    # ---- registrations ------------------------------------------------------------------------
    def version(self) -> int:
        """Changes whenever a registration is added, removed or changes state: front doors poll it."""
        with self._lock:
            return self._counter("version")

    def load_all(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record, state, error, generation FROM models ORDER BY rowid").fetchall()
        return [{"record": json.loads(r), "state": s, "error": e, "generation": g} for r, s, e, g in rows]

    def get(self, model_id: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT record, state, error, generation, listing FROM models WHERE id=?",
                                   (model_id,)).fetchone()
        if row is None:
            return None
        r, s, e, g, listing = row
        return {"record": json.loads(r), "state": s, "error": e, "generation": g, "listing": json.loads(listing)}

    def register(self, record: dict, state: str, listing: dict) -> dict:
        """Register ``record`` unless its id is taken by another path (compare-and-set, so two
        front doors racing for one id cannot both win). Every blob of the listing must be here."""
        model_id = record.get("id")
        if not isinstance(model_id, str) or not model_id:
            raise StoreError("a record needs an id")
        parsed = Listing.from_wire(listing)
        absent = self.missing([f["sha256"] for f in parsed.files])
        if absent:
            raise StoreError(f"{len(absent)} file(s) of {model_id} were not uploaded: {', '.join(absent[:3])}")
        with self._lock, self._tx():
            row = self._db.execute("SELECT record, generation FROM models WHERE id=?", (model_id,)).fetchone()
            if row is not None:
                existing = json.loads(row[0])
                if existing.get("path") != record.get("path"):
                    return {"status": "conflict", "path": existing.get("path"), "generation": row[1]}
                return {"status": "exists", "path": existing.get("path"), "generation": row[1]}
            generation = self._bump("generation")
            self._db.execute(
                "INSERT INTO models (id, record, state, error, generation, listing, updated_at) VALUES (?,?,?,?,?,?,?)",
                (model_id, json.dumps(record), state, None, generation, json.dumps(parsed.to_wire()), time.time()))
            self._bump("version")
        return {"status": "created", "path": record.get("path"), "generation": generation}

    def set_state(self, model_id: str, state: str, error: str | None = None) -> None:
        with self._lock, self._tx():
            changed = self._db.execute("UPDATE models SET state=?, error=?, updated_at=? WHERE id=? AND "
                                       "(state IS NOT ? OR error IS NOT ?)",
                                       (state, error, time.time(), model_id, state, error)).rowcount
            if changed:
                self._bump("version")

    def delete(self, model_id: str) -> None:
        with self._lock, self._tx():
            if self._db.execute("DELETE FROM models WHERE id=?", (model_id,)).rowcount:
                self._bump("version")
            kept = {f["sha256"] for (listing,) in self._db.execute("SELECT listing FROM models")
                    for f in json.loads(listing)["files"]}
        for blob in self.blobs.iterdir():  # content no registration refers to any more
            if blob.name not in kept:
                blob.unlink(missing_ok=True)

    # ---- blobs --------------------------------------------------------------------------------
    def missing(self, digests: list[str]) -> list[str]:
        for d in digests:
            _check_digest(d)
        return [d for d in digests if not (self.blobs / d).is_file()]

    def begin(self, digest: str, size: int) -> str:
        """Start an upload of ``size`` bytes that must hash to ``digest``; returns its token."""
        _check_digest(digest)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BLOB:
            raise StoreError(f"size must be an integer between 0 and {MAX_BLOB}")
        token = uuid.uuid4().hex
        f = open(self.uploads / f"{digest}.{token}", "wb")
        with self._lock:
            self._open[token] = (digest, size, f)
        return token

    def write(self, token: str, offset: int, data: bytes) -> None:
        digest, size, f = self._upload(token)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset != f.tell():
            raise StoreError(f"upload of {digest}: chunks must come in order (expected offset {f.tell()})")
        if not isinstance(data, (bytes, bytearray)) or len(data) > CHUNK or offset + len(data) > size:
            raise StoreError(f"upload of {digest}: a chunk is at most {CHUNK} bytes and ends within {size}")
        f.write(data)

    def commit(self, token: str) -> None:
        """Check the upload's size and sha256, then make it the blob (fsync, rename)."""
        digest, size, f = self._upload(token)
        with self._lock:
            self._open.pop(token, None)
        part = Path(f.name)
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            if part.stat().st_size != size:
                raise StoreError(f"upload of {digest}: {part.stat().st_size} bytes received, {size} announced")
            actual = sha256_file(part)
            if actual != digest:
                raise StoreError(f"upload of {digest}: the bytes received hash to {actual}")
            os.replace(part, self.blobs / digest)
            fd = os.open(self.blobs, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            part.unlink(missing_ok=True)

    def read(self, digest: str, offset: int, length: int) -> bytes:
        _check_digest(digest)
        if (isinstance(offset, bool) or isinstance(length, bool) or not isinstance(offset, int)
                or not isinstance(length, int) or offset < 0 or not 0 < length <= CHUNK):
            raise StoreError(f"read: offset must be >= 0 and length between 1 and {CHUNK}")
        try:
            with open(self.blobs / digest, "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise StoreError(f"no blob {digest} in the cluster store") from None

    # ---- internals ----------------------------------------------------------------------------
    def _upload(self, token: str):
        with self._lock:
            found = self._open.get(token) if isinstance(token, str) else None
        if found is None:
            raise StoreError("unknown upload token (the store may have restarted: upload again)")
        return found

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return row[0] if row else 0

    def _bump(self, name: str) -> int:
        value = self._counter(name) + 1
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value=excluded.value", (name, value))
        return value

    @contextlib.contextmanager
    def _tx(self):
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for _, _, f in self._open.values():
                f.close()
            self._open.clear()
            self._db.close()


def _check_digest(digest) -> None:
    if not is_valid_digest(digest):
        raise StoreError("a blob is named by its sha256: 64 lowercase hex characters")

