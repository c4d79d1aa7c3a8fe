"""From a loaded run (validation.metrics.load_run / merge_runs) to what each report section shows.

Only reads: every figure here was measured and written by the runner; nothing is re-measured or
re-estimated. A section without data gets ``missing``: the sentence saying why it is empty.
"""
from __future__ import annotations

from collections import Counter

from ..results import CATEGORIES, PHASES
from . import svg
from . import releases
from .checks import SEVERITY_ORDER, warning_signs
from .format import NOT_MEASURED, interval, is_num, label, ms, num, pct, size, speedup

BLUE, AMBER, GREEN, VIOLET, SKY, ORANGE, GREY = ("#2563eb", "#d97706", "#059669", "#7c3aed",
                                                 "#0891b2", "#ea580c", "#6b7280")
RUN_COLOURS = (BLUE, GREEN, VIOLET, ORANGE, SKY, AMBER)
SETUP_PARTS = (("download", SKY), ("convert", VIOLET), ("package", GREEN),
               ("install, other", GREY), ("register", ORANGE))
VERDICT_TONE = {"kernel faster": "good", "userspace faster": "bad", "no significant difference": "neutral"}


def _why_no_latest(run: dict, what: str) -> str:
    if run.get("without_latest"):
        return f"{NOT_MEASURED}: {what} (no metrics/latest.json: {', '.join(run['without_latest'])})"
    return f"{NOT_MEASURED}: metrics/latest.json records no {what}"


def summary_cards(s: dict) -> list[dict]:
    total, ok = s["total_models"], s["successful_models"]
    rate = ok / total * 100 if total else None
    run_ms = (s.get("timings") or {}).get("run_total_ms")
    phase_sum = sum(m["total_time_ms"] for m in s["models"])
    inf_total, inf_ok = s["total_inferences"], s["successful_inferences"]
    modes = Counter(m["mode"] for m in s["models"])
    return [
        {"label": "Success rate", "value": pct(rate) if total else "—",
         "sub": (f"{ok} success · {s['partial_models']} partial · {s['failed_models']} failed" if total
                 else f"{NOT_MEASURED}: no model results"),
         "tone": "neutral" if rate is None else ("good" if rate == 100 else ("bad" if rate == 0 else "warn"))},
        {"label": "Total duration", "value": ms(run_ms if is_num(run_ms) else phase_sum),
         "sub": "wall time of the run" if is_num(run_ms)
         else "sum of the models' phases (no run_total_ms recorded)", "tone": "neutral"},
        {"label": "Inferences", "value": f"{inf_ok} / {inf_total}",
         "sub": f"{inf_ok / inf_total * 100:.1f} % successful" if inf_total
         else f"{NOT_MEASURED}: no inference phase ran",
         "tone": "neutral" if not inf_total else ("good" if inf_ok == inf_total else "warn")},
        {"label": "Models", "value": str(total),
         "sub": " · ".join(f"{n} {mode}" for mode, n in sorted(modes.items())) or "none",
         "tone": "neutral"},
    ]


def plain(v) -> str:
    """Any JSON value as one line: nested objects as "key: value" pairs, empty parts left out."""
    if isinstance(v, dict):
        return ", ".join(f"{k}: {plain(x)}" for k, x in v.items() if x not in (None, "", [], {})) or "—"
    if isinstance(v, list):
        return ", ".join(map(plain, v)) or "none"
    return "—" if v is None else str(v)


def key_values(obj: dict, formats: dict) -> list[tuple[str, str]]:
    """Known keys first in their order, then the rest (a runner may record more) by name."""
    rows = []
    for key in list(formats) + sorted(set(obj) - set(formats) - {"per_run"}):
        if key in obj:
            f = formats.get(key) or (size if key.endswith("_bytes") else plain)
            rows.append((key, f(obj[key])))
    return rows


def _gpus(gpus) -> str:
    if not gpus:
        return "none"
    return ", ".join(g if isinstance(g, str) else str(g.get("name", g)) for g in gpus)


HARDWARE_FORMATS = {"os": None, "kernel": None, "cpu_model": None, "cores": None, "threads": None,
                    "ram_bytes": size, "gpus": _gpus, "disk_free_bytes": size}


def per_run_table(obj: dict, formats: dict) -> dict | None:
    """Runs that disagree (merged runs): one column per run."""
    per = obj.get("per_run")
    if not per:
        return None
    keys = sorted({k for v in per.values() for k in v if k != "per_run"}, key=lambda k: (k not in formats, k))
    return {"runs": list(per), "rows": [(k, [dict(key_values(v, formats)).get(k, "—") for v in per.values()])
                                        for k in keys]}


