"""The runner end to end, with real components: the local hub, axon-py installs (download, optimum
conversion, package), a real core subprocess, PyTorch references. Three models, one of each kind
(an NLP encoder, a vision batch, an LLM with a multi-turn chat), in userspace mode; the full offline
suite is ``python -m validation run --suite offline --mode both`` (make e2e-test)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from validation.config import ConfigError
from validation.core_proc import KERNEL_DEVICE
from validation.runner import RunOptions, run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run(RunOptions(suite="offline", models=["bert", "resnet", "tinyllama"], mode="userspace",
                            out_dir=out, repetitions=3, progress=False))
    return result, out


def test_every_phase_passes_with_parity_against_pytorch(outcome):
    result, out = outcome
    assert [(r.model_name, r.mode, r.status) for r in result.results] == [
        ("bert", "userspace", "success"), ("resnet", "userspace", "success"), ("tinyllama", "userspace", "success")]
    assert result.passed
    for r in result.results:
        install = r.phases["install"]
        assert install.details["convert_ms"] > 0 and install.details["download_ms"] > 0
        assert install.details["format"] == "onnx" and install.details["conversion"]["converted"] is True
        assert r.phases["register"].time_ms > 0
        for size in ("inference_small", "inference_large"):
            ph = r.phases[size]
            assert ph.parity.reference == "pytorch" and ph.parity.passed is True
            assert 0 <= ph.parity.max_abs_diff < 1e-4 and ph.parity.tolerance == 1e-4
            assert ph.repetitions == 3 and ph.warmup == 2
            assert 0 < ph.latency_ms.ci_low <= ph.latency_ms.value <= ph.latency_ms.ci_high


def test_the_large_phases_are_what_the_seeds_define(outcome):
    result, _ = outcome
    by = {r.model_name: r for r in result.results}
    assert by["bert"].phases["inference_large"].details["request"]["input_ids"] == [1, 128]   # long sequence
    assert by["resnet"].phases["inference_large"].details["request"]["pixel_values"] == [8, 3, 32, 32]  # a batch
    chat = by["tinyllama"].phases["inference_large"].details
    assert chat["turns"] == 5 and chat["usage"]["completion_tokens"] == 32 and chat["finish_reason"] == "length"
    small = by["tinyllama"].phases["inference_small"].details
    assert small["usage"]["completion_tokens"] == 16


def test_metrics_files_and_environment(outcome):
    result, out = outcome
    doc = json.loads((out / "userspace" / "bert-result.json").read_text())
    assert doc["status"] == "success" and doc["suite"] == "offline" and doc["mode"] == "userspace"
    latest = json.loads((out / "userspace" / "metrics" / "latest.json").read_text())
    assert (latest["total_models"], latest["successful_models"], latest["successful_inferences"]) == (3, 3, 6)
    assert latest["timings"]["core_startup_ms"] > 0 and latest["timings"]["install_total_ms"] > 0
    res = latest["resources"]
    assert res["idle"]["rss_bytes"] > 0 and res["load"]["cpu_percent_peak"] > 0
    assert res["load"]["rss_peak_bytes"] >= res["idle"]["rss_bytes"] * 0.5
    assert latest["hardware"]["kernel_module"]["device"]["path"] == KERNEL_DEVICE
    assert latest["core_kernel"]["mode"] == "userspace"
    assert (out / "userspace" / "core-userspace.log").stat().st_size > 0


@pytest.mark.skipif(os.path.exists(KERNEL_DEVICE), reason="the kernel module is loaded here")
def test_kernel_mode_without_the_device_is_skipped_with_the_reason(tmp_path):
    result = run(RunOptions(suite="offline", models=["bert"], mode="kernel", out_dir=tmp_path, progress=False))
    assert result.results == [] and not result.passed
    assert result.skipped_modes == {"kernel": f"kernel mode skipped: {KERNEL_DEVICE} does not exist "
                                              "(mlos-ml.ko is not loaded on this machine)"}


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'bertt' in suite 'offline' \\(did you mean 'bert'\\?\\)"):
        run(RunOptions(suite="offline", models=["bertt"], out_dir=tmp_path, progress=False))
    proc = subprocess.run([sys.executable, "-m", "validation", "run", "--suite", "nosuch"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown suite 'nosuch'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "validation", "frobnicate"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown command 'frobnicate'; choose one of run, report, compare, history" in proc.stderr


def test_the_rows_of_the_other_repositories_pass_with_parity_against_their_frameworks(tmp_path):
    """One offline row per repository besides the Hugging Face Hub: PyTorch Hub (torchvision weights),
    TF Hub handles on Kaggle Models (a Keras SavedModel), ModelScope (a tiny BERT); each installed by
    axon-py from its stand-in, served by a real core, compared with the framework called directly."""
    from axon_pkg.converter_envs import ConverterMissing, python_for

    for kind in ("vision", "tf"):
        try:
            python_for(kind)
        except ConverterMissing as e:
            pytest.skip(f"{e.message}; make setup-converters builds it")
    names = ["torchvision-squeezenet", "tfhub-tiny-cnn", "modelscope-bert"]
    result = run(RunOptions(suite="offline", models=names, mode="userspace", out_dir=tmp_path, repetitions=2,
                            progress=False))
    by_name = {r.model_name: r for r in result.results}
    assert sorted(by_name) == sorted(names)
    for name, r in by_name.items():
        assert r.status == "success", (name, {k: (p.status, p.error) for k, p in r.phases.items()})
        small = r.phases["inference_small"]
        assert small.parity.passed and small.parity.max_abs_diff < 1e-4, (name, small.parity)
    assert by_name["torchvision-squeezenet"].phases["inference_small"].parity.reference == "torchvision"
    assert by_name["tfhub-tiny-cnn"].phases["inference_small"].parity.reference == "tensorflow"
    assert by_name["modelscope-bert"].phases["inference_small"].parity.reference == "pytorch"


@pytest.mark.parametrize("command", ["run", "report", "compare", "history"])
def test_every_command_prints_its_help(command):
    proc = subprocess.run([sys.executable, "-m", "validation", command, "--help"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert proc.stdout.startswith("usage:") and "--help" in proc.stdout
