"""Past runs, one per release, and what the report draws from them.

A history directory holds one archived run per release, named ``<core version>-<commit>.json``
(``0.1.0-b061900a1b2c.json``): the run's metrics/latest.json, its modes merged, without the
resource samples over time (the only part that grows with the run's length), so a directory of
many releases stays small enough for a report to read whole. A subdirectory holding a run (the
runner's --out) counts too.

    python -m validation history add validation-results --to history/     # after a release's run
    python -m validation history list history/
    python -m validation report --in validation-results --history history/

``series()`` turns the entries (and the run being reported, when it is not archived yet) into
per-model points over releases (ordered by when they ran), each marked with its verdict against the release before it
(validation.baseline, the same comparison CI gates on).
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

from . import baseline
from .metrics import MetricsError, merge_runs, read_document, write_document

INFERENCE = ("inference_small", "inference_large")


def entry_name(summary: dict) -> str:
    """``<core version>-<12 hex of the commit>`` (``-dirty`` kept), file-name safe."""
    v = summary.get("versions") or {}
    commit = str(v.get("git_commit") or "unknown")
    dirty = commit.endswith("-dirty")
    short = commit[:12] + ("-dirty" if dirty else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{v.get('core') or 'unknown'}-{short}")


def _small(summary: dict) -> dict:
    out = copy.deepcopy(summary)
    res = out.get("resources") or {}
    for r in [res, *(res.get("per_run") or {}).values()]:
        r.pop("samples", None)
    return out


def archive(run_dir, history_dir, name: str | None = None) -> Path:
    """Write the run in ``run_dir`` (the runner's --out or a mode's directory) into ``history_dir``;
    the same release run again replaces its entry."""
    run = merge_runs([run_dir])
    summary = _small(run["summary"])
    path = Path(history_dir) / f"{name or entry_name(summary)}.json"
    return write_document(path, summary, "latest")


def load(history_dir) -> list[dict]:
    """Every archived run in ``history_dir``, oldest first: {"name", "path", "run"} where ``run`` is
    what validation.baseline.load gives."""
    d = Path(history_dir)
    if not d.is_dir():
        raise MetricsError(f"{d}: no such history directory")
    entries = []
    for p in sorted(d.iterdir()):
        if p.suffix == ".json" and p.is_file():
            run = {"dirs": [str(p)], "summary": read_document(p, "latest"), "label": p.stem}
        elif p.is_dir():
            try:
                run = merge_runs([p])
            except MetricsError:
                continue                      # not a run directory: ignored, as a README would be
            run["label"] = p.name
        else:
            continue
        entries.append({"name": run["label"], "path": str(p), "run": run})
    return sorted(entries, key=lambda e: (baseline.ran_at(e["run"]["summary"]), e["name"]))


def _point(record: dict | None, verdict: dict | None) -> dict:
    if record is None:
        return {"status": None, "latency": {}, "parity": None, "verdict": None, "reasons": []}
    lat = {p: record["phases"][p].get("latency_ms") for p in INFERENCE
           if record["phases"][p]["status"] == "success" and record["phases"][p].get("latency_ms")}
    diffs = [(record["phases"][p].get("parity") or {}).get("max_abs_diff") for p in INFERENCE]
    diffs = [x for x in diffs if isinstance(x, (int, float))]
    return {"status": record["status"], "latency": lat, "parity": max(diffs) if diffs else None,
            "verdict": verdict["verdict"] if verdict else None, "reasons": verdict["reasons"] if verdict else []}


def series(entries: list[dict], current: dict | None = None, opts: baseline.Options | None = None) -> dict:
    """{"releases": [names], "models": [{"model", "mode", "points": [per release]}], "verdicts": ...}.

    ``current`` (a loaded run) is appended as "this run" unless the last entry is the same commit.
    Each point carries its verdict against the previous release (None for the first)."""
    runs = [(e["name"], e["run"]) for e in entries]
    if current is not None:
        last = runs[-1][1]["summary"].get("versions", {}).get("git_commit") if runs else None
        if not runs or last != (current["summary"].get("versions") or {}).get("git_commit"):
            runs.append(("this run", current))
    keys: list[tuple[str, str]] = []
    for _, run in runs:
        for m in run["summary"]["models"]:
            if (m["model_name"], m["mode"]) not in keys:
                keys.append((m["model_name"], m["mode"]))
    per_release = []
    for i, (name, run) in enumerate(runs):
        records = {(m["model_name"], m["mode"]): m for m in sorted(run["summary"]["models"],
                                                                   key=lambda m: m.get("started_at") or "")}
        verdicts = {}
        if i:
            doc = baseline.compare_runs(runs[i - 1][1], run, opts)
            verdicts = {(r["model"], r["mode"]): r for r in doc["verdicts"]}
        per_release.append((records, verdicts))
    models = [{"model": k[0], "mode": k[1], "points": [_point(rec.get(k), ver.get(k)) for rec, ver in per_release]}
              for k in keys]
    return {"releases": [n for n, _ in runs], "models": models}


def _print_list(entries: list[dict]) -> None:
    print(f"{'release':32s} {'ran at':30s} models  passed  vs previous")
    for i, e in enumerate(entries):
        s = e["run"]["summary"]
        note = ""
        if i:
            doc = baseline.compare_runs(entries[i - 1]["run"], e["run"])
            note = ", ".join(f"{n} {v}" for v, n in doc["counts"].items() if n and v != "unchanged") or "unchanged"
        print(f"{e['name']:32s} {baseline.ran_at(s) or '?':30s} {s['total_models']:6d}  "
              f"{s['successful_models']:6d}  {note}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation history",
                                 description="Keep one run per release, for the report's history section.")
    sub = ap.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="archive a run as <core version>-<commit>.json")
    add.add_argument("run", type=Path, help="the run directory (the runner's --out)")
    add.add_argument("--to", type=Path, required=True, metavar="DIR", help="the history directory")
    add.add_argument("--name", help="the entry's name instead of <core version>-<commit>")
    ls = sub.add_parser("list", help="the releases of a history directory, with their verdicts")
    ls.add_argument("dir", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.command == "add":
            print(f"history: {archive(args.run, args.to, args.name)}")
        else:
            _print_list(load(args.dir))
    except MetricsError as e:
        print(f"python -m validation history: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
