"""``python -m validation report``: the HTML report of one or more run directories.

    python -m validation report --in out/kernel --in out/userspace --out report.html
    python -m validation report --in out --screenshot report.png
    python -m validation report --in out --history history/      # + comparison.json, quantisation.json

Several ``--in`` are merged (validation.metrics.merge_runs): every model record kept and marked
with its run, counters recomputed. The comparison with a baseline (comparison.json) and the
quantised variants (quantisation.json) are read from the ``--in`` directories, and ``--history``
adds the releases before. ``--screenshot`` also opens the written report in headless
Chromium, saves a full-page PNG and fails when the page logged an error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..metrics import MetricsError, merge_runs
from . import write_report
from .browser import BrowserError, inspect_page_sync
from .releases import attach


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m validation report",
                                description="The HTML report of one or more validator run directories.")
    p.add_argument("--in", dest="dirs", action="append", metavar="DIR",
                   help="a run directory (metrics/latest.json, *-result.json, kernel-comparison.json), or "
                        "the runner's --out holding one per mode; repeat to merge runs "
                        "(default: validation-results)")
    p.add_argument("--out", help="the HTML file to write (default: report.html in the first --in)")
    p.add_argument("--history", metavar="DIR",
                   help="past runs, one per release (python -m validation history add): a history section")
    p.add_argument("--screenshot", metavar="PNG", help="also render the report in headless Chromium to PNG")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    dirs = args.dirs or ["validation-results"]
    try:
        run = attach(merge_runs(dirs), dirs, args.history)
    except MetricsError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    out = write_report(run, args.out or Path(dirs[0]) / "report.html")
    s = run["summary"]
    print(f"report: {out} ({s['total_models']} model results from {len(run['dirs'])} run(s): "
          f"{s['successful_models']} success, {s['partial_models']} partial, {s['failed_models']} failed)")
    if not args.screenshot:
        return 0
    try:
        page = inspect_page_sync(out, screenshot=args.screenshot)
    except BrowserError as e:
        print(f"report: screenshot failed: {e}", file=sys.stderr)
        return 3
    problems = page.console_errors + page.exceptions
    print(f"report: screenshot {page.screenshot} ({page.screenshot.stat().st_size} bytes), "
          f"console errors: {len(problems) or 'none'}")
    for p in problems:
        print(f"  {p}", file=sys.stderr)
    return 1 if problems else 0
