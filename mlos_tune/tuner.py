"""The search: one experiment per configuration, each in a fresh core, measured against the incumbent.

1. The default configuration (no options: what the core does by itself) runs first, alone,
   ``repeats`` times; it is the first incumbent.
2. The strategy proposes a configuration. Configurations that cannot differ from one measured
   already (see ``SearchSpace.canonical``: equal options, or batching options on a model the core
   refuses to batch) are recorded as equivalent and not measured again.
3. The candidate's core starts; the model is registered with its options and answers one request
   (the answer must equal the first configuration's). Then candidate and incumbent are measured
   ``repeats`` times each, interleaved (I C, C I, ...), so machine noise hits both alike.
4. The candidate replaces the incumbent when it is feasible and the incumbent is not, when it is
   significantly better on the objective (the ratio's 95% interval excludes 1), or when the two
   are not significantly different and the candidate is cheaper (fewer threads or instances).
5. After the budget, the final round (``mlos_tune.final``) settles the answer.

A failed experiment (crash, timeout, options refused, errors over ``max_error_rate``, wrong
answers) is recorded with its kind and reason and never becomes the incumbent.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import measure
from .errors import ExperimentFailed, TuneError
from .model_ref import ModelRef
from .results import Results, now_iso
from .slo import Objective, Slo, verdicts
from .space import SearchSpace, key
from .strategies import make_strategy
from .trial import Trial
from .workload import Workload

DUPLICATE_STREAK_MAX = 200
REFERENCE_MAX_VALUES = 100_000
_SETTINGS_REASONS = ("option batching=off", "max_batch_size is 1", "forced on")


@dataclass
class Plan:
    model: ModelRef
    workload: Workload
    space: SearchSpace
    objective: Objective
    slos: list[Slo]
    strategy: str = "auto"
    repeats: int = 3
    budget_s: float = 1800.0
    max_error_rate: float = 0.01
    seed: int = 0
    trials: int | None = None
    out: Path = Path("mlos-tune-results")

    def tuning(self) -> dict:
        return {"model": self.model.given, "model_id": self.model.model_id, "model_path": str(self.model.path),
                "format": self.model.format, "workload": self.workload.describe(), "space": self.space.describe(),
                "objective": self.objective.name, "objective_metric": self.objective.metric,
                "slos": [s.describe() for s in self.slos], "strategy": self.strategy, "repeats": self.repeats,
                "budget_s": self.budget_s, "max_error_rate": self.max_error_rate, "seed": self.seed,
                "trials": self.trials}


def environment() -> dict:
    import os

    from validation.environment import hardware, versions_cached

    return {"versions": versions_cached(), "hardware": hardware(), "loadavg": list(os.getloadavg())}


class Tuner:
    def __init__(self, plan: Plan, log=print, fresh: bool = False, cluster=None):
        self.plan = plan
        self.cluster = cluster      # mlos_tune.cluster.ClusterMode: the trials run on a cluster node
        self.log = log
        self.fresh = fresh
        self.space = plan.space
        self.llm = plan.workload.llm
        self.work = plan.out / "work"
        self.incumbent: Trial | None = None
        self.inc_runs: list[dict] = []
        self.res: Results | None = None
        self.files: dict = {}

    # ---- set-up -----------------------------------------------------------------------------
    def open(self) -> Results:
        out = self.plan.out
        out.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)       # cores of a killed run: dead with it
        self.res = Results.open(out, self.plan.tuning(), environment(), fresh=self.fresh)
        if self.cluster is not None:
            self.res.doc["cluster"] = self.cluster.record()
        for e in self.res.experiments:
            if e["status"] == "running":
                e["status"], e["reason"] = "interrupted", "the tuner stopped during this experiment; not counted"
        self.res.save()
        return self.res

    def new_trial(self, exp_id: str, options: dict, workdir: Path) -> Trial:
        """A configuration's server: a core subprocess here, or on the cluster node (--ray-address)."""
        if self.cluster is not None:
            return self.cluster.trial(exp_id, options, self.plan.model, self.plan.workload, workdir)
        return Trial(exp_id, options, self.plan.model, self.plan.workload, workdir)

    @property
    def facts(self) -> dict:
        return self.res.doc.setdefault("model_facts", {"batching_possible": True, "batching_reason": None})

    def _learn(self, trial: Trial) -> None:
        b = trial.info.get("batching") or {}
        reason = b.get("reason") or ""
        if b and not b.get("enabled") and not any(r in reason for r in _SETTINGS_REASONS) \
                and self.facts["batching_possible"] and self.space.engine == "onnx":
            self.facts.update(batching_possible=False, batching_reason=reason)
            self.log(f"  the core does not batch this model ({reason}): batching options have no effect and "
                     "configurations differing only in them are not measured again")

    def _request_files(self, trial: Trial) -> dict:
        if self.files:
            return self.files
        d = self.plan.out / "requests"
        d.mkdir(parents=True, exist_ok=True)
        w = self.plan.workload
        path = w.url_path(self.plan.model.model_id)
        if self.llm:
            bodies = w.llm_bodies(self.plan.model.model_id)
            (d / "bodies.json").write_text(json.dumps(bodies))
            self.files = {"bodies": d / "bodies.json", "path": path, "first": {**bodies[0], "stream": False,
                                                                              "max_tokens": 2}}
            self.files["first"].pop("stream_options", None)
        else:
            body = w.tensor_body(trial.metadata())
            (d / "body.json").write_text(json.dumps(body))
            self.files = {"body": d / "body.json", "path": path, "first": body}
        return self.files

    def _check(self, trial: Trial, first: bool) -> None:
        files = self._request_files(trial)
        reference = self.res.doc.get("reference_outputs")
        try:
            got = trial.check_answer(files["path"], files["first"], None if self.llm else reference)
        except TuneError as e:
            if first:
                raise TuneError(f"{e}; fix the workload (--workload) and run again") from None
            raise ExperimentFailed("refused", str(e)) from None
        if not self.llm and reference is None and got and \
                sum(len(v) if isinstance(v, list) else 1 for v in got.values()) <= REFERENCE_MAX_VALUES:
            self.res.doc["reference_outputs"] = got

    def run(self) -> dict:
        """Search, then the final round; results.json and best.yaml written. Returns results.json."""
        from .final import final_round
        from .results import write_best

        self.open()
        try:
            self.search()
            final = final_round(self)
        finally:
            self._drop_incumbent_trial()
            shutil.rmtree(self.work, ignore_errors=True)
        self.res.doc["final"], self.res.doc["best"] = final["contenders"], final["best"]
        self.res.save()
        write_best(self.plan.out, self.res.doc)
        return self.res.doc

    # ---- the search -------------------------------------------------------------------------
    def search(self) -> None:
        res, plan = self.res, self.plan
        t_session, base = time.monotonic(), res.doc["elapsed_s"]

        def elapsed() -> float:
            res.doc["elapsed_s"] = round(base + time.monotonic() - t_session, 1)
            return res.doc["elapsed_s"]

        strategy = make_strategy(plan.strategy, self.space, plan.objective.higher_is_better, plan.seed)
        res.doc["strategy_used"] = strategy.name
        seen: dict[str, str] = {}
        for e in res.experiments:
            if e["status"] in ("measured", "failed"):
                seen[e["key"]] = e["id"]
        for e in res.experiments:       # what a killed run learnt, told again
            twin = res.get(e["equivalent_to"]) if e["status"] == "equivalent" else e
            if twin["status"] in ("measured", "failed") and e.get("label") != "default":
                strategy.tell(e["config"], self._value(twin), twin.get("violation") or 0.0)
        if any(e.get("label") == "default" and e["status"] in ("measured", "failed") for e in res.experiments):
            self.log(f"resumed: {len(seen)} configuration(s) measured before, from {res.out / 'results.json'}")
        else:
            first = self.space.params["concurrency"].grid_values[0] if self.space.params["concurrency"].values \
                else self.space.params["concurrency"].low
            self._experiment({"concurrency": first}, "default", seen)
        proposed = sum(1 for e in res.experiments if e.get("label") != "default" and e["status"] in ("measured", "failed"))
        streak = 0
        while True:
            if elapsed() >= plan.budget_s:
                self.log(f"budget of {plan.budget_s / 60:g} min reached after {len(seen)} configurations")
                break
            if plan.trials is not None and proposed >= plan.trials:
                break
            config = strategy.ask()
            if config is None:
                self.log(f"the {strategy.name} search is complete")
                break
            canon = self.space.canonical(config, self.facts["batching_possible"])
            if key(canon) in seen:
                twin = res.get(seen[key(canon)])
                strategy.tell(config, self._value(twin), twin.get("violation") or 0.0)
                if not any(e["status"] == "equivalent" and e["config"] == config for e in res.experiments):
                    self._equivalent(config, twin)
                streak += 1
                if streak >= DUPLICATE_STREAK_MAX:
                    self.log("the strategy proposes only configurations measured already: stopping")
                    break
                continue
            streak = 0
            proposed += 1
            e = self._experiment(config, None, seen)
            strategy.tell(config, self._value(e), e.get("violation") or 0.0)
        elapsed()
        self._drop_incumbent_trial()
        res.save()

    def _value(self, exp: dict) -> float | None:
        if exp.get("status") not in ("measured", "equivalent"):
            return None
        iv = (exp.get("metrics") or {}).get(self.plan.objective.metric) or {}
        return iv.get("value")

    def _equivalent(self, config: dict, twin: dict) -> None:
        exp = {"id": self.res.next_id(), "label": None, "config": config, "options": self.space.split(config)[0],
               "concurrency": config.get("concurrency"), "status": "equivalent", "equivalent_to": twin["id"],
               "reason": (f"the same configuration as {twin['id']} in effect"
                          + (f" (the core does not batch this model: {self.facts['batching_reason']})"
                             if not self.facts["batching_possible"] else "")),
               "started_at": now_iso()}
        self.res.experiments.append(exp)
        self.res.save()

    def _experiment(self, config: dict, label: str | None, seen: dict) -> dict:
        res, plan = self.res, self.plan
        options, conc = self.space.split(config)
        exp = {"id": res.next_id(), "label": label, "config": config, "options": options, "concurrency": conc,
               "canonical": self.space.canonical(config, self.facts["batching_possible"]),
               "explicit": {**self.space.explicit(config), "concurrency": conc},
               "cost": list(self.space.cost(config)), "status": "running", "started_at": now_iso()}
        exp["key"] = key(exp["canonical"])
        res.experiments.append(exp)
        res.save()
        first = not any(e["status"] == "measured" for e in res.experiments)
        self.log(f"{exp['id']} {label or ''} {json.dumps(options)} concurrency {conc}".replace("  ", " "))
        trial = self.new_trial(exp["id"], options, self.work / exp["id"])
        t0 = time.monotonic()
        try:
            trial.start()
            exp["core_pid"] = trial.pid
            exp["server"] = trial.info
            res.save()
            self._check(trial, first)
            self._learn(trial)
            exp["canonical"] = self.space.canonical(config, self.facts["batching_possible"])
            exp["key"] = key(exp["canonical"])
            runs, inc_runs = self._measure(trial, conc)
            exp["server"]["avg_batch"] = trial.batch_ratio()
            self._evaluate(exp, runs)
            res.save_runs(exp["id"], runs)
            self._decide(exp, trial, runs, inc_runs)
        except ExperimentFailed as e:
            exp.update(status="failed", failure=e.kind, reason=e.reason)
            self.log(f"  failed ({e.kind}): {e.reason[:300]}")
            self._keep_log(trial, exp["id"])
            trial.stop()
        except BaseException:
            trial.stop()
            raise
        finally:
            exp["duration_s"] = round(time.monotonic() - t0, 1)
            if exp["status"] != "running":
                exp.pop("core_pid", None)
                seen[exp["key"]] = exp["id"]
            res.save()
        if self.incumbent is not trial:
            trial.stop()
            shutil.rmtree(trial.workdir, ignore_errors=True)
        return exp

    def _keep_log(self, trial: Trial, exp_id: str) -> None:
        if trial.core is not None and trial.core.log.exists():
            (self.plan.out / "logs").mkdir(exist_ok=True)
            shutil.copy(trial.core.log, self.plan.out / "logs" / f"{exp_id}.log")

    # ---- measuring, interleaved with the incumbent --------------------------------------------
    def _incumbent_trial(self) -> Trial | None:
        inc_id = self.res.doc.get("incumbent")
        if inc_id is None:
            return None
        if self.incumbent is None:
            exp = self.res.get(inc_id)
            trial = self.new_trial(inc_id, exp["options"], self.work / f"{inc_id}-again")
            try:
                trial.start()
                self._check(trial, False)
            except ExperimentFailed as e:
                trial.stop()
                self._incumbent_failed(f"it did not start again: {e.reason}")
                return None
            self.incumbent = trial
            self.inc_runs = self.res.load_runs(inc_id)
        return self.incumbent

    def _incumbent_failed(self, why: str) -> None:
        exp = self.res.get(self.res.doc["incumbent"])
        exp.update(status="failed", failure="crash", reason=f"incumbent until {self.res.next_id()}, then {why}")
        self.log(f"  the incumbent {exp['id']} failed: {why[:200]}")
        self._drop_incumbent_trial()
        self.res.doc["incumbent"] = None

    def _drop_incumbent_trial(self) -> None:
        if self.incumbent is not None:
            self.incumbent.stop()
            shutil.rmtree(self.incumbent.workdir, ignore_errors=True)
            self.incumbent = None

    def _measure(self, trial: Trial, conc: int) -> tuple[list[dict], list[dict]]:
        inc = self._incumbent_trial()
        inc_conc = self.res.get(self.res.doc["incumbent"])["concurrency"] if inc else None
        runs, inc_runs = [], []
        for r in range(self.plan.repeats):
            order = [inc, trial] if r % 2 == 0 else [trial, inc]
            for t in order:
                if t is None:
                    continue
                if t is trial:
                    runs.append(trial.measure(conc, self.files))
                    continue
                try:
                    inc_runs.append(inc.measure(inc_conc, self.files))
                except ExperimentFailed as e:
                    self._incumbent_failed(e.reason)
                    inc = None
        return runs, inc_runs

    def _evaluate(self, exp: dict, runs: list[dict], quiet: bool = False) -> None:
        m = measure.metrics(runs, self.llm)
        exp["metrics"] = m
        rate = m.get("error_rate") or 0.0
        if not m["completed"] and not m["errors"]:
            raise ExperimentFailed("timeout", f"no request completed within a measured window of "
                                              f"{self.plan.workload.load.duration_s:g} s: each takes longer (lengthen "
                                              "load.duration_s in the workload)")
        if rate > self.plan.max_error_rate or not m["completed"]:
            sample = next((r.get("error_sample") for r in runs if r.get("error_sample")), "")
            raise ExperimentFailed("errors", f"{m['errors']} of {m['completed'] + m['errors']} requests failed "
                                             f"({rate:.1%} > {self.plan.max_error_rate:.1%}): {sample}")
        exp["slo"], exp["feasible"], exp["violation"] = verdicts(self.plan.slos, m)
        exp["status"] = "measured"
        few = min(int(r["completed"]) for r in runs)
        if few < 10:
            exp["note"] = (f"a run completed only {few} request(s) in its window: its figures are coarse "
                           "(lengthen load.duration_s)")
        obj = m.get(self.plan.objective.metric) or {}
        if not quiet:
            self.log(f"  {self.plan.objective.metric} {obj.get('value', float('nan')):.4g} "
                     f"[{obj.get('ci_low', float('nan')):.4g}, {obj.get('ci_high', float('nan')):.4g}]"
                     f"{'' if exp['feasible'] else ' (misses an SLO)'}")

    def _decide(self, exp: dict, trial: Trial, runs: list[dict], inc_runs: list[dict]) -> None:
        res = self.res
        inc_id = res.doc.get("incumbent")
        if inc_id is None:
            res.doc["incumbent"] = exp["id"]
            self._drop_incumbent_trial()
            self.incumbent, self.inc_runs = trial, list(runs)
            exp["decision"] = "the incumbent (the first configuration measured)"
            return
        inc = res.get(inc_id)
        self.inc_runs += inc_runs
        res.save_runs(inc_id, self.inc_runs)
        try:
            self._evaluate(inc, self.inc_runs, quiet=True)     # its figures over every run so far
        except ExperimentFailed as e:
            self._incumbent_failed(e.reason)
            return self._decide(exp, trial, runs, [])
        cmp = measure.compare(runs, inc_runs, self.plan.objective, self.llm) if inc_runs else None
        exp["vs_incumbent"] = {"incumbent": inc_id, **(cmp or {})}
        replace, why = self._better(exp, inc, cmp)
        exp["decision"] = why
        self.log(f"  vs {inc_id}: {why}")
        if replace:
            res.doc["incumbent"] = exp["id"]
            self._drop_incumbent_trial()
            self.incumbent, self.inc_runs = trial, list(runs)

    def _better(self, cand: dict, inc: dict, cmp: dict | None) -> tuple[bool, str]:
        if cand["feasible"] and not inc["feasible"]:
            return True, "the new incumbent: it meets the SLOs, the incumbent does not"
        if inc["feasible"] and not cand["feasible"]:
            return False, "kept the incumbent: this configuration misses an SLO"
        if not cand["feasible"]:
            if cand["violation"] < inc["violation"]:
                return True, "the new incumbent: both miss an SLO, this one by less"
            return False, "kept the incumbent: both miss an SLO, this one by more"
        if cmp is None:
            return False, "kept the incumbent: no interleaved measurement to compare"
        ratio = f"{cmp['ratio']:.3g}x [{cmp['ci_low']:.3g}, {cmp['ci_high']:.3g}]"
        if cmp["verdict"] == "better":
            return True, f"the new incumbent: significantly better, {ratio}"
        if cmp["verdict"] == "worse":
            return False, f"kept the incumbent: significantly worse, {ratio}"
        if tuple(cand["cost"]) < tuple(inc["cost"]):
            return True, f"the new incumbent: not significantly different ({ratio}) and cheaper"
        return False, f"kept the incumbent: not significantly different ({ratio}), and not cheaper"
