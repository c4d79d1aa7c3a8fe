"""axon-py against a local ModelScope hub (validation/modelscope_server.py) with the stock SDK: a tiny
transformers classifier in ModelScope's layout (configuration.json beside the transformers files),
converted to ONNX as Hugging Face repos are, installed, verified, registered and served with parity
to transformers called directly; revisions, a corrupted download, unknown models, an unreachable endpoint."""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from validation.core_proc import free_port
from validation.modelscope_server import ModelScopeHub

from ..hub import repos

REPO = "mlos-test/tiny-bert-classifier"
CONFIGURATION = json.dumps({"framework": "pytorch", "task": "text-classification",
                            "model": {"type": "bert"}, "pipeline": {"type": "text-classification"}})


@pytest.fixture(scope="module")
def tiny_files():
    files = repos.tiny_model_files("bert-classifier")
    return {**files, "configuration.json": CONFIGURATION.encode()}


@pytest.fixture(scope="module")
def modelscope(tiny_files):
    hub = ModelScopeHub().start()
    sha = hub.commit(REPO, tiny_files)
    hub.tag(REPO, "v1.0", sha)
    yield hub
    hub.stop()


@pytest.fixture
def ms_env(modelscope, monkeypatch, tmp_path, axon_home):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", modelscope.url)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope-cache"))
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    modelscope.clear_log()
    return modelscope


def install_json(axon, *args):
    code, out, err = axon("install", *args, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def test_install_convert_verify_register_and_classify_with_transformers_parity(
        axon, ms_env, tiny_files, core_process, capsys):
    ref = f"modelscope/{REPO}@latest"
    result = install_json(axon, ref)
    assert result["format"] == "onnx" and result["package"].startswith(f"modelscope/{REPO}@files-")
    conv = result["conversion"]
    assert conv["converted"] and conv["task"] == "text-classification" and conv["parity_max_abs_diff"] < 1e-4
    manifest = yaml.safe_load(open(Path(result["path"]) / "manifest.yaml"))
    src = manifest["x-mlos"]["source"]
    assert src["hub"] == "modelscope" and src["endpoint"] == ms_env.url and src["revision"] == "master"
    paths = {f["path"] for f in manifest["spec"]["format"]["files"]}
    assert {"model.onnx", "tokenizer.json", "config.json", "configuration.json"} <= paths
    assert "model.safetensors" not in paths
    assert axon("verify", ref)[0] == 0
    # the SDK's own routes: one listing, then each selected file at the revision
    assert ms_env.log_for(f"/api/v1/models/{REPO}/repo/files", "GET")
    assert {r["query"] for r in ms_env.log_for(f"/api/v1/models/{REPO}/repo", "GET") if "FilePath" in r["query"]}
    with capsys.disabled():
        print(f"\nModelScope install: {result['timings_s']}; optimum parity {conv['parity_max_abs_diff']:.1e}")

    core = core_process()
    assert axon("register", ref, "--endpoint", core.url)[0] == 0
    text = "MLOS installs from every repository."
    status, _, answer = core.call("POST", f"/v1/models/{quote(ref, safe='')}/inference", {"text": text})
    assert status == 200, answer
    got = {d["label"]: d["score"] for d in answer["outputs"]["labels"][0]}

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(repos.tiny_model_files("bert-classifier")["config.json"]).parent
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    with torch.no_grad():
        probs = torch.softmax(model(**tok(text, return_tensors="pt")).logits[0], 0).numpy()
    want = {model.config.id2label[i]: float(p) for i, p in enumerate(probs)}
    diff = max(abs(got[k] - want[k]) for k in want)
    with capsys.disabled():
        print(f"transformers vs the core: max |score diff| {diff:.1e}")
    assert set(got) == set(want) and diff < 1e-4


def test_a_tag_and_the_branch_holding_the_same_files_are_one_version(axon, ms_env):
    a = install_json(axon, f"modelscope/{REPO}@latest")
    b = install_json(axon, f"modelscope/{REPO}@v1.0")
    assert a["package"].split("@")[1] == b["package"].split("@")[1] and b["reused"]


def test_a_corrupted_download_is_fetched_again_or_refused(axon, ms_env, axon_home, tiny_files):
    """The SDK checks each file against the listed sha256 and retries: one bad transfer is repaired,
    a file that keeps arriving corrupted fails the install and leaves no package."""
    ms_env.corrupt_next_download("tokenizer.json", at_byte=20)
    result = install_json(axon, f"modelscope/{REPO}@latest", "-f", "native")
    fetched = [r for r in ms_env.log_for(f"/api/v1/models/{REPO}/repo", "GET") if "tokenizer.json" in r["query"]]
    assert len(fetched) == 2
    import hashlib

    got = (Path(result["path"]) / "tokenizer.json").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(Path(tiny_files["tokenizer.json"]).read_bytes()).hexdigest()
    assert axon("uninstall", f"modelscope/{REPO}@latest")[0] == 0
    assert axon("cache", "clean")[0] == 0          # the download cache too: the next install fetches again

    for _ in range(6):
        ms_env.corrupt_next_download("special_tokens_map.json", at_byte=5)
    code, _, err = axon("install", f"modelscope/{REPO}@latest", "--quiet", "-f", "native")
    assert code == 1 and "hash mismatch" in err.lower() and "special_tokens_map.json" in err, err
    assert not list(axon_home.rglob("manifest.yaml"))


@pytest.mark.parametrize("ref, message", [
    ("modelscope/mlos-test/no-such-model", "ModelScope at http://127.0.0.1:"),
    (f"modelscope/{REPO}@no-such-branch", "has no model mlos-test/tiny-bert-classifier at revision 'no-such-branch'"),
])
def test_unknown_models_and_revisions(axon, ms_env, ref, message):
    code, _, err = axon("install", ref, "--quiet")
    assert code == 1 and message in err and "has no" in err, err


def test_an_unreachable_endpoint_fails_fast_and_says_where(axon, ms_env, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", dead)
    t0 = time.monotonic()
    code, _, err = axon("install", f"modelscope/{REPO}", "--quiet")
    took = time.monotonic() - t0
    assert code == 1 and f"cannot reach ModelScope at {dead}" in err, err
    assert took < 10, f"took {took:.1f} s"