def resources(run: dict) -> dict:
    res = run["summary"].get("resources") or {}
    per = res.get("per_run") or {"": res}
    table = []
    for run_label, r in per.items():         # runs that differ each get their rows
        idle, load = r.get("idle") or {}, r.get("load") or {}
        table += [(f"CPU {run_label}".strip(), pct(idle.get("cpu_percent")), pct(load.get("cpu_percent_peak"))),
                  (f"RSS {run_label}".strip(), size(idle.get("rss_bytes")), size(load.get("rss_peak_bytes")))]
    out = {"table": table, "charts": [], "charts_missing": None, "missing": None, "load_missing": None}
    if not any(is_num((r.get("load") or {}).get("cpu_percent_peak")) for r in per.values()):
        ran = any(m["phases"][p]["status"] != "skipped" for m in run["summary"]["models"]
                  for p in ("inference_small", "inference_large"))
        out["load_missing"] = f"{NOT_MEASURED}: no resource sample was taken under load " + (
            "(the inference phases were shorter than the sampling interval)" if ran else "(no inference phase ran)")
    if not res:
        out["missing"] = _why_no_latest(run, "resource usage")
        return out
    for key, name, unit, scale, idle_key in (("cpu_percent", "CPU", "CPU %", 1, "cpu_percent"),
                                             ("rss_bytes", "RSS", "RSS (MiB)", 1 << 20, "rss_bytes")):
        series = []
        for i, (run_label, r) in enumerate(per.items()):
            pts = [(s["t"], s[key] / scale) for s in r.get("samples") or [] if is_num(s.get(key))]
            if pts:
                series.append({"name": f"{name} {run_label}".strip(), "points": pts,
                               "colour": RUN_COLOURS[i % len(RUN_COLOURS)]})
                base = (r.get("idle") or {}).get(idle_key)
                if is_num(base):
                    series.append({"name": f"idle baseline {run_label}".strip(), "dashed": True,
                                   "colour": GREY, "points": [(0, base / scale), (pts[-1][0], base / scale)]})
        if series:
            out["charts"].append(svg.line_chart(series, title=f"{name} over time", x_label="time (s)",
                                                y_label=unit, width=520))
    if not out["charts"]:
        out["charts_missing"] = f"{NOT_MEASURED}: resources.samples is empty (no CPU/RSS sampled over time)"
    return out


def setup(run: dict, many: bool) -> dict:
    models, timings = run["summary"]["models"], run["summary"].get("timings") or {}
    rows, groups, has_details = [], [], False
    for m in models:
        inst, reg = m["phases"]["install"], m["phases"]["register"]
        d = inst.get("details") or {}
        parts = {k: d.get(f"{k}_ms") for k in ("download", "convert", "package")}
        has_details |= any(is_num(v) for v in parts.values())
        known = sum(v for v in parts.values() if is_num(v))
        parts["install, other"] = max(inst["time_ms"] - known, 0.0) if inst["status"] != "skipped" else None
        parts["register"] = reg["time_ms"] if reg["status"] != "skipped" else None
        rows.append({"label": label(m, many), "status": inst["status"], "download": ms(parts["download"]),
                     "convert": ms(parts["convert"]), "package": ms(parts["package"]),
                     "install": ms(inst["time_ms"]), "register": _phase_cell(reg)[1], "reg_status": reg["status"],
                     "reg_bug": _phase_cell(reg)[2]})
        groups.append({"label": label(m, many), "values": parts})
    cards = [("Core start-up", ms(timings.get("core_startup_ms"))),
             ("Install, all models", ms(timings.get("install_total_ms"))),
             ("Run, total", ms(timings.get("run_total_ms")))]
    return {"rows": rows, "cards": cards,
            "chart": svg.stacked_bars(groups, list(SETUP_PARTS), title="Install and register time per model",
                                      x_label="time (ms)", fmt=ms) if groups else None,
            "details_missing": None if has_details or not rows else
            f"{NOT_MEASURED}: no download/convert/package split in phases.install.details; "
            "the chart shows install totals",
            "timings_missing": None if timings else _why_no_latest(run, "core start-up or total timings"),
            "missing": None if rows else f"{NOT_MEASURED}: no model results"}


def _bar(ph: dict) -> dict | None:
    lat = ph.get("latency_ms")
    if not lat or not is_num(lat.get("value")):
        return None
    return {"value": lat["value"], "lo": lat.get("ci_low"), "hi": lat.get("ci_high")}


def latency(run: dict, many: bool) -> dict:
    models = run["summary"]["models"]
    groups, rows = [], []
    for m in models:
        small, large = m["phases"]["inference_small"], m["phases"]["inference_large"]
        groups.append({"label": label(m, many), "bars": {"small": _bar(small), "large": _bar(large)}})
        rows.append({"label": label(m, many), "cells": [
            (ph["status"], interval(ph.get("latency_ms"), "ms"), ms(ph.get("p90_ms")), ms(ph.get("p99_ms")),
             f"{ph['repetitions']} (+{ph.get('warmup', 0)} warm-up)" if ph.get("repetitions") else "—")
            for ph in (small, large)]})
    values = [b[k] for g in groups for b in g["bars"].values() if b for k in ("value",) if b[k] > 0]
    if not values:
        statuses = Counter(m["phases"][p]["status"] for m in models for p in ("inference_small", "inference_large"))
        why = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "no model results"
        return {"chart": None, "rows": rows,
                "missing": f"{NOT_MEASURED}: no inference phase recorded a latency ({why})"}
    log = max(values) / min(values) > 50
    chart = svg.bar_chart(groups, [("small", BLUE), ("large", AMBER)], title="Inference latency per model",
                          x_label="median latency per request (ms), whiskers: 95% CI", fmt=ms, log=log)
    return {"chart": chart, "rows": rows, "missing": None}


