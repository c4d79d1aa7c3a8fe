"""How the final round settles the answer, on constructed measurements (the decisions, not the
machine, under test): significance decides, an insignificant difference goes to the cheaper
configuration, and an SLO outranks the objective."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from mlos_tune.final import settle
from mlos_tune.results import Results
from mlos_tune.slo import OBJECTIVES, parse_slos
from mlos_tune.space import build_space


def run(rate: float, latency_ms: float, seed: int, seconds: float = 2.0) -> dict:
    """A run of ``rate`` requests/s, Poisson completions, exponential latencies."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * seconds)
    done = np.sort(rng.uniform(0, seconds, n))
    lat = rng.exponential(latency_ms, n) + latency_ms / 2
    return {"duration_s": seconds, "completed": int(n), "errors": 0, "done_s": done.tolist(),
            "latencies_ms": lat.tolist()}


SPACE = build_space({"base": "none", "instances": [1, 2, 4], "intra_op_threads": [1]}, "onnx", [8])


def contender(role, options, rate, latency, seed0):
    config = {**options, "concurrency": 8}
    return {"role": role, "source": None if role == "default" else f"exp-{role}", "status": None,
            "config": config, "options": options, "concurrency": 8, "cost": list(SPACE.cost(config)),
            "runs": [run(rate, latency, seed0 + i) for i in range(3)]}


def tuner(tmp_path, slos=()):
    space = SPACE
    plan = SimpleNamespace(objective=OBJECTIVES["maximize_throughput"], slos=parse_slos(list(slos), False),
                           max_error_rate=0.01)
    return SimpleNamespace(plan=plan, space=space, llm=False, log=lambda s: None,
                           facts={"batching_possible": True, "batching_reason": None},
                           res=Results(tmp_path, {}))


def test_a_significant_win_beats_cost(tmp_path):
    group = [contender("best", {"instances": 4}, 2000, 4, 0), contender("runner-up", {"instances": 1}, 1000, 8, 10),
             contender("default", {}, 1000, 8, 20)]
    out = settle(tuner(tmp_path), group)["best"]
    assert out["options"] == {"instances": 4, "intra_op_threads": 0} and out["vs_runner_up"]["verdict"] == "better"
    assert out["vs_default"]["verdict"] == "better" and 1.7 < out["vs_default"]["ratio"] < 2.3
    assert "significantly better than the default" in out["verdict_vs_default"]
    assert (tmp_path / "runs" / "final-0.json").exists()


def test_indistinguishable_goes_to_the_cheaper(tmp_path):
    # the expensive one measures a little faster (fixed seeds: the same figures every run), within noise
    group = [contender("best", {"instances": 4}, 1000, 8, 0),
             contender("runner-up", {"instances": 1, "intra_op_threads": 1}, 985, 8, 10),
             contender("default", {}, 985, 8, 20)]
    out = settle(tuner(tmp_path), group)["best"]
    assert out["options"] == {"instances": 1, "intra_op_threads": 1}     # 1 thread in all, the others 2 or more
    assert out["why"].startswith("not significantly different from") and out["why"].endswith("and cheaper")
    assert out["vs_runner_up"]["verdict"] == "no significant difference"
    assert "not significantly different from the runner-up" in out["verdict_vs_runner_up"]


def test_an_slo_outranks_the_objective(tmp_path):
    group = [contender("best", {"instances": 2}, 3000, 40, 0),
             contender("runner-up", {"instances": 1, "intra_op_threads": 1}, 1000, 2, 10),
             contender("default", {}, 900, 2, 20)]
    t = tuner(tmp_path, ["p99_ms=30"])
    result = settle(t, group)
    out = result["best"]
    assert out["feasible"] and out["options"] == {"instances": 1, "intra_op_threads": 1}
    fast = next(c for c in result["contenders"] if c["role"] == "best")
    assert fast["feasible"] is False and fast["slo"]["p99_ms"]["met"] is False
