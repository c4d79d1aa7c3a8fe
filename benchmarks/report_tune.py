"""Markdown summary of ``make bench-tune`` (benchmarks/test_tune.py), from the pytest-benchmark JSON only.

    python -m benchmarks.report_tune benchmarks/results/tune.json
"""
from __future__ import annotations

import json
import sys


def _iv(iv: dict | None) -> str:
    if not iv:
        return "—"
    return f"{iv['value']:.4g} [{iv['ci_low']:.4g}, {iv['ci_high']:.4g}]"


def render(doc: dict) -> str:
    rows = [b["extra_info"] for b in doc.get("benchmarks", []) if (b.get("extra_info") or {}).get("bench", "").startswith("tune_")]
    out = ["## mlos-tune: tuned configuration against the default (final round, interleaved, 95% CI)", "",
           "| model | objective | experiments (failed) | search | best options | clients | tuned | default | "
           "tuned / default | verdict |", "|---|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for x in rows:
        vs = x.get("vs_default")
        ratio = f"{vs['ratio']:.3g}× [{vs['ci_low']:.3g}, {vs['ci_high']:.3g}]" if vs else "1× (the default won)"
        verdict = vs["verdict"] if vs else "the default is the best"
        unit = x.get("throughput_unit") or ""
        out.append(f"| {x['model']} | {x['objective']} | {x['measured'] + x['failed']} ({x['failed']}) | "
                   f"{x['elapsed_s'] / 60:.1f} min | `{json.dumps(x['best_options'])}` | {x['best_concurrency']} | "
                   f"{_iv(x.get('throughput'))} {unit} | {_iv(x.get('default_throughput'))} | {ratio} | {verdict} |")
    for x in rows:
        out.append(f"\n- {x['model']}: {x['verdict_vs_default']}; {x['verdict_vs_runner_up']}; p99 "
                   f"{_iv(x.get('p99_ms'))} ms tuned, {_iv(x.get('default_p99_ms'))} ms default; load average at "
                   f"start {', '.join(f'{v:.1f}' for v in x.get('loadavg') or [])}; report {x['report']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        print(render(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
