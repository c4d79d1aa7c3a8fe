"""``mlos-tune``: the best serving configuration of a model for a workload and a latency budget.

    mlos-tune MODEL_ID_OR_PATH [--workload FILE] [--objective maximize_throughput|minimize_latency|
              minimize_ttft|minimize_tpot] [--slo p99_ms=50 ...] [--space FILE]
              [--strategy auto|grid|random|optuna] [--budget-minutes N] [--repeats N] [--out DIR]
              [--apply [core|manifest]] [--core URL] [--api-key KEY] [--ray-address ADDRESS]
    mlos-tune report DIR [--screenshot PNG]

Everything the user gives is checked before the first core starts (exit 2 with the reason).
Exit 1 when nothing could be measured or ``--apply`` failed.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import NothingMeasured, TuneError
from .slo import OBJECTIVES
from .strategies import STRATEGIES

DEFAULT_CORE = "http://127.0.0.1:8080"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlos-tune", description=__doc__.splitlines()[0],
                                epilog="Reference: docs/tuning.md. `mlos-tune report DIR` renders a results directory.")
    p.add_argument("model", metavar="MODEL_ID_OR_PATH",
                   help="a model file, directory or .axon package; a demo model id (silero/vad@6, "
                        "google/gemma-3-270m@Q4_K_M); or a package installed by axon-py (hf/org/model@rev)")
    p.add_argument("--model-id", help="the id to register it under (default: the id given, or tune/<name>@1)")
    p.add_argument("--workload", metavar="FILE", help="YAML/JSON: what a request looks like and how load arrives "
                                                      "(default: derived from the model)")
    p.add_argument("--objective", default="maximize_throughput", choices=list(OBJECTIVES))
    p.add_argument("--slo", action="append", default=[], metavar="NAME=VALUE",
                   help="p50_ms, p90_ms, p99_ms, ttft_p90_ms, tpot_p50_ms, ..., min_throughput; repeatable")
    p.add_argument("--space", metavar="FILE", help="YAML/JSON: values per parameter, laid over the format's defaults")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES,
                   help="auto: the whole grid up to 16 configurations, Optuna's TPE beyond")
    p.add_argument("--trials", type=int, help="at most this many configurations proposed (besides the default)")
    p.add_argument("--budget-minutes", type=float, default=30.0,
                   help="stop proposing configurations after this long (the final round follows)")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per configuration, each interleaved "
                                                           "with the incumbent's (default 3)")
    p.add_argument("--max-error-rate", type=float, default=0.01,
                   help="a configuration with more failed requests than this fraction fails (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random and Optuna strategies")
    p.add_argument("--out", default="mlos-tune-results", help="results directory; a run resumes from its "
                                                              "results.json (default mlos-tune-results)")
    p.add_argument("--fresh", action="store_true", help="discard a previous results.json in --out")
    p.add_argument("--apply", nargs="?", const="core", choices=("core", "manifest"),
                   help="core: register the model with the best options on the running core (--core); "
                        "manifest: write them into MODEL's package manifest (x-mlos.runtime)")
    p.add_argument("--core", default=os.environ.get("MLOS_CORE_ENDPOINT", DEFAULT_CORE),
                   help=f"the running core --apply registers with (default $MLOS_CORE_ENDPOINT or {DEFAULT_CORE})")
    p.add_argument("--api-key", default=os.environ.get("MLOS_API_KEY"), help="its API key (default $MLOS_API_KEY)")
    p.add_argument("--ray-address", default=os.environ.get("MLOS_TUNE_RAY_ADDRESS"), metavar="ADDRESS",
                   help="cluster mode: run the experiments on a node of this Ray cluster (host:port of its head), "
                        "the node's CPUs held by the tuner while it measures (needs the 'ray' extra)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    p.add_argument("--screenshot", metavar="PNG", help="also render report.html in headless Chromium to this PNG")
    return p


def report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlos-tune report", description="The HTML report of a results directory.")
    p.add_argument("dir", help="a mlos-tune --out directory (holding results.json)")
    p.add_argument("--out", help="the HTML file (default: DIR/report.html)")
    p.add_argument("--screenshot", metavar="PNG", help="also render it in headless Chromium to PNG")
    return p


def plan_from_args(args):
    """Everything checked and resolved, nothing started."""
    from .model_ref import resolve_model
    from .slo import objective, parse_slos
    from .space import load_space
    from .strategies import make_strategy
    from .tuner import Plan
    from .workload import load_workload

    if not 1 <= args.repeats <= 50:
        raise TuneError(f"--repeats {args.repeats}: from 1 to 50")
    if not args.budget_minutes > 0:
        raise TuneError("--budget-minutes must be more than 0")
    if not 0 <= args.max_error_rate < 1:
        raise TuneError("--max-error-rate is a fraction from 0 to 1 (exclusive)")
    if args.trials is not None and args.trials < 0:
        raise TuneError("--trials must be at least 0")
    out = Path(args.out).expanduser().resolve()
    model = resolve_model(args.model, args.model_id, out / "work")
    workload = load_workload(args.workload, model.engine)
    open_loop = workload.load.mode == "open"
    obj = objective(args.objective, workload.llm, open_loop)
    slos = parse_slos(args.slo, workload.llm)
    space = load_space(args.space, model.engine, workload.load.concurrency, open_loop)
    make_strategy(args.strategy, space, obj.higher_is_better, args.seed)     # its errors, now
    if args.apply == "manifest" and model.package_dir is None:
        raise TuneError("--apply manifest: MODEL is not an .axon package directory (a directory with a "
                        "manifest.yaml); use --apply core, or tune the package directory")
    return Plan(model=model, workload=workload, space=space, objective=obj, slos=slos, strategy=args.strategy,
                repeats=args.repeats, budget_s=args.budget_minutes * 60, max_error_rate=args.max_error_rate,
                seed=args.seed, trials=args.trials, out=out)


def _describe(plan) -> str:
    w, size = plan.workload, plan.space.grid_size()
    load = (f"closed loop at concurrency {w.load.concurrency}" if w.load.mode == "closed"
            else f"open loop at {w.load.rate:g} requests/s")
    per_run = w.load.warmup_s + w.load.duration_s
    return (f"mlos-tune: {plan.model.model_id} ({plan.model.format}) from {plan.model.path}\n"
            f"  workload: {w.kind}, {load}; {per_run:g} s per run ({w.load.warmup_s:g} s warm-up)\n"
            f"  space: {', '.join(f'{n}={p.describe()}' for n, p in plan.space.params.items())}"
            f" ({size if size is not None else 'unbounded'} configurations)\n"
            f"  objective {plan.objective.name}; SLOs: {', '.join(f'{s.name}={s.bound:g}' for s in plan.slos) or 'none'}"
            f"; {plan.repeats} runs per configuration, interleaved with the incumbent; budget "
            f"{plan.budget_s / 60:g} min\n  results: {plan.out}")


def _report(out: Path, html: Path | None, screenshot: str | None) -> int:
    from .report import write_report

    path = write_report(out, html)
    print(f"mlos-tune: report {path}")
    if not screenshot:
        return 0
    from validation.report.browser import BrowserError, inspect_page_sync

    try:
        page = inspect_page_sync(path, screenshot=screenshot)
    except BrowserError as e:
        print(f"mlos-tune: screenshot failed: {e}", file=sys.stderr)
        return 3
    problems = page.console_errors + page.exceptions
    print(f"mlos-tune: screenshot {page.screenshot} ({page.screenshot.stat().st_size} bytes), "
          f"console errors: {len(problems) or 'none'}")
    return 1 if problems else 0


def _cluster(address: str, log):
    try:
        from .cluster import ClusterMode
    except ImportError as e:
        raise TuneError(f"--ray-address needs Ray (pip install 'mlos-py[ray]'; make setup installs it): {e}") from None
    return ClusterMode(address, log)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        args = report_parser().parse_args(argv[1:])
        try:
            return _report(Path(args.dir), Path(args.out) if args.out else None, args.screenshot)
        except TuneError as e:
            print(f"mlos-tune: {e}", file=sys.stderr)
            return 2
    args = parser().parse_args(argv)
    log = lambda s: print(s, flush=True)  # noqa: E731
    cluster = None
    try:
        plan = plan_from_args(args)
        if args.apply == "core":
            from .apply import check_core

            check_core(args.core, args.api_key)
        if args.ray_address:
            cluster = _cluster(args.ray_address, log).connect(plan.model)
    except TuneError as e:
        print(f"mlos-tune: {e}", file=sys.stderr)
        return 2
    from .tuner import Tuner

    print(_describe(plan), flush=True)
    tuner = Tuner(plan, log=log, fresh=args.fresh, cluster=cluster)
    try:
        doc = tuner.run()
    except NothingMeasured as e:
        print(f"mlos-tune: {e}", file=sys.stderr)
        return 1
    except TuneError as e:
        print(f"mlos-tune: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlos-tune: interrupted; run the same command again to resume from {plan.out / 'results.json'}",
              file=sys.stderr)
        return 130
    finally:
        if cluster is not None:
            cluster.close()
    print(f"mlos-tune: {plan.out / 'best.yaml'}")
    rc = 0
    if not args.no_report:
        rc = _report(plan.out, None, args.screenshot)
    if args.apply:
        from .apply import ApplyError, apply_to_core, apply_to_manifest

        try:
            if args.apply == "core":
                print(apply_to_core(args.core, args.api_key, doc))
            else:
                print(apply_to_manifest(plan.model.package_dir, doc))
        except ApplyError as e:
            print(f"mlos-tune: --apply failed: {e}", file=sys.stderr)
            return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
