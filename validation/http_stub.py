"""Plumbing shared by the local stand-ins of model repositories (PyTorch Hub, Kaggle Models,
ModelScope): a ``ThreadingHTTPServer`` on 127.0.0.1 and a free port in a daemon thread, a log of
the requests it saw, JSON answers, and file bodies with ``Range`` support (206 +
``Content-Range``), plus two faults a test can arm: drop the connection after N bytes of the next
download of a file, or flip a byte of it.

A stand-in subclasses :class:`StubServer` and implements ``route(req)``; ``req`` is the handler,
with ``method``, ``path`` (decoded, without the query), ``query`` (parse_qs) and ``body``.
"""
from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 1 << 20


class StubError(Exception):
    def __init__(self, status: int, message: str, payload: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.payload, self.headers = status, message, payload, headers or {}


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """-> (start, end inclusive), None for no/ignored range, "bad" for unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        start, end = max(0, size - int(m.group(2))), size - 1
    end = min(end, size - 1)
    if start >= size or start > end:
        return "bad"
    return start, end


class StubServer:
    server_name = "StubServer"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self._port = host, port
        self.url = ""
        self.requests: list[dict] = []
        self._lock = threading.RLock()
        self._faults: dict[str, list[tuple[str, int]]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self):
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub = stub
        server = ThreadingHTTPServer((self.host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://{self.host}:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"{self.server_name}{server.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- faults and log ---------------------------------------------------------------------
    def interrupt_next_download(self, name: str, after_bytes: int) -> None:
        """The next download of the file ``name`` sends ``after_bytes`` bytes and drops the connection."""
        with self._lock:
            self._faults.setdefault(name, []).append(("cut", after_bytes))

    def corrupt_next_download(self, name: str, at_byte: int = 100) -> None:
        """The next download of the file ``name`` has the byte at ``at_byte`` flipped."""
        with self._lock:
            self._faults.setdefault(name, []).append(("flip", at_byte))

    def _take_fault(self, name: str):
        with self._lock:
            pending = self._faults.get(name)
            if pending:
                fault = pending.pop(0)
                if not pending:
                    del self._faults[name]
                return fault
        return None

    def log_for(self, path_contains: str = "", method: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if path_contains in r["path"] and (method is None or r["method"] == method)]

    def clear_log(self) -> None:
        """Forget the requests seen and any fault still armed."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()

    def route(self, req: "_Handler") -> None:  # pragma: no cover - subclasses answer
        raise StubError(404, "not found")


class _Handler(BaseHTTPRequestHandler):
    stub: StubServer
    protocol_version = "HTTP/1.1"
    timeout = 60

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)   # absolute-form targets too (a client using this as its HTTP proxy)
        self.method, self.path_only, self.query = method, unquote(split.path), parse_qs(split.query, keep_blank_values=True)
        self.entry = {"method": method, "path": self.path_only, "query": split.query, "host": self.headers.get("Host"),
                      "range": self.headers.get("Range"), "status": None}
        with self.stub._lock:
            self.stub.requests.append(self.entry)
        n = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(n) if n else b""
        try:
            self.stub.route(self)
        except StubError as e:
            self.send_json(e.status, e.payload if e.payload is not None else {"error": e.message}, e.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def json_body(self) -> dict:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError:
            raise StubError(400, "the body is not JSON") from None
        return data if isinstance(data, dict) else {}

    def send_head(self, status: int, headers: dict) -> None:
        self.entry["status"] = status
        self.send_response(status)
        for k, v in headers.items():
            if v is not None:
                self.send_header(k, str(v))
        self.end_headers()

    def send_json(self, status: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_head(status, {"Content-Type": "application/json; charset=utf-8", "Content-Length": len(data),
                                **(headers or {})})
        if self.method != "HEAD":
            self.wfile.write(data)

    def redirect(self, location: str, status: int = 302) -> None:
        self.send_head(status, {"Location": location, "Content-Length": 0})

    def send_file(self, content: bytes | Path, name: str, headers: dict | None = None) -> None:
        """The file's bytes (``Range`` honoured), subject to an armed fault for ``name``."""
        data = content if isinstance(content, (bytes, bytearray)) else None
        size = len(data) if data is not None else Path(content).stat().st_size
        rng = parse_range(self.headers.get("Range"), size)
        base = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **(headers or {})}
        if rng == "bad":
            self.send_head(416, {**base, "Content-Range": f"bytes */{size}", "Content-Length": 0})
            return
        status, (start, end) = (200, (0, size - 1)) if rng is None else (206, rng)
        if status == 206:
            base["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        fault = self.stub._take_fault(name) if self.method == "GET" else None
        self.send_head(status, {**base, "Content-Length": length})
        if self.method == "HEAD":
            return
        cut = fault[1] if fault and fault[0] == "cut" else None
        flip = fault[1] if fault and fault[0] == "flip" else None
        remaining, pos = (length if cut is None else min(length, cut)), start
        src = _open(content)
        with src as f:
            f.seek(start)
            while remaining > 0:
                block = bytearray(f.read(min(CHUNK, remaining)))
                if not block:
                    break
                if flip is not None and pos <= flip < pos + len(block):
                    block[flip - pos] ^= 0xFF
                self.wfile.write(block)
                pos += len(block)
                remaining -= len(block)
        if cut is not None and cut < length:
            self.entry["interrupted"] = True
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _open(content):
    import io

    return io.BytesIO(bytes(content)) if isinstance(content, (bytes, bytearray)) else open(content, "rb")
