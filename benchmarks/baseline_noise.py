"""How often the baseline comparison cries wolf, and whether it hears a real one: from runs of the
same code on one machine (every difference between them is noise) and runs made slower on purpose
(validation.cpu_hog), all of one model set.

    python -m benchmarks.baseline_noise analyse --same DIR... [--slowed DIR...] [--json OUT]
    python -m benchmarks.baseline_noise render benchmarks/results/baseline-noise.json

For every way of splitting the same-code runs into a baseline and a candidate it counts the
comparisons that call any latency row a regression (or an improvement): with one baseline run
(a bootstrap over each run's requests, the statistic the issue asks for) and with k baseline runs
(the t-interval over runs). Then it compares each slowed run with the same baselines and counts
the latency rows flagged. ``benchmarks/test_baseline_noise.py`` makes the runs (``make bench-baseline``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

from validation import baseline

CHANGED = ("regression", "improvement")


def _latency_rows(doc: dict) -> list[dict]:
    return [m | {"model": r["model"]} for r in doc["verdicts"] for m in r["metrics"] if m["kind"] == "latency"]


def _tally(docs: list[dict], kind: str) -> dict:
    rows = [m for d in docs for m in _latency_rows(d)]
    flagged = [m for m in rows if m["verdict"] in CHANGED]
    return {"comparisons": len(docs), "rows": len(rows),
            "comparisons_with_a_false_alarm" if kind == "same" else "comparisons_flagged":
                sum(any(m["verdict"] in CHANGED for m in _latency_rows(d)) for d in docs),
            "rows_flagged": len(flagged), "regressions": sum(m["verdict"] == "regression" for m in flagged),
            "improvements": sum(m["verdict"] == "improvement" for m in flagged),
            "ratios": sorted(round(m["ratio"]["value"], 3) for m in rows)}


def analyse(same: list[Path], slowed: list[Path], ks=(1, 3, 5), opts: baseline.Options | None = None) -> dict:
    runs = [baseline.load(p)[0] for p in same]
    slow = [baseline.load(p)[0] for p in slowed]
    out = {"same_runs": [str(p) for p in same], "slowed_runs": [str(p) for p in slowed],
           "options": vars(opts or baseline.Options()), "by_k": {}}
    for k in ks:
        if len(runs) < k + 1:
            continue
        same_docs = []
        for j, cand in enumerate(runs):
            others = runs[:j] + runs[j + 1:]
            # every baseline of k runs among the others (capped: 6 runs, k = 3 gives 10 per candidate)
            for base in itertools.islice(itertools.combinations(others, k), 20):
                same_docs.append(baseline.compare_runs(list(base), cand, opts))
        entry = {"same": _tally(same_docs, "same")}
        if slow:
            slow_docs = [baseline.compare_runs(list(base), s, opts) for s in slow
                         for base in itertools.islice(itertools.combinations(runs, k), 20)]
            entry["slowed"] = _tally(slow_docs, "slowed")
        out["by_k"][str(k)] = entry
    return out


def render(result: dict) -> str:
    lines = ["| baseline runs | method | same-code comparisons | with a false alarm | latency rows flagged "
             "| slowed comparisons | slowed rows flagged |", "|---|---|---|---|---|---|---|"]
    for k, e in result["by_k"].items():
        s, w = e["same"], e.get("slowed")
        method = "bootstrap of one run's requests" if k == "1" else "t-interval over runs"
        lines.append(f"| {k} | {method} | {s['comparisons']} | {s['comparisons_with_a_false_alarm']} "
                     f"({s['comparisons_with_a_false_alarm'] / max(s['comparisons'], 1):.0%}) | "
                     f"{s['rows_flagged']}/{s['rows']} ({s['rows_flagged'] / max(s['rows'], 1):.1%}) | "
                     + (f"{w['comparisons']} | {w['regressions']}/{w['rows']} "
                        f"({w['regressions'] / max(w['rows'], 1):.0%}) |" if w else "— | — |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.baseline_noise")
    ap.add_argument("command", choices=["analyse", "render"])
    ap.add_argument("json_in", nargs="?", type=Path, help="render: a result JSON (benchmarks/results/baseline-noise.json)")
    ap.add_argument("--same", nargs="+", type=Path, help="analyse: runs of the same code")
    ap.add_argument("--slowed", nargs="*", type=Path, default=[], help="runs made slower on purpose")
    ap.add_argument("--threshold", type=float, default=baseline.Options().threshold)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 3, 5], help="baseline sizes to try (default 1 3 5)")
    ap.add_argument("--json", type=Path, help="write the result here")
    args = ap.parse_args(argv)
    if args.command == "render":
        if args.json_in is None:
            ap.error("render needs the result JSON")
        print(render(json.loads(args.json_in.read_text())))
        return 0
    if not args.same:
        ap.error("analyse needs --same RUN...")
    result = analyse(args.same, args.slowed, ks=args.k, opts=baseline.Options(threshold=args.threshold))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
