"""The one error family of the core.

Every failure a client can cause or observe is an ``MLOSError`` subclass carrying its
HTTP status. Transports turn them into responses in exactly one place
(``mlos_core.http.common``); nothing else decides a status code.
"""
from __future__ import annotations


class MLOSError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, model_id: str | None = None, retry_after: float | None = None,
                 detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.model_id = model_id
        self.retry_after = retry_after
        # a runtime's own words (onnxruntime, llama.cpp), kept verbatim beside the message that says
        # what they mean for this request
        self.detail = detail


class BadRequest(MLOSError):
    status = 400
    code = "bad_request"


class InvalidTensor(BadRequest):
    """A tensor's name, dtype or shape does not match what the model declares."""

    code = "invalid_tensor"


class Forbidden(MLOSError):
    """The server's configuration refuses the operation (the message names the setting)."""

    status = 403
    code = "forbidden"


class ModelNotFound(MLOSError):
    status = 404
    code = "model_not_found"

    def __init__(self, message: str, *, name: str | None = None, version: str | None = None, **kw):
        super().__init__(message, **kw)
        # what the client asked for, so that each protocol can word the answer its clients expect
        self.name = name
        self.version = version


class MethodNotAllowed(MLOSError):
    """A known route asked with the wrong method; ``allow`` lists the methods it takes."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: tuple[str, ...] = (), **kw):
        super().__init__(message, **kw)
        self.allow = allow


class NotFound(MLOSError):
    status = 404
    code = "not_found"


class Conflict(MLOSError):
    status = 409
    code = "conflict"


class PayloadTooLarge(MLOSError):
    status = 413
    code = "payload_too_large"


class UnprocessableModel(MLOSError):
    """The model file exists but cannot be loaded (corrupt, unknown format, load error)."""

    status = 422
    code = "model_load_failed"


class ModelUnavailable(MLOSError):
    """The model exists but cannot serve now: it failed to load, or no memory is left for it."""

    status = 503
    code = "model_unavailable"


class ReplicaLost(MLOSError):
    """On a cluster: the replica serving the request went away before answering it."""

    status = 503
    code = "replica_lost"


class ModelNotReady(MLOSError):
    """The model is registered but a client unloaded it: it serves again only once loaded
    explicitly. Retrying unchanged cannot help, so not a 503 (Triton answers 400 as well)."""

    status = 400
    code = "model_not_ready"


class QueueFull(MLOSError):
    status = 503
    code = "queue_full"


class InferenceFailed(MLOSError):
    """The runtime refused the inputs at run time (e.g. a shape the graph cannot compute)."""

    status = 400
    code = "inference_failed"


class Unauthorized(MLOSError):
    status = 401
    code = "unauthorized"


class InsufficientStorage(MLOSError):
    """A change could not be saved because the disk is full; nothing changed."""

    status = 507
    code = "insufficient_storage"
