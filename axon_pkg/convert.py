"""SafeTensors -> ONNX conversion for ``axon-py install``.

The caller's process never imports torch, transformers or optimum: :func:`convert_to_onnx`
runs ``python -m axon_pkg._convert_worker`` in a subprocess (offline, its own process group)
that exports with ``optimum.exporters.onnx.main_export`` into a temporary directory next to
``out_dir``, checks parity against PyTorch with onnxruntime and prints one JSON line. Only on
success are the ONNX files (``model.onnx`` and any external-data file) moved into ``out_dir``;
a failure, a timeout or Ctrl-C leaves neither ONNX files nor the temporary directory behind.

Expected failures (not a transformers model dir, pickle-only weights, an architecture optimum
cannot export, missing optional dependencies, export errors, timeouts) come back as
``ConversionResult(converted=False, reason=...)``, never as exceptions.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable



__all__ = ["ConversionResult", "conversion_available", "infer_task", "convert_to_onnx"]

TOOL = "optimum-onnx"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# model_types whose *ForConditionalGeneration head is a text seq2seq model.
_SEQ2SEQ_TEXT = {
    "t5", "mt5", "longt5", "umt5", "bart", "mbart", "marian", "pegasus", "pegasus_x", "m2m_100",
    "blenderbot", "blenderbot-small", "bigbird_pegasus", "led", "nllb-moe", "prophetnet", "fsmt",
    "encoder-decoder",
}
_SPEECH_SEQ2SEQ = {"whisper", "speech_to_text", "moonshine", "speecht5"}

# Architecture-name suffix -> optimum task, checked in order (the first match wins).
_SUFFIX_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation-with-past"),
    ("LMHeadModel", "text-generation-with-past"),  # GPT2LMHeadModel, OpenAIGPTLMHeadModel, ...
    ("ForImageClassification", "image-classification"),
    ("ForSemanticSegmentation", "semantic-segmentation"),
    ("ForObjectDetection", "object-detection"),
    ("ForDepthEstimation", "depth-estimation"),
    ("ForMaskedImageModeling", "masked-im"),
    ("ForAudioClassification", "audio-classification"),
    ("ForAudioFrameClassification", "audio-frame-classification"),
    ("ForXVector", "audio-xvector"),
    ("ForCTC", "automatic-speech-recognition"),
    ("ForSpeechSeq2Seq", "automatic-speech-recognition-with-past"),
    ("ForZeroShotObjectDetection", "zero-shot-object-detection"),
    ("ForPreTraining", "feature-extraction"),
    ("Model", "feature-extraction"),  # BertModel, GPT2Model, ViTModel, ...
)


@dataclass(frozen=True)
class ConversionResult:
    converted: bool
    files: list[str]          # relative paths written into out_dir
    tool: str                 # "optimum-onnx"
    tool_version: str         # "optimum-onnx 0.1.0 / optimum 2.1.0 / torch 2.13.0+cpu / transformers 4.57.6"
    from_format: str          # "safetensors"
    task: str | None          # the optimum task used
    opset: int | None
    seconds: float
    # converted=False: why, in one sentence. converted=True: None, or a note when the parity
    # check could not be run (parity_max_abs_diff is then None).
    reason: str | None
    parity_max_abs_diff: float | None   # max |onnxruntime - pytorch| over the main output
    inputs: list[dict] = field(default_factory=list)    # [{name, dtype, shape (-1 = dynamic)}]
    outputs: list[dict] = field(default_factory=list)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _find(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _tool_version() -> str:
    parts = []
    for dist in ("optimum-onnx", "optimum", "torch", "transformers"):
        v = _version(dist)
        if v:
            parts.append(f"{dist} {v}")
    return " / ".join(parts) or "optimum-onnx not installed"


def conversion_available() -> tuple[bool, str]:
    """Whether the converter can run here, without importing torch/optimum: ``(True, versions)``
    or ``(False, reason)``."""
    missing = [m for m in ("torch", "transformers", "onnxruntime", "onnx") if not _find(m)]
    has_exporter = False
    if _find("optimum"):
        spec = importlib.util.find_spec("optimum")
        for loc in (spec.submodule_search_locations or []) if spec else []:
            if (Path(loc) / "exporters" / "onnx" / "__init__.py").is_file():
                has_exporter = True
                break
    if not has_exporter:
        missing.insert(0, "optimum.exporters.onnx (optimum-onnx)")
    if missing:
        return False, (f"optimum not installed — install the 'convert' extra "
                       f"(missing: {', '.join(missing)})")
    return True, _tool_version()


def _read_config(model_dir: Path) -> dict | None:
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) else None


def infer_task(model_dir: Path) -> str | None:
    """The optimum task for a transformers model dir, from config.json's architectures and
    model_type (no imports of transformers/optimum here; the worker checks support with
    optimum's TasksManager and falls back when the inferred task is not exportable)."""
    cfg = _read_config(Path(model_dir))
    if cfg is None:
        return None
    model_type = str(cfg.get("model_type") or "")
    archs = cfg.get("architectures") or []
    arch = str(archs[0]) if archs else ""
    if model_type == "vision-encoder-decoder":
        return "image-to-text-with-past"
    if arch.endswith("ForConditionalGeneration") or (not arch and cfg.get("is_encoder_decoder")):
        if model_type in _SPEECH_SEQ2SEQ:
            return "automatic-speech-recognition-with-past"
        if model_type in _SEQ2SEQ_TEXT or cfg.get("is_encoder_decoder"):
            return "text2text-generation-with-past"
        return "text-generation-with-past" if arch else None  # e.g. multimodal LMs
    if model_type in _SEQ2SEQ_TEXT and arch.endswith(("LMHeadModel", "WithLMHeadModel")):
        return "text2text-generation-with-past"                 # T5WithLMHeadModel (old name)
    if arch:
        for suffix, task in _SUFFIX_TASKS:
            if arch.endswith(suffix):
                return task
        return None
    return "feature-extraction" if model_type else None


def _weights_problem(model_dir: Path) -> str | None:
    names = [p.name for p in model_dir.iterdir() if p.is_file()]
    if any(n.endswith(".safetensors") or n.endswith(".safetensors.index.json") for n in names):
        return None
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        return (f"the weights are only pickle files ({', '.join(pickles[:3])}); pickles are not "
                f"loaded for safety — provide model.safetensors")
    return f"no *.safetensors weights in {model_dir}"


def _fail(reason: str, t0: float, task: str | None = None) -> ConversionResult:
    return ConversionResult(
        converted=False, files=[], tool=TOOL, tool_version=_tool_version(),
        from_format="safetensors", task=task, opset=None, seconds=round(time.monotonic() - t0, 3),
        reason=reason, parity_max_abs_diff=None, inputs=[], outputs=[])


def _worker_env() -> dict[str, str]:
    from .worker import worker_env

    return worker_env()   # the worker dies with us (axon_pkg.child)


def convert_to_onnx(model_dir: Path, out_dir: Path, *, task: str | None = None,
                    timeout_s: float = 1800, check_parity: bool = True, all_graphs: bool = False,
                    progress: Callable[[str], None] | None = None) -> ConversionResult:
    """Export a local SafeTensors transformers model dir to ONNX files in ``out_dir``. Of an
    encoder-decoder, the encoder and the merged decoder are kept (``all_graphs``: the split
    decoders too). ``progress`` gets each step as the worker reaches it ("exporting ...",
    "exported in 4.1 s"...)."""
    t0 = time.monotonic()
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir).resolve()

    if not model_dir.is_dir():
        return _fail(f"{model_dir} is not a directory", t0, task)
    if not (model_dir / "config.json").is_file():
        return _fail(f"not a transformers model dir: no config.json in {model_dir}", t0, task)
    cfg = _read_config(model_dir)
    if cfg is None:
        return _fail(f"config.json in {model_dir} is not a JSON object", t0, task)
    if not cfg.get("model_type"):
        return _fail("not a transformers model dir: config.json has no model_type", t0, task)
    problem = _weights_problem(model_dir)
    if problem:
        return _fail(problem, t0, task)
    ok, why = conversion_available()
    if not ok:
        return _fail(why, t0, task)

    explicit = task is not None
    task = task or infer_task(model_dir)

    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".axon-convert-", dir=parent))
    cmd = [sys.executable, "-m", "axon_pkg._convert_worker",
           "--model-dir", str(model_dir), "--output", str(tmp / "export")]
    if task:
        cmd += ["--task", task]
    if explicit:
        cmd.append("--task-explicit")
    if not check_parity:
        cmd.append("--no-parity")
    if all_graphs:
        cmd.append("--all-graphs")
    try:
        from .worker import run_json_worker

        data, problem = run_json_worker(cmd, timeout_s=max(0.0, timeout_s - (time.monotonic() - t0)),
                                        env=_worker_env(), progress=progress)
        if problem:
            if "timed out" in problem:
                problem = f"conversion timed out after {timeout_s:g} s and was stopped; nothing was written"
            return _fail(problem, t0, task)
        if not data.get("converted"):
            return _fail(str(data.get("reason") or "conversion failed"), t0,
                         data.get("task") or task)

        files = [str(f) for f in data.get("files") or []]
        src = tmp / "export"
        missing = [f for f in files if not (src / f).is_file()]
        if not files or missing:
            return _fail(f"the worker reported files it did not write: {missing or files}", t0,
                         data.get("task") or task)
        out_dir.mkdir(parents=True, exist_ok=True)
        moved: list[Path] = []
        try:
            for f in files:
                dest = out_dir / f
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src / f, dest)
                moved.append(dest)
        except BaseException:
            for dest in moved:       # all or nothing
                dest.unlink(missing_ok=True)
            raise
        return ConversionResult(
            converted=True, files=files, tool=TOOL,
            tool_version=str(data.get("tool_version") or _tool_version()),
            from_format="safetensors", task=data.get("task"), opset=data.get("opset"),
            seconds=round(time.monotonic() - t0, 3), reason=data.get("reason"),
            parity_max_abs_diff=data.get("parity_max_abs_diff"),
            inputs=list(data.get("inputs") or []), outputs=list(data.get("outputs") or []))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
