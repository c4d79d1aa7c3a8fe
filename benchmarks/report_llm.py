"""Markdown summary of an LLM benchmark run (benchmarks/test_llm.py), from the pytest-benchmark
JSON only.

    python -m benchmarks.report_llm benchmarks/results/llm.json

Tables: Gemma generation tokens/s (core vs llama-cpp-python direct), streamed TTFT, 4 concurrent
chat clients, MiniLM embeddings sentences/s (core vs sentence-transformers), many clients on one
LLM (core vs llama.cpp's llama-server vs llama-cpp-python direct, benchmarks/test_llm_serving.py),
TTFT with a repeated system prompt, then the ratios against the targets: core/direct generation
>= 0.95x, core/sentence-transformers >= 1.5x, core/llama-server aggregate tok/s >= 1.0x at 4
clients and >= 0.95x at 1, TTFT p50 <= 1.5x llama-server's at 4 clients, prompt cache TTFT gain >= 3x.
"""
from __future__ import annotations

import json
import sys

from .report import cli

GENERATION_TARGET = 0.95
EMBEDDING_TARGET = 1.5
SCALING_TPS_TARGETS = {1: 0.95, 4: 1.0}  # core / llama-server aggregate tokens/s, by clients
SCALING_TTFT_TARGET = (4, 1.5)  # at 4 clients, core TTFT p50 at most 1.5x llama-server's
PREFIX_GAIN_TARGET = 3.0


def load(path: str) -> tuple[dict[str, dict], dict]:
    """{bench name: extra_info} and the machine info."""
    with open(path) as f:
        doc = json.load(f)
    found = {}
    for b in doc.get("benchmarks", []):
        x = b.get("extra_info") or {}
        if "bench" in x:
            found[x["bench"]] = x
    return found, doc.get("machine_info") or {}


def _verdict(value: float, target: float, at_most: bool = False) -> str:
    return "PASS" if (value <= target if at_most else value >= target) else "MISS"


def _serving(found: dict[str, dict], targets: list) -> list[str]:
    out = []
    sc = found.get("llm_scaling")
    if sc:
        pts = sc["points"]
        out += ["", f"### Many clients on one LLM: {sc['slots']} slots, {sc['threads']} threads, n_ctx {sc['n_ctx']}, "
                f"{sc['requests_per_client']} streamed /v1/completions of {sc['max_tokens']} greedy tokens per client",
                "", "| clients | server | aggregate tok/s | TTFT p50 ms | TTFT p90 ms | latency p50 ms | tokens |",
                "|---:|---|---:|---:|---:|---:|---:|"]
        for c in sc["clients"]:
            for name in ("llama-server", "mlos-core", "llama-cpp-python"):
                p = pts.get(name, {}).get(str(c))
                if p:
                    out.append(f"| {c} | {name} | {p['aggregate_tps']:.1f} | {p['ttft_ms_p50']:.0f} | "
                               f"{p['ttft_ms_p90']:.0f} | {p['latency_ms_p50']:.0f} | {p['tokens']} |")
        la = sc.get("load_average")
        if la:
            out.append(f"\nLoad average at the end of the run: {la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1/5/15 min).")
        ratios = sc["core_vs_llama_server"]
        for c, target in SCALING_TPS_TARGETS.items():
            if str(c) in ratios:
                targets.append((f"aggregate tok/s at {c} client{'s' if c > 1 else ''}, core / llama-server",
                                ratios[str(c)]["tps"], target,
                                f"{pts['mlos-core'][str(c)]['aggregate_tps']:.1f} / "
                                f"{pts['llama-server'][str(c)]['aggregate_tps']:.1f}", False))
        c, limit = SCALING_TTFT_TARGET
        if str(c) in ratios:
            targets.append((f"TTFT p50 at {c} clients, core / llama-server", ratios[str(c)]["ttft_p50"], limit,
                            f"{pts['mlos-core'][str(c)]['ttft_ms_p50']:.0f} / "
                            f"{pts['llama-server'][str(c)]['ttft_ms_p50']:.0f} ms", True))
    pr = found.get("llm_prefix")
    if pr:
        runs = pr["runs"]
        out += ["", f"### Repeated system prompt ({pr['system_tokens']} tokens), one client, {pr['requests']} "
                "requests with their own question, 16 tokens out", "",
                "| server | prompt cache | TTFT p50 ms | TTFT p90 ms | cached tokens per request |", "|---|---|---:|---:|---|"]
        for key, run in runs.items():
            name, cache = key.split("/")
            cached = ", ".join("?" if x is None else str(x) for x in run.get("cached_tokens", []))
            out.append(f"| {name} | {'on' if cache == 'cache' else 'off'} | {run['ttft_ms_p50']:.0f} | "
                       f"{run['ttft_ms_p90']:.0f} | {cached} |")
        out.append(f"\nTTFT gain from the cache: mlos-core {pr['core_cache_gain']:.1f}x, llama-server "
                   f"{pr['llama_server_cache_gain']:.1f}x.")
        targets.append(("repeated-prefix TTFT p50, no cache / cache (mlos-core)", pr["core_cache_gain"],
                        PREFIX_GAIN_TARGET, f"{runs['mlos-core/no-cache']['ttft_ms_p50']:.0f} / "
                        f"{runs['mlos-core/cache']['ttft_ms_p50']:.0f} ms", False))
    return out


