"""A candidate run against a baseline (the last release's runs): one verdict per model row.

Rows are matched by (model, mode). A row is first checked for being comparable at all: the same
model revision (the hub commit its package was made from), axon id, format and request shapes, on
the same machine class (``environment.MACHINE_CLASS``); a differing field makes the verdict
``not comparable`` and is named. Then its success state: a phase that passed in the baseline and
fails now makes it ``newly failing`` (whatever else differs), the reverse ``fixed``, failures in
both ``still failing``. Then, phase by phase where both passed, its figures:

- latency, as the ratio candidate / baseline of the median request with its interval:
  * one run a side: a bootstrap over each run's per-request samples (``stats.ratio_ci``, as the
    kernel comparison does). Two runs cannot be interleaved (one is a past release), so this
    interval sees the noise inside each run, not how a shared machine drifts between runs;
  * several runs on either side (a baseline validated three times, say): a t-interval of the
    runs' log medians (``stats.replicate_ratio_ci``), which measures exactly that drift. On a
    busy machine this is the one that keeps false alarms rare (docs/validation-ci.md).
  The verdict is "no significant difference" when the interval covers 1.0, and a significant
  change within ``threshold`` is still ``unchanged``. ``level`` holds for the whole comparison:
  each of its m latency tests runs at 1 - (1 - level) / m (Bonferroni), so forty rows do not
  bring two false alarms by chance. A baseline written before per-request samples existed
  (schema 1.0) is judged by its recorded intervals: a change counts only when they do not overlap.
- parity with PyTorch (max abs diff, and 1 - cosine): worse when it grew ``parity_factor``-fold
  past ``parity_floor`` (float32 rounding moves it by less); a parity failure fails the phase.
- greedy generation: the token agreement of the two runs' generations (validation.drift); below
  ``min_token_agreement`` the model now says something else, a regression for a greedy decoder
  on the same revision.
- install and register time: one sample per run, shown with their ratio, never judged.

The row's verdict is the first of VERDICTS that any of its findings has. State, parity and
identity come from the most recent baseline run holding the row; latency uses every run.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import drift
from .environment import MACHINE_CLASS, machine_class
from .metrics import MetricsError, is_run_dir, merge_runs, read_document
from .results import PHASES, SCHEMA_VERSION, now_iso
from .stats import BOOTSTRAP, ratio_ci, replicate_ratio_ci

# precedence: a failure is reported whatever else differs; figures of incomparable runs are not judged
VERDICTS = ("newly failing", "not comparable", "regression", "still failing", "fixed", "improvement", "unchanged")
DEFAULT_FAIL_ON = ("regression", "newly failing")
INFERENCE = ("inference_small", "inference_large")
FAILING = ("failed", "timeout")


@dataclass
class Options:
    threshold: float = 0.05            # |ratio - 1| a significant change must reach to count
    level: float = 0.95                # for the whole comparison (Bonferroni over its latency tests)
    parity_factor: float = 10.0
    parity_floor: float = 1e-6
    min_token_agreement: float = 1.0

    def check(self) -> "Options":
        if not 0 <= self.threshold < 10:
            raise ValueError(f"threshold must be a fraction such as 0.05 (5%), not {self.threshold}")
        if not 0.5 < self.level < 1:
            raise ValueError(f"level must lie between 0.5 and 1, not {self.level}")
        if self.parity_factor < 1 or self.parity_floor < 0 or not 0 <= self.min_token_agreement <= 1:
            raise ValueError("parity_factor >= 1, parity_floor >= 0 and 0 <= min_token_agreement <= 1")
        return self


# ---- loading ---------------------------------------------------------------------------------------

def ran_at(summary: dict) -> str:
    """When a run ran: its last model's start (a merged summary's generated_at is when it was merged)."""
    return max((m.get("started_at") or "" for m in summary["models"]), default="") or summary.get("generated_at") or ""


def _one(p: Path) -> dict:
    if p.is_file():
        return {"dirs": [str(p)], "summary": read_document(p, "latest"), "label": p.stem}
    run = merge_runs([p])
    run["label"] = p.name
    return run


def load(path) -> list[dict]:
    """The runs of one side, oldest first: a run directory (the runner's --out, or one mode's
    directory), an archived run (a JSON file of validation history), or a directory holding
    several of those: replicated runs of one release."""
    p = Path(path)
    if not p.exists():
        raise MetricsError(f"{p}: no such run directory or file")
    if p.is_file() or _holds_run(p):
        return [_one(p)]
    runs = [_one(s) for s in sorted(p.iterdir())
            if (s.is_file() and s.suffix == ".json") or (s.is_dir() and _holds_run(s))]
    if not runs:
        raise MetricsError(f"{p}: holds no validator run (metrics/latest.json, *-result.json, or archived runs)")
    return sorted(runs, key=lambda r: ran_at(r["summary"]))


def _holds_run(p: Path) -> bool:
    """A run directory, or the runner's --out (one directory per mode)."""
    return is_run_dir(p) or any(is_run_dir(s) for s in p.iterdir() if s.is_dir())


