"""Bad spaces, workloads, SLOs and objectives get clear errors before anything runs: exit 2, the
reason on stderr, and no core started (nothing written in --out)."""
from __future__ import annotations

import os
import sys

import pytest

from mlos_tune.cli import main
from mlos_tune.errors import TuneError
from mlos_tune.slo import parse_slos
from mlos_tune.space import build_space
from mlos_tune.workload import parse_workload

from .conftest import write

CORES = os.cpu_count() or 1


def fails(capsys, tmp_path, args: list[str]) -> str:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlos-tune: ")
    # nothing ran: no results, no core work directory
    assert not (out / "results.json").exists() and not (out / "work" / "exp-000").exists()
    return err


@pytest.mark.parametrize("space, message", [
    ({"threads": [1]}, "space threads: unknown parameter; this model's are instances, intra_op_threads"),
    ({"n_threads": [1, 2]}, "space n_threads: an option of GGUF models; this model's options are"),
    ({"intra_op_threads": [1, 999]}, f"space intra_op_threads: option intra_op_threads must be from 0 to {CORES} "
                                     f"on this server, not 999 ({CORES} cores)"),
    ({"instances": []}, "space instances: an empty list leaves nothing to try"),
    ({"max_batch_size": [8, 8]}, "space max_batch_size: [8, 8] repeats a value"),
    ({"max_batch_delay_us": {"low": 0, "high": 5_000_000, "step": 1000}},
     "space max_batch_delay_us: option max_batch_delay_us must be from 0 to 1e+06"),
    ({"instances": {"low": 4, "high": 1}}, "space instances: low 4 is above high 1"),
    ({"max_batch_size": {"low": 1, "high": 64, "log": True, "step": 2}}, "a log range needs low >= 1 and no step"),
    ({"max_batch_size": {"low": 1, "high": 64}}, "a range without a step has no grid"),
    ({"batching": ["maybe"]}, "space batching: option batching must be one of auto, on, off"),
    ({"concurrency": [0, 8]}, "space concurrency: 0 is not an integer from 1 to 1024"),
])
def test_bad_space(capsys, tmp_path, tune_models, space, message):
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--space", write(tmp_path / "s.yaml", space),
                                   "--strategy", "grid"])
    assert message in err


@pytest.mark.parametrize("workload, message", [
    ({"kind": "llm"}, "workload kind llm: this model is served on onnxruntime"),
    ({"kind": "images"}, "workload kind: 'images' is not one of tensors, llm"),
    ({"prompt": "hi"}, "workload: unknown key(s) prompt for kind tensors"),
    ({"load": {"mode": "burst"}}, "workload load.mode: 'burst' is neither closed"),
    ({"load": {"mode": "open"}}, "workload load: mode open needs a rate"),
    ({"load": {"rate": 50, "concurrency": [1, 2]}}, "an open-loop workload takes one number"),
    ({"load": {"concurrency": 32, "rate": 5, "mode": "closed"}}, "rate is for mode open"),
    ({"load": {"concurrency": [8, 8]}}, "workload load.concurrency: [8, 8] repeats a level"),
    ({"load": {"duration_s": 0}}, "workload load.duration_s: 0 is outside 0.2..3600"),
    ({"load": {"warmup": 1}}, "workload load: unknown key(s) warmup"),
    ({"inputs": {"x": {"shape": [1, 64], "datatype": "FLOAT"}}}, "'FLOAT' is not one of BOOL"),
    ({"inputs": {"x": {"shape": [2, 2], "data": [1, 2, 3]}}}, "expected a list of 4 values (shape [2, 2])"),
    ({"inputs": {"x": {"shape": [-1, 64]}}}, "expected a list of non-negative integers"),
    ({"body": [1, 2]}, "workload body: expected a JSON object"),
    ({"path": "v2/models/x/infer"}, "workload path: expected a URL path"),
])
def test_bad_workload(capsys, tmp_path, tune_models, workload, message):
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--workload", write(tmp_path / "w.yaml", workload)])
    assert message in err


@pytest.mark.parametrize("slo, message", [
    ("p99", "--slo 'p99': expected NAME=VALUE"),
    ("p95_ms=5", "--slo p95_ms: unknown SLO; known: p50_ms"),
    ("p99_ms=-3", "--slo p99_ms: the bound must be a positive number, not -3"),
    ("p99_ms=fast", "--slo p99_ms: 'fast' is not a number"),
    ("ttft_p90_ms=300", "--slo ttft_p90_ms: time to first token and per output token are measured on LLM"),
])
def test_bad_slo(capsys, tmp_path, tune_models, slo, message):
    assert message in fails(capsys, tmp_path, [str(tune_models["matmul"]), "--slo", slo])


def test_the_same_slo_twice(capsys, tmp_path, tune_models):
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--slo", "p99_ms=5", "--slo", "p99_ms=6"])
    assert "--slo p99_ms given more than once" in err


