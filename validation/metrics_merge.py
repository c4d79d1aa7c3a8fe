"""How several loaded runs (validation.metrics.load_run) become one.

Nothing is averaged away: a model measured in two runs (kernel mode and userspace, or a rerun)
stays two records, each marked with the label of its run, and the counters are recomputed
over all of them by the same ``latest_summary`` a single run uses.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from .results import SCHEMA_VERSION, latest_summary, now_iso


def run_labels(runs: list[dict]) -> list[str]:
    """One unique label per run: the runner's own ``runs`` names when it gave them, else the
    directory's name; a repeated label gets " #2", " #3" (two reruns into dirs named alike)."""
    labels: list[str] = []
    for r in runs:
        named = r["summary"].get("runs") or []
        base = "+".join(named) if named else Path(r["dirs"][0]).name
        label, i = base, 1
        while label in labels:
            i += 1
            label = f"{base} #{i}"
        labels.append(label)
    return labels


def _same_or_per_run(objs: dict[str, dict]) -> dict:
    """The first run's object when all runs agree, else that one plus ``per_run``."""
    values = list(objs.values())
    first = copy.deepcopy(values[0])
    if all(v == values[0] for v in values[1:]):
        return first
    first.pop("per_run", None)
    first["per_run"] = copy.deepcopy(objs)
    return first


def _timings(objs: dict[str, dict]) -> dict:
    out = _same_or_per_run(objs)
    for key in {k for t in objs.values() for k in t if k.endswith("_total_ms")}:
        values = [t[key] for t in objs.values() if isinstance(t.get(key), (int, float))]
        # the runs ran one after another: their totals add up
        out[key] = sum(values) if values else None
    return out


def carry_extras(sources: dict[str, dict], into: dict) -> dict:
    """Top-level fields a runner added beyond latest_summary's (e.g. skipped_models,
    skipped_modes) survive a recount: objects are united (a later run adds its keys), any other
    value is kept when the runs agree and kept per run when they do not."""
    known = set(into)
    for key in dict.fromkeys(k for src in sources.values() for k in src if k not in known):
        values = {label: src[key] for label, src in sources.items() if key in src}
        if all(isinstance(v, dict) for v in values.values()):
            into[key] = {k: v for d in values.values() for k, v in d.items()}
        elif len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) == 1:
            into[key] = next(iter(values.values()))
        else:
            into[key] = {"per_run": values}
    return into


def merge(runs: list[dict]) -> dict:
    # a directory holding only kernel-comparison.json (the comparison of the runs beside it)
    # brings its rows, not an empty run of its own
    comparison_only = [r for r in runs if r["without_latest"] and not r["summary"]["models"]]
    model_runs = [r for r in runs if r not in comparison_only] or runs
    labels = run_labels(model_runs)
    models, rows, notes, dirs, without_latest = [], [], [], [], []
    for label, r in zip(labels, model_runs):
        for m in r["summary"]["models"]:
            m = copy.deepcopy(m)
            m.setdefault("run", label)       # a record from an earlier merge keeps its run
            models.append(m)
    for r in runs:
        label = labels[model_runs.index(r)] if r in model_runs else Path(r["dirs"][0]).name
        for row in (r["comparison"] or {}).get("rows", []):
            row = copy.deepcopy(row)
            row.setdefault("run", label)
            rows.append(row)
        notes += [n for n in r["notes"] if r not in comparison_only or "kernel-comparison" in n]
        dirs += r["dirs"]
        if r not in comparison_only:
            without_latest += r["without_latest"]

    def per(key: str) -> dict[str, dict]:
        return {label: r["summary"][key] for label, r in zip(labels, model_runs)}

    summary = latest_summary(models, versions=_same_or_per_run(per("versions")),
                             hardware=_same_or_per_run(per("hardware")),
                             resources=_same_or_per_run(per("resources")),
                             timings=_timings(per("timings")), runs=labels)
    carry_extras({label: r["summary"] for label, r in zip(labels, model_runs)}, summary)
    docs = [r["comparison"] for r in runs if r["comparison"] is not None]
    comparison = None
    if docs:
        comparison = {"schema_version": SCHEMA_VERSION, "generated_at": now_iso(),
                      "emulated": any(d["emulated"] for d in docs),
                      "machine": copy.deepcopy(docs[0]["machine"]), "rows": rows}
    return {"dirs": dirs, "summary": summary, "comparison": comparison, "notes": notes,
            "without_latest": without_latest}
