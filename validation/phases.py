"""The four phases of one model, as the seeds define them: install, register, inference small,
inference large. Each returns a ``PhaseResult`` with its status, wall time and the real error text
(what axon-py or the core said), never a guess.

install runs ``python -m axon_pkg install <axon_id> --json`` in a subprocess: its timeout can be
enforced, and huggingface_hub there reads ``HF_ENDPOINT`` (the local hub) at import as it should.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from .core_proc import CoreServer, error_text
from .results import PhaseResult


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _tail(text: str, limit: int = 800) -> str:
    lines = [ln.strip() for ln in (text or "").strip().splitlines() if ln.strip()]
    return " | ".join(lines[-4:])[-limit:] or "(no output)"


def core_model_id(axon_id: str) -> str:
    """The id the model is registered under: the seed's axon id, a GGUF selector as its version
    (``hf/org/repo:Q4_K_M@latest`` -> ``hf/org/repo@Q4_K_M``)."""
    from axon_pkg.refs import parse_ref

    ref = parse_ref(axon_id)
    return f"{ref.namespace}/{ref.repo}@{ref.selector or ref.revision}"


def install(spec, env: dict, timeout: float) -> tuple[PhaseResult, dict | None]:
    """axon-py install from the hub: download, convert, package, each timed by axon-py itself."""
    cmd = [sys.executable, "-m", "axon_pkg", "install", spec.axon_id, "--json", "--quiet"]
    if spec.format in ("onnx", "gguf"):
        cmd += ["-f", spec.format]
    if spec.model_file and spec.format == "gguf" and ":" not in spec.axon_id.split("/")[-1]:
        cmd += ["--file", spec.model_file]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        return PhaseResult("timeout", _ms(time.perf_counter() - t0),
                           f"axon-py install did not finish in {timeout:g} s (install_timeout)"), None
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        return PhaseResult("failed", _ms(elapsed), f"axon-py install exited {proc.returncode}: {_tail(proc.stderr)}"), None
    try:
        out = json.loads(proc.stdout[proc.stdout.index("{"):])   # axon-py prints one JSON document
    except ValueError:
        return PhaseResult("failed", _ms(elapsed), f"axon-py install printed no JSON result: {_tail(proc.stdout)}"), None
    t = out.get("timings_s") or {}
    conv = out.get("conversion") or {}
    # a step axon-py did not run (no conversion) is None, not 0 ms: the report flags 0 ms as a data bug
    details = {f"{k}_ms": (_ms(t[f"{k}_s"]) if t.get(f"{k}_s") is not None else None)
               for k in ("download", "convert", "package")}
    details.update({"axon_total_ms": _ms(t.get("total_s", 0.0)),
               "format": out.get("format"), "package": out.get("package"), "package_bytes": out.get("package_bytes"),
               "source_bytes": out.get("source_bytes"), "reused": out.get("reused")})
    if conv:
        details["conversion"] = {k: conv.get(k) for k in ("converted", "task", "opset", "parity_max_abs_diff",
                                                           "tool_version", "reason")}
    details["revision"] = _revision(out.get("path"))
    result = PhaseResult("success", _ms(elapsed), None, details)
    if conv and not conv.get("converted") and spec.format != "safetensors":
        # the package keeps SafeTensors, which the core lists but cannot run: say so here, where it happened
        result.details["warning"] = f"not converted to ONNX: {conv.get('reason')}"
    return result, out


def _revision(package: str | None) -> str | None:
    """The hub commit the package was made from (its manifest's source), which a comparison with
    another run needs: the same name at another revision is another model."""
    if not package:
        return None
    from axon_pkg.errors import AxonError
    from axon_pkg.manifest import read_manifest

    try:
        source = (read_manifest(Path(package)).get("x-mlos") or {}).get("source") or {}
    except (OSError, AxonError):
        return None
    return source.get("resolved_commit")


def register(core: CoreServer, model_id: str, package_path: str, timeout: float) -> tuple[PhaseResult, dict | None]:
    """POST /v1/models/register with the body axon-py sends; the core verifies, detects and loads.
    Then the model's metadata (inputs/outputs) is read, which the inference phases build on."""
    from axon_pkg.manifest import read_manifest
    from axon_pkg.register import register_body
    from axon_pkg.store import Installed

    path = Path(package_path)
    pkg = Installed("hf", model_id, "", path, read_manifest(path))
    t0 = time.perf_counter()
    try:
        status, answer = core.call("POST", "/v1/models/register", register_body(pkg, model_id), timeout=timeout)
    except OSError as e:
        return PhaseResult("failed", _ms(time.perf_counter() - t0), f"the core did not answer: {e}"), None
    elapsed = time.perf_counter() - t0
    if status != 200:
        return PhaseResult("failed", _ms(elapsed), error_text(status, answer)), None
    state = answer.get("state") if isinstance(answer, dict) else None
    if state not in (None, "ready"):
        info = core.call("GET", f"/v1/models/{quote(model_id, safe='')}", timeout=30)[1]
        why = info.get("error") or info.get("reason") if isinstance(info, dict) else info
        return PhaseResult("failed", _ms(elapsed), f"registered but {state}: {why}",
                           {"state": state}), None
    status, meta = core.call("GET", f"/v2/models/{quote(model_id, safe='')}", timeout=30)
    details = {"plugin_id": answer.get("plugin_id"), "state": state, "message": answer.get("message")}
    if status == 200 and isinstance(meta, dict):
        details["inputs"] = [f"{i['name']} {i['datatype']} {i['shape']}" for i in meta.get("inputs") or []]
        details["outputs"] = [f"{o['name']} {o['datatype']} {o['shape']}" for o in meta.get("outputs") or []]
    return PhaseResult("success", _ms(elapsed), None, details), (meta if status == 200 else None)
