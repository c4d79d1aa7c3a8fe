"""From results.json to what each section of the report shows. Only reads: every figure was
measured and written by the tuner; a section without data says why it is empty."""
from __future__ import annotations

import json

from validation.report.format import NOT_MEASURED, interval, is_num, num
from validation.report.view import HARDWARE_FORMATS, key_values

from . import charts

TOP_N = 10


def _val(exp: dict, metric: str):
    return ((exp.get("metrics") or {}).get(metric) or {}).get("value")


def _options(exp: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in (exp.get("options") or {}).items()) or "defaults"


def _ratio(cmp: dict | None) -> str:
    if not cmp:
        return "—"
    return f"{cmp['ratio']:.3g}× [{cmp['ci_low']:.3g}, {cmp['ci_high']:.3g}]"


def _tone(verdict: str | None) -> str:
    return {"better": "good", "worse": "bad"}.get(verdict or "", "neutral")


def _rank_key(e: dict, metric: str, higher: bool) -> tuple:
    v = _val(e, metric)
    v = v if v is not None else (float("-inf") if higher else float("inf"))
    return (not e.get("feasible"), e.get("violation") or 0.0, -v if higher else v)


def cards(doc: dict) -> list[dict]:
    best, exps = doc.get("best") or {}, doc["experiments"]
    counts = {s: sum(1 for e in exps if e["status"] == s) for s in ("measured", "failed", "equivalent", "interrupted")}
    infeasible = sum(1 for e in exps if e["status"] == "measured" and not e.get("feasible"))
    vs_d, vs_r = best.get("vs_default"), best.get("vs_runner_up")
    out = [{"label": "Best configuration", "value": best.get("experiment", "—"),
            "sub": (f"{', '.join(f'{k}={v}' for k, v in (best.get('options') or {}).items()) or 'the core defaults'}"
                    f" · client concurrency {best.get('concurrency')}") if best else f"{NOT_MEASURED}: no final round",
            "tone": "good" if best.get("feasible") else ("bad" if best else "neutral")},
           {"label": "Against the default", "value": _ratio(vs_d) if vs_d else ("1×" if best else "—"),
            "sub": best.get("verdict_vs_default", "—"), "tone": _tone((vs_d or {}).get("verdict"))},
           {"label": "Against the runner-up", "value": _ratio(vs_r),
            "sub": best.get("verdict_vs_runner_up", "—"),
            "tone": "warn" if (vs_r or {}).get("verdict") == "no significant difference" else _tone((vs_r or {}).get("verdict"))},
           {"label": "Experiments", "value": str(counts["measured"] + counts["failed"]),
            "sub": f"{counts['measured']} measured ({infeasible} miss an SLO) · {counts['failed']} failed · "
                   f"{counts['equivalent']} equivalent, not re-measured",
            "tone": "warn" if counts["failed"] else "neutral"}]
    return out


def warnings(doc: dict) -> list[dict]:
    out = []
    failed = [e for e in doc["experiments"] if e["status"] == "failed"]
    if failed:
        out.append({"severity": "error", "title": f"{len(failed)} configuration(s) failed and were skipped",
                    "items": [f"{e['id']} ({_options(e)}): {e.get('failure')}: {e.get('reason', '')[:400]}"
                              for e in failed]})
    coarse = [e for e in doc["experiments"] if e.get("note") and e["status"] == "measured"]
    if coarse:
        out.append({"severity": "warn", "title": f"{len(coarse)} configuration(s) with few requests per run",
                    "items": [f"{e['id']}: {e['note']}" for e in coarse]})
    best = doc.get("best") or {}
    if best and not best.get("feasible"):
        out.append({"severity": "error", "title": "No configuration met every SLO",
                    "items": ["the best shown is the one that missed them by least"]})
    if (best.get("vs_runner_up") or {}).get("verdict") == "no significant difference":
        out.append({"severity": "info", "title": "The best and the runner-up are not significantly different",
                    "items": [best.get("verdict_vs_runner_up", ""), f"chosen: {best.get('why', '')}"]})
    if best.get("note"):
        out.append({"severity": "info", "title": "Batching", "items": [best["note"]]})
    cores = ((doc.get("environment") or {}).get("hardware") or {}).get("threads") or 1
    loads = [(s.get("environment") or doc.get("environment") or {}).get("loadavg") for s in doc.get("sessions", [])]
    busy = [la[0] for la in loads + [(doc.get("environment") or {}).get("loadavg")] if la and la[0] > cores]
    if busy:
        out.append({"severity": "warn", "title": "The machine was busy",
                    "items": [f"load average {max(busy):.1f} on {cores} logical CPUs at the start: figures are noisy; "
                              "only the interleaved comparisons (ratios) are to be read"]})
    return out


def tradeoff(doc: dict) -> dict:
    best = (doc.get("best") or {}).get("experiment")
    slo = next((s["bound"] for s in doc["tuning"]["slos"] if s["metric"] == "latency_p99_ms"), None)
    pts = []
    for e in doc["experiments"]:
        x, y = _val(e, "throughput"), _val(e, "latency_p99_ms")
        if e["status"] != "measured" or not is_num(x) or not is_num(y):
            continue
        unit = e["metrics"].get("throughput_unit", "")
        pts.append({"x": x, "y": y, "label": e["id"].replace("exp-", ""), "feasible": e.get("feasible", True),
                    "best": e["id"] == best, "default": e.get("label") == "default",
                    "tip": f"{e['id']}: {_options(e)}, concurrency {e.get('concurrency')}: {num(x)} {unit}, "
                           f"p99 {num(y)} ms"})
    if not pts:
        return {"chart": None, "missing": f"{NOT_MEASURED}: no configuration was measured"}
    unit = next(e["metrics"].get("throughput_unit") for e in doc["experiments"] if e["status"] == "measured")
    front = charts.pareto_front(pts)
    return {"chart": charts.tradeoff(pts, x_label=f"throughput ({unit})", y_label="p99 latency (ms)", slo=slo),
            "front": [p["tip"] for p in front], "missing": None}


