"""What the cluster path asks of the rest of the server, checked without a cluster: serving
without --ray-address never imports Ray, cluster settings and replica options are validated,
and a front door pointed at no cluster says so at once."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mlos_core.config import ConfigError, load_settings
from mlos_core.errors import BadRequest
from mlos_core.registry import validate_options
from validation.core_proc import free_port

from ...conftest import ROOT


def test_serving_without_a_cluster_never_imports_ray(core_process, models):
    core = core_process()
    assert core.call("POST", "/v1/models/register", {"model_id": "t/mm@1", "path": str(models.matmul)})[0] == 200
    assert core.call("POST", "/v1/models/t%2Fmm%401/inference", {"x": [[1.0] * 64]})[0] == 200
    probe = ("import sys, mlos_core.__main__, mlos_core.http.app, mlos_core.dataplane, mlos_core.registry;"
             "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
    # and the running server's own process: /proc/<pid>/maps names Ray's native library if loaded
    maps = open(f"/proc/{core.proc.pid}/maps").read()
    assert "_raylet" not in maps


@pytest.mark.parametrize("overrides, message", [
    ({"cluster_min_replicas": 3, "cluster_max_replicas": 2}, "min_replicas <= max_replicas"),
    ({"cluster_max_replicas": 0, "cluster_min_replicas": 0}, "max_replicas >= 1"),
    ({"cluster_target_ongoing_requests": 0}, "target_ongoing_requests"),
    ({"cluster_models_per_replica": 0}, "models_per_replica"),
    ({"cluster_replica_resources": "[1, 2]"}, "JSON object"),
    ({"cluster_replica_resources": '{"worker": -1}'}, "JSON object"),
    ({"cluster_look_back_period_s": 0}, "look_back_period_s"),
])
def test_cluster_settings_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(None, overrides, environ={})


def test_cluster_settings_from_yaml_and_environment(tmp_path):
    cfg = tmp_path / "mlos-core.yaml"
    cfg.write_text("cluster:\n  ray_address: auto\n  min_replicas: 0\n  max_replicas: 4\n"
                   "  replica_resources: '{\"worker\": 0.5}'\n")
    s = load_settings(str(cfg), None, environ={"MLOS_CLUSTER_MODELS_PER_REPLICA": "2"})
    assert (s.ray_address, s.cluster_min_replicas, s.cluster_max_replicas, s.cluster_models_per_replica) == \
        ("auto", 0, 4, 2)
    assert s.cluster_replica_resources == '{"worker": 0.5}'


def test_replica_options_at_register_are_validated():
    ok = validate_options({"min_replicas": 0, "max_replicas": 3, "target_ongoing_requests": 1.5,
                           "upscale_delay_s": 0, "downscale_delay_s": 5, "look_back_period_s": 2})
    assert ok["max_replicas"] == 3 and ok["target_ongoing_requests"] == 1.5
    for bad in ({"min_replicas": 3, "max_replicas": 2}, {"max_replicas": 0}, {"min_replicas": -1},
                {"target_ongoing_requests": 0}, {"min_replicas": 1.5}, {"look_back_period_s": 0}):
        with pytest.raises(BadRequest):
            validate_options(bad)


def test_a_front_door_without_a_cluster_stops_with_the_reason(tmp_path):
    pytest.importorskip("ray.serve", reason="Ray Serve is the 'ray' extra (make test installs it)")
    dead = free_port()  # nothing listens there
    done = subprocess.run([sys.executable, "-m", "mlos_core", "--port", str(free_port()), "--no-ipc",
                           "--data-dir", str(tmp_path / "data"), "--ray-address", f"127.0.0.1:{dead}"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 1
    assert f"no Ray cluster answers at 127.0.0.1:{dead}" in done.stderr, done.stderr[-1500:]
    done = subprocess.run([sys.executable, "-m", "mlos_core", "--no-ipc", "--data-dir", str(tmp_path / "data"),
                           "--ray-address", "not-an-address"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
