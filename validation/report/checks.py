"""The seeds' warning signs, found in the metrics instead of by a reader's eye.

Each sign is ``{"severity", "title", "items"}``; severity orders them: ``bug`` (the numbers
themselves cannot be right), ``error`` (something failed), ``warn`` (something is missing or
doubtful), ``info`` (read the figures with this in mind).
"""
from __future__ import annotations

from ..results import PHASES
from .format import is_num, label, ms

SEVERITY_ORDER = ("bug", "error", "warn", "info")


def _zero_timings(models: list[dict], timings: dict, many: bool) -> list[str]:
    # A phase that ran cannot take 0 ms: the clock was never started or the value was lost.
    out = []
    for m in models:
        for p, ph in m["phases"].items():
            if ph["status"] != "skipped" and ph["time_ms"] == 0:
                out.append(f"{label(m, many)}: {p} is {ph['status']} in 0 ms")
            lat = ph.get("latency_ms") or {}
            if is_num(lat.get("value")) and lat["value"] == 0:
                out.append(f"{label(m, many)}: {p} latency median is 0 ms")
    for key, value in sorted(timings.items()):
        if key.endswith("_ms") and is_num(value) and value == 0:
            out.append(f"timings.{key} is 0 ms")
    return out


def _timeouts(models: list[dict], many: bool) -> list[str]:
    return [f"{label(m, many)}: {p} timed out after {ms(ph['time_ms'])}"
            + (f": {ph['error']}" if ph.get("error") else "")
            for m in models for p, ph in m["phases"].items() if ph["status"] == "timeout"]


def _failures_by_phase(models: list[dict], many: bool) -> list[dict]:
    order = list(PHASES) + sorted({p for m in models for p in m["phases"]} - set(PHASES))
    signs = []
    for p in order:
        items = [f"{label(m, many)}: {m['phases'][p].get('error') or 'failed, no error text recorded'}"
                 for m in models if p in m["phases"] and m["phases"][p]["status"] == "failed"]
        if items:
            signs.append({"severity": "error", "title": f"{len(items)} failure(s) in phase {p}",
                          "items": items})
    return signs


def _parity(models: list[dict], many: bool) -> list[str]:
    out = []
    for m in models:
        for p, ph in m["phases"].items():
            par = ph.get("parity") or {}
            if par.get("passed") is False and par.get("measure"):
                out.append(f"{label(m, many)}: {p} differs from {par.get('reference')}: {par['measure']}")
            elif par.get("passed") is False:
                out.append(f"{label(m, many)}: {p} differs from {par.get('reference')}: max |diff| "
                           f"{par.get('max_abs_diff')} > tolerance {par.get('tolerance')}")
    return out


def _comparison(comparison: dict | None, dirs: list[str]) -> list[dict]:
    if comparison is None or not comparison.get("rows"):
        why = ("no kernel-comparison.json in " + ", ".join(dirs)) if comparison is None \
            else "kernel-comparison.json has no rows"
        return [{"severity": "warn", "title": "Kernel vs userspace comparison missing",
                 "items": [f"{why}: the kernel path was not measured against userspace"]}]
    if any(r.get("emulated") for r in comparison["rows"]) or comparison.get("emulated"):
        return [{"severity": "info", "title": "Kernel comparison is emulated",
                 "items": ["measured inside a qemu TCG guest: compare the ratios, not the milliseconds"]}]
    return []


def _not_run(summary: dict) -> list[dict]:
    # The runner records what it left out (skipped_modes, skipped_models: name -> why) beside the
    # counters; a mode that never ran is as important as one that failed.
    signs = []
    modes, models = summary.get("skipped_modes"), summary.get("skipped_models")
    if isinstance(modes, dict) and modes:
        signs.append({"severity": "warn", "title": f"{len(modes)} mode(s) not run",
                      "items": [f"{mode}: {why}" for mode, why in modes.items()]})
    if isinstance(models, dict) and models:
        signs.append({"severity": "info", "title": f"{len(models)} model(s) of the suite not run",
                      "items": [f"{name}: {why}" for name, why in models.items()]})
    return signs


def warning_signs(summary: dict, comparison: dict | None, dirs: list[str]) -> list[dict]:
    models = summary["models"]
    many = len(summary.get("runs") or []) > 1
    signs: list[dict] = []
    if zero := _zero_timings(models, summary.get("timings") or {}, many):
        signs.append({"severity": "bug", "title": "0 ms timings (a data bug: a phase that ran took time)",
                      "items": zero})
    if timeouts := _timeouts(models, many):
        signs.append({"severity": "error", "title": f"{len(timeouts)} timeout(s)", "items": timeouts})
    signs += _failures_by_phase(models, many)
    if parity := _parity(models, many):
        signs.append({"severity": "error", "title": f"{len(parity)} parity failure(s)", "items": parity})
    if not models:
        signs.append({"severity": "warn", "title": "No model results",
                      "items": ["the run recorded no model: every per-model section is empty"]})
    signs += _not_run(summary)
    signs += _comparison(comparison, dirs)
    return sorted(signs, key=lambda s: SEVERITY_ORDER.index(s["severity"]))
