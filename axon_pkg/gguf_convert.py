"""SafeTensors -> GGUF for ``axon-py install -f gguf [--quant ...]``, with llama.cpp's own tools.

:func:`convert_to_gguf` runs llama.cpp's ``convert_hf_to_gguf.py`` (the copy that belongs to the
installed llama-cpp-python, see :mod:`axon_pkg.gguf_tools`) in a subprocess, to F16 (BF16 for a
bfloat16 model; F32 on request), then, for any other type, llama.cpp's quantiser
(``llama_model_quantize`` through the bindings, in a subprocess too: llama.cpp aborts on some
errors). Files appear in ``out_dir`` only when everything succeeded; a failure, a timeout or
Ctrl-C leaves neither them nor the temporary directory. The caller never imports torch.

The function-level API, for other callers (the validator, quantisation benchmarks):

    result = convert_to_gguf(model_dir, out_dir, quant="Q8_0")      # GgufConversion
    seconds = quantize_gguf(f16_file, out_file, "Q4_K_M")          # re-quantise an existing GGUF
    info = inspect_gguf(path)            # {"architecture", "file_type", "tensor_types": {...}}
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .convert import _read_config, _weights_problem, _worker_env, _version
from .errors import AxonError
from .gguf_tools import Converter, ConverterUnavailable, converter
from .worker import kill as _kill, stderr_tail as _stderr_tail

__all__ = ["QUANTS", "DEFAULT_QUANT", "GgufConversion", "gguf_conversion_available", "is_decoder_llm",
           "normalize_quant", "convert_to_gguf", "quantize_gguf", "inspect_gguf", "ConversionFailed",
           "convert_for_install"]

# what the converter writes itself, and llama.cpp's quantisation types offered on top of F16
CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16"}
QUANTIZER_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K")
QUANTS = tuple(CONVERTER_TYPES) + QUANTIZER_TYPES
DEFAULT_QUANT = "Q4_K_M"   # the original Axon's default GGUF, as axon_pkg.repos.huggingface picks among GGUF files
TOOL = "llama.cpp convert_hf_to_gguf.py + llama_model_quantize"
# named in the error for an unknown architecture (those of them the converter knows)
_COMMON = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma3ForCausalLM",
           "Phi3ForCausalLM", "GPT2LMHeadModel", "FalconForCausalLM", "BertModel", "T5ForConditionalGeneration")


class ConversionFailed(AxonError):
    """The model could not be converted to GGUF; the message says why, in llama.cpp's words."""


@dataclass
class GgufConversion:
    converted: bool
    files: list[str]               # relative paths written into out_dir
    quant: str                     # F16, Q8_0, Q4_K_M...
    architecture: str | None       # config.json's, e.g. LlamaForCausalLM
    tool: str = TOOL
    tool_version: str = ""         # "llama-cpp-python 0.3.36 (llama.cpp 0c1e57098bba) / torch ... / transformers ..."
    llama_cpp_commit: str = ""
    converter_sdist: str = ""
    converter_sdist_sha256: str = ""
    from_format: str = "safetensors"
    intermediate: str | None = None   # the converter's output type before quantising
    convert_s: float = 0.0
    quantize_s: float = 0.0
    seconds: float = 0.0
    bytes: int = 0
    reason: str | None = None
    tensor_types: dict = field(default_factory=dict)

    def record(self) -> dict:
        """The manifest's ``x-mlos.conversion`` entry."""
        return {k: v for k, v in asdict(self).items() if k != "files"}


def normalize_quant(quant: str | None) -> str | None:
    if quant is None:
        return None
    wanted = str(quant).strip().upper()
    if wanted not in QUANTS:
        raise ConversionFailed(f"unknown GGUF type {quant!r}; choose one of {', '.join(QUANTS)}")
    return wanted


def gguf_conversion_available() -> tuple[bool, str]:
    """Whether the converter's dependencies import here (without importing them)."""
    from .convert import _find

    missing = [m for m in ("llama_cpp", "torch", "transformers", "numpy") if not _find(m)]
    if missing:
        return False, f"GGUF conversion needs the 'convert' and 'gguf' extras (missing: {', '.join(missing)})"
    return True, "llama.cpp converter available"


def is_decoder_llm(model_dir: Path) -> bool:
    """A transformers causal language model (what llama.cpp runs as text generation)."""
    cfg = _read_config(Path(model_dir)) or {}
    archs = cfg.get("architectures") or []
    arch = str(archs[0]) if archs else ""
    return (arch.endswith(("ForCausalLM", "LMHeadModel")) and not arch.endswith("WithLMHeadModel")
            and not cfg.get("is_encoder_decoder"))