def effects(doc: dict) -> dict:
    t = doc["tuning"]
    metric, higher = t["objective_metric"], t["objective"] == "maximize_throughput"
    measured = [e for e in doc["experiments"] if e["status"] == "measured" and _val(e, metric) is not None]
    out = []
    for name, spec in t["space"].items():
        values = sorted({_param(e, name) for e in measured}, key=lambda v: (v == "default", str(type(v)), v))
        if len(values) < 2:
            continue
        groups = []
        for v in values:
            pts = []
            for e in measured:
                if _param(e, name) != v:
                    continue
                iv = e["metrics"][metric]
                pts.append({"y": iv["value"], "lo": iv.get("ci_low"), "hi": iv.get("ci_high"),
                            "tip": f"{e['id']} ({_options(e)}, concurrency {e.get('concurrency')}): {num(iv['value'])}"})
            groups.append({"value": v, "points": pts})
        out.append(charts.effect(name, groups, y_label=metric.replace("_", " "), higher_is_better=higher))
    return {"charts": out, "missing": None if out else
            f"{NOT_MEASURED}: no parameter took two values among the measured configurations"}


def _param(e: dict, name: str):
    """A parameter's value in an experiment, the server's default written out where known."""
    return (e.get("explicit") or {}).get(name, e["config"].get(name, "default"))


def _slo_cells(e: dict) -> list[tuple[str, str]]:
    return [(name, ("met" if v["met"] else "missed") + ("" if v.get("confident") or not v["met"] else " (within CI)"))
            for name, v in (e.get("slo") or {}).items()]


def top(doc: dict) -> list[dict]:
    t = doc["tuning"]
    metric, higher = t["objective_metric"], t["objective"] == "maximize_throughput"
    measured = sorted((e for e in doc["experiments"] if e["status"] == "measured"),
                      key=lambda e: _rank_key(e, metric, higher))
    best = (doc.get("best") or {}).get("experiment")
    return [{"id": e["id"], "best": e["id"] == best, "default": e.get("label") == "default", "options": _options(e),
             "concurrency": e.get("concurrency"),
             "objective": None if metric == "throughput" else interval(e["metrics"].get(metric)),
             "throughput": interval(e["metrics"].get("throughput")),
             "p50": interval(e["metrics"].get("latency_p50_ms"), "ms"),
             "p99": interval(e["metrics"].get("latency_p99_ms"), "ms"),
             "avg_batch": num((e.get("server") or {}).get("avg_batch")),
             "slo": _slo_cells(e), "feasible": e.get("feasible"), "decision": e.get("decision", "")}
            for e in measured[:TOP_N]]


def final(doc: dict) -> list[dict]:
    rows = []
    for c in doc.get("final") or []:
        m = c.get("metrics") or {}
        cmp = c.get("vs_point_best")
        rows.append({"role": c["role"], "source": c.get("source") or "—", "options": _options(c),
                     "concurrency": c.get("concurrency"), "status": c.get("status"),
                     "throughput": interval(m.get("throughput")), "p50": interval(m.get("latency_p50_ms"), "ms"),
                     "p99": interval(m.get("latency_p99_ms"), "ms"), "ttft": interval(m.get("ttft_p50_ms"), "ms"),
                     "vs": _ratio(cmp) + (f" {cmp['verdict']}" if cmp else " (the point-best)"),
                     "reason": c.get("reason", ""), "slo": _slo_cells(c)})
    return rows


def experiments(doc: dict) -> list[dict]:
    return [{"id": e["id"], "label": e.get("label") or "", "status": e["status"], "options": _options(e),
             "concurrency": e.get("concurrency"), "duration": f"{e['duration_s']:.0f} s" if e.get("duration_s") else "—",
             "note": e.get("reason") or e.get("decision") or "",
             "batching": ("on" if ((e.get("server") or {}).get("batching") or {}).get("enabled") else "off")
             if (e.get("server") or {}).get("batching") else "—"}
            for e in doc["experiments"]]


def build(doc: dict) -> dict:
    t, env = doc["tuning"], doc.get("environment") or {}
    w = t["workload"]
    load = w["load"]
    how = (f"closed loop, concurrency {load['concurrency']}" if load["mode"] == "closed"
           else f"open loop, {load['rate']:g} requests/s (Poisson)")
    what = (f"{w['api']} requests, about {w['prompt_tokens']} prompt tokens, {w['output_tokens']} output tokens"
            if w["kind"] == "llm" else ("a given request body" if w.get("body") else "tensors"))
    return {
        "t": t, "doc": doc, "workload": f"{what}; {how}; {load['warmup_s']:g} s warm-up + {load['duration_s']:g} s "
                                        f"measured per run",
        "slos": ", ".join(f"{s['name']} {s['kind']} {s['bound']:g}" for s in t["slos"]) or "none",
        "space": json.dumps(t["space"]), "cards": cards(doc), "warnings": warnings(doc),
        "tradeoff": tradeoff(doc), "effects": effects(doc), "top": top(doc), "final": final(doc),
        "experiments": experiments(doc), "best": doc.get("best") or {},
        "versions": key_values(env.get("versions") or {}, {}),
        "hardware": key_values(env.get("hardware") or {}, HARDWARE_FORMATS),
        "loadavg": ", ".join(f"{x:.2f}" for x in env.get("loadavg") or []) or "—",
        "elapsed": f"{(doc.get('elapsed_s') or 0) / 60:.1f} min", "sessions": len(doc.get("sessions") or []),
    }
