"""``python -m validation run``: options -> RunOptions -> the runner; exit code 0 only when every
model that ran passed in every mode that ran. With ``--baseline`` the exit code is the comparison's
gate instead (validation.cli_compare): a model failing in both runs is then no reason to fail CI
unless ``--fail-on`` names ``still-failing``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli_compare import OUT_NAME, finish, gate_options, options
from .config import SUITES, ConfigError


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m validation run",
                                 description="Run the model matrix through install, register, inference small "
                                             "and inference large, in kernel and/or userspace mode.")
    ap.add_argument("--suite", default="offline",
                    help=f"{' | '.join(SUITES)}, or a directory holding models.yaml and test-inputs.yaml "
                         "(default: offline)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME",
                    help="run only this model (repeatable; default: every enabled model)")
    ap.add_argument("--mode", choices=("kernel", "userspace", "both"), default="both",
                    help="kernel (MLOS_KERNEL=on, needs /dev/mlos-ml), userspace (MLOS_KERNEL=off), or both")
    ap.add_argument("--out", type=Path, default=Path("validation-results"),
                    help="run directory: <out>/<mode>/<model>-result.json and metrics/latest.json")
    ap.add_argument("--repetitions", type=int, default=None,
                    help="timed requests per inference phase (default: the suite's settings)")
    ap.add_argument("--cache", type=Path, default=None, metavar="DIR",
                    help="keep axon-py's downloads and conversions in DIR between runs (a CI cache; an "
                         "install found there is recorded as reused); default: a fresh cache per run")
    ap.add_argument("--quiet", action="store_true", help="no progress output")
    ap.add_argument("--quantize", "--quantise", action="store_true",
                    help="also measure quantised variants of each ONNX model (INT8, FP16) and of each F16 "
                         "GGUF model (Q8_0, Q4_K_M) against their parent: <out>/quantisation.json")
    ap.add_argument("--baseline", type=Path, metavar="RUN",
                    help="compare this run with a baseline: a run directory, an archived run, or a directory "
                         "of several runs of one release (replicas: what keeps false alarms rare on a busy "
                         "machine); writes <out>/comparison.json and a summary, and exits with the gate's "
                         "code (see --fail-on)")
    gate_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.repetitions is not None and args.repetitions < 1:
        print("python -m validation run: --repetitions must be at least 1", file=sys.stderr)
        return 2
    base = None
    if args.baseline is not None:     # refused now, not after a run of many minutes
        from . import baseline
        from .metrics import MetricsError

        try:
            opts, fail_on = options(args)
            base = baseline.load(args.baseline)
        except (ValueError, MetricsError) as e:
            print(f"python -m validation run: --baseline: {e}", file=sys.stderr)
            return 2
    from .runner import RunOptions, run

    try:
        outcome = run(RunOptions(suite=args.suite, models=args.model, mode=args.mode, out_dir=args.out,
                                 repetitions=args.repetitions, progress=not args.quiet,
                                 cache_dir=args.cache, quantize=args.quantize))
    except ConfigError as e:
        print(f"python -m validation run: {e}", file=sys.stderr)
        return 2
    ok = sum(r.status == "success" for r in outcome.results)
    print(f"{ok}/{len(outcome.results)} model runs passed in {outcome.wall_s:.0f} s; results in {args.out}/"
          + "".join(f"\n  {why}" for why in outcome.skipped_modes.values()))
    for r in outcome.results:
        if r.status != "success":
            bad = next(p for p in ("install", "register", "inference_small", "inference_large")
                       if r.phases[p].status != "success")
            print(f"  FAILED {r.mode}/{r.model_name}: {bad}: {r.phases[bad].error}")
    if base is not None:
        if not outcome.results:
            print("python -m validation run: nothing ran, so nothing is compared with the baseline", file=sys.stderr)
            return 1
        doc = baseline.compare_runs(base, baseline.load(args.out), opts)   # base: loaded before the run
        print()
        return finish(doc, args.out / OUT_NAME, fail_on, args.summary)
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
