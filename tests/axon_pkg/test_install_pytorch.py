"""axon-py against a local PyTorch Hub (validation/pytorch_hub_server.py): torchvision weights through
torchvision's own registry, checked by the hash in their file name, exported to ONNX in the vision
converter environment, installed, verified, registered with a real core and served by its image task
with parity to torchvision called directly; hubconf.py repos only with --trust-repo;
interrupted (resumed), corrupted and refused downloads; unknown models; an unreachable endpoint."""
from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import yaml

from validation.core_proc import free_port
from validation.pytorch_hub_server import PyTorchHub

from .conftest import converter_python, run_in

MODEL = "mlos_test_squeezenet"
REF = f"pytorch/vision/{MODEL}@latest"


@pytest.fixture(scope="module")
def vision_python():
    return converter_python("vision")


@pytest.fixture(scope="module")
def weights(vision_python, tmp_path_factory):
    """SqueezeNet 1.1 with random weights, saved as torchvision's files are (name-<sha256[:8]>.pth)."""
    return run_in(vision_python, "validation.torchvision_models", "build", str(tmp_path_factory.mktemp("tv")))


@pytest.fixture(scope="module")
def pytorch_hub(weights):
    hub = PyTorchHub().start()
    hub.add_weights(Path(weights["path"]))
    yield hub
    hub.stop()


@pytest.fixture
def pt_env(pytorch_hub, weights, monkeypatch, axon_home):
    monkeypatch.setenv("AXON_PYTORCH_ENDPOINT", pytorch_hub.url)
    monkeypatch.setenv("AXON_GITHUB_ENDPOINT", pytorch_hub.url)
    monkeypatch.setenv("AXON_TORCHVISION_MODULES", "validation.torchvision_models")
    monkeypatch.setenv("MLOS_TEST_TORCHVISION_WEIGHTS", weights["path"])
    pytorch_hub.clear_log()
    return pytorch_hub


def install_json(axon, *args):
    code, out, err = axon("install", *args, "--json", "--quiet")
    assert code == 0, err
    return json.loads(out)


def png_bytes(width: int, height: int, seed: int = 1) -> bytes:
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_torchvision_weights_install_verify_register_and_serve_with_torchvision_parity(
        axon, pt_env, weights, vision_python, core_process, tmp_path, capsys):
    # the first download drops after 200 kB; the next install resumes it with a Range request
    pt_env.interrupt_next_download(weights["file"], 200_000)
    code, _, err = axon("install", REF, "--quiet")
    assert code == 1 and "interrupted" in err and "resume" in err
    result = install_json(axon, REF)
    gets = pt_env.log_for(f"/models/{weights['file']}", "GET")
    resumed_at = int(gets[-1]["range"].removeprefix("bytes=").rstrip("-"))
    assert len(gets) == 2 and 100_000 < resumed_at <= 200_000 and gets[-1]["status"] == 206
    assert result["format"] == "onnx"
    conv = result["conversion"]
    assert conv["converted"] and conv["tool"] == "torch.onnx" and conv["weights"] == "RANDOM_V1"
    assert conv["parity_max_abs_diff"] is not None and conv["parity_max_abs_diff"] < 1e-4
    prefix = weights["sha256"][:8]
    assert result["package"] == f"pytorch/vision/{MODEL}@RANDOM_V1-{prefix}"
    manifest = yaml.safe_load(open(Path(result["path"]) / "manifest.yaml"))
    src, ext = manifest["x-mlos"]["source"], manifest["x-mlos"]
    assert src["hub"] == "pytorch" and src["hash_prefix"] == prefix and src["weights"] == "RANDOM_V1"
    assert src["url"] == f"{pt_env.url}/models/{weights['file']}" and src["upstream_url"].startswith("https://download.pytorch.org/")
    assert ext["task"] == "image-classification"
    assert ext["preprocessing"]["crop_size"] == [224] and ext["preprocessing"]["resize_size"] == [256]
    assert ext["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    paths = {f["path"] for f in manifest["spec"]["format"]["files"]}
    assert paths == {"model.onnx", "config.json", "preprocessor_config.json"}   # the .pth pickle is not kept
    assert manifest["spec"]["io"]["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": [-1, 3, 224, 224]}]
    assert axon("verify", REF)[0] == 0
    with capsys.disabled():
        print(f"\ntorchvision install: {result['timings_s']}; export parity {conv['parity_max_abs_diff']:.1e}")

    core = core_process()
    code, out, err = axon("register", REF, "--endpoint", core.url)
    assert code == 0, err
    image = tmp_path / "image.png"
    image.write_bytes(png_bytes(320, 240))   # centre-crop offsets agree between torchvision's round() and floor here
    status, _, answer = core.call("POST", f"/v1/models/{quote(REF, safe='')}/inference",
                                  {"image": base64.b64encode(image.read_bytes()).decode(), "top_k": 3})
    assert status == 200, answer
    got = {d["label"]: d["score"] for d in answer["outputs"]["labels"]}
    ref = run_in(vision_python, "validation.torchvision_models", "reference", weights["path"], "--image", str(image))
    want = dict(zip(["cat", "dog", "bird"], ref["scores"]))
    diff = max(abs(got[k] - want[k]) for k in want)
    with capsys.disabled():
        print(f"torchvision pipeline vs the core's image task: max |score diff| {diff:.1e}")
    assert set(got) == set(want) and diff < 1e-4


