"""``python -m validation compare BASELINE CANDIDATE``: two finished runs, one verdict per model row
(validation.baseline), written as comparison.json, with a short summary and an exit code CI gates on:

    0  no row has a verdict named in --fail-on
    1  at least one has (the summary lists them)
    2  the runs cannot be read, or the options are wrong

``python -m validation run ... --baseline DIR`` does the same at the end of a run (``gate_options``
and ``finish`` are shared with it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import baseline
from .metrics import MetricsError, write_document, write_text_atomic

OUT_NAME = "comparison.json"        # the runner's --out holds it beside the mode directories


def gate_options(ap: argparse.ArgumentParser) -> None:
    """The options of a comparison, for both commands."""
    d = baseline.Options()
    ap.add_argument("--threshold", type=float, default=d.threshold, metavar="FRACTION",
                    help=f"a significant latency change smaller than this is still 'unchanged' (default "
                         f"{d.threshold}: {d.threshold * 100:.0f}%%)")  # argparse formats help with %
    ap.add_argument("--level", type=float, default=d.level, help=f"bootstrap interval level (default {d.level})")
    ap.add_argument("--min-token-agreement", type=float, default=d.min_token_agreement, metavar="FRACTION",
                    help="greedy generations agreeing on less than this share of tokens are a regression "
                         f"(default {d.min_token_agreement})")
    ap.add_argument("--fail-on", default=",".join(v.replace(" ", "-") for v in baseline.DEFAULT_FAIL_ON),
                    metavar="VERDICTS",
                    help="comma-separated verdicts that make the exit code 1: "
                         f"{', '.join(v.replace(' ', '-') for v in baseline.VERDICTS)} "
                         "(default: regression,newly-failing; '' never fails)")
    ap.add_argument("--summary", type=Path, metavar="FILE",
                    help="also write the text summary to FILE (e.g. a pull-request comment)")


def options(args) -> tuple[baseline.Options, tuple[str, ...]]:
    """ValueError with the reason when an option is wrong."""
    opts = baseline.Options(threshold=args.threshold, level=args.level,
                            min_token_agreement=args.min_token_agreement).check()
    return opts, baseline.parse_fail_on(args.fail_on)


def _who(side: dict) -> str:
    v = side["versions"]
    runs = f", {side['runs']} runs" if side.get("runs", 1) > 1 else ""
    return f"core {v.get('core', '?')} @ {(v.get('git_commit') or '?')[:12]} ({side.get('generated_at') or '?'}{runs})"


def summary_text(doc: dict, fail_on=baseline.DEFAULT_FAIL_ON) -> str:
    """A few lines for a terminal or a pull-request comment (Markdown renders the list)."""
    failing = baseline.gate(doc, fail_on)
    counts = ", ".join(f"{n} {v}" for v, n in doc["counts"].items() if n)
    o = doc["options"]
    lines = [f"**Validation vs baseline: {'FAIL' if failing else 'PASS'}** — {len(doc['verdicts'])} rows: "
             f"{counts or 'none'}" + (f" (gate: {', '.join(fail_on)})" if fail_on else " (no gate)"), "",
             f"- baseline: {_who(doc['baseline'])}", f"- candidate: {_who(doc['candidate'])}",
             f"- latency: median ratio candidate/baseline, {o['level']:.0%} intervals over the whole comparison "
             f"({o['latency_tests']} tests); a change counts when significant and beyond {o['threshold']:.0%}"]
    lines += [f"- note: {n}" for n in doc["environment"]["notes"]]
    shown = sorted((r for r in doc["verdicts"] if r["verdict"] != "unchanged"),
                   key=lambda r: baseline.VERDICTS.index(r["verdict"]))
    if shown:
        lines.append("")
    for r in shown:
        lines.append(f"- {r['verdict'].upper()} {r['model']} ({r['mode']}): " + "; ".join(r["reasons"][:3])
                     + (f" (+{len(r['reasons']) - 3} more)" if len(r["reasons"]) > 3 else ""))
    return "\n".join(lines)


def finish(doc: dict, out: Path, fail_on, summary_file: Path | None) -> int:
    """Write comparison.json (and the summary), print the summary; the gate's exit code."""
    write_document(out, doc, "baseline_comparison")
    text = summary_text(doc, fail_on)
    if summary_file:
        write_text_atomic(summary_file, text + "\n")
    print(text)
    print(f"\ncomparison: {out}")
    return 1 if baseline.gate(doc, fail_on) else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m validation compare",
                                 description="Compare a candidate run with a baseline run, model row by model row.")
    ap.add_argument("baseline", type=Path, help="the baseline: a run directory (the runner's --out), an "
                                                "archived run (a JSON file of validation history), or a "
                                                "directory of several such runs of one release (replicas)")
    ap.add_argument("candidate", type=Path, help="the candidate, likewise")
    ap.add_argument("--out", type=Path, help=f"where comparison.json goes (default: CANDIDATE/{OUT_NAME}, "
                                             f"or ./{OUT_NAME} when CANDIDATE is a file)")
    gate_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        opts, fail_on = options(args)
    except ValueError as e:
        print(f"python -m validation compare: {e}", file=sys.stderr)
        return 2
    try:
        base, cand = baseline.load(args.baseline), baseline.load(args.candidate)
    except MetricsError as e:
        print(f"python -m validation compare: {e}", file=sys.stderr)
        return 2
    doc = baseline.compare_runs(base, cand, opts)
    out = args.out or (args.candidate / OUT_NAME if args.candidate.is_dir() and len(cand) == 1 else Path(OUT_NAME))
    return finish(doc, out, fail_on, args.summary)


if __name__ == "__main__":
    sys.exit(main())