def categories(models: list[dict], many: bool) -> list[dict]:
    names = list(CATEGORIES) + sorted({m["category"] for m in models} - set(CATEGORIES))
    cards = []
    for cat in names:
        ms_ = [m for m in models if m["category"] == cat]
        counts = Counter(m["status"] for m in ms_)
        tone = ("neutral" if not ms_ else "good" if counts["success"] == len(ms_)
                else "bad" if counts["failed"] == len(ms_) else "warn")
        cards.append({"name": cat, "tone": tone, "counts": [(s, counts[s]) for s in ("success", "partial", "failed")],
                      "models": [(label(m, many), m["status"]) for m in ms_],
                      "missing": None if ms_ else f"{NOT_MEASURED}: no {cat} model in this run's matrix"})
    return cards


def comparison(run: dict) -> dict:
    doc = run.get("comparison")
    if doc is None or not doc.get("rows"):
        why = "kernel-comparison.json has no rows" if doc else f"no kernel-comparison.json in {', '.join(run['dirs'])}"
        return {"rows": [], "missing": f"{NOT_MEASURED}: {why}", "emulated": False, "machine": ""}
    rows = []
    for r in doc["rows"]:
        unit = "ms" if "ms" in r["metric"] else ""
        rows.append({"model": r["model"], "scenario": r["scenario"], "metric": r["metric"],
                     "kernel": interval(r["kernel"], unit), "userspace": interval(r["userspace"], unit),
                     "delta": f"{r['delta']:+.3g} {unit}".strip(), "speedup": speedup(r["speedup"]),
                     "verdict": r["verdict"], "tone": VERDICT_TONE.get(r["verdict"], "neutral"),
                     "emulated": r["emulated"], "run": r.get("run", "")})
    machine = doc.get("machine")
    machine = machine if isinstance(machine, str) else ", ".join(f"{k}: {v}" for k, v in (machine or {}).items())
    return {"rows": rows, "missing": None, "emulated": bool(doc.get("emulated")), "machine": machine}


def _phase_cell(ph: dict) -> tuple[str, str, bool]:
    """(status, time, is a 0 ms data bug); a skipped phase has no time to show."""
    skipped = ph["status"] == "skipped"
    return ph["status"], "—" if skipped else ms(ph["time_ms"]), not skipped and ph["time_ms"] == 0


def models_table(models: list[dict], many: bool) -> list[dict]:
    return [{"label": label(m, many), "category": m["category"], "format": m["format"], "suite": m["suite"],
             "status": m["status"], "total": ms(m["total_time_ms"]),
             "phases": [_phase_cell(m["phases"][p]) for p in PHASES],
             "error": next((m["phases"][p]["error"] for p in PHASES if m["phases"][p].get("error")), "")}
            for m in models]


def build(run: dict) -> dict:
    s = run["summary"]
    many = len(s.get("runs") or []) > 1
    versions, hardware = s.get("versions") or {}, s.get("hardware") or {}
    return {
        "generated_at": s["generated_at"], "runs": s.get("runs") or [], "dirs": run["dirs"],
        "notes": run.get("notes", []), "schema_version": s["schema_version"],
        "cards": summary_cards(s),
        "warnings": sorted(warning_signs(s, run.get("comparison"), run["dirs"])
                           + releases.warnings(run.get("baseline_comparison")),
                           key=lambda w: SEVERITY_ORDER.index(w["severity"])),
        "versions": {"rows": key_values(versions, {}), "per_run": per_run_table(versions, {}),
                     "missing": None if versions else _why_no_latest(run, "component versions")},
        "hardware": {"rows": key_values(hardware, HARDWARE_FORMATS),
                     "per_run": per_run_table(hardware, HARDWARE_FORMATS),
                     "missing": None if hardware else _why_no_latest(run, "hardware")},
        "resources": resources(run), "setup": setup(run, many), "latency": latency(run, many),
        "categories": categories(s["models"], many), "comparison": comparison(run),
        "baseline": releases.baseline_view(run.get("baseline_comparison"), run["dirs"]),
        "history": releases.history_view(run.get("history"), run.get("history_missing")),
        "quantisation": releases.quantisation_view(run.get("quantisation"), run["dirs"]),
        "models": models_table(s["models"], many), "phases": PHASES, "num": num,
    }