def test_objectives_that_cannot_apply(capsys, tmp_path, tune_models):
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--objective", "minimize_ttft"])
    assert "--objective minimize_ttft: tokens are measured on LLM workloads only" in err
    open_loop = write(tmp_path / "w.yaml", {"load": {"rate": 100}})
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--workload", open_loop])
    assert "an open-loop workload's throughput is its arrival rate" in err


def test_bad_cli_values_and_models(capsys, tmp_path, tune_models):
    assert "--repeats 0: from 1 to 50" in fails(capsys, tmp_path, [str(tune_models["matmul"]), "--repeats", "0"])
    assert "--max-error-rate is a fraction" in fails(capsys, tmp_path, [str(tune_models["matmul"]),
                                                                       "--max-error-rate", "1.5"])
    err = fails(capsys, tmp_path, [str(tmp_path / "nope.onnx")])
    assert "no such file or directory, and not a model id" in err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * 64)
    assert "junk.bin" in fails(capsys, tmp_path, [str(junk)])
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--apply", "manifest"])
    assert "--apply manifest: MODEL is not an .axon package directory" in err
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--apply", "--core", "http://127.0.0.1:9"])
    assert "--apply: cannot reach the core at http://127.0.0.1:9" in err


def test_optuna_strategies_need_optuna(capsys, tmp_path, tune_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)        # as where the [tune] extra is not installed
    err = fails(capsys, tmp_path, [str(tune_models["matmul"]), "--strategy", "optuna"])
    assert "--strategy optuna needs Optuna: pip install 'mlos-py[tune]'" in err


def test_gguf_space_and_workload():
    space = build_space(None, "gguf", [1])
    assert set(space.params) >= {"n_threads", "n_batch", "n_ctx", "concurrency"}
    assert max(space.params["n_threads"].values) <= CORES
    with pytest.raises(TuneError, match="space instances: an option of ONNX models"):
        build_space({"instances": [1, 2]}, "gguf", [1])
    with pytest.raises(TuneError, match=f"option n_threads must be from 1 to {CORES}"):
        build_space({"n_threads": [CORES + 1]}, "gguf", [1])
    w = parse_workload({"kind": "llm", "api": "chat", "prompt_tokens": 40, "output_tokens": 5}, "gguf")
    bodies = w.llm_bodies("m@1", 4)
    assert len({b["messages"][0]["content"] for b in bodies}) == 4            # distinct prompts
    assert all(b["max_tokens"] == 5 and b["stream"] and b["stream_options"]["include_usage"] for b in bodies)
    with pytest.raises(TuneError, match="workload kind tensors: this is a GGUF model"):
        parse_workload({"kind": "tensors"}, "gguf")
    with pytest.raises(TuneError, match="workload api: 'embed' is not one of completion, chat"):
        parse_workload({"api": "embed"}, "gguf")
    assert [s.metric for s in parse_slos(["ttft_p90_ms=300", "tpot_p50_ms=40"], True)] == ["ttft_p90_ms",
                                                                                          "tpot_p50_ms"]


def test_canonical_forms_and_costs():
    space = build_space({"base": "none", "max_batch_size": [1, 32], "max_batch_delay_us": [0, 500],
                         "instances": [1, 2]}, "onnx", [8])
    # the server's default values and inert batching options make no configuration of their own
    assert space.canonical({"max_batch_size": 32, "max_batch_delay_us": 0, "concurrency": 8}) == {"concurrency": 8}
    assert space.canonical({"max_batch_size": 1, "max_batch_delay_us": 500, "concurrency": 8}) == \
        {"max_batch_size": 1, "concurrency": 8}
    assert space.canonical({"max_batch_size": 32, "max_batch_delay_us": 500, "concurrency": 8},
                           batching_possible=False) == {"concurrency": 8}
    # written out for a register call whatever the target server's defaults
    assert space.explicit({"concurrency": 8}) == {"max_batch_size": 32, "max_batch_delay_us": 0, "instances": 0}
    assert space.cost({"instances": 1, "intra_op_threads": 1}) < space.cost({"instances": 2, "intra_op_threads": 1})
    assert len(space.grid()) == 8


def test_example_files_load():
    from mlos_tune.space import load_space
    from mlos_tune.workload import load_workload
    from validation.core_proc import ROOT

    w = load_workload(str(ROOT / "examples/tune/silero-workload.yaml"), "onnx")
    body = {t["name"]: t for t in w.tensor_body(None)["inputs"]}
    assert body["state"]["data"] == [0] * 256 and body["sr"]["data"] == [16000] and len(body["input"]["data"]) == 512
    assert w.load.concurrency == [8, 32]
    assert load_workload(str(ROOT / "examples/tune/gemma-chat-workload.yaml"), "gguf").load.rate == 0.5
    space = load_space(str(ROOT / "examples/tune/onnx-space.yaml"), "onnx", [16])
    assert space.describe()["max_batch_delay_us"] == {"low": 0, "high": 1000, "step": 250}
    assert space.params["max_batch_delay_us"].grid_values == (0, 250, 500, 750, 1000)
