"""``--apply``: put the best configuration to use.

- ``core``: on a running core, the model is registered again with the best options. A model
  registered under that id already is unregistered first (the core waits for its requests in
  flight), since registering an id again keeps its first options. Then the core is asked what it
  now serves, and the answer must show the new options.
- ``manifest``: the options go into the package's ``manifest.yaml`` as ``x-mlos.runtime``
  (validated against the package schema and written through temp file, fsync and rename by
  axon_pkg), where a core reads them whenever the package is registered.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from .errors import TuneError


class ApplyError(RuntimeError):
    pass


def _call(core: str, method: str, path: str, api_key: str | None, body=None, timeout: float = 600):
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(core.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read().decode("utf-8", "replace")
        try:
            answer = json.loads(text)
        except ValueError:
            answer = text
        return e.code, answer


def _message(answer) -> str:
    if isinstance(answer, dict):
        err = answer.get("error")
        return str(answer.get("message") or (err.get("message") if isinstance(err, dict) else err) or answer)[:500]
    return str(answer)[:500]


def check_core(core: str, api_key: str | None) -> None:
    """Before tuning: the core --apply will use answers, and takes the key (a tuning of half an
    hour should not end on a typo in --core)."""
    if not core.startswith(("http://", "https://")):
        raise TuneError(f"--core {core!r}: expected a URL such as http://127.0.0.1:8080")
    try:
        status, answer = _call(core, "GET", "/v1/models", api_key, timeout=10)
    except (urllib.error.URLError, OSError) as e:
        raise TuneError(f"--apply: cannot reach the core at {core}: {getattr(e, 'reason', e)} (start it, or give "
                        "--core)") from None
    if status == 401:
        raise TuneError(f"--apply: the core at {core} asks for an API key: give --api-key or set MLOS_API_KEY")
    if status != 200:
        raise TuneError(f"--apply: the core at {core} answered {status}: {_message(answer)}")


def apply_to_core(core: str, api_key: str | None, results: dict) -> str:
    t, best = results["tuning"], results["best"]
    model_id, quoted = t["model_id"], quote(t["model_id"], safe="")
    try:
        status, answer = _call(core, "GET", f"/v1/models/{quoted}", api_key)
        if status == 200:
            status, answer = _call(core, "DELETE", f"/v1/models/{quoted}", api_key)
            if status != 200:
                raise ApplyError(f"unregistering {model_id} to register it again: HTTP {status}: {_message(answer)}")
        elif status != 404:
            raise ApplyError(f"looking up {model_id}: HTTP {status}: {_message(answer)}")
        body = {"model_id": model_id, "path": t["model_path"], "options": best["options"]}
        status, answer = _call(core, "POST", "/v1/models/register", api_key, body)
        if status != 200:
            raise ApplyError(f"registering {model_id} with {best['options']}: HTTP {status}: {_message(answer)}")
        status, answer = _call(core, "GET", f"/v1/models/{quoted}", api_key)
    except (urllib.error.URLError, OSError) as e:
        raise ApplyError(f"the core at {core}: {getattr(e, 'reason', e)}") from None
    in_effect = (answer or {}).get("options") if status == 200 else None
    if in_effect is None or any(in_effect.get(k) != v for k, v in best["options"].items()):
        raise ApplyError(f"the core at {core} does not report the new options for {model_id}: {answer}")
    batching = (answer.get("batching") or {})
    extra = f"; batching {'on' if batching.get('enabled') else 'off'} ({batching.get('reason')})" if batching else ""
    return (f"mlos-tune: applied to {core}: {model_id} registered with {json.dumps(best['options'])}{extra}; "
            f"clients: concurrency {best['concurrency']}")


def apply_to_manifest(package_dir: Path, results: dict) -> str:
    from axon_pkg.errors import AxonError
    from axon_pkg.manifest import read_manifest, write_manifest

    best = results["best"]
    try:
        manifest = read_manifest(package_dir)
        ext = manifest.setdefault("x-mlos", {})
        ext["runtime"] = {**(ext.get("runtime") or {}), **best["options"]}
        ext["tuned_by"] = {"tool": "mlos-tune", "objective": results["tuning"]["objective"],
                           "at": results.get("updated_at"), "verdict": best["verdict_vs_default"]}
        path = write_manifest(package_dir, manifest)
    except (AxonError, OSError) as e:
        raise ApplyError(f"{package_dir}: {e}") from None
    return f"mlos-tune: applied to {path}: x-mlos.runtime {json.dumps(ext['runtime'])}"