def render(found: dict[str, dict], machine: dict) -> str:
    out = ["## LLM benchmark (Gemma 3 270M Q4_K_M, all-MiniLM-L6-v2)", ""]
    if machine:
        cpu = machine.get("cpu", {})
        out.append(f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical CPUs, "
                   f"Python {machine.get('python_version', '?')}")
    targets = []

    g = found.get("gemma_generation")
    if g:
        out += ["", f"### Generation, {g['max_tokens']} tokens greedy, {g['n_threads']} threads, "
                f"{g['rounds']} interleaved rounds per path", "",
                "| path | median tokens/s | median wall s | runs (tokens/s) |", "|---|---:|---:|---|"]
        for label, k in (("llama-cpp-python direct", "direct"), ("mlos-core /v1/completions", "core")):
            runs = ", ".join(f"{v:.1f}" for v in g[f"{k}_tps"])
            out.append(f"| {label} | {g[f'{k}_tps_median']:.1f} | {g[f'{k}_s_median']:.3f} | {runs} |")
        out.append(f"\nIdle check: server CPU while direct ran {g['server_cpu_s_during_direct']:.2f} s; "
                   f"benchmark-process CPU while the core ran {g['bench_cpu_s_during_core']:.2f} s.")
        targets.append(("generation tokens/s, core / direct", g["ratio"], GENERATION_TARGET,
                         f"{g['core_tps_median']:.1f} / {g['direct_tps_median']:.1f}"))

    t = found.get("gemma_ttft")
    if t:
        out += ["", f"### Streamed chat, time to first token ({t['n']} requests, "
                f"~{t['prompt_tokens_median']:.0f} prompt tokens)", "",
                "| figure | median ms | p90 ms |", "|---|---:|---:|",
                f"| core: first SSE chunk with content | {t['ttft_ms_median']:.1f} | {t['ttft_ms_p90']:.1f} |",
                f"| core: role-only chunk | {t['role_ms_median']:.1f} | {t['role_ms_p90']:.1f} |",
                f"| direct: first streamed token (same prompt, in-process) | {t['direct_ttft_ms_median']:.1f} | |"]

    c = found.get("gemma_concurrent")
    if c:
        out += ["", f"### {c['clients']} concurrent streamed chat clients x {c['requests_per_client']} requests, "
                f"max_tokens {c['max_tokens']} (decoded together in the model's slots)", "",
                "| aggregate tokens/s | single-stream tokens/s | latency p50 ms | latency p90 ms | "
                "TTFT p50 ms | TTFT p90 ms | requests |",
                "|---:|---:|---:|---:|---:|---:|---:|",
                f"| {c['aggregate_tps']:.1f} | {c['single_stream_tps']:.1f} | {c['latency_ms_p50']:.0f} | "
                f"{c['latency_ms_p90']:.0f} | {c['ttft_ms_p50']:.0f} | {c['ttft_ms_p90']:.0f} | {c['requests']} |"]

    e = found.get("minilm_embeddings")
    if e:
        out += ["", f"### Embeddings, {e['sentences']} sentences in batches of {e['batch']}, "
                f"median of {e['repeats']} interleaved passes", "",
                "| path | median sentences/s | vs sentence-transformers |", "|---|---:|---:|",
                f"| sentence-transformers, PyTorch CPU, {e['torch_threads']} threads | {e['st_sps_median']:.0f} | 1.00x |",
                f"| mlos-core /v1/embeddings, 1 client | {e['core_c1_sps_median']:.0f} | {e['ratio_c1']:.2f}x |",
                f"| mlos-core /v1/embeddings, 2 clients | {e['core_c2_sps_median']:.0f} | {e['ratio_c2']:.2f}x |",
                f"\nAgreement: cosine(core, sentence-transformers) min {e['cos_min']:.7f}, mean {e['cos_mean']:.7f}; "
                f"MiniLM options `{json.dumps(e.get('embed_options', {}))}`."]
        targets.append(("embeddings sentences/s, core (1 client) / sentence-transformers", e["ratio_c1"],
                        EMBEDDING_TARGET, f"{e['core_c1_sps_median']:.0f} / {e['st_sps_median']:.0f}"))
        targets.append(("embeddings sentences/s, core (2 clients) / sentence-transformers", e["ratio_c2"],
                        EMBEDDING_TARGET, f"{e['core_c2_sps_median']:.0f} / {e['st_sps_median']:.0f}"))

    out += _serving(found, targets)

    if targets:
        out += ["", "### Ratios vs targets", "", "| figure | ratio | target | result |", "|---|---:|---:|---|"]
        for name, value, target, detail, *rest in targets:
            at_most = bool(rest and rest[0])
            out.append(f"| {name} | {value:.2f}x ({detail}) | {'<=' if at_most else '>='} {target}x | "
                       f"{_verdict(value, target, at_most)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "benchmarks.report_llm", load, render, "LLM benchmark")


if __name__ == "__main__":
    sys.exit(main())
