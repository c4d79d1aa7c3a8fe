"""What a tuning run leaves in its ``--out`` directory, written so that a kill at any moment loses
at most the experiment in progress:

- ``results.json``: the tuning (model, workload, space, objective, SLOs, strategy), the environment
  record of the validator (versions, hardware, load average), every experiment (parameters,
  metrics with intervals, SLO verdicts, comparison with the incumbent, errors), the final round and
  the best configuration. Rewritten after every experiment through temp file, fsync and rename.
- ``runs/<experiment>.json``: every raw run of the load generator (latencies and all), which the
  metrics in results.json were computed from.
- ``best.yaml``: the winner as a register ``options`` block, an ``x-mlos.runtime`` block for a
  package manifest, and the client concurrency it was measured at.
- ``report.html``: see ``mlos_tune.report``.

A run started again with the same ``--out`` resumes when results.json belongs to the same tuning
(the same fingerprint of model, workload, space, objective, SLOs, strategy and repeats).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import yaml

from validation.metrics import write_text_atomic

from .errors import TuneError

SCHEMA = "mlos-tune/1"
RESULTS = "results.json"
BEST = "best.yaml"


def clean(v):
    """JSON-safe: NaN and infinities become null (the load generator reports NaN for an empty run)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def write_json(path: Path, doc) -> Path:
    return write_text_atomic(path, json.dumps(clean(doc), indent=1, allow_nan=False))


def fingerprint(tuning: dict) -> str:
    keys = ("model_path", "model_id", "workload", "space", "objective", "slos", "strategy", "repeats", "seed")
    blob = json.dumps({k: tuning.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Results:
    def __init__(self, out: Path, doc: dict):
        self.out = Path(out)
        self.doc = doc

    @classmethod
    def open(cls, out: Path, tuning: dict, environment: dict, fresh: bool = False) -> "Results":
        out = Path(out)
        path = out / RESULTS
        tuning = {**tuning, "fingerprint": fingerprint(tuning)}
        if path.exists() and not fresh:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise TuneError(f"{path}: unreadable ({e}); use another --out, or --fresh to start over") from None
            if doc.get("schema") != SCHEMA or (doc.get("tuning") or {}).get("fingerprint") != tuning["fingerprint"]:
                old = doc.get("tuning") or {}
                raise TuneError(f"{path} belongs to another tuning (model {old.get('model_id')}, objective "
                                f"{old.get('objective')}, strategy {old.get('strategy')}): use another --out, or "
                                "--fresh to discard it")
            doc["sessions"].append({"started_at": now_iso(), "resumed_with": len(doc["experiments"]),
                                    "environment": environment})
            doc["final"], doc["best"] = None, None     # recomputed by this session
            return cls(out, doc)
        doc = {"schema": SCHEMA, "tuning": tuning, "environment": environment, "started_at": now_iso(),
               "updated_at": now_iso(), "elapsed_s": 0.0, "sessions": [{"started_at": now_iso(), "resumed_with": 0}],
               "experiments": [], "incumbent": None, "final": None, "best": None}
        r = cls(out, doc)
        r.save()
        return r

    @property
    def experiments(self) -> list[dict]:
        return self.doc["experiments"]

    def get(self, exp_id: str) -> dict:
        return next(e for e in self.experiments if e["id"] == exp_id)

    def next_id(self) -> str:
        return f"exp-{len(self.experiments):03d}"

    def save(self) -> None:
        self.doc["updated_at"] = now_iso()
        write_json(self.out / RESULTS, self.doc)

    # ---- raw runs ----------------------------------------------------------------------------
    def runs_path(self, exp_id: str) -> Path:
        return self.out / "runs" / f"{exp_id}.json"

    def load_runs(self, exp_id: str) -> list[dict]:
        p = self.runs_path(exp_id)
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return []

    def save_runs(self, exp_id: str, runs: list[dict]) -> None:
        write_json(self.runs_path(exp_id), runs)


def best_yaml(results: dict) -> str:
    best = results["best"]
    t = results["tuning"]
    slos = ", ".join(f"{s['name']} {s['kind']} {s['bound']:g}" for s in t["slos"]) or "none"
    head = (f"# mlos-tune: the best serving configuration of {t['model_id']} found for this workload\n"
            f"# objective {t['objective']}; SLOs: {slos}\n"
            f"# {best['verdict_vs_default']}\n"
            "# options: POST /v1/models/register {\"model_id\", \"path\", \"options\": ...}\n"
            "# x-mlos.runtime: the same, in a package manifest (manifest.yaml)\n")
    doc = {"model_id": t["model_id"], "path": t["model_path"], "options": best["options"],
           "x-mlos": {"runtime": best["options"]}, "client": {"concurrency": best["concurrency"]},
           "evidence": {"experiment": best["experiment"], "metrics": {k: best["metrics"].get(k) for k in
                                                                       ("throughput", "latency_p50_ms", "latency_p99_ms")
                                                                       if best["metrics"].get(k)},
                        "vs_default": best.get("vs_default"), "vs_runner_up": best.get("vs_runner_up"),
                        "results": str(Path(RESULTS))}}
    return head + yaml.safe_dump(clean(doc), sort_keys=False)


def write_best(out: Path, results: dict) -> Path:
    return write_text_atomic(Path(out) / BEST, best_yaml(results))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
