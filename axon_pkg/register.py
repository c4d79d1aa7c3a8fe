"""Handing an installed package to the MLOS core: ``POST /v1/models/register`` with what the
original Axon posts (model_id, name, framework, execution_format, path, description,
manifest_path)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from .errors import CoreError
from .store import Installed


def register_body(pkg: Installed, model_id: str) -> dict:
    spec = pkg.manifest.get("spec") or {}
    meta = pkg.manifest.get("metadata") or {}
    return {
        "model_id": model_id,
        "name": meta.get("name") or pkg.repo,
        "framework": (spec.get("framework") or {}).get("name", ""),
        "execution_format": (spec.get("format") or {}).get("execution_format", ""),
        "path": str(pkg.path),
        "description": meta.get("description", ""),
        "manifest_path": str(pkg.path / "manifest.yaml"),
    }


def register(pkg: Installed, model_id: str, endpoint: str, timeout: float = 300, api_key: str = "") -> dict:
    body = json.dumps(register_body(pkg, model_id)).encode()
    url = endpoint.rstrip("/") + "/v1/models/register"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")
        try:
            message = json.loads(text).get("message") or text
        except ValueError:
            message = text
        hint = ("the core asks for an API key: give --api-key, set MLOS_API_KEY, or axon-py config set mlos.api_key"
                if e.code == 401 else None)
        raise CoreError(f"MLOS core refused the registration (HTTP {e.code}): {message}", hint=hint) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CoreError(f"cannot reach the MLOS core at {endpoint}: {reason}",
                        hint="start it (make run) or set MLOS_CORE_ENDPOINT / axon-py config set mlos.endpoint") from None