def _tool_version(conv: Converter) -> str:
    parts = [conv.describe()] + [f"{d} {_version(d)}" for d in ("torch", "transformers", "sentencepiece")
                                 if _version(d)]
    return " / ".join(parts)


def _run(cmd: list[str], timeout_s: float, what: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run a child in its own process group: (exit code, stdout, stderr); ConversionFailed on a
    timeout. Ctrl-C stops the child too."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_worker_env(),
                            cwd=cwd, start_new_session=(os.name == "posix"))
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        raise ConversionFailed(f"{what} timed out after {timeout_s:g} s and was stopped; nothing was written") from None
    except BaseException:
        _kill(proc)
        raise
    return proc.returncode, out, err


def _converter_error(err: str, arch: str, conv: Converter) -> str:
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    if any("BPE pre-tokenizer was not recognized" in ln for ln in lines):
        chk = next((ln.split("chkhsh:", 1)[1].strip() for ln in lines if "chkhsh:" in ln), "?")
        return (f"llama.cpp's converter ({conv.describe()}) does not know this model's BPE pre-tokenizer "
                f"(tokenizer hash {chk}): it converts byte-level BPE vocabularies only of the published models "
                "it lists, and SentencePiece ones (tokenizer.model)")
    for marker in ("NotImplementedError:", "ValueError:", "KeyError:", "AssertionError", "ERROR:", "Error:"):
        hits = [ln for ln in lines if marker in ln]
        if hits:
            return f"llama.cpp's converter failed on {arch}: {hits[-1][:400]}"
    return f"llama.cpp's converter failed on {arch}: {_stderr_tail(err)}"


