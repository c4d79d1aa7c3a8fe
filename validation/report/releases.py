"""The report's sections across releases and variants: the comparison with a baseline
(comparison.json), the history of past releases (validation.history), and quantised variants
against their parent (quantisation.json). Like view.py, they only read what the runs wrote.
"""
from __future__ import annotations

from pathlib import Path

from .. import history
from ..metrics import read_document
from .format import NOT_MEASURED, interval, ms, num, size, speedup
from .svg_points import MARKS, release_chart, scatter

TONE = {"regression": "bad", "newly failing": "bad", "still failing": "bad", "not comparable": "warn",
        "fixed": "good", "improvement": "good", "unchanged": "neutral"}
SMALL, LARGE = "#2563eb", "#d97706"
VARIANT_COLOURS = (("int8-dynamic", "#2563eb"), ("int8-static", "#7c3aed"), ("fp16", "#059669"),
                   ("Q8_0", "#ea580c"), ("Q4_K_M", "#dc2626"))


def _ratio(m: dict | None) -> str:
    r = (m or {}).get("ratio")
    if not r:
        return "—"
    if r.get("ci_low") is None:
        return f"{r['value']:.3g}×"
    return f"{r['value']:.3g}× [{r['ci_low']:.3g}, {r['ci_high']:.3g}]"


def baseline_view(doc: dict | None, dirs: list[str]) -> dict:
    if not doc:
        return {"missing": f"{NOT_MEASURED}: no comparison.json in {', '.join(dirs)} (python -m validation run "
                           "--baseline RUN, or python -m validation compare BASELINE CANDIDATE)"}
    rows = []
    for r in doc["verdicts"]:
        lat = {m["phase"]: m for m in r["metrics"] if m["kind"] == "latency"}
        par = [m for m in r["metrics"] if m["kind"] in ("parity", "cosine", "token_agreement")]
        rows.append({"label": f"{r['model']} ({r['mode']})", "verdict": r["verdict"], "tone": TONE[r["verdict"]],
                     "small": _ratio(lat.get("inference_small")), "large": _ratio(lat.get("inference_large")),
                     "small_tone": TONE.get((lat.get("inference_small") or {}).get("verdict"), "neutral"),
                     "large_tone": TONE.get((lat.get("inference_large") or {}).get("verdict"), "neutral"),
                     "parity": "; ".join(f"{m['name'].split(' ', 1)[1]}: {num(m['baseline'])} → "
                                         f"{num(m['candidate'])}" for m in par
                                         if m["verdict"] != "unchanged") or ("unchanged" if par else "—"),
                     "reasons": r["reasons"][:3]})
    o, b, c = doc["options"], doc["baseline"], doc["candidate"]

    def who(side):
        v = side["versions"]
        return (f"core {v.get('core', '?')} @ {(v.get('git_commit') or '?')[:12]}, {side.get('generated_at') or '?'}"
                + (f", {side['runs']} runs" if side.get("runs", 1) > 1 else ""))

    return {"missing": None, "rows": rows, "baseline": who(b), "candidate": who(c),
            "cards": [{"label": v, "value": n, "tone": TONE[v] if n else "neutral"} for v, n in doc["counts"].items()],
            "method": (f"Latency: median ratio candidate / baseline with {o['level']:.0%} intervals over the whole "
                       f"comparison ({o.get('latency_tests', '?')} tests); a change counts when its interval "
                       f"excludes 1 and it exceeds {o['threshold']:.0%}."),
            "notes": doc["environment"]["notes"]}


def _series_point(p: dict, phase: str) -> dict | None:
    lat = p["latency"].get(phase)
    return {"value": lat["value"], "lo": lat.get("ci_low"), "hi": lat.get("ci_high")} if lat else None


def history_view(series: dict | None, why_missing: str | None) -> dict:
    if not series or not series["models"]:
        return {"missing": f"{NOT_MEASURED}: {why_missing or 'the history holds no run'}"}
    releases = series["releases"]
    charts, table = [], []
    for m in series["models"]:
        label = f"{m['model']} ({m['mode']})"
        pts = m["points"]
        marks = [(p["verdict"], f"{releases[i]}: {p['verdict']}: " + "; ".join(p["reasons"][:2]))
                 for i, p in enumerate(pts)]
        charts.append((label, release_chart(releases, [
            {"name": "small", "colour": SMALL, "points": [_series_point(p, "inference_small") for p in pts]},
            {"name": "large", "colour": LARGE, "points": [_series_point(p, "inference_large") for p in pts]}],
            title=f"{label}: median latency over releases", y_label="ms", marks=marks)))
        cells = []
        for p in pts:
            small, large = p["latency"].get("inference_small"), p["latency"].get("inference_large")
            text = "—" if p["status"] is None else (
                f"{ms((small or {}).get('value'))} / {ms((large or {}).get('value'))}"
                + (f" · parity {num(p['parity'])}" if p["parity"] is not None else ""))
            cells.append({"text": text, "status": p["status"], "verdict": p["verdict"],
                          "tone": TONE.get(p["verdict"], "neutral"), "why": "; ".join(p["reasons"][:2])})
        table.append({"label": label, "cells": cells})
    flagged = sum(1 for m in series["models"] for p in m["points"] if p["verdict"] in ("regression", "newly failing"))
    return {"missing": None, "releases": releases, "charts": charts, "table": table, "flagged": flagged,
            "legend": [(v, MARKS[v][2]) for v in MARKS]}


