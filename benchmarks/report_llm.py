"""Markdown summary of an LLM benchmark run (benchmarks/test_llm.py), from the pytest-benchmark
JSON only.

    python -m benchmarks.report_llm benchmarks/results/llm.json

Tables: Gemma generation tokens/s (core vs llama-cpp-python direct), streamed TTFT, 4 concurrent
chat clients, MiniLM embeddings sentences/s (core vs sentence-transformers), then the ratios
against the issue's targets: core/direct generation >= 0.95x, core/sentence-transformers >= 1.5x.
"""
from __future__ import annotations

import json
import sys

from .report import cli

GENERATION_TARGET = 0.95
EMBEDDING_TARGET = 1.5


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


def _verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "MISS"


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
                f"max_tokens {c['max_tokens']} (one generation at a time per model: the rest queue)", "",
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

    if targets:
        out += ["", "### Ratios vs targets", "", "| figure | ratio | target | result |", "|---|---:|---:|---|"]
        for name, value, target, detail in targets:
            out.append(f"| {name} | {value:.2f}x ({detail}) | >= {target}x | {_verdict(value, target)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "benchmarks.report_llm", load, render, "LLM benchmark")


if __name__ == "__main__":
    sys.exit(main())