def test_a_corrupted_download_is_refused_and_deleted(axon, pt_env, weights, axon_home):
    pt_env.corrupt_next_download(weights["file"], at_byte=1000)
    code, _, err = axon("install", REF, "--quiet")
    assert code == 1 and f"expected a digest starting {weights['sha256'][:8]}" in err and "deleted" in err
    assert not list(axon_home.rglob("*.incomplete")) and not list(axon_home.rglob("manifest.yaml"))


def test_a_real_enum_checks_its_published_hash(axon, pt_env, weights):
    """squeezenet1_1's DEFAULT names squeezenet1_1-b8a52dc0.pth: the mirror serving other bytes under
    that name is caught by the hash in the name, as torch.hub catches it."""
    pt_env.add_weights(Path(weights["path"]), "squeezenet1_1-b8a52dc0.pth")
    code, _, err = axon("install", "pytorch/vision/squeezenet1_1@latest", "--quiet")
    assert code == 1 and "expected a digest starting b8a52dc0" in err, err
    assert pt_env.log_for("/models/squeezenet1_1-b8a52dc0.pth", "GET")


@pytest.mark.parametrize("ref, message", [
    ("pytorch/vision/nosuchnet@latest", "unknown torchvision model 'nosuchnet'; torchvision has: alexnet"),
    (f"pytorch/vision/{MODEL}@IMAGENET1K_V9", f"{MODEL} has no weights 'IMAGENET1K_V9'; choose one of: RANDOM_V1"),
])
def test_unknown_models_and_weights(axon, pt_env, ref, message):
    code, _, err = axon("install", ref, "--quiet")
    assert code == 1 and message in err, err


def test_an_unreachable_endpoint_fails_fast_and_says_where(axon, pt_env, monkeypatch):
    monkeypatch.setenv("AXON_PYTORCH_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    t0 = time.monotonic()
    code, _, err = axon("install", REF, "--quiet")
    took = time.monotonic() - t0
    assert code == 1 and "cannot reach PyTorch Hub at http://127.0.0.1:" in err, err
    assert took < 5, f"took {took:.1f} s"


HUBCONF = '''
dependencies = ["torch"]

import torch


def tiny_cnn(pretrained=False, channels=4):
    """A small CNN with seeded weights (the repo's code runs only with --trust-repo)."""
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Conv2d(3, channels, 3), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 5))
'''


def test_hubconf_repos_run_only_when_trusted(axon, pt_env, core_process):
    sha = pt_env.add_repo("mlos-test", "tiny-hub", {"hubconf.py": HUBCONF, "README.md": "# tiny hub\n"})
    ref = "pytorch/mlos-test/tiny-hub:tiny_cnn@latest"
    code, _, err = axon("install", ref, "--quiet")
    assert code == 1 and "--trust-repo" in err and not pt_env.log_for("/repos/")   # refused before any download
    result = install_json(axon, ref, "--trust-repo", "--input-shape", "1,3,32,32")
    assert result["package"] == f"pytorch/mlos-test/tiny-hub@{sha}-tiny_cnn"   # one package per entry point
    conv = result["conversion"]
    assert conv["from_format"] == "pytorch-hub" and conv["parity_max_abs_diff"] < 1e-5
    manifest = yaml.safe_load(open(Path(result["path"]) / "manifest.yaml"))
    assert manifest["x-mlos"]["source"]["entry"] == "tiny_cnn" and manifest["x-mlos"]["source"]["resolved_commit"] == sha
    assert manifest["spec"]["io"]["outputs"][0]["shape"] == [-1, 5]
    assert axon("verify", ref)[0] == 0
    core = core_process()
    assert axon("register", ref, "--endpoint", core.url)[0] == 0
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    model_id = "pytorch/mlos-test/tiny-hub@latest"      # the core's id: namespace/repo@revision, as for hf/
    status, _, answer = core.call("POST", f"/v2/models/{quote(model_id, safe='')}/infer", {"inputs": [
        {"name": "pixel_values", "shape": [2, 3, 32, 32], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert status == 200, answer
    import onnxruntime as ort

    want = ort.InferenceSession(str(Path(result["path"]) / "model.onnx")).run(None, {"pixel_values": x})[0]
    got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 5)
    assert np.abs(got - want).max() < 1e-5 and np.abs(want).max() > 0
