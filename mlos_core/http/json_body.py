"""JSON request bodies, parsed without stalling the server.

A JSON parser holds Python's GIL for as long as it parses: a 60 MB body of numbers takes the
event loop away for seconds, and its millions of Python floats take about 14 times the body's size
in memory. So bodies up to ``inline_max`` (``--json-inline-max-mb``, 1 MiB) are parsed on the event loop (well under a millisecond),
and larger ones in a separate process (``_json_worker``), one body at a time, which sends back the
document with every numeric list of ``MIN_ARRAY`` or more elements as a raw numpy array (its dtype
as ``np.asarray`` would give it from the list, so decoding is unchanged). The server then holds the
body plus the arrays, never a Python object per number, and its event loop only waits on a pipe.
The worker's own memory is bounded by the one body it parses; it restarts if it dies.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import orjson

from ..errors import BadRequest, MLOSError, ModelUnavailable, PayloadTooLarge

INLINE_MAX = 1 << 20


class MalformedJson(ValueError):
    """The body is not valid JSON; the message is the parser's, for the caller to phrase."""


class JsonParser:
    def __init__(self, inline_max: int = INLINE_MAX):
        self.inline_max = inline_max
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = asyncio.Lock()
        self._start_lock = threading.Lock()
        self.offloaded = 0

    async def loads(self, body) -> Any:
        """The parsed document (bytes or a memoryview in); ``MalformedJson`` if it is not JSON."""
        if len(body) <= self.inline_max:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise MalformedJson(str(e)) from None
        async with self._lock:  # one body at a time in the worker; others wait, off the loop
            self.offloaded += 1
            return await asyncio.to_thread(self._parse, body)

    def _ensure_worker(self) -> Connection:
        with self._start_lock:
            if self._proc is None or self._proc.poll() is not None:
                ours, theirs = socket.socketpair()
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "mlos_core.http._json_worker", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
                theirs.close()
                self._conn = Connection(ours.detach())
            return self._conn

    def _parse(self, body: bytes) -> Any:
        conn = self._ensure_worker()
        nonce = os.urandom(12).hex()
        try:
            conn.send_bytes(nonce.encode())
            conn.send_bytes(body)
            head = orjson.loads(conn.recv_bytes())
            if "error" in head:
                if head.get("malformed"):
                    raise MalformedJson(head["error"])
                kind = PayloadTooLarge if head.get("status") == 413 else BadRequest
                raise kind(head["error"])
            skeleton = conn.recv_bytes()
            arrays = [np.frombuffer(conn.recv_bytes(), dtype=np.dtype(a["dtype"])).reshape(a["shape"])
                      for a in head["arrays"]]
        except (EOFError, OSError):
            self.close()
            raise ModelUnavailable("the JSON parser process ended while parsing this body (out of memory?); "
                                   "retry, or send tensors as binary data", retry_after=1) from None
        except (MLOSError, MalformedJson):
            raise
        return _fill(orjson.loads(skeleton), nonce, arrays)

    def close(self) -> None:
        with self._start_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)  # EOF on its connection ends it
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None


def _fill(node: Any, nonce: str, arrays: list[np.ndarray]) -> Any:
    if isinstance(node, dict):
        if len(node) == 1 and nonce in node:
            return arrays[node[nonce]]
        return {k: _fill(v, nonce, arrays) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, nonce, arrays) for v in node]
    return node
