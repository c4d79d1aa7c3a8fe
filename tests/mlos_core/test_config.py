"""Configuration precedence: defaults < mlos-core.yaml < environment < command line."""
from __future__ import annotations

import pytest

from mlos_core.config import ConfigError, load_settings

YAML = """
api:
  http: {port: 9001, host: 127.0.0.2}
  ipc: {enabled: false, socket_path: /tmp/x.sock}
models: {memory_budget_mb: 512, keep_alive: 300, load_on_start: eager}
"""


def test_defaults_bind_loopback():
    s = load_settings(None, {}, environ={})
    assert (s.host, s.port, s.keep_alive, s.memory_budget_mb) == ("127.0.0.1", 8080, -1, 0)
    assert s.ipc_path.name == "mlos.sock"


def test_precedence(tmp_path):
    cfg = tmp_path / "mlos-core.yaml"
    cfg.write_text(YAML)
    s = load_settings(str(cfg), {}, environ={})
    assert (s.port, s.host, s.ipc_enabled, str(s.ipc_path)) == (9001, "127.0.0.2", False, "/tmp/x.sock")
    assert (s.memory_budget_mb, s.keep_alive, s.load_on_start) == (512, 300, "eager")
    s = load_settings(str(cfg), {}, environ={"MLOS_HTTP_PORT": "9002", "MLOS_KEEP_ALIVE": "-1"})
    assert (s.port, s.keep_alive) == (9002, -1)
    s = load_settings(str(cfg), {"port": 9003}, environ={"MLOS_HTTP_PORT": "9002"})
    assert s.port == 9003


def test_config_file_from_environment(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(YAML)
    assert load_settings(None, {}, environ={"MLOS_CONFIG": str(cfg)}).port == 9001


@pytest.mark.parametrize("overrides, environ, message", [
    ({"port": 70000}, {}, "outside 0-65535"),
    ({}, {"MLOS_HTTP_PORT": "eighty"}, "MLOS_HTTP_PORT: 'eighty' is not a valid int"),
    ({"load_on_start": "soon"}, {}, "lazy or eager"),
    ({"keep_alive": -5}, {}, "keep_alive"),
    ({"max_queue": 0}, {}, "max_queue must be at least 1"),
    ({}, {"MLOS_DEMO": "maybe"}, "not a valid bool"),
])
def test_bad_values_are_named(overrides, environ, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(None, overrides, environ=environ)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        load_settings(str(tmp_path / "missing.yaml"), {}, environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("api: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(str(bad), {}, environ={})
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(str(bad), {}, environ={})


def test_client_shared_memory_setting():
    assert load_settings(None, {}, environ={}).allow_client_shm == "auto"
    assert load_settings(None, {"allow_client_shm": "TRUE"}, environ={}).allow_client_shm == "true"
    assert load_settings(None, {}, environ={"MLOS_ALLOW_CLIENT_SHM": "0"}).allow_client_shm == "false"
    with pytest.raises(ConfigError, match="allow_client_shm must be auto, true or false, not 'maybe'"):
        load_settings(None, {"allow_client_shm": "maybe"}, environ={})


def test_allow_client_shm_flag():
    from mlos_core.__main__ import _parser

    assert _parser().parse_args(["--allow-client-shm=true"]).allow_client_shm == "true"
    assert _parser().parse_args(["--allow-client-shm"]).allow_client_shm == "true"
    assert _parser().parse_args([]).allow_client_shm is None
