"""Cluster mode (``--ray-address``) on the cluster tests' Ray cluster (a head and two worker nodes
of one CPU each, every node with a private directory; ``validation.ray_cluster``): the experiments
run on one worker node whose CPU the tuner holds, the model copied there through Ray's object
store and verified, and the tuner still finds the construction's answer (batching wins at
concurrency 32 on the fixed-cost MatMul)."""
from __future__ import annotations

from pathlib import Path

import pytest

from axon_pkg.manifest import sha256_file
from mlos_tune.cli import main
from tests.mlos_core.cluster.conftest import ray_cluster  # noqa: F401  (the cluster tests' fixture, reused)

from .conftest import results, short_load, tune_args, write

ray = pytest.importorskip("ray", reason="cluster mode needs the 'ray' extra (make test installs it)")


def test_experiments_run_on_a_held_cluster_node(ray_cluster, tune_models, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    model = tune_models["fixed"]
    rc = main(tune_args(model, out, write(tmp_path / "w.yaml", short_load(32)),
                        write(tmp_path / "s.yaml", {"base": "none", "max_batch_size": [1, 32]}),
                        "--ray-address", ray_cluster.address, repeats=2))
    log = capsys.readouterr().out
    assert rc == 0, log
    doc = results(out)
    workers = {w.node_id: w.mlos_name for w in ray_cluster.workers}
    node = doc["cluster"]["node"]
    assert node["node_id"] in workers, (node, workers)            # a worker node, not the head
    assert node["hardware"]["threads"] >= 1 and "held by the tuner" in log
    # the model was copied into that node's private directory, verified, and registered from there
    on_node = Path(doc["cluster"]["model_path_on_node"])
    assert on_node.is_relative_to(ray_cluster.node_dir(workers[node["node_id"]]))
    assert on_node.name == model.name and sha256_file(on_node) == sha256_file(model)
    exps = {e["id"]: e for e in doc["experiments"]}
    default, unbatched = exps["exp-000"], exps["exp-001"]   # max_batch_size 32 is the server's default
    assert [e["status"] for e in exps.values()] == ["measured", "measured", "equivalent"]
    assert all(e["server"]["node"]["node_id"] == node["node_id"] for e in (default, unbatched))
    assert default["server"]["avg_batch"] > 2 and unbatched["server"]["avg_batch"] == 1.0
    assert unbatched["vs_incumbent"]["incumbent"] == "exp-000" and unbatched["vs_incumbent"]["verdict"] == "worse"
    assert [c["status"] for c in doc["final"]] == ["measured", "measured"]
    assert all(c["server"]["node"]["node_id"] == node["node_id"] for c in doc["final"])
    assert doc["best"]["options"] == {"max_batch_size": 32}, doc["best"]
    # nothing left behind on the node: its cores stopped, the session's directory removed
    sessions = ray_cluster.node_dir(workers[node["node_id"]]) / "mlos-tune" / "sessions"
    assert not list(sessions.iterdir())


def test_the_node_is_held_while_the_tuner_measures(ray_cluster, tune_models):  # noqa: F811
    """Nothing else is placed on the tuner's node (one experiment per node at a time); the other
    worker node stays free."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from mlos_tune.cluster import ClusterMode
    from mlos_tune.model_ref import ModelRef

    model = ModelRef(str(tune_models["fixed"]), tune_models["fixed"], "onnx", "tune/fixed@1")
    cluster = ClusterMode(ray_cluster.address, log=lambda s: None).connect(model)
    try:
        held = cluster.node["node_id"]
        other = next(w.node_id for w in ray_cluster.workers if w.node_id != held)

        @ray.remote(num_cpus=1)
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        def place(node_id):
            return where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()

        on_other, on_held = place(other), place(held)
        assert ray.get(on_other, timeout=120) == other
        ready, _ = ray.wait([on_held], timeout=5)
        assert not ready, "a task was placed on the node the tuner holds"
        ray.cancel(on_held, force=True)
    finally:
        cluster.close()
    assert not ray.is_initialized()


def test_a_cluster_that_cannot_be_joined_is_refused_before_anything_runs(tune_models, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(tune_args(tune_models["fixed"], out, write(tmp_path / "w.yaml", short_load(4)),
                        write(tmp_path / "s.yaml", {"base": "none", "max_batch_size": [1]}),
                        "--ray-address", "127.0.0.1:1"))
    assert rc == 2
    assert "--ray-address 127.0.0.1:1: cannot join the cluster" in capsys.readouterr().err
    assert not (out / "results.json").exists()
