"""The JSON parsing process of ``mlos_core.http.json_body`` (``python -m mlos_core.http._json_worker FD``).

Frames on the connection (``multiprocessing.connection`` byte frames, never pickles): in, a nonce
then a JSON body; out, a header ``{"arrays": [{"dtype", "shape"}...]}`` or ``{"error", "status"}``,
then the document with its large numeric lists replaced by ``{nonce: index}``, then each array's
raw bytes. It exits when the server's end of the connection closes (the server died or stopped).
"""
from __future__ import annotations

import sys
from multiprocessing.connection import Connection

import numpy as np
import orjson

MIN_ARRAY = 256  # numeric lists with at least this many elements travel back as raw arrays
SKELETON_MAX = 8 << 20  # what is left after that must be small: the server parses it itself


class _Refused(Exception):
    def __init__(self, status: int, message: str, malformed: bool = False):
        super().__init__(message)
        self.status = status
        self.malformed = malformed


def _convert(obj, nonce: str, arrays: list, depth: int = 0):
    if depth > 200:
        raise _Refused(400, "malformed JSON: nested more than 200 levels deep")
    if isinstance(obj, dict):
        return {k: _convert(v, nonce, arrays, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and isinstance(obj[0], (int, float, list)):  # bool is an int
            try:
                arr = np.asarray(obj)
            except (ValueError, OverflowError, TypeError):  # ragged, or integers past 64 bits
                arr = None
            if arr is not None and arr.dtype.kind in "biuf":
                if arr.size < MIN_ARRAY:
                    return obj
                arrays.append(np.ascontiguousarray(arr))
                return {nonce: len(arrays) - 1}
        return [_convert(v, nonce, arrays, depth + 1) for v in obj]
    return obj


def serve(conn: Connection) -> None:
    while True:
        try:
            nonce = conn.recv_bytes().decode()
            body = conn.recv_bytes()
        except (EOFError, OSError):
            return
        arrays: list[np.ndarray] = []
        try:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError as e:
                raise _Refused(400, str(e), malformed=True) from None
            del body
            skeleton = orjson.dumps(_convert(doc, nonce, arrays))
            del doc
            if len(skeleton) > SKELETON_MAX:
                raise _Refused(413, f"a JSON body may hold at most {SKELETON_MAX >> 20} MiB besides numeric arrays "
                                    f"of {MIN_ARRAY} or more elements; send large BYTES tensors as binary data")
        except _Refused as e:
            conn.send_bytes(orjson.dumps({"error": str(e), "status": e.status, "malformed": e.malformed}))
            continue
        except (MemoryError, RecursionError) as e:
            conn.send_bytes(orjson.dumps({"error": f"the body could not be parsed ({type(e).__name__})", "status": 413}))
            continue
        conn.send_bytes(orjson.dumps({"arrays": [{"dtype": a.dtype.str, "shape": list(a.shape)} for a in arrays]}))
        conn.send_bytes(skeleton)
        for a in arrays:
            conn.send_bytes(memoryview(a).cast("B") if a.size else b"")


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
