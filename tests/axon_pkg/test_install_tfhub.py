"""axon-py against a local Kaggle Models + TF Hub redirect stand-in (validation/kaggle_server.py), with
the stock kagglehub: TF Hub handles mapped to Kaggle through the redirect, Kaggle handles as they are,
a Keras SavedModel converted with tf2onnx in the TensorFlow converter environment, its signature in the
manifest, installed, verified, registered and served with parity to TensorFlow called directly;
a corrupted download (kagglehub's MD5 check), unknown models, unreachable endpoints."""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import yaml

from validation.core_proc import free_port
from validation.kaggle_server import KaggleModels

from .conftest import converter_python, run_in

KAGGLE = "mlos-test/tiny-cnn/tensorFlow2/classification"
TFHUB = "mlos-test/vision/tiny_cnn/classification/2"


@pytest.fixture(scope="module")
def tf_python():
    return converter_python("tf")


@pytest.fixture(scope="module")
def saved_model(tf_python, tmp_path_factory):
    return run_in(tf_python, "validation.keras_models", "build", str(tmp_path_factory.mktemp("keras") / "sm"))


@pytest.fixture(scope="module")
def kaggle(saved_model):
    server = KaggleModels().start()
    root = Path(saved_model["dir"])
    files = {rel: root / rel for rel in saved_model["files"]}
    server.add_model(KAGGLE, 1, files)
    server.add_model(KAGGLE, 2, files)
    server.add_tfhub_redirect(TFHUB, KAGGLE, 2)
    yield server
    server.stop()


@pytest.fixture
def kaggle_env(kaggle, monkeypatch, tmp_path, axon_home):
    """kagglehub as it is, reaching the stand-in: kagglesdk's LOCALHOST environment, through the
    stand-in as its HTTP proxy (127.0.0.1 stays direct for the core and the other stand-ins)."""
    for k in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(k, kaggle.url)
    for k in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(k, "127.0.0.1,::1")
    for k in ("HTTPS_PROXY", "https_proxy", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("AXON_TFHUB_ENDPOINT", kaggle.url)
    kaggle.clear_log()
    return kaggle


def install_json(axon, *args):
    code, out, err = axon("install", *args, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def test_tfhub_handle_install_verify_register_and_serve_with_tensorflow_parity(
        axon, kaggle_env, saved_model, tf_python, core_process, tmp_path, capsys):
    ref = f"tfhub/{TFHUB}@latest"
    result = install_json(axon, ref)
    assert result["format"] == "onnx" and result["package"] == f"tfhub/{TFHUB}@kaggle-v2"
    conv = result["conversion"]
    assert conv["tool"] == "tf2onnx" and conv["parity_max_abs_diff"] < 1e-5
    manifest = yaml.safe_load(open(Path(result["path"]) / "manifest.yaml"))
    src = manifest["x-mlos"]["source"]
    assert src["kaggle_handle"] == f"{KAGGLE}/2" and src["mapping"] == f"redirected from {kaggle_env.url}/{TFHUB}"
    sig = manifest["x-mlos"]["signature"]
    assert sig["name"] == "serving_default"
    assert sig["inputs"] == [{"name": "image", "dtype": "float32", "shape": [-1, 32, 32, 3]}]
    assert sig["outputs"] == [{"name": "output_0", "dtype": "float32", "shape": [-1, 5]}]
    assert [t["name"] for t in manifest["spec"]["io"]["inputs"]] == ["image"]
    assert {f["path"] for f in manifest["spec"]["format"]["files"]} == {"model.onnx"}
    assert axon("verify", ref)[0] == 0
    # kagglehub took every file of version 2 through the storage redirect, each with its MD5
    assert len(kaggle_env.log_for("/storage/mlos-test/tiny-cnn/MODEL_FRAMEWORK_TENSOR_FLOW_2/classification/2/",
                                  "GET")) == len(saved_model["files"])
    with capsys.disabled():
        print(f"\nTF Hub install: {result['timings_s']}; tf2onnx parity {conv['parity_max_abs_diff']:.1e}")

    core = core_process()
    assert axon("register", ref, "--endpoint", core.url)[0] == 0
    x = np.random.default_rng(5).random((3, 32, 32, 3)).astype(np.float32)
    status, _, answer = core.call("POST", f"/v2/models/{quote(ref, safe='')}/infer", {"inputs": [
        {"name": "image", "shape": [3, 32, 32, 3], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert status == 200, answer
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(3, 5)
    np.save(tmp_path / "x.npy", x)
    want = np.array(run_in(tf_python, "validation.keras_models", "reference", saved_model["dir"],
                           "--input", str(tmp_path / "x.npy"))["output_0"], dtype=np.float32)
    diff = float(np.abs(got - want).max())
    with capsys.disabled():
        print(f"TensorFlow vs the core: max abs diff {diff:.1e}")
    assert diff < 1e-5 and np.allclose(got.sum(axis=1), 1, atol=1e-5)


def test_kaggle_handle_latest_is_the_newest_version(axon, kaggle_env):
    result = install_json(axon, f"tfhub/{KAGGLE}@latest")
    assert result["package"] == f"tfhub/{KAGGLE}@kaggle-v2"
    pinned = install_json(axon, f"tfhub/{KAGGLE}@1")
    assert pinned["package"] == f"tfhub/{KAGGLE}@kaggle-v1"
    assert kaggle_env.log_for("GetModelInstance", "POST")


def test_a_corrupted_download_fails_kagglehubs_md5_check(axon, kaggle_env, axon_home):
    kaggle_env.corrupt_next_download("saved_model.pb", at_byte=10)
    code, _, err = axon("install", f"tfhub/{KAGGLE}@1", "--quiet")
    assert code == 1 and "checksum" in err.lower(), err
    assert not list(axon_home.rglob("manifest.yaml"))


@pytest.mark.parametrize("ref, message", [
    ("tfhub/mlos-test/vision/nothing/2", "TF Hub knows no model mlos-test/vision/nothing/2"),
    ("tfhub/mlos-test/nothing/tensorFlow2/classification", "Kaggle Models has no model mlos-test/nothing/tensorFlow2"),
    (f"tfhub/{KAGGLE}@7", f"Kaggle Models has no version 7 of {KAGGLE}"),
])
def test_unknown_models(axon, kaggle_env, ref, message):
    code, _, err = axon("install", ref, "--quiet")
    assert code == 1 and message in err, err


def test_unreachable_endpoints_fail_fast_and_say_where(axon, kaggle_env, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AXON_TFHUB_ENDPOINT", dead)
    t0 = time.monotonic()
    code, _, err = axon("install", f"tfhub/{TFHUB}", "--quiet")
    assert code == 1 and f"cannot reach TF Hub's redirect service at {dead}/{TFHUB}" in err, err
    for k in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(k, dead)
    code, _, err = axon("install", f"tfhub/{KAGGLE}", "--quiet")
    assert code == 1 and "cannot reach Kaggle" in err, err
    assert time.monotonic() - t0 < 10
