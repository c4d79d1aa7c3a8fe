"""The final round: the answer, settled in one window of time.

The search compares each candidate with the incumbent of its moment; the runner-up it ends with
was measured at another time. So the incumbent, the runner-up (the best other configuration by
its own figures) and the default (no options, at the incumbent's client concurrency) each get a
fresh core and are measured ``repeats`` times again, interleaved round-robin with the order
rotating. The point-best of that round (feasible first) is the best unless another contender is
not significantly different from it and cheaper: then the cheaper one is. The default is always a
contender, so the answer is never significantly worse than what the core does by itself.
"""
from __future__ import annotations

import shutil

from . import measure
from .errors import ExperimentFailed, NothingMeasured, TuneError
from .slo import verdicts
from .space import key


def _rank(exp: dict, objective) -> tuple:
    v = ((exp.get("metrics") or {}).get(objective.metric) or {}).get("value")
    v = v if v is not None else float("-inf") if objective.higher_is_better else float("inf")
    return (not exp.get("feasible"), exp.get("violation") or 0.0, -v if objective.higher_is_better else v)


def _sentence(cmp: dict | None, objective, other: str) -> str:
    if cmp is None:
        return f"not compared with {other}"
    what = "throughput" if objective.higher_is_better else objective.metric.replace("_ms", "").replace("_", " ")
    iv = f"{cmp['ratio']:.3g}x {other}'s [{cmp['ci_low']:.3g}, {cmp['ci_high']:.3g}] (95% CI)"
    if cmp["verdict"] == "no significant difference":
        return f"{what} {iv}: not significantly different from {other}"
    return f"{what} {iv}: significantly {cmp['verdict']} than {other}"


def contenders(tuner) -> list[dict]:
    res, objective, space = tuner.res, tuner.plan.objective, tuner.space
    measured = [e for e in res.experiments if e["status"] == "measured"]
    if not measured:
        raise NothingMeasured("no configuration could be measured: every experiment failed (see results.json "
                              "and logs/)")
    ranked = sorted(measured, key=lambda e: _rank(e, objective))
    inc_id = res.doc.get("incumbent")
    best = res.get(inc_id) if inc_id and res.get(inc_id)["status"] == "measured" else ranked[0]
    out = [{"role": "best", "source": best["id"], "config": best["config"]}]
    runner = next((e for e in ranked if e["id"] != best["id"]), None)
    if runner is not None:
        out.append({"role": "runner-up", "source": runner["id"], "config": runner["config"]})
    possible = tuner.facts["batching_possible"]
    default = {"concurrency": best["concurrency"]}
    twin = next((e for e in measured if key(space.canonical(e["config"], possible)) ==
                 key(space.canonical(default, possible))), None)
    out.append({"role": "default", "source": twin["id"] if twin else None, "config": default})
    uniq, keys = [], {}
    for c in out:
        k = key(space.canonical(c["config"], possible))
        if k in keys:
            keys[k]["role"] += f" = {c['role']}"
            continue
        keys[k] = c
        uniq.append(c)
    return uniq


def final_round(tuner) -> dict:
    res, plan, space = tuner.res, tuner.plan, tuner.space
    group = contenders(tuner)
    tuner.log(f"final round: {', '.join(c['role'] + (' ' + c['source'] if c['source'] else '') for c in group)}"
              f", {plan.repeats} interleaved runs each")
    trials = {}
    try:
        for c in group:
            options, conc = space.split(c["config"])
            c.update(options=options, concurrency=conc, cost=list(space.cost(c["config"])), runs=[])
            t = tuner.new_trial(f"final-{c['role']}", options, tuner.work / f"final-{len(trials)}")
            try:
                t.start()
                tuner._check(t, False)
                trials[id(c)] = t
            except ExperimentFailed as e:
                t.stop()
                c.update(status="failed", failure=e.kind, reason=e.reason)
        live = [c for c in group if id(c) in trials]
        for r in range(plan.repeats):
            for c in live[r % len(live):] + live[:r % len(live)] if live else []:
                if c.get("status") == "failed":
                    continue
                try:
                    c["runs"].append(trials[id(c)].measure(c["concurrency"], tuner.files))
                except ExperimentFailed as e:
                    c.update(status="failed", failure=e.kind, reason=e.reason)
        for c in live:
            if c.get("status") == "failed":
                continue
            c["server"] = {**trials[id(c)].info, "avg_batch": trials[id(c)].batch_ratio()}
    finally:
        for t in trials.values():
            t.stop()
            shutil.rmtree(t.workdir, ignore_errors=True)
    return settle(tuner, group)