def _drift_text(d: dict | None) -> str:
    if not d:
        return "—"
    parts = []
    for key, name in (("top1_agreement", "top-1"), ("max_prob_diff", "max Δp"), ("sentence_cosine_min", "sentence cos"),
                      ("cosine_min", "cos min"), ("token_agreement", "tokens"), ("max_abs_diff", "max |Δ|")):
        if d.get(key) is not None:
            parts.append(f"{name} {num(d[key]) if key.endswith('diff') else format(d[key], '.4f')}")
    return ", ".join(parts)


def quantisation_view(doc: dict | None, dirs: list[str]) -> dict:
    if not doc:
        return {"missing": f"{NOT_MEASURED}: no quantisation.json in {', '.join(dirs)} "
                           "(python -m validation run --quantize)"}
    rows, points = [], []
    for r in doc["rows"]:
        sp = r.get("speed")
        head = (r.get("drift") or {}).get("headline")
        rows.append({"model": r["model"], "variant": r["variant"],
                     "recommended": r.get("recommended") and r["status"] == "measured",
                     "method": r["method"] or "—", "why": r.get("why") or "", "status": r["status"],
                     "error": r.get("error") or "",
                     "size": (f"{size(r['bytes'])} ({r['size_ratio']:.2f}×)" if r.get("size_ratio") else size(r.get("bytes"))),
                     "speed": speedup(sp["speedup"]) if sp else "—", "verdict": sp["verdict"] if sp else "",
                     "tone": {"faster": "good", "slower": "bad"}.get(sp["verdict"], "neutral") if sp else "neutral",
                     "variant_time": interval(sp["variant"], "ms" if "ms" in sp["metric"] else "") if sp else "—",
                     "headline": f"{head['name']}: {head['value']:.4f}" if head else "—",
                     "drift": _drift_text(r.get("drift")),
                     "calibration": r.get("calibration")})
        if sp and head:
            s = sp["speedup"]
            points.append({"label": f"{r['model']} {r['variant']}", "group": r["variant"], "x": s["value"],
                           "x_lo": s["ci_low"], "x_hi": s["ci_high"], "y": head["value"]})
    used = [(n, c) for n, c in VARIANT_COLOURS if any(p["group"] == n for p in points)]
    chart = scatter(points, title="Quantised variants: speed against agreement with the parent",
                    x_label="speedup over the parent (model execution), whiskers: 95% CI",
                    y_label="agreement with the parent (1 = identical)", groups=used) if points else None
    d = doc.get("design") or {}
    return {"missing": None, "rows": rows, "chart": chart,
            "chart_missing": None if points else f"{NOT_MEASURED}: no variant was measured (see the table)",
            "method": (f"Each variant against its full-precision parent in the same run and core: {d.get('rounds')} "
                       f"rounds per arm interleaved after a warm-up round, {d.get('requests_per_round')} requests a "
                       "round (tensor models), the median per round; speedup > 1: the variant is faster. Agreement "
                       "on the suite's own inputs (never the calibration ones): top-1 agreement for classifiers, "
                       "the worst (sentence) cosine for embeddings, greedy token agreement for generators.")}


def attach(run: dict, dirs: list, history_dir=None) -> dict:
    """Add to a loaded run what these sections read: comparison.json and quantisation.json from the
    report's --in directories (the runner's --out holds them), and the history's series."""
    for name, kind in (("comparison.json", "baseline_comparison"), ("quantisation.json", "quantisation")):
        found = [Path(d) / name for d in dirs if (Path(d) / name).is_file()]
        run[kind] = read_document(found[0], kind) if found else None
    run["history"], run["history_missing"] = None, "no history directory given (report --history DIR)"
    if history_dir is not None:
        entries = history.load(history_dir)
        run["history"] = history.series(entries, current=run) if entries else None
        run["history_missing"] = None if entries else f"{history_dir} holds no archived run"
    return run


def warnings(doc: dict | None) -> list[dict]:
    """Warning signs from the comparison with the baseline (view.py adds them to the seeds' own)."""
    if not doc:
        return []
    out = []
    for verdict, severity in (("newly failing", "error"), ("regression", "error"), ("not comparable", "warn")):
        rows = [r for r in doc["verdicts"] if r["verdict"] == verdict]
        if rows:
            out.append({"severity": severity, "title": f"{len(rows)} {verdict} against the baseline",
                        "items": [f"{r['model']} ({r['mode']}): " + "; ".join(r["reasons"][:2]) for r in rows]})
    return out
