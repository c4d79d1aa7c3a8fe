"""``python -m validation run``: the suite's models through install, register, inference small and
inference large, in kernel and/or userspace mode, written as metrics JSON.

Order: (offline suite) start each model's local repository and publish every model; install each model once with
axon-py (the package serves both modes); then per mode start a real core, sample its resources,
and per model register, infer small, infer large, unregister. Each mode writes its own run
directory ``<out>/<mode>/`` (``<model>-result.json`` + ``metrics/latest.json``, through
validation.metrics), which the report merges.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from . import environment, phases
from .config import ModelSpec, Suite, load_suite
from .core_proc import CoreError, CoreServer, kernel_available
from .inference import run_phase
from .offline_models import CACHE_ROOT, References, SourceError
from .repo_standins import StandIns
from .progress import Progress
from .results import PHASES, ModelResult, PhaseResult, latest_summary, now_iso

MODES = ("kernel", "userspace")


@dataclass
class RunOptions:
    suite: str = "offline"
    models: list[str] = field(default_factory=list)
    mode: str = "both"                 # kernel | userspace | both
    out_dir: Path = Path("validation-results")
    repetitions: int | None = None     # overrides settings.repetitions
    progress: bool = True
    cache_dir: Path | None = None      # axon-py's and huggingface_hub's caches, kept between runs
    quantize: bool = False             # quantised variants against their parent (validation.quant_measure)
    quantize_rounds: int = 8           # interleaved timing rounds per arm


@dataclass
class RunOutcome:
    results: list[ModelResult]
    summaries: dict[str, dict]         # mode -> latest.json content
    skipped_modes: dict[str, str]
    skipped_models: dict[str, str]
    wall_s: float

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.status == "success" for r in self.results)


def _hub_env(work: Path, hub_url: str | None) -> dict:
    """The environment of axon-py: its own cache and huggingface_hub home under ``work`` (the run's
    work dir, or the cache a caller keeps between runs)."""
    env = {**os.environ, "AXON_HOME": str(work / "axon"), "HF_HOME": str(work / "hf"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false"}
    # llama.cpp's converter (fetched once per llama-cpp-python version) lives beside the generated models
    env.setdefault("AXON_TOOLS_DIR", str(CACHE_ROOT.parent / "tools"))
    if hub_url:
        env.update(HF_ENDPOINT=hub_url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_IMPLICIT_TOKEN="1")
        for k in ("HF_HUB_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            env.pop(k, None)
    return env


def _plan(suite: Suite, names: list[str]) -> tuple[list[ModelSpec], dict[str, str]]:
    """The models to run, and those left out with the reason (disabled entries, LLMs when
    enable_llm_tests is off)."""
    chosen = suite.select(names)
    skipped = {}
    if not names:
        skipped.update({m.name: m.skip_reason or "enabled: false in models.yaml"
                        for m in suite.models.values() if not m.enabled})
    run = []
    for m in chosen:
        if names and not m.enabled and m.skip_reason:
            skipped[m.name] = m.skip_reason
        elif m.category == "llm" and not suite.settings["enable_llm_tests"]:
            skipped[m.name] = "enable_llm_tests: false in models.yaml settings"
        else:
            run.append(m)
    return run, skipped


def _skipped_after(result: ModelResult, phase: str, why: str) -> None:
    later = PHASES[PHASES.index(phase) + 1:]
    for p in later:
        result.phases[p] = PhaseResult("skipped", 0.0, f"not run: {why}")


def _model_in_mode(core: CoreServer, sampler, spec: ModelSpec, install: PhaseResult, pkg: dict | None,
                   suite: Suite, opts: RunOptions, refs: References, progress: Progress, mode: str,
                   quant=None) -> ModelResult:
    s = suite.settings
    llm = spec.category == "llm"
    result = ModelResult(spec.name, spec.axon_id, spec.category, (pkg or {}).get("format") or spec.format,
                         suite.name, mode, started_at=now_iso(), versions=environment.versions_cached())
    result.phases["install"] = copy.deepcopy(install)
    if install.status != "success":
        _skipped_after(result, "install", "install failed")
        return result
    model_id = phases.core_model_id(spec.axon_id)
    progress.note(f"{mode}: {spec.name}: register")
    sampler.label = "register"
    reg, meta = phases.register(core, model_id, pkg["path"], s["install_timeout"])
    result.phases["register"] = reg
    if reg.status != "success":
        _skipped_after(result, "register", "register failed")
        return result
    ctx = {"model_id": model_id, "meta": meta, "package_path": pkg["path"], "defaults": suite.defaults,
           "refs": refs, "warmup": s["warmup"],
           "reps": (opts.repetitions or (s["llm_repetitions"] if llm else s["repetitions"])),
           "timeout": s["llm_inference_timeout"] if llm else s["inference_timeout"],
           "tolerance": spec.tolerance or s["parity_tolerance"],
           "format": (pkg or {}).get("format"), "conversion": (pkg or {}).get("conversion")}
    for size in ("small", "large"):
        if size == "large" and not s["run_large_tests"]:
            result.phases["inference_large"] = PhaseResult("skipped", 0.0, "run_large_tests: false in models.yaml")
            continue
        progress.note(f"{mode}: {spec.name}: inference {size}")
        sampler.label = "load"
        result.phases[f"inference_{size}"] = run_phase(core, spec, size, ctx)
        sampler.label = "idle"
    if quant is not None and all(result.phases[f"inference_{size}"].status in ("success", "skipped")
                                 for size in ("small", "large")):
        from .quant_measure import failed_row, measure

        progress.note(f"{mode}: {spec.name}: quantised variants")
        sampler.label = "quantisation"     # kept apart from the phases' load figures
        try:
            quant.rows += measure(core, spec, result.format, ctx, quant.work, quant.rounds)
        except Exception as e:  # the model passed its phases: a quantisation bug is the variants' row, not its
            quant.rows.append(failed_row(spec, result.format, f"validator error: {type(e).__name__}: {e}"))
        sampler.label = "idle"
    core.call("DELETE", f"/v1/models/{quote(model_id, safe='')}", timeout=60)  # frees memory for the next
    return result


def _run_mode(mode: str, specs, installs, suite, opts, work, refs, progress,
              quant=None) -> tuple[list[ModelResult], dict]:
    from .metrics import write_latest, write_model_result

    out = Path(opts.out_dir) / mode
    core = CoreServer(work / "core", mode).start(suite.settings["core_start_timeout"])
    startup_ms = core.startup_s * 1000.0
    try:
        try:
            status, health = core.call("GET", "/health", timeout=30)
        except OSError as e:              # a core too slow to answer is recorded, not a reason to stop
            status, health = 0, f"GET /health: {e}"
        sampler = environment.ResourceSampler(core.proc.pid).start()
    except BaseException:                 # never leave a core running behind a failed start
        core.stop()
        raise
    kernel_block = health.get("kernel") if status == 200 and isinstance(health, dict) else {"error": str(health)[:300]}
    t0 = time.perf_counter()
    results = []
    try:
        environment.wait_idle(sampler, 2.0)       # the idle baseline, before any model
        for spec in specs:
            install, pkg = installs[spec.name]
            if not core.alive():                  # a crash must not fail every later model
                core.stop()
                core = CoreServer(work / "core", mode).start(suite.settings["core_start_timeout"])
                sampler.stop()
                sampler = environment.ResourceSampler(core.proc.pid).start()
            try:
                result = _model_in_mode(core, sampler, spec, install, pkg, suite, opts, refs, progress, mode, quant)
            except Exception as e:  # a validator bug on one model is recorded, and the run goes on
                result = ModelResult(spec.name, spec.axon_id, spec.category, spec.format, suite.name, mode,
                                     started_at=now_iso(), versions=environment.versions_cached())
                result.phases["install"] = copy.deepcopy(install)
                failed = next((p for p in PHASES[1:] if result.phases[p].status == "skipped"), "register")
                result.phases[failed] = PhaseResult("failed", 0.0, f"validator error: {type(e).__name__}: {e}")
                _skipped_after(result, failed, "validator error")
            if not core.alive():
                died = f"the core died during this model: {core.tail(600)}"
                for p in PHASES:
                    if result.phases[p].status == "failed" and died not in (result.phases[p].error or ""):
                        result.phases[p].error = f"{result.phases[p].error}; {died}"
            result.completed_at = now_iso()
            result.settle()
            write_model_result(out, result)
            results.append(result)
            bad = [f"{p}: {result.phases[p].error}" for p in PHASES if result.phases[p].status != "success"]
            progress.done(f"{mode:9s} {spec.name:24s} {result.status.upper():8s} "
                          + (bad[0][:150] if bad else f"{result.total_time_ms / 1000:.1f}s"))
    finally:
        resources = sampler.stop()
        core.stop()
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(core.log, out / f"core-{mode}.log")
    timings = {"core_startup_ms": round(startup_ms, 1),
               "install_total_ms": round(sum(i[0].time_ms for i in installs.values()), 1),
               "run_total_ms": round((time.perf_counter() - t0) * 1000.0 + startup_ms, 1)}
    summary = latest_summary([r.to_dict() for r in results], versions=environment.versions_cached(),
                             hardware=environment.hardware(Path(opts.out_dir)), resources=resources,
                             timings=timings, runs=[f"{suite.name}-{mode}"])
    summary["core_kernel"] = kernel_block   # the core's own /health account of its kernel path
    write_latest(out, summary)
    return results, summary


def run(opts: RunOptions) -> RunOutcome:
    t_start = time.perf_counter()
    suite = load_suite(opts.suite)
    specs, skipped_models = _plan(suite, opts.models)
    modes = list(MODES) if opts.mode == "both" else [opts.mode]
    if any(m not in MODES for m in modes):
        raise ValueError(f"mode must be kernel, userspace or both, not {opts.mode!r}")
    skipped_modes = {}
    if "kernel" in modes:
        ok, why = kernel_available()
        if not ok:
            skipped_modes["kernel"] = f"kernel mode skipped: {why}"
            modes.remove("kernel")
    progress = Progress(len(specs) * (1 + len(modes)), enabled=opts.progress)
    for name, why in skipped_models.items():
        progress.done(f"skipped   {name:24s} {why}")
    for mode, why in skipped_modes.items():
        progress.done(f"skipped   mode {mode}: {why}")
    Path(opts.out_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlos-validation-"))
    standins = None
    refs = References()
    results: list[ModelResult] = []
    summaries = {}
    try:
        installs = {}
        unpublished = {}
        if suite.name == "offline" or any(m.source for m in specs):
            standins = StandIns()    # each model's repository (hf, pytorch, tfhub, modelscope), started on use
            for spec in specs:
                try:
                    standins.publish(spec)
                except SourceError as e:
                    unpublished[spec.name] = str(e)
        env = {**_hub_env(Path(opts.cache_dir) if opts.cache_dir else work, standins.hf.url if standins and standins.hf else None),
               **(standins.env() if standins else {})}
        for spec in specs:
            progress.note(f"install {spec.name}")
            try:
                if spec.name in unpublished:
                    raise SourceError(unpublished[spec.name])
                phase, pkg = phases.install(spec, env, suite.settings["llm_install_timeout" if spec.category == "llm"
                                                                       else "install_timeout"])
            except SourceError as e:
                phase, pkg = PhaseResult("failed", 0.0, f"cannot produce the model's files: {e}"), None
            installs[spec.name] = (phase, pkg)
            progress.done(f"install   {spec.name:24s} {phase.status.upper():8s} "
                          + (phase.error[:150] if phase.error else f"{phase.time_ms / 1000:.1f}s"))
        quant = None
        if opts.quantize and modes:      # variants are measured once, in the first mode that runs
            from .quant_measure import Collector

            quant = Collector(work / "quant", opts.quantize_rounds)
        for mode in modes:
            try:
                mode_results, summaries[mode] = _run_mode(mode, specs, installs, suite, opts, work, refs, progress,
                                                          quant if mode == modes[0] else None)
                results += mode_results
            except CoreError as e:
                skipped_modes[mode] = f"the core did not start: {e}"
        if quant is not None and modes[0] in summaries:
            from .metrics import write_document
            from .quant_measure import document

            s = summaries[modes[0]]
            write_document(Path(opts.out_dir) / "quantisation.json",
                           document(quant.rows, modes[0], quant.rounds, s["versions"], s["hardware"]), "quantisation")
        for mode, summary in summaries.items():
            summary.update(skipped_models=skipped_models, skipped_modes=skipped_modes)
            from .metrics import write_latest

            write_latest(Path(opts.out_dir) / mode, summary)
    finally:
        progress.close()
        if standins is not None:
            standins.stop()
        shutil.rmtree(work, ignore_errors=True)
    return RunOutcome(results, summaries, skipped_modes, skipped_models, time.perf_counter() - t_start)