def settle(tuner, group: list[dict]) -> dict:
    plan, space = tuner.plan, tuner.space
    objective = plan.objective
    for c in group:
        if c.get("status") == "failed":
            continue
        c["metrics"] = measure.metrics(c["runs"], tuner.llm)
        rate = c["metrics"].get("error_rate") or 0.0
        if rate > plan.max_error_rate or not c["metrics"]["completed"]:
            c.update(status="failed", failure="errors", reason=f"{rate:.1%} of requests failed")
            continue
        c["slo"], c["feasible"], c["violation"] = verdicts(plan.slos, c["metrics"])
        c["status"] = "measured"
    ok = [c for c in group if c["status"] == "measured"]
    if not ok:
        raise NothingMeasured("every contender of the final round failed: " +
                        "; ".join(f"{c['role']}: {c.get('reason')}" for c in group))
    feasible = [c for c in ok if c["feasible"]]
    point = min(feasible or ok, key=lambda c: _rank(c, objective))
    for c in ok:
        c["vs_point_best"] = None if c is point else measure.compare(c["runs"], point["runs"], objective, tuner.llm)
    ties = [c for c in (feasible or ok) if c is point or (c["vs_point_best"] or {}).get("verdict")
            == "no significant difference"]
    winner = min(ties, key=lambda c: tuple(c["cost"]))
    if winner is point:
        why = f"the {'best' if feasible else 'least infeasible'} of the final round on {objective.metric}"
    else:
        why = (f"not significantly different from {point['role']} ({point['source'] or 'default'}) on "
               f"{objective.metric}, and cheaper")
    default = next(c for c in group if "default" in c["role"])
    others = [c for c in ok if c is not winner]
    runner = min(others, key=lambda c: _rank(c, objective)) if others else None

    def vs(c):
        if c is None or c is winner or c.get("status") != "measured":
            return None
        return measure.compare(winner["runs"], c["runs"], objective, tuner.llm)

    vs_default, vs_runner = vs(default), vs(runner)
    possible = tuner.facts["batching_possible"]
    best = {"experiment": winner["source"] or "default", "role": winner["role"],
            "options": space.explicit(winner["config"], possible), "concurrency": winner["concurrency"],
            "metrics": winner["metrics"], "slo": winner["slo"], "feasible": winner["feasible"], "why": why,
            "vs_default": vs_default, "vs_runner_up": vs_runner,
            "runner_up": (runner["source"] or "default") if runner else None,
            "verdict_vs_default": ("the default configuration is the best found" if "default" in winner["role"]
                                   else _sentence(vs_default, objective, "the default")),
            "verdict_vs_runner_up": _sentence(vs_runner, objective, f"the runner-up ({runner['source'] or 'default'})")
            if runner else "no runner-up: one configuration only"}
    if not feasible:
        best["why"] += "; no configuration met every SLO"
    if not possible:
        best["note"] = f"the core does not batch this model: {tuner.facts['batching_reason']}"
    for i, c in enumerate(group):
        if c.get("runs"):
            tuner.res.save_runs(f"final-{i}", c["runs"])
            c["runs_file"] = f"runs/final-{i}.json"
        c.pop("runs", None)
    tuner.log(f"best: {best['experiment']} {best['options']} concurrency {best['concurrency']}: {why}")
    tuner.log(f"  vs default: {best['verdict_vs_default']}")
    tuner.log(f"  vs runner-up: {best['verdict_vs_runner_up']}")
    return {"contenders": group, "best": best}
