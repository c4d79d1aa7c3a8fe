"""Access control (issue 11, finding 3): with --api-key, every API answers 401 in its protocol's
error shape without the key, and the stock clients (openai, tritonclient, axon-py) work with it.
Before: there was no key option at all."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mlos_core.auth import ApiKeys
from mlos_core.config import ConfigError, load_settings

KEY, OTHER = "k-0123456789abcdef0123", "second-key-abcdefghijkl"
MM, MM_Q = "t/mm@1", "t%2Fmm%401"
BEARER = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def keyed(serving, models):
    async def start(**settings):
        client = await serving(None, api_keys=[KEY, OTHER], **settings)
        r = await client.post("/v1/models/register", json={"model_id": MM, "path": str(models.matmul)}, headers=BEARER)
        assert r.status == 200, await r.text()
        return client
    return start


async def test_every_protocol_answers_401_in_its_own_shape(keyed):
    client = await keyed()
    r = await client.post(f"/v2/models/{MM_Q}/infer", json={"inputs": []})
    doc = await r.json()
    assert r.status == 401 and doc["code"] == "unauthorized" and "API key is required" in doc["error"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = await client.post("/v1/chat/completions", json={"model": MM, "messages": []})
    doc = await r.json()
    assert r.status == 401 and doc["error"]["code"] == "unauthorized" and doc["error"]["type"] == "invalid_request_error"
    for method, path in (("GET", "/v1/models"), ("GET", "/health"), ("GET", "/metrics"), ("GET", "/v2/health/live"),
                         ("DELETE", f"/v1/models/{MM_Q}"), ("GET", "/no/such/route")):
        r = await client.request(method, path)
        assert r.status == 401, (method, path)
    assert (await client.get("/v1/models", headers=BEARER)).status == 200  # the model is still there


async def test_a_key_is_accepted_as_bearer_or_in_the_key_header_and_a_wrong_one_is_not(keyed):
    client = await keyed()
    x = {"x": np.ones((1, 64)).tolist()}
    for headers in (BEARER, {"Authorization": f"bearer {OTHER}"}, {"X-API-Key": KEY}):
        r = await client.post(f"/v1/models/{MM_Q}/inference", json=x, headers=headers)
        assert r.status == 200, headers
    for headers in ({"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}, {"X-API-Key": KEY[:-1]},
                    {"Authorization": "Basic " + KEY}):
        r = await client.post(f"/v1/models/{MM_Q}/inference", json=x, headers=headers)
        assert r.status == 401, headers
    assert "not valid" in (await r.json())["error"] or "required" in (await r.json())["error"]


async def test_health_and_metrics_can_be_left_open(keyed):
    client = await keyed(public_health=True, public_metrics=True)
    for path in ("/health", "/v2/health/live", "/v2/health/ready", "/metrics"):
        assert (await client.get(path)).status == 200, path
    assert (await client.get("/status")).status == 401
    assert (await client.get("/v1/models")).status == 401


def test_keys_compare_by_digest_and_file_keys_load(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# the team's keys\nfile-key-0123456789abcd\n\n")
    settings = load_settings(None, {"api_keys": [KEY], "api_key_file": str(keys_file)}, environ={})
    keys = ApiKeys.from_settings(settings)
    assert keys.authorized({"authorization": "Bearer file-key-0123456789abcd"})
    assert keys.authorized({"x-api-key": KEY})
    assert not keys.authorized({"x-api-key": "file-key"})
    assert not keys.authorized({})
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="holds no key"):
        ApiKeys.from_settings(load_settings(None, {"api_key_file": str(empty)}, environ={}))


def test_a_public_address_without_a_key_is_refused_at_start(tmp_path):
    cmd = [sys.executable, "-m", "mlos_core", "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path / "d"),
           "--no-ipc"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "refusing to serve 0.0.0.0 without an API key" in done.stderr and "--allow-unauthenticated" in done.stderr


@pytest.fixture
def keyed_core(core_process, models):
    core = core_process("--api-key", KEY, "--public-health")
    status, _, body = core.call("POST", "/v1/models/register", {"model_id": MM, "path": str(models.matmul)},
                                headers=BEARER)
    assert status == 200, body
    return core


def test_openai_client_with_and_without_its_api_key(keyed_core, models):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=keyed_core.url + "/v1", api_key=KEY)
    assert MM in [m.id for m in client.models.list()]
    stranger = openai.OpenAI(base_url=keyed_core.url + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        stranger.models.list()
    assert e.value.status_code == 401


def test_tritonclient_sends_the_key_as_a_header(keyed_core, models):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=keyed_core.url.removeprefix("http://"))
    assert client.is_server_live()  # --public-health
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    result = client.infer(MM, [inp], headers=BEARER)
    np.testing.assert_allclose(result.as_numpy("y"), x @ models.matmul_w, rtol=1e-4)
    with pytest.raises(InferenceServerException, match="API key is required"):
        client.infer(MM, [inp])
    client.close()


def test_axon_register_sends_the_key(keyed_core, models, tmp_path, monkeypatch):
    from axon_pkg.cli import main as axon

    monkeypatch.setenv("AXON_HOME", str(tmp_path / "axon"))
    monkeypatch.delenv("MLOS_API_KEY", raising=False)
    assert axon(["install", str(models.matmul), "-q"]) == 0
    ref = "local/matmul"
    assert axon(["register", ref, "--endpoint", keyed_core.url]) == 1  # no key: refused with a hint
    assert axon(["register", ref, "--endpoint", keyed_core.url, "--api-key", KEY]) == 0
    monkeypatch.setenv("MLOS_API_KEY", KEY)
    assert axon(["register", ref, "--endpoint", keyed_core.url, "--model-id", "local/again@1"]) == 0
    status, _, doc = keyed_core.call("GET", "/v1/models", headers=BEARER)
    assert {"local/again@1"} <= {m["id"] for m in doc["models"]}
