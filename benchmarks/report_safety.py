"""The table of ``make bench-safety``, from the pytest-benchmark JSON only.

    python -m benchmarks.report_safety benchmarks/results/safety.json
"""
from __future__ import annotations

import json
import sys


def main(path: str) -> int:
    with open(path) as f:
        doc = json.load(f)
    parts = {}
    for b in doc.get("benchmarks", []):
        x = b.get("extra_info") or {}
        parts.setdefault(x.get("part"), []).append(x)
    print("| big JSON bodies | health p50 | health p99 | health max | peak RSS over the body | request time |")
    print("|---|---|---|---|---|---|")
    for x in sorted(parts.get("big-bodies", []), key=lambda x: x["mode"]):
        print(f"| {x['mode']} ({x['bodies']} x {x['body_mb']:.0f} MB) | {x['health_p50_ms']:.1f} ms | "
              f"{x['health_p99_ms']:.1f} ms | {x['health_max_ms']:.0f} ms | {x['peak_over_body']:.2f}x "
              f"({x['rss_peak_mb'] - x['rss_before_mb']:.0f} MB) | {x['request_s_median']:.2f} s |")
    for x in parts.get("api-key", []):
        r = x["keyed_over_plain"]
        print(f"\nthroughput at c=32 with --api-key / without: {r['ratio']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] "
              f"({r['verdict']}; {x['rounds']} interleaved rounds; medians "
              f"{sorted(x['keyed_rps'])[len(x['keyed_rps']) // 2]:.0f} vs {sorted(x['plain_rps'])[len(x['plain_rps']) // 2]:.0f} req/s)")
        if "check_us" in x:
            print(f"the key check itself: {x['check_us']:.2f} us per request, "
                  f"{100 * x['check_us'] / x['plain_cpu_us_per_request']:.2f}% of the server CPU a keyless request "
                  f"costs ({x['plain_cpu_us_per_request']:.0f} us)")
    for x in parts.get("batch-probe", []):
        for name, m in x["models"].items():
            print(f"batch probe at load, {name}: register {m['auto_ms']:.0f} ms probed vs {m['off_ms']:.0f} ms not "
                  f"(probe ~{m['probe_ms']:.0f} ms; ratio {m['ratio']['ratio']:.2f} [{m['ratio']['ci_low']:.2f}, "
                  f"{m['ratio']['ci_high']:.2f}], {x['repeats']} repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
