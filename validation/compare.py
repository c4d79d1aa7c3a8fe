"""Kernel against userspace on the same workload, with statistics that hold up.

- Arms are interleaved A B A B after a warm-up of each (never all of A then all of B, so drift
  on a shared machine lands on both arms alike).
- The unit of measurement is one run (a LoadGen scenario meeting its minimums): each run gives
  one value (its p50 / p90 latency, its samples/s), and an arm's figure is the median over its
  valid runs with a 95% bootstrap interval (validation/stats.py).
- The speedup is a ratio with its own bootstrap interval, oriented so that > 1 means the kernel
  is faster (userspace / kernel for latencies, kernel / userspace for rates). When the interval
  covers 1.0 the verdict is "no significant difference", whatever the point estimate says: the
  original system's 0.93x-1.18x single-run figures could not have told noise from an effect.

Rows are ``validation.results.ComparisonRow``; ``document()`` wraps them into
kernel-comparison.json, and ``python -m validation.compare render FILE`` prints its table.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from .results import SCHEMA_VERSION, ComparisonRow, Interval, now_iso
from .stats import percentile_ci, ratio_ci

ARMS = ("kernel", "userspace")
FASTER = {"higher": "kernel faster", "lower": "userspace faster"}
NO_DIFFERENCE = "no significant difference"

# scenario -> (metric name, value of one run, lower is better)
METRICS: dict[str, list[tuple[str, Callable[[dict], float], bool]]] = {
    "single_stream": [("latency_ms p50", lambda r: r["latency_ms"]["p50"], True),
                      ("latency_ms p90", lambda r: r["latency_ms"]["p90"], True)],
    "server": [("latency_ms p99", lambda r: r["latency_ms"]["p99"], True)],
    "offline": [("samples_per_s", lambda r: r["samples_per_s"], False)],
}


def interleaved_order(arms: Sequence[str], repetitions: int) -> list[str]:
    """A B A B ...: each repetition runs every arm once, in the same order."""
    return [arm for _ in range(repetitions) for arm in arms]


def run_interleaved(runs: dict[str, Callable[[], dict]], repetitions: int, warmup: int = 1) -> dict[str, list[dict]]:
    """``runs[arm]()`` performs one run; warm-up runs (every arm, discarded) come first so that
    caches, buffers and lazily loaded sessions are hot on both sides before anything counts."""
    arms = list(runs)
    for arm in interleaved_order(arms, warmup):
        runs[arm]()
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for arm in interleaved_order(arms, repetitions):
        results[arm].append(runs[arm]())
    return results


def _interval(d: dict) -> Interval:
    return Interval(d["value"], d["ci_low"], d["ci_high"], d["n"])


def compare(kernel: Sequence[float], userspace: Sequence[float], *, lower_is_better: bool, model: str,
            scenario: str, metric: str, emulated: bool) -> ComparisonRow:
    """One row from the per-run values of each arm."""
    if len(kernel) < 2 or len(userspace) < 2:
        raise ValueError(f"{model} {scenario} {metric}: need >= 2 valid runs per arm, "
                         f"have {len(kernel)} kernel and {len(userspace)} userspace")
    k, u = percentile_ci(kernel, 50), percentile_ci(userspace, 50)
    # oriented so that > 1 always means "the kernel is faster"
    r = ratio_ci(userspace, kernel) if lower_is_better else ratio_ci(kernel, userspace)
    verdict = NO_DIFFERENCE if r["verdict"] == NO_DIFFERENCE else FASTER[r["verdict"]]
    return ComparisonRow(model=model, scenario=scenario, metric=metric, kernel=_interval(k),
                         userspace=_interval(u), delta=k["value"] - u["value"],
                         speedup=Interval(r["ratio"], r["ci_low"], r["ci_high"], min(len(kernel), len(userspace))),
                         verdict=verdict, emulated=emulated)


def rows_for(model: str, scenario: str, results: dict[str, list[dict]], emulated: bool) -> list[ComparisonRow]:
    """The rows of one scenario's interleaved runs; invalid runs (LoadGen's rules) are left out."""
    rows = []
    for metric, value, lower in METRICS[scenario]:
        vals = {arm: [value(r) for r in results[arm] if r["valid"]] for arm in ARMS}
        rows.append(compare(vals["kernel"], vals["userspace"], lower_is_better=lower, model=model,
                            scenario=scenario, metric=metric, emulated=emulated))
    return rows


def machine_info() -> dict:
    def commit() -> str | None:
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                                 cwd=Path(__file__).resolve().parent)
            return out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    cpu = None
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None)
    except OSError:
        pass
    return {"node": platform.node(), "system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "commit": commit()}


def document(rows: Sequence[ComparisonRow], *, emulated: bool, machine: dict | None = None) -> dict:
    return {"schema_version": SCHEMA_VERSION, "generated_at": now_iso(), "emulated": emulated,
            "machine": machine if machine is not None else machine_info(), "rows": [asdict(r) for r in rows]}


def write_document(doc: dict, path: Path) -> Path:
    """Temp file, fsync, rename: a reader never sees half a document."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _iv(d: dict) -> str:
    return f"{_num(d['value'])} [{_num(d['ci_low'])}, {_num(d['ci_high'])}]"


def render(doc: dict) -> str:
    """The Markdown table of a kernel-comparison document (reads only the document)."""
    m = doc.get("machine") or {}
    head = (f"Kernel vs userspace, {m.get('cpu') or '?'} x{m.get('cpu_count') or '?'}, "
            f"Python {m.get('python') or '?'}, commit {(m.get('commit') or '?')[:10]}, {doc.get('generated_at')}")
    if doc.get("emulated"):
        head += " — EMULATED (qemu TCG guest): read the ratios, not the absolute figures"
    out = [head, "",
           "| model | scenario | metric | kernel | userspace | delta | speedup [95% CI] | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in doc.get("rows", []):
        s = r["speedup"]
        out.append(f"| {r['model']} | {r['scenario']} | {r['metric']} | {_iv(r['kernel'])} | {_iv(r['userspace'])} "
                   f"| {r['delta']:+.3g} | {s['value']:.3f}x [{s['ci_low']:.3f}, {s['ci_high']:.3f}] | {r['verdict']} |")
    runs = sorted({r["kernel"]["n"] for r in doc.get("rows", [])} | {r["userspace"]["n"] for r in doc.get("rows", [])})
    out += ["", "Each figure: median over valid runs (runs per arm: " + ", ".join(map(str, runs)) + ") with its 95% "
            "bootstrap interval; runs interleaved kernel, userspace, kernel, ... after a warm-up of each. "
            "speedup > 1: the kernel is faster (userspace/kernel for latencies, kernel/userspace for rates). "
            "A verdict needs the speedup's interval to exclude 1.0; at 95% per row, about one row in "
            "twenty reads as a difference by chance when there is none."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "render":
        print("usage: python -m validation.compare render kernel-comparison.json", file=sys.stderr)
        return 2
    try:
        with open(argv[1]) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        print(f"validation.compare: cannot read {argv[1]}: {e}", file=sys.stderr)
        return 1
    print(render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
