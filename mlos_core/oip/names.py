"""Model names and versions as the Open Inference Protocol speaks them.

A registered id ``ns/name@v`` is the protocol's model ``ns/name`` at version ``v`` (an id without
``@`` is version "1"). Clients may also send the full id as the name. Every answer names the model
as the client wrote it, with the version apart, and an unknown model is reported in the words
Triton's clients look for ("Request for unknown model").
"""
from __future__ import annotations

from ..errors import MLOSError, ModelNotFound
from ..registry import ModelEntry, Registry

UNKNOWN_MODEL = "Request for unknown model"


def resolve(registry: Registry, name: str, version: str | None) -> ModelEntry:
    """The entry a protocol request names; an empty version means the default one."""
    try:
        return registry.lookup(name, version or None)
    except ModelNotFound as e:
        raise protocol_error(e) from None


def answer_version(entry: ModelEntry, version: str | None) -> str:
    return version or entry.version


def protocol_error(e: MLOSError) -> MLOSError:
    """The same error, worded for Open Inference Protocol clients where their wording differs."""
    if isinstance(e, ModelNotFound) and e.name is not None and not e.message.startswith(UNKNOWN_MODEL):
        what = f"{e.name!r}" + (f" version {e.version!r}" if e.version else "")
        return ModelNotFound(f"{UNKNOWN_MODEL}: {what} is not found", model_id=e.model_id, name=e.name,
                             version=e.version)
    return e
