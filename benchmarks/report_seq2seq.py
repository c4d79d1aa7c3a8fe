"""Markdown summary of benchmarks/test_seq2seq.py, from the pytest-benchmark JSON only.

    python -m benchmarks.report_seq2seq benchmarks/results/seq2seq.json
"""
from __future__ import annotations

import sys

from .report import cli
from .report_llm import load

TARGET = 1.0   # the core at least as fast as optimum's ORTModelForSeq2SeqLM


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def render(found: dict[str, dict], machine: dict) -> str:
    out = ["## Encoder-decoder generation and GGUF conversion", ""]
    if machine:
        cpu = machine.get("cpu", {})
        out.append(f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} logical CPUs, "
                   f"Python {machine.get('python_version', '?')}")
    g = found.get("seq2seq_generation")
    if g:
        out += ["", f"### {g['model']} ({g['parameters'] / 1e6:.0f} M parameters), {g['tokens']} greedy tokens, "
                f"{g['threads']} threads, {g['rounds']} interleaved rounds (load average at the end: "
                f"{', '.join(f'{x:.1f}' for x in g.get('load_average', []))})", "",
                "| path | median tokens/s | runs (tokens/s) |", "|---|---:|---|"]
        labels = {"core_merged": "mlos-core, merged decoder (HTTP)", "core_split": "mlos-core, split decoders (HTTP)",
                  "optimum": "optimum ORTModelForSeq2SeqLM (in process)", "transformers": "transformers on PyTorch"}
        for k, label in labels.items():
            runs = ", ".join(f"{x:.1f}" for x in g["tokens_per_s"][k])
            out.append(f"| {label} | {g['median_tokens_per_s'][k]:.1f} | {runs} |")
        b = g["batch"]
        out += ["", f"Batch of {b['prompts']} prompts of different lengths ({b['tokens']} tokens in all):", "",
                "| path | median tokens/s |", "|---|---:|",
                f"| mlos-core, merged decoder | {b['median_tokens_per_s']['core_merged']:.1f} |",
                f"| optimum | {b['median_tokens_per_s']['optimum']:.1f} |", "",
                f"- core / optimum: **{g['ratio_core_over_optimum']:.2f}x** one prompt "
                f"({'PASS' if g['ratio_core_over_optimum'] >= TARGET else 'MISS'} against >= {TARGET:.1f}x), "
                f"{b['ratio_core_over_optimum']:.2f}x the batch; split decoders / optimum "
                f"{g['ratio_core_split_over_optimum']:.2f}x; core / transformers {g['ratio_core_over_transformers']:.2f}x",
                f"- every onnxruntime path generated the same token ids; transformers "
                f"{'the same' if g['same_tokens_as_transformers'] else 'different ones (float rounding)'}"]
    c = found.get("gguf_conversion")
    if c:
        out += ["", f"### SafeTensors -> GGUF ({c['converter']}, {c['threads']} threads)", "",
                "| model | parameters | SafeTensors | to F16 (s) | F16 | to Q8_0 (s) | Q8_0 | to Q4_K_M (s) | Q4_K_M |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for k, label in (("tiny", "tiny Llama (tests)"), ("270m", "Llama, 270M class")):
            r = c["results"][k]
            out.append(f"| {label} | {c['parameters'][k] / 1e6:.2f} M | {_mb(r['source_bytes'])} | "
                       f"{r['convert_f16_s']:.1f} | {_mb(r['f16_bytes'])} | {r['quantize_Q8_0_s']:.1f} | "
                       f"{_mb(r['Q8_0_bytes'])} | {r['quantize_Q4_K_M_s']:.1f} | {_mb(r['Q4_K_M_bytes'])} |")
        out += ["", "Times are wall clock, subprocess start included (the converter imports torch and "
                "transformers: most of the tiny model's time)."]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    return cli(argv, "benchmarks.report_seq2seq", load, render, "seq2seq benchmark")


if __name__ == "__main__":
    sys.exit(main())
