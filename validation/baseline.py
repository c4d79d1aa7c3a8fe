"""A candidate run against a baseline run (the last release's): one verdict per model row.

Rows are matched by (model, mode). A row is first checked for being comparable at all: the same
model revision (the hub commit its package was made from), the same axon id and format, the same
request shapes, on the same machine class (``environment.MACHINE_CLASS``); when a field differs
the verdict is ``not comparable`` and names it. Then its success state: a phase that passed in
the baseline and fails now makes it ``newly failing``, the reverse ``fixed``, failures in both
``still failing``. Then its figures, phase by phase where both passed:

- latency: the ratio candidate / baseline of the median request, with a bootstrap interval over
  each run's own per-request samples (``stats.ratio_ci``, as the kernel comparison does). The two
  runs cannot be interleaved (one is a past release), so the interval covers the noise inside each
  run, not the drift of a shared machine between them; that drift is what ``threshold`` absorbs:
  "no significant difference" when the interval covers 1.0, and a significant change smaller than
  the threshold is still ``unchanged``. A baseline written before per-request samples existed
  (schema 1.0) is compared by its recorded 95% intervals: a change counts only when they do not
  overlap, a stricter test.
- parity with PyTorch (max abs diff, and 1 - cosine): worse when it grew ``parity_factor``-fold
  past ``parity_floor`` (float32 rounding moves it by less); a parity failure fails the phase.
- greedy generation: the token agreement of the two runs' generations (validation.drift); below
  ``min_token_agreement`` the model now says something else, a regression for a greedy decoder
  on the same revision.
- install and register time: one sample per run, shown with their ratio, never a verdict.

The row's verdict is the first of VERDICTS that any of its findings has: a model that fails now is
``newly failing`` even on another revision; otherwise a differing field makes the row ``not
comparable`` and its figures are shown but not judged.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from . import drift
from .environment import MACHINE_CLASS, machine_class
from .metrics import MetricsError, merge_runs, read_document
from .results import PHASES, SCHEMA_VERSION, now_iso
from .stats import ratio_ci

# precedence: a failure is reported whatever else differs; figures of incomparable runs are not judged
VERDICTS = ("newly failing", "not comparable", "regression", "still failing", "fixed", "improvement", "unchanged")
DEFAULT_FAIL_ON = ("regression", "newly failing")
INFERENCE = ("inference_small", "inference_large")
FAILING = ("failed", "timeout")


@dataclass
class Options:
    threshold: float = 0.05            # |ratio - 1| a significant change must reach to count
    level: float = 0.95                # of the bootstrap intervals
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

def load(path) -> dict:
    """A run to compare: a run directory (the runner's --out, or one mode's directory; several
    modes merge) or an archived run, the JSON file validation.history writes."""
    p = Path(path)
    if p.is_file():
        summary = read_document(p, "latest")
        return {"dirs": [str(p)], "summary": summary, "label": p.stem}
    if not p.exists():
        raise MetricsError(f"{p}: no such run directory or file")
    run = merge_runs([p])
    run["label"] = p.name
    return run


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


def latency(phase: str, base: dict, cand: dict, opts: Options) -> dict | None:
    """Candidate / baseline of the median request of one phase (above 1: the candidate is slower)."""
    bl, cl = base.get("latency_ms"), cand.get("latency_ms")
    if not bl or not cl:
        return None
    bs, cs = base.get("samples_ms") or [], cand.get("samples_ms") or []
    if len(bs) >= 2 and len(cs) >= 2:
        r = ratio_ci(cs, bs, level=opts.level)
        ratio = {"value": r["ratio"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "n": min(len(bs), len(cs))}
        significant = not (r["ci_low"] <= 1.0 <= r["ci_high"])
        method = f"bootstrap of {len(bs)} and {len(cs)} requests"
    else:
        # no samples (a schema 1.0 baseline): the ratio's bounds from the two intervals; a change
        # counts only when the intervals do not overlap
        ratio = {"value": cl["value"] / bl["value"], "ci_low": cl["ci_low"] / bl["ci_high"],
                 "ci_high": cl["ci_high"] / max(bl["ci_low"], 1e-12), "n": min(bl["n"], cl["n"])}
        significant = cl["ci_low"] > bl["ci_high"] or cl["ci_high"] < bl["ci_low"]
        method = "recorded intervals (no per-request samples): non-overlap"
    verdict, note = _by_ratio(ratio["value"], significant, opts)
    return _metric(f"{phase} latency", phase, "latency", bl["value"], cl["value"], verdict,
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
        m = _grew(f"{phase} parity 1 - cosine", phase, "cosine", 1 - bp["cosine"], 1 - cp["cosine"], opts)
        out.append(m)
    return out


def generation(phase: str, base: dict, cand: dict, opts: Options) -> dict | None:
    bt, ct = (base.get("details") or {}).get("generated_tokens"), (cand.get("details") or {}).get("generated_tokens")
    if bt is None or ct is None:
        bx, cx = (base.get("details") or {}).get("generated_text"), (cand.get("details") or {}).get("generated_text")
        if bx is None or cx is None:
            return None
        same = bx == cx        # no token ids recorded: the texts (first 200 characters) either agree or not
        agreement, how = (1.0 if same else 0.0), "generated text compared (no token ids recorded)"
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

def _identity(base: dict, cand: dict) -> list[dict]:
    """The fields that make two records of one model incomparable, with both values."""
    diffs = []
    for field in ("axon_id", "format"):
        if base.get(field) != cand.get(field):
            diffs.append({"field": field, "baseline": base.get(field), "candidate": cand.get(field)})
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


def _state(base: dict, cand: dict) -> tuple[list[str], list[str], list[str]]:
    newly, fixed, still = [], [], []
    for p in PHASES:
        bs, cs = base["phases"][p]["status"], cand["phases"][p]["status"]
        err = cand["phases"][p].get("error") or "no error text"
        if bs == "success" and cs in FAILING:
            newly.append(f"{p} now {cs}: {err}")
        elif bs in FAILING and cs == "success":
            fixed.append(f"{p} passes again")
        elif bs in FAILING and cs in FAILING:
            still.append(f"{p} {cs} in both: {err}")
    return newly, fixed, still


def compare_row(base: dict | None, cand: dict | None, machine_diffs: list[dict], opts: Options) -> dict:
    m = cand or base
    row = {"model": m["model_name"], "mode": m["mode"], "category": m.get("category"), "format": m.get("format"),
           "status": {"baseline": base["status"] if base else None, "candidate": cand["status"] if cand else None},
           "not_comparable": [], "metrics": [], "reasons": [], "verdict": "unchanged"}
    if base is None or cand is None:
        side = "baseline" if base is None else "candidate"
        row["not_comparable"] = [{"field": "model", "baseline": None if base is None else m["model_name"],
                                  "candidate": None if cand is None else m["model_name"]}]
        row["reasons"] = [f"not in the {side} run"]
        row["verdict"] = "not comparable"
        return row
    row["not_comparable"] = machine_diffs + _identity(base, cand)
    newly, fixed, still = _state(base, cand)
    for p in ("install", "register"):
        if (x := one_sample(p, base["phases"][p], cand["phases"][p])) is not None:
            row["metrics"].append(x)
    for p in INFERENCE:
        bp, cp = base["phases"][p], cand["phases"][p]
        if bp["status"] != "success" or cp["status"] != "success":
            continue
        found = [latency(p, bp, cp, opts), *parity(p, bp, cp, opts), generation(p, bp, cp, opts)]
        row["metrics"] += [x for x in found if x is not None]
    findings = {"newly failing": newly, "fixed": fixed, "still failing": still,
                "regression": [f"{x['name']}: {_describe(x)}" for x in row["metrics"] if x["verdict"] == "regression"],
                "improvement": [f"{x['name']}: {_describe(x)}" for x in row["metrics"] if x["verdict"] == "improvement"]}
    if row["not_comparable"]:
        findings["not comparable"] = [f"{d['field']} differs: {_short(d['baseline'])} -> {_short(d['candidate'])}"
                                      for d in row["not_comparable"]]
    row["verdict"] = next((v for v in VERDICTS if findings.get(v)), "unchanged")
    row["reasons"] = [r for v in VERDICTS for r in findings.get(v, [])]
    return row


def _short(v) -> str:
    s = v if isinstance(v, str) else json.dumps(v)
    return s[:12] if isinstance(v, str) and len(v) == 40 else s


def _num(x) -> str:
    return "—" if x is None else (f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}")


def _describe(x: dict) -> str:
    r = x.get("ratio")
    if x["kind"] == "latency" and r:
        return (f"{r['value']:.2f}x [{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({_num(x['baseline'])} -> "
                f"{_num(x['candidate'])} ms; {x['note']})")
    return f"{_num(x['baseline'])} -> {_num(x['candidate'])} ({x['note']})" if x["note"] else \
        f"{_num(x['baseline'])} -> {_num(x['candidate'])}"


# ---- two runs --------------------------------------------------------------------------------------

def _side(run: dict) -> dict:
    s = run["summary"]
    hw = s.get("hardware") or {}
    return {"label": run.get("label") or ", ".join(run["dirs"]), "dirs": run["dirs"],
            "generated_at": s.get("generated_at"), "versions": s.get("versions") or {},
            "machine_class": machine_class(hw)}


def environment(base: dict, cand: dict) -> tuple[list[dict], list[str]]:
    """(machine-class fields that differ, notes on what else differs or was not recorded)."""
    bm, cm = base["machine_class"], cand["machine_class"]
    diffs = [{"field": f"hardware.{k}", "baseline": bm.get(k), "candidate": cm.get(k)}
             for k in MACHINE_CLASS if k in bm and k in cm and bm[k] != cm[k]]
    notes = [f"{side} run records no {', '.join(k for k in MACHINE_CLASS if k not in mc)}: the machine class "
             "cannot be checked" for side, mc in (("baseline", bm), ("candidate", cm))
             if any(k not in mc for k in MACHINE_CLASS)]
    bv, cv = base["versions"], cand["versions"]
    changed = [f"{k} {bv.get(k, '—')} -> {cv.get(k, '—')}" for k in sorted(set(bv) | set(cv))
               if bv.get(k) != cv.get(k) and k != "per_run"]
    if changed:
        notes.append("versions: " + "; ".join(changed))
    return diffs, notes


def compare_runs(baseline: dict, candidate: dict, opts: Options | None = None) -> dict:
    """The comparison document (comparison.json) of two loaded runs (``load``)."""
    opts = (opts or Options()).check()
    b_side, c_side = _side(baseline), _side(candidate)
    machine_diffs, notes = environment(b_side, c_side)
    b_rows, b_notes = _rows(baseline["summary"])
    c_rows, c_notes = _rows(candidate["summary"])
    notes += [f"baseline: {n}" for n in b_notes] + [f"candidate: {n}" for n in c_notes]
    keys = list(c_rows) + [k for k in b_rows if k not in c_rows]
    rows = [compare_row(b_rows.get(k), c_rows.get(k), machine_diffs, opts) for k in keys]
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
    return {"schema_version": SCHEMA_VERSION, "generated_at": now_iso(), "kind": "baseline_comparison",
            "baseline": b_side, "candidate": c_side, "options": asdict(opts),
            "environment": {"not_comparable": machine_diffs, "notes": notes},
            "counts": counts, "verdicts": rows}


# ---- the gate and the summary ----------------------------------------------------------------------

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


def _who(side: dict) -> str:
    v = side["versions"]
    commit = (v.get("git_commit") or "?")[:12]
    return f"core {v.get('core', '?')} @ {commit} ({side.get('generated_at') or '?'})"


def summary_text(doc: dict, fail_on=DEFAULT_FAIL_ON) -> str:
    """A few lines for a terminal or a pull-request comment (Markdown renders the list)."""
    failing = gate(doc, fail_on)
    counts = ", ".join(f"{n} {v}" for v, n in doc["counts"].items() if n)
    head = (f"**Validation vs baseline: {'FAIL' if failing else 'PASS'}** — {len(doc['verdicts'])} rows: "
            f"{counts or 'none'}" + (f" (gate: {', '.join(fail_on)})" if fail_on else " (no gate)"))
    o = doc["options"]
    lines = [head, "",
             f"- baseline: {_who(doc['baseline'])}", f"- candidate: {_who(doc['candidate'])}",
             f"- latency: median ratio candidate/baseline with {o['level']:.0%} bootstrap intervals; "
             f"a change counts when significant and beyond {o['threshold']:.0%}"]
    lines += [f"- note: {n}" for n in doc["environment"]["notes"]]
    shown = [r for r in doc["verdicts"] if r["verdict"] != "unchanged"]
    if shown:
        lines.append("")
    for r in sorted(shown, key=lambda r: VERDICTS.index(r["verdict"])):
        lines.append(f"- {r['verdict'].upper()} {r['model']} ({r['mode']}): " + "; ".join(r["reasons"][:3])
                     + (f" (+{len(r['reasons']) - 3} more)" if len(r["reasons"]) > 3 else ""))
    return "\n".join(lines)
