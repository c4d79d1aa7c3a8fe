"""Encoder-decoder generation and GGUF conversion, measured in one run (``make bench-seq2seq``).

(1) T5-small-shaped random model (benchmarks/seq2seq_models.py), greedy generation of ``N_TOKENS``
    tokens from one prompt, tokens/s:
      - mlos-core, ``POST /v1/models/{id}/inference {"text": ...}`` over HTTP, the merged-decoder
        package (what axon-py keeps) and the split-decoder one;
      - optimum's ``ORTModelForSeq2SeqLM.generate`` (onnxruntime, merged decoder, its default), in
        this process;
      - transformers' ``T5ForConditionalGeneration.generate`` on PyTorch, in this process.
    Every path runs with 2 threads (onnxruntime intra-op 2 without spinning, as the core's default;
    torch.set_num_threads(2)); rounds are interleaved, the order rotating, so machine noise hits
    every path alike. All paths generate the same token ids (checked), so the work is the same.
    Then a batch of 4 prompts of different lengths: the core's batched loop vs optimum's generate.
    Target: the core at least as fast as optimum.
(2) SafeTensors -> GGUF: llama.cpp's converter to F16, then llama.cpp's quantiser to Q8_0 and Q4_K_M,
    seconds and sizes, for the tests' tiny Llama and a ~260 M-parameter Llama (bfloat16).

PyTorch's OpenMP threads spin while they wait (OMP_WAIT_POLICY=ACTIVE is its default): on a shared
2-core machine that made every torch op ~10x slower (a 30x512 @ 512x2048 matmul: 65 ms with 2 spinning
threads, 6 ms with one, 8 ms with 2 passive ones, measured here). onnxruntime runs without spinning, so
PyTorch gets OMP_WAIT_POLICY=PASSIVE (set by the make target; set here too, which only helps when
torch is not imported yet). optimum's generate runs transformers' loop in torch as well.

Knobs: MLOS_BENCH_S2S_ROUNDS (default 5), MLOS_BENCH_S2S_TOKENS (default 64).
``python -m benchmarks.report_seq2seq seq2seq.json`` renders the tables.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# llama.cpp's converter: the tests' tools cache (fetched once per llama-cpp-python version)
os.environ.setdefault("AXON_TOOLS_DIR", str(Path(os.environ.get("MLOS_TEST_CACHE", Path.home() / ".cache" /
                                                                    "mlos-tests")) / "tools"))

from .conftest import launch_mlos  # noqa: E402
from .seq2seq_models import LLAMA_270M, T5_SMALL, layout_dir, llama_270m, parameters, t5_small  # noqa: E402

ROUNDS = int(os.environ.get("MLOS_BENCH_S2S_ROUNDS", "5"))
N_TOKENS = int(os.environ.get("MLOS_BENCH_S2S_TOKENS", "64"))
THREADS = 2
PROMPT = ("summarize: the quick brown fox jumps over the lazy dog. a tiny model for testing the model "
          "installer. models are downloaded from the local hub server and tokenizers split text into words.")
BATCH = [PROMPT, " ".join(PROMPT.split()[:12]), " ".join(PROMPT.split()[:5]), PROMPT + " " + PROMPT]
OPTIONS = {"intra_op_threads": THREADS, "instances": 1}


@pytest.fixture(scope="module")
def t5():
    return t5_small()


@pytest.fixture(scope="module")
def core(t5, tmp_path_factory):
    server = launch_mlos(tmp_path_factory.mktemp("mlos-s2s"), ["--log-level", "warning"], timeout=120)
    try:
        for layout in ("merged", "split"):
            server.register(f"bench/t5-{layout}@1", layout_dir(t5, layout), OPTIONS)
        yield server
    finally:
        server.stop()


def _core_generate(server, layout: str, text, n: int) -> list:
    body = json.dumps({"text": text, "max_tokens": n, "temperature": 0}).encode()
    out = server.post(f"/v1/models/{quote(f'bench/t5-{layout}@1', safe='')}/inference", body, timeout=600)
    return out["outputs"]["token_ids"]


class _Optimum:
    def __init__(self, t5: Path):
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForSeq2SeqLM
        from transformers import AutoTokenizer

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        d = layout_dir(t5, "merged")
        self.model = ORTModelForSeq2SeqLM.from_pretrained(d, use_merged=True, session_options=so,
                                                          provider="CPUExecutionProvider")
        self.tok = AutoTokenizer.from_pretrained(d)

    def generate(self, texts: list[str], n: int) -> list[list[int]]:
        enc = self.tok(texts, return_tensors="pt", padding=True, return_token_type_ids=False)
        out = self.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)
        return [row[1:] for row in out.tolist()]


class _Torch:
    def __init__(self, t5: Path):
        import torch
        import transformers as tf

        torch.set_num_threads(THREADS)
        self.torch = torch
        self.model = tf.T5ForConditionalGeneration.from_pretrained(t5 / "src", use_safetensors=True).eval()
        self.tok = tf.AutoTokenizer.from_pretrained(t5 / "src")

    def generate(self, texts: list[str], n: int) -> list[list[int]]:
        enc = self.tok(texts, return_tensors="pt", padding=True, return_token_type_ids=False)
        with self.torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, num_beams=1)
        return [row[1:] for row in out.tolist()]


def _rounds(paths: dict, rounds: int) -> dict:
    """Interleaved timed runs of each path (order rotating each round); their token ids too."""
    times = {k: [] for k in paths}
    ids = {}
    names = list(paths)
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            ids[k] = paths[k]()
            times[k].append(time.perf_counter() - t)
    return {"times": times, "ids": ids}


def test_t5_generation_tokens_per_s(benchmark, core, t5):
    benchmark.group = "seq2seq-generation"
    first = _core_generate(core, "merged", PROMPT, N_TOKENS)   # warm-up; its length is everyone's budget
    n = len(first)
    assert n >= 8, f"the random T5 stopped after {n} tokens"
    optimum, pt = _Optimum(t5), _Torch(t5)
    paths = {
        "core_merged": lambda: _core_generate(core, "merged", PROMPT, n),
        "core_split": lambda: _core_generate(core, "split", PROMPT, n),
        "optimum": lambda: optimum.generate([PROMPT], n)[0],
        "transformers": lambda: pt.generate([PROMPT], n)[0],
    }
    for fn in paths.values():
        fn()
    r = benchmark.pedantic(_rounds, args=(paths, ROUNDS), rounds=1, iterations=1)
    ids = r["ids"]
    assert ids["core_merged"] == ids["core_split"] == ids["optimum"] == first, "the paths generated different tokens"
    same_as_torch = ids["transformers"] == first

    batch_paths = {"core_merged": lambda: _core_generate(core, "merged", BATCH, n),
                   "optimum": lambda: optimum.generate(BATCH, n)}
    for fn in batch_paths.values():
        fn()
    b = _rounds(batch_paths, max(2, ROUNDS // 2))
    batch_tokens = sum(len(x) for x in b["ids"]["core_merged"])
    optimum_batch_tokens = sum(len(x) for x in b["ids"]["optimum"])

    def tps(times, tokens):
        return [tokens / t for t in times]

    single = {k: tps(v, n) for k, v in r["times"].items()}
    batched = {"core_merged": tps(b["times"]["core_merged"], batch_tokens),
               "optimum": tps(b["times"]["optimum"], optimum_batch_tokens)}
    med = {k: statistics.median(v) for k, v in single.items()}
    bmed = {k: statistics.median(v) for k, v in batched.items()}
    benchmark.extra_info.update({
        "bench": "seq2seq_generation", "model": "T5-small-shaped random", "config": T5_SMALL,
        "parameters": parameters(t5 / "src"), "tokens": n, "threads": THREADS, "rounds": ROUNDS,
        "prompt_words": len(PROMPT.split()), "tokens_per_s": single, "median_tokens_per_s": med,
        "ratio_core_over_optimum": med["core_merged"] / med["optimum"],
        "ratio_core_split_over_optimum": med["core_split"] / med["optimum"],
        "ratio_core_over_transformers": med["core_merged"] / med["transformers"],
        "same_tokens_as_transformers": same_as_torch,
        "batch": {"prompts": len(BATCH), "tokens": batch_tokens, "optimum_tokens": optimum_batch_tokens,
                  "tokens_per_s": batched, "median_tokens_per_s": bmed,
                  "ratio_core_over_optimum": bmed["core_merged"] / bmed["optimum"]},
        "load_average": os.getloadavg(),
    })


def _convert_and_quantise(model_dir: Path, work: Path, name: str) -> dict:
    from axon_pkg.gguf_convert import convert_to_gguf, quantize_gguf

    t = time.perf_counter()
    f16 = convert_to_gguf(model_dir, work / "f16", "F16", name=name)
    out = {"convert_f16_s": time.perf_counter() - t, "converter_s": f16.convert_s,
           "f16_bytes": f16.bytes, "source_bytes": sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))}
    src = work / "f16" / f16.files[0]
    for quant in ("Q8_0", "Q4_K_M"):
        dst = work / f"{name}-{quant}.gguf"
        t = time.perf_counter()
        inner = quantize_gguf(src, dst, quant, threads=THREADS)
        out[f"quantize_{quant}_s"] = time.perf_counter() - t
        out[f"quantize_{quant}_inner_s"] = inner
        out[f"{quant}_bytes"] = dst.stat().st_size
    return out


def test_gguf_conversion_and_quantisation_time(benchmark):
    from axon_pkg.gguf_tools import converter
    from tests.hub.repos import tiny_model_files

    benchmark.group = "gguf-conversion"
    conv = converter()   # fetched before timing
    with tempfile.TemporaryDirectory(prefix="mlos-bench-gguf-") as tmp:
        work = Path(tmp)
        tiny = work / "tiny-llama"
        tiny_model_files("llama", tiny)
        big = llama_270m()

        def run():
            return {"tiny": _convert_and_quantise(tiny, work / "tiny", "tiny"),
                    "270m": _convert_and_quantise(big, work / "big", "llama-270m")}

        r = benchmark.pedantic(run, rounds=1, iterations=1)
        params = {"tiny": parameters(tiny), "270m": parameters(big)}
    benchmark.extra_info.update({"bench": "gguf_conversion", "converter": conv.describe(), "threads": THREADS,
                                 "parameters": params, "llama_270m": LLAMA_270M, "results": r,
                                 "load_average": os.getloadavg()})