def convert_to_gguf(model_dir: Path, out_dir: Path, quant: str = "F16", *, name: str = "model",
                    timeout_s: float = 3600, threads: int | None = None, progress=lambda s: None) -> GgufConversion:
    """Convert a local SafeTensors transformers model dir to ``out_dir/<name>-<QUANT>.gguf``.
    Raises ConversionFailed (the reason in one sentence) or ConverterUnavailable."""
    t0 = time.monotonic()
    quant = normalize_quant(quant) or "F16"
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()
    cfg = _read_config(model_dir)
    if cfg is None:
        raise ConversionFailed(f"not a transformers model dir: no config.json object in {model_dir}")
    archs = cfg.get("architectures") or []
    arch = str(archs[0]) if archs else None
    problem = _weights_problem(model_dir)
    if problem:
        raise ConversionFailed(problem)
    ok, why = gguf_conversion_available()
    if not ok:
        raise ConverterUnavailable(why)
    conv = converter(progress)
    known = conv.architectures()
    if arch is None or arch not in known:
        common = [a for a in _COMMON if a in known]
        raise ConversionFailed(
            f"llama.cpp's converter ({conv.describe()}) does not know the architecture "
            f"{arch or '(config.json names none)'}; it converts {len(known)} architectures, among them "
            + ", ".join(common) + f" (python {conv.script} --print-supported-models lists them)")
    intermediate = quant if quant in CONVERTER_TYPES else ("BF16" if cfg.get("torch_dtype") == "bfloat16" else "F16")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".axon-gguf-", dir=out_dir.parent))
    try:
        first = tmp / f"{name}-{intermediate}.gguf"
        progress(f"converting {arch} to GGUF {intermediate} with llama.cpp's converter")
        t = time.monotonic()
        code, _, err = _run([sys.executable, "-m", "axon_pkg._gguf_worker", "convert", "--script", str(conv.script),
                             "--", str(model_dir), "--outfile", str(first), "--outtype", CONVERTER_TYPES[intermediate]],
                            timeout_s, "the GGUF conversion", cwd=conv.root)
        convert_s = time.monotonic() - t
        if code != 0 or not first.is_file():
            raise ConversionFailed(_converter_error(err, arch, conv))
        final, quantize_s = first, 0.0
        if quant != intermediate:
            final = tmp / f"{name}-{quant}.gguf"
            progress(f"quantising to {quant} with llama.cpp's quantiser")
            quantize_s = quantize_gguf(first, final, quant, threads=threads,
                                       timeout_s=max(1.0, timeout_s - (time.monotonic() - t0)))
            first.unlink()
        info = inspect_gguf(final, conv)
        out_dir.mkdir(parents=True, exist_ok=True)
        os.replace(final, out_dir / final.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return GgufConversion(
        converted=True, files=[final.name], quant=quant, architecture=arch, tool_version=_tool_version(conv),
        llama_cpp_commit=conv.llama_cpp_commit, converter_sdist=conv.sdist, converter_sdist_sha256=conv.sdist_sha256,
        intermediate=intermediate if quant != intermediate else None, convert_s=round(convert_s, 3),
        quantize_s=round(quantize_s, 3), seconds=round(time.monotonic() - t0, 3),
        bytes=(out_dir / final.name).stat().st_size, tensor_types=info.get("tensor_types") or {})


def quantize_gguf(src: Path, dst: Path, quant: str, *, threads: int | None = None, timeout_s: float = 3600) -> float:
    """llama.cpp's quantiser: ``src`` (a GGUF, usually F16) -> ``dst`` as ``quant``; its seconds."""
    quant = normalize_quant(quant)
    if quant in CONVERTER_TYPES:
        raise ConversionFailed(f"{quant} is written by the converter, not the quantiser; choose one of "
                               + ", ".join(QUANTIZER_TYPES))
    cmd = [sys.executable, "-m", "axon_pkg._gguf_worker", "quantize", "--input", str(src), "--output", str(dst),
           "--quant", quant, "--threads", str(threads or os.cpu_count() or 1)]
    code, out, err = _run(cmd, timeout_s, f"quantising to {quant}")
    result = _json_line(out)
    if code != 0 or not result or not result.get("ok"):
        Path(dst).unlink(missing_ok=True)
        why = (result or {}).get("error") or f"the quantiser crashed (exit code {code})"
        raise ConversionFailed(f"llama.cpp could not quantise to {quant}: {why}: {_stderr_tail(err)}")
    return float(result["seconds"])


def inspect_gguf(path: Path, conv: Converter | None = None) -> dict:
    """A GGUF file's ``architecture``, ``file_type``, ``name`` and ``tensor_types`` (type -> count),
    read with the converter's gguf-py."""
    conv = conv or converter()
    _, out, err = _run([sys.executable, "-m", "axon_pkg._gguf_worker", "inspect", "--input", str(path),
                        "--gguf-py", str(conv.root / "gguf-py")], 600, "reading the GGUF file")
    result = _json_line(out)
    if not result or not result.get("ok"):
        raise ConversionFailed(f"{Path(path).name} does not read as GGUF: {(result or {}).get('error')}: "
                               f"{_stderr_tail(err)}")
    return result


def _json_line(out: str) -> dict | None:
    lines = [ln for ln in (out or "").splitlines() if ln.strip().startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# ---- the install pipeline's step ---------------------------------------------------------------------

def convert_for_install(snapshot: Path, out_dir: Path, files: dict[str, Path], *, fmt: str, selector: str | None,
                        name: str, source_commit: str, progress=lambda s: None):
    """``axon_pkg.install``'s GGUF step, for a downloaded SafeTensors snapshot: ``(files, "gguf",
    conversion record, seconds)``, or None to go on with ONNX. ``-f gguf`` converts any architecture
    llama.cpp's converter knows (else SelectionError with the reason); ``-f auto`` only a decoder
    LLM, and falls back to ONNX (None) when GGUF conversion is not possible, saying why. The type
    is the selector (``:Q8_0``, ``--quant``), else Q4_K_M, the original Axon's default."""
    from .errors import SelectionError

    if fmt == "auto" and not is_decoder_llm(snapshot):
        return None
    if fmt == "auto":
        ok, why = gguf_conversion_available()
        if not ok:
            progress(f"not converting to GGUF ({why}); trying ONNX")
            return None
    try:
        quant = normalize_quant(selector) if selector else DEFAULT_QUANT
        result = convert_to_gguf(snapshot, out_dir, quant, name=name, progress=progress)
    except (ConversionFailed, ConverterUnavailable) as e:
        if fmt == "gguf":
            raise SelectionError(f"cannot convert {name} to GGUF: {e.message}", hint=e.hint) from None
        progress(f"not converting to GGUF: {e.message}; trying ONNX")
        return None
    kept = {rel: path for rel, path in files.items()
            if not rel.endswith((".safetensors", ".safetensors.index.json"))}  # the GGUF replaces the weights
    kept.update({rel: out_dir / rel for rel in result.files})
    record = {**result.record(), "source_commit": source_commit,
              "task": "text-generation" if is_decoder_llm(snapshot) else None}
    progress(f"converted to {result.files[0]} in {result.seconds:.1f} s")
    return kept, "gguf", record, result.seconds