def _rows(summary: dict) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """(model, mode) -> record; of reruns of one model the last started wins, and a note says so."""
    rows, notes = {}, []
    for m in sorted(summary["models"], key=lambda m: m.get("started_at") or ""):
        key = (m["model_name"], m["mode"])
        if key in rows:
            notes.append(f"{key[0]} ({key[1]}) ran more than once; the last run is compared")
        rows[key] = m
    return rows, notes


# ---- one metric ------------------------------------------------------------------------------------

def _metric(name: str, phase: str, kind: str, base, cand, verdict: str, note: str = "", ratio=None) -> dict:
    return {"name": name, "phase": phase, "kind": kind, "baseline": base, "candidate": cand,
            "ratio": ratio, "verdict": verdict, "note": note}


def _by_ratio(ratio: float, significant: bool, opts: Options) -> tuple[str, str]:
    if not significant:
        return "unchanged", "no significant difference"
    if ratio >= 1 + opts.threshold:
        return "regression", f"slower by {ratio - 1:.0%}"
    if ratio <= 1 / (1 + opts.threshold):
        return "improvement", f"faster by {1 - ratio:.0%}"
    return "unchanged", f"significant but within the {opts.threshold:.0%} threshold"


def latency(phase: str, base: list[dict], cand: list[dict], opts: Options, level: float) -> dict | None:
    """Candidate / baseline of the median request of one phase (above 1: the candidate is slower);
    ``base`` and ``cand`` hold the phase's record from each run of that side, ``level`` is this
    test's own (already corrected for the number of tests)."""
    base = [p for p in base if p.get("latency_ms")]
    cand = [p for p in cand if p.get("latency_ms")]
    if not base or not cand:
        return None
    bmed = [p["latency_ms"]["value"] for p in base]
    cmed = [p["latency_ms"]["value"] for p in cand]
    if len(base) + len(cand) >= 3:
        r = replicate_ratio_ci(cmed, bmed, level=level)
        ratio = {"value": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": len(base) + len(cand)}
        significant = r["verdict"] != "no significant difference"
        method = f"t-interval over {len(base)} baseline and {len(cand)} candidate runs"
    elif len(bs := base[0].get("samples_ms") or []) >= 2 and len(cs := cand[0].get("samples_ms") or []) >= 2:
        # the far tails of a corrected level need more resamples than the default's 2,000
        r = ratio_ci(cs, bs, level=level, n=max(BOOTSTRAP, int(20 / (1 - level))))
        ratio = {"value": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": min(len(bs), len(cs))}
        significant = r["verdict"] != "no significant difference"
        method = f"bootstrap of {len(bs)} and {len(cs)} requests of one run each"
    else:
        # no samples (a schema 1.0 record): the ratio's bounds from the two 95% intervals; a change
        # counts only when the intervals do not overlap
        bl, cl = base[0]["latency_ms"], cand[0]["latency_ms"]
        ratio = {"value": cl["value"] / bl["value"], "ci_low": cl["ci_low"] / bl["ci_high"],
                 "ci_high": cl["ci_high"] / max(bl["ci_low"], 1e-12), "n": min(bl["n"], cl["n"])}
        significant = cl["ci_low"] > bl["ci_high"] or cl["ci_high"] < bl["ci_low"]
        method = "recorded 95% intervals (no per-request samples): non-overlap"
    verdict, note = _by_ratio(ratio["value"], significant, opts)
    return _metric(f"{phase} latency", phase, "latency", float(np.median(bmed)), float(np.median(cmed)), verdict,
                   f"{note}; {method}", ratio)


def _grew(name: str, phase: str, kind: str, b: float, c: float, opts: Options) -> dict:
    worse = c > max(b * opts.parity_factor, opts.parity_floor)
    better = b > max(c * opts.parity_factor, opts.parity_floor)
    verdict = "regression" if worse else ("improvement" if better else "unchanged")
    note = {"regression": f"grew more than {opts.parity_factor:g}-fold", "improvement":
            f"shrank more than {opts.parity_factor:g}-fold"}.get(verdict, "")
    return _metric(name, phase, kind, b, c, verdict, note)


def parity(phase: str, base: dict, cand: dict, opts: Options) -> list[dict]:
    bp, cp = base.get("parity") or {}, cand.get("parity") or {}
    out = []
    if isinstance(bp.get("max_abs_diff"), (int, float)) and isinstance(cp.get("max_abs_diff"), (int, float)):
        out.append(_grew(f"{phase} parity max |diff|", phase, "parity", bp["max_abs_diff"], cp["max_abs_diff"], opts))
    if isinstance(bp.get("cosine"), (int, float)) and isinstance(cp.get("cosine"), (int, float)):
        out.append(_grew(f"{phase} parity 1 - cosine", phase, "cosine", 1 - bp["cosine"], 1 - cp["cosine"], opts))
    return out


def generation(phase: str, base: dict, cand: dict, opts: Options) -> dict | None:
    bd, cd = base.get("details") or {}, cand.get("details") or {}
    bt, ct = bd.get("generated_tokens"), cd.get("generated_tokens")
    if bt is None or ct is None:
        if bd.get("generated_text") is None or cd.get("generated_text") is None:
            return None
        # no token ids recorded: the texts (their first 200 characters) either agree or not
        agreement, how = float(bd["generated_text"] == cd["generated_text"]), "generated text compared (no token ids)"
    else:
        agreement, how = drift.token_agreement(bt, ct), f"{len(bt)} and {len(ct)} tokens"
    verdict = "regression" if agreement < opts.min_token_agreement else "unchanged"
    return _metric(f"{phase} greedy token agreement", phase, "token_agreement", 1.0, agreement, verdict, how)


def one_sample(phase: str, base: dict, cand: dict) -> dict | None:
    if base["status"] != "success" or cand["status"] != "success" or not base["time_ms"]:
        return None
    note = "one sample per run: shown, not tested"
    if phase == "install" and (base.get("details") or {}).get("reused") != (cand.get("details") or {}).get("reused"):
        note = "one run reused a cached install, the other did not: not comparable"
    ratio = {"value": cand["time_ms"] / base["time_ms"], "ci_low": None, "ci_high": None, "n": 1}
    return _metric(f"{phase} time", phase, "time", base["time_ms"], cand["time_ms"], "not tested", note, ratio)


# ---- one row ---------------------------------------------------------------------------------------

def identity(base: dict, cand: dict) -> list[dict]:
    """The fields that make two records of one model incomparable, with both values."""
    diffs = [{"field": f, "baseline": base.get(f), "candidate": cand.get(f)}
             for f in ("axon_id", "format") if base.get(f) != cand.get(f)]
    br = (base["phases"]["install"].get("details") or {}).get("revision")
    cr = (cand["phases"]["install"].get("details") or {}).get("revision")
    if br and cr and br != cr:
        diffs.append({"field": "revision", "baseline": br, "candidate": cr})
    for p in INFERENCE:
        bq = (base["phases"][p].get("details") or {}).get("request")
        cq = (cand["phases"][p].get("details") or {}).get("request")
        if bq and cq and bq != cq:
            diffs.append({"field": f"{p}.request", "baseline": bq, "candidate": cq})
    return diffs


def _state(base: dict, cand: dict) -> dict[str, list[str]]:
    found = {"newly failing": [], "fixed": [], "still failing": []}
    for p in PHASES:
        bs, cs = base["phases"][p]["status"], cand["phases"][p]["status"]
        err = cand["phases"][p].get("error") or "no error text"
        if bs == "success" and cs in FAILING:
            found["newly failing"].append(f"{p} now {cs}: {err}")
        elif bs in FAILING and cs == "success":
            found["fixed"].append(f"{p} passes again")
        elif bs in FAILING and cs in FAILING:
            found["still failing"].append(f"{p} {cs} in both: {err}")
    return found


def _num(x) -> str:
    return "—" if x is None else (f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}")


def describe(x: dict) -> str:
    r = x.get("ratio")
    if x["kind"] == "latency" and r:
        return (f"{r['value']:.2f}x [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({_num(x['baseline'])} -> "
                f"{_num(x['candidate'])} ms; {x['note']})")
    return f"{_num(x['baseline'])} -> {_num(x['candidate'])}" + (f" ({x['note']})" if x["note"] else "")


def _short(v) -> str:
    return v[:12] if isinstance(v, str) and len(v) == 40 else str(v)


def compare_row(bases: list[dict], cands: list[dict], machine_diffs: list[dict], opts: Options, level: float) -> dict:
    """``bases``/``cands``: the row's record in each run of that side, oldest first (may be empty)."""
    m = (cands or bases)[-1]
    base, cand = (bases[-1] if bases else None), (cands[-1] if cands else None)
    row = {"model": m["model_name"], "mode": m["mode"], "category": m.get("category"), "format": m.get("format"),
           "status": {"baseline": base["status"] if base else None, "candidate": cand["status"] if cand else None},
           "runs": {"baseline": len(bases), "candidate": len(cands)},
           "not_comparable": [], "metrics": [], "reasons": [], "verdict": "not comparable"}
    if base is None or cand is None:
        row["not_comparable"] = [{"field": "model", "baseline": base and m["model_name"],
                                  "candidate": cand and m["model_name"]}]
        row["reasons"] = [f"not in the {'baseline' if base is None else 'candidate'} run"]
        return row
    row["not_comparable"] = machine_diffs + identity(base, cand)
    # replicas of another revision or request shape are not pooled with the reference run's
    bases = [b for b in bases if not identity(b, base)]
    cands = [c for c in cands if not identity(c, cand)]
    for p in ("install", "register"):
        if (x := one_sample(p, base["phases"][p], cand["phases"][p])) is not None:
            row["metrics"].append(x)
    for p in INFERENCE:
        if base["phases"][p]["status"] != "success" or cand["phases"][p]["status"] != "success":
            continue
        found = [latency(p, [b["phases"][p] for b in bases if b["phases"][p]["status"] == "success"],
                         [c["phases"][p] for c in cands if c["phases"][p]["status"] == "success"], opts, level),
                 *parity(p, base["phases"][p], cand["phases"][p], opts),
                 generation(p, base["phases"][p], cand["phases"][p], opts)]
        row["metrics"] += [x for x in found if x is not None]
    findings = _state(base, cand)
    for v in ("regression", "improvement"):
        findings[v] = [f"{x['name']}: {describe(x)}" for x in row["metrics"] if x["verdict"] == v]
    findings["not comparable"] = [f"{d['field']} differs: {_short(d['baseline'])} -> {_short(d['candidate'])}"
                                  for d in row["not_comparable"]]
    row["verdict"] = next((v for v in VERDICTS if findings.get(v)), "unchanged")
    row["reasons"] = [r for v in VERDICTS for r in findings.get(v, [])]
    return row


# ---- two sides -------------------------------------------------------------------------------------

def _side(runs: list[dict]) -> dict:
    last = runs[-1]["summary"]
    return {"label": ", ".join(r.get("label") or ", ".join(r["dirs"]) for r in runs),
            "runs": len(runs), "dirs": [d for r in runs for d in r["dirs"]], "generated_at": ran_at(last),
            "versions": last.get("versions") or {},
            "machine_classes": [machine_class(r["summary"].get("hardware") or {}) for r in runs],
            "machine_class": machine_class(last.get("hardware") or {})}


def environment(base: dict, cand: dict) -> tuple[list[dict], list[str]]:
    """(machine-class fields that differ, notes on what else differs or was not recorded)."""
    diffs, notes = [], []
    cm = cand["machine_class"]
    for bm in base["machine_classes"]:
        diffs += [d for d in ({"field": f"hardware.{k}", "baseline": bm.get(k), "candidate": cm.get(k)}
                              for k in MACHINE_CLASS if k in bm and k in cm and bm[k] != cm[k]) if d not in diffs]
    for side in (base, cand):
        gaps = {k for mc in side["machine_classes"] for k in MACHINE_CLASS if k not in mc}
        if gaps:
            notes.append(f"a {'baseline' if side is base else 'candidate'} run records no {', '.join(sorted(gaps))}: "
                         "the machine class cannot be checked")
    bv, cv = base["versions"], cand["versions"]
    changed = [f"{k} {bv.get(k, '—')} -> {cv.get(k, '—')}" for k in sorted(set(bv) | set(cv))
               if bv.get(k) != cv.get(k) and k != "per_run"]
    if changed:
        notes.append("versions: " + "; ".join(changed))
    return diffs, notes


def compare_runs(baseline, candidate, opts: Options | None = None) -> dict:
    """The comparison document (comparison.json). ``baseline`` and ``candidate``: a loaded run or a
    list of replicated runs (``load``)."""
    opts = (opts or Options()).check()
    bases = baseline if isinstance(baseline, list) else [baseline]
    cands = candidate if isinstance(candidate, list) else [candidate]
    b_side, c_side = _side(bases), _side(cands)
    machine_diffs, notes = environment(b_side, c_side)
    b_rows, c_rows = [], []
    for runs, rows, side in ((bases, b_rows, "baseline"), (cands, c_rows, "candidate")):
        for r in runs:
            found, run_notes = _rows(r["summary"])
            rows.append(found)
            notes += [f"{side} {r.get('label')}: {n}" for n in run_notes]
    keys = list(dict.fromkeys(k for rows in (c_rows, b_rows) for found in reversed(rows) for k in found))
    per_key = {k: ([rows[k] for rows in b_rows if k in rows], [rows[k] for rows in c_rows if k in rows]) for k in keys}
    tests = sum(1 for bs, cs in per_key.values() if bs and cs for p in INFERENCE
                if bs[-1]["phases"][p]["status"] == "success" and cs[-1]["phases"][p]["status"] == "success")
    level = 1 - (1 - opts.level) / max(tests, 1)
    rows = [compare_row(bs, cs, machine_diffs, opts, level) for bs, cs in per_key.values()]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return {"schema_version": SCHEMA_VERSION, "generated_at": now_iso(), "kind": "baseline_comparison",
            "baseline": b_side, "candidate": c_side, "options": {**asdict(opts), "latency_tests": tests,
                                                                 "level_per_test": level},
            "environment": {"not_comparable": machine_diffs, "notes": notes},
            "counts": counts, "verdicts": rows}


# ---- the gate --------------------------------------------------------------------------------------

def parse_fail_on(text: str) -> tuple[str, ...]:
    """"regression,newly-failing" -> ("regression", "newly failing"); an unknown name is an error."""
    out = []
    for part in filter(None, (p.strip().lower().replace("-", " ").replace("_", " ") for p in text.split(","))):
        if part not in VERDICTS:
            raise ValueError(f"--fail-on: unknown verdict {part!r}; choose from "
                             f"{', '.join(v.replace(' ', '-') for v in VERDICTS)}")
        out.append(part)
    return tuple(dict.fromkeys(out))


def gate(doc: dict, fail_on=DEFAULT_FAIL_ON) -> list[dict]:
    """The rows whose verdict is one of ``fail_on``: CI fails when this is not empty."""
    return [r for r in doc["verdicts"] if r["verdict"] in fail_on]
