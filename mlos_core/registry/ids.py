"""Model ids: ``namespace/name@version``, and how a request's name finds one."""
from __future__ import annotations

import re
from typing import Any, TypeVar

from ..errors import BadRequest

Entry = TypeVar("Entry")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*(/[A-Za-z0-9._\-]+)*(@[A-Za-z0-9._\-+]+)?$")
MAX_ID_LENGTH = 256


def validate_model_id(model_id: Any) -> str:
    if not isinstance(model_id, str) or not model_id:
        raise BadRequest("model_id is required: a string like 'namespace/name@version'")
    name, _, version = model_id.partition("@")
    if any(part in (".", "..") for part in name.split("/") + ([version] if version else [])):
        raise BadRequest(f"invalid model_id {model_id[:80]!r}: '.' and '..' are not allowed as name parts or versions")
    if len(model_id) > MAX_ID_LENGTH or not ID_PATTERN.match(model_id):
        raise BadRequest(
            f"invalid model_id {model_id[:80]!r}: use letters, digits, '.', '_', '-', '/' between "
            "name parts, and one optional '@version' (e.g. 'hf/distilgpt2@latest')"
        )
    return model_id


def split_id(model_id: str) -> tuple[str, str]:
    """``ns/name@v`` -> (``ns/name``, ``v``); an id without a version is version "1"."""
    name, _, version = model_id.rpartition("@")
    return (name, version) if name else (model_id, "1")


def find(table: dict[str, Entry | None], name: str, version: str | None) -> Entry | None:
    """The entry ``name`` (and ``version``) names in ``table``; None when none does. A name alone
    means its ``@latest``, else its only version (several: a 400 naming them)."""
    if version is not None:
        if "@" in name:
            return table.get(name) if name.rsplit("@", 1)[1] == version else None
        entry = table.get(f"{name}@{version}")
        return entry if entry is not None or version != "1" else table.get(name)
    entry = table.get(name)
    if entry is not None or "@" in name:
        return entry
    entry = table.get(f"{name}@latest")
    if entry is not None:
        return entry
    versions = sorted(k for k, e in table.items() if e is not None and k.startswith(name + "@"))
    if len(versions) > 1:
        raise BadRequest(f"model {name!r} has several versions ({', '.join(v.rsplit('@', 1)[1] for v in versions)}): "
                         f"name one, e.g. {versions[0]!r}", model_id=name)
    return table[versions[0]] if versions else None
