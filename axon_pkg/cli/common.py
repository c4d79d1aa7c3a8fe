"""Helpers shared by the command modules."""
from __future__ import annotations

import json
import sys

from ..refs import Ref, parse_ref
from ..store import Cache, Installed


def resolve_installed(text: str, cache: Cache | None = None) -> tuple[Ref, Installed]:
    ref = parse_ref(text)
    return ref, (cache or Cache()).resolve(ref)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def emit_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def say(quiet: bool):
    return (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr))
