"""What crosses between a front door and a replica besides tensors: errors and model keys.

Errors travel as data, not as pickled exceptions, so that the front door raises exactly the
``mlos_core.errors`` class the replica raised (a 503 stays a 503 with its ``Retry-After``, a
missing model a 404) and the registry reacts to it as it would to a local failure.
"""
from __future__ import annotations

from ..errors import MLOSError
from ..scheduler import RequestTimedOut  # noqa: F401  (an MLOSError subclass the wire must know)

STORE_NAME = "mlos-cluster-store"


def model_key(model_id: str, generation: int) -> str:
    """The multiplexed model id: a new registration of the same id is a different model to the
    replicas' caches (model ids cannot hold '#')."""
    return f"{model_id}#{generation}"


def split_key(key: str) -> tuple[str, int]:
    model_id, _, generation = key.rpartition("#")
    if not model_id or not generation.isdigit():
        raise ValueError(f"not a cluster model key: {key!r}")
    return model_id, int(generation)


def error_to_wire(e: MLOSError) -> dict:
    return {"type": type(e).__name__, "status": e.status, "code": e.code, "message": e.message,
            "model_id": e.model_id, "retry_after": e.retry_after}


def _classes(base=MLOSError) -> dict[str, type]:
    out = {base.__name__: base}
    for sub in base.__subclasses__():
        out.update(_classes(sub))
    return out


def error_from_wire(doc: dict) -> MLOSError:
    cls = _classes().get(doc.get("type"), MLOSError)
    err = cls(str(doc.get("message")), model_id=doc.get("model_id"), retry_after=doc.get("retry_after"))
    if cls is MLOSError:  # a class this side does not know: keep what the client must see
        err.status, err.code = int(doc.get("status", 500)), str(doc.get("code", "internal_error"))
    return err
