"""Quantised variants of a model, each made with its format's own tools; measured against their
parent by validation.quant_measure.

ONNX (onnxruntime.quantization):

- ``int8-dynamic``: ``quantize_dynamic``, int8 weights with one scale per output channel;
  activations are quantised at run time from each call's own range. The method for transformer
  encoders (and onnxruntime's own advice for them): their activation ranges depend on the input
  tokens and have outliers (attention scores, LayerNorm outputs), so fixed ranges from a
  calibration set would clip some inputs and waste precision on others, while the cost is in
  the MatMuls whose weights dominate. Per-channel scales: with one scale per tensor the sentence
  embeddings of all-MiniLM-L6-v2 drifted to a cosine of 0.94-0.97, per channel to about 0.99
  (measured here; docs/validation-ci.md has the figures).
- ``int8-static``: ``quantize_static`` in QDQ format, per-channel weights, activation ranges
  calibrated (MinMax) on a small set drawn like the suite's own inputs, with seeds of their own so
  the inputs the drift is measured on are never calibration inputs. The method for vision models
  whose compute is convolutions: after BatchNorm and ReLU their activation ranges hardly depend on
  the image, and with fixed scales onnxruntime fuses Q/DQ pairs into int8 convolution kernels,
  whereas dynamic quantisation turns a Conv into ConvInteger plus run-time range scans. Vision
  rows get both variants, so the report shows which one the graph favours (``recommended``
  follows the weight share of Conv against MatMul/Gemm).
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 inputs and
  outputs kept. Half the bytes; whether it is faster depends on the execution provider (on CPUs
  without FP16 arithmetic it is not), which is what the row measures.

GGUF (llama.cpp's ``llama_model_quantize``, the library behind ``llama-quantize``): ``Q8_0`` and
``Q4_K_M`` from a full-precision (F16/BF16/F32) parent only, made by axon-py's own quantiser
(``axon_pkg.gguf_convert.quantize_gguf``, which runs it in a subprocess: llama.cpp writes a line
per tensor to stderr, and a crash in it must not take the validator down). Quantising an already
quantised file (the demo's Q4_K_M) would compare a model with a degraded copy of itself and is
refused; the parent's file type is read in a subprocess too (``python -m validation.quantize
gguf-info``).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

ONNX_VARIANTS = ("int8-dynamic", "int8-static", "fp16")
GGUF_VARIANTS = ("Q8_0", "Q4_K_M")
FULL_PRECISION_GGUF = {0: "F32", 1: "F16", 32: "BF16"}   # llama_ftype of the parent file
CALIBRATION_SAMPLES = 16
CALIBRATION_SEED = 1000      # the suite's inputs use test_seed (42) and test_seed + 1: no overlap


@dataclass
class Variant:
    name: str
    method: str
    why: str
    status: str = "made"              # made | not applicable | failed
    path: str | None = None
    bytes: int | None = None
    error: str | None = None
    recommended: bool = False
    calibration: dict | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _weights_by_op(model) -> Counter:
    """Elements of the initializers each op type consumes (graph and subgraphs): where the compute is."""
    sizes = {}
    graphs = [model.graph]
    counts: Counter = Counter()
    while graphs:
        g = graphs.pop()
        for init in g.initializer:
            n = 1
            for d in init.dims:
                n *= d
            sizes[init.name] = n
        for node in g.node:
            for name in node.input:
                counts[node.op_type] += sizes.get(name, 0)
            graphs += [a.g for a in node.attribute if a.type == a.GRAPH]
    return counts


def conv_share(path: Path) -> float:
    """The share of weights that Conv nodes hold among Conv, MatMul and Gemm (0 for an all-MatMul graph)."""
    import onnx

    counts = _weights_by_op(onnx.load(str(path), load_external_data=False))
    conv, dense = counts["Conv"], counts["MatMul"] + counts["Gemm"]
    return conv / (conv + dense) if conv + dense else 0.0


def plan(category: str, share: float) -> list[tuple[str, str]]:
    """(variant, why) for a model of ``category`` whose Conv weight share is ``share``."""
    cnn = share >= 0.5
    dyn_why = ("transformer-style compute (MatMul weights dominate): activation ranges vary per input, "
               "so they are measured per call")
    out = [("int8-dynamic", dyn_why if not cnn else
            "for contrast: dynamic quantisation of convolutions (ConvInteger), the method not advised for CNNs")]
    if category == "vision":
        out.append(("int8-static", "convolutions dominate: stable activation ranges, fused int8 kernels" if cnn else
                    "for contrast: static ranges on a vision transformer, calibrated on the suite's inputs"))
    out.append(("fp16", "half the bytes; speed depends on the execution provider's FP16 support"))
    return out


def _size(p: Path) -> int:
    return p.stat().st_size + sum(x.stat().st_size for x in p.parent.glob(p.name + ".data"))


def _preprocessed(parent: Path, out: Path) -> Path:
    """onnxruntime's advised first step (graph optimisation, shapes); symbolic shape inference does
    not complete on optimum's exports, ONNX's own does."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name(out.stem + "-pre.onnx")
    quant_pre_process(str(parent), str(pre), skip_symbolic_shape=True)
    return pre


def _dynamic(parent: Path, out: Path) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = _preprocessed(parent, out)
    try:
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        pre.unlink(missing_ok=True)
    return "onnxruntime quantize_dynamic: int8 weights per channel, activations per call"


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):     # onnxruntime may read the set twice
        pass


def _static(parent: Path, out: Path, feeds: list[dict]) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    pre = _preprocessed(parent, out)
    try:
        quantize_static(str(pre), str(out), _Calibration(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    finally:
        pre.unlink(missing_ok=True)
    return f"onnxruntime quantize_static: QDQ, int8 per-channel weights, MinMax ranges from {len(feeds)} inputs"


def _fp16(parent: Path, out: Path) -> str:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(parent)), keep_io_types=True), str(out))
    return "onnxruntime convert_float_to_float16, float32 inputs and outputs kept"


QUANTISED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QuantizeLinear", "DequantizeLinear",
                 "QLinearMatMul", "QLinearConv", "DynamicQuantizeMatMul", "QAttention", "MatMulIntegerToFloat"}


def _check(path: Path, name: str) -> None:
    """The variant must build a session here, and an int8 variant must hold a quantised node:
    onnxruntime leaves weights it does not reach (inside If/Loop branches) as they were, and such
    a 'variant' is its parent under another name."""
    import onnx
    import onnxruntime as ort

    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if name.startswith("int8"):
        graphs, ops = [onnx.load(str(path), load_external_data=False).graph], set()
        while graphs:
            g = graphs.pop()
            ops |= {n.op_type for n in g.node}
            graphs += [a.g for n in g.node for a in n.attribute if a.type == a.GRAPH]
        if not ops & QUANTISED_OPS:
            raise NotApplicable("onnxruntime quantised no node of this graph (its weights are out of the "
                                "quantiser's reach, e.g. inside If/Loop branches)")


class NotApplicable(Exception):
    pass


def onnx_variants(parent: Path, out_dir: Path, category: str, calibration: Iterable[dict] | None) -> list[Variant]:
    """Every variant ``plan`` gives for the ONNX file ``parent``, written under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    share = conv_share(parent)
    feeds = list(calibration or [])
    made = []
    for name, why in plan(category, share):
        v = Variant(name, "", why, details={"conv_weight_share": round(share, 3)})
        v.recommended = (name == "int8-static") == (share >= 0.5) and name != "fp16"
        out = out_dir / f"{name}.onnx"
        try:
            if name == "int8-dynamic":
                v.method = _dynamic(parent, out)
            elif name == "int8-static":
                if not feeds:
                    raise ValueError("no calibration inputs")
                v.method = _static(parent, out, feeds)
                v.calibration = {"samples": len(feeds), "seed_from": CALIBRATION_SEED,
                                 "source": "the suite's inputs for this model, drawn with seeds of their own"}
            else:
                v.method = _fp16(parent, out)
            _check(out, name)
            v.path, v.bytes = str(out), _size(out)
        except NotApplicable as e:
            v.status, v.error = "not applicable", str(e)
        except Exception as e:  # onnxruntime's tools raise anything; the row records it
            v.status, v.error = ("not applicable" if "NOT_IMPLEMENTED" in str(e) or "implementation" in str(e)
                                 else "failed"), f"{type(e).__name__}: {str(e)[:400]}"
        v.recommended = v.recommended and v.status == "made"
        made.append(v)
    return made


# ---- GGUF ------------------------------------------------------------------------------------------

def _gguf_subprocess(*args: str, timeout: float) -> dict:
    proc = subprocess.run([sys.executable, "-m", "validation.quantize", *args], capture_output=True, text=True,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[-400:]
        raise RuntimeError(f"llama.cpp quantisation exited {proc.returncode}: {tail}")
    return json.loads(lines[-1])


def gguf_file_type(path: Path, timeout: float = 300) -> int:
    """The llama_ftype a GGUF file records (general.file_type)."""
    return int(_gguf_subprocess("gguf-info", str(path), timeout=timeout)["file_type"])


def gguf_variants(parent: Path, out_dir: Path, timeout: float = 1800) -> list[Variant]:
    """Q8_0 and Q4_K_M of a full-precision GGUF ``parent``; refused (not applicable) for a quantised one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    why = {"Q8_0": "8-bit blocks of 32: about half of F16's bytes, near-lossless by design",
           "Q4_K_M": "4-bit k-quants, some tensors kept at 6 bits: about a third of F16's bytes"}
    try:
        ftype = gguf_file_type(parent)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return [Variant(n, "", why[n], "failed", error=f"cannot read the parent's file type: {e}") for n in GGUF_VARIANTS]
    if ftype not in FULL_PRECISION_GGUF:
        reason = (f"the parent is already quantised (llama_ftype {ftype}): quantising it again would measure a "
                  "degraded copy against itself; these rows need an F16 GGUF converted from a checkpoint")
        return [Variant(n, "", why[n], "not applicable", error=reason) for n in GGUF_VARIANTS]
    from axon_pkg.errors import AxonError
    from axon_pkg.gguf_convert import quantize_gguf   # axon-py's quantiser: the one way GGUF is quantised

    made = []
    for name in GGUF_VARIANTS:
        out = out_dir / f"{name}.gguf"
        v = Variant(name, f"llama.cpp llama_model_quantize from {FULL_PRECISION_GGUF[ftype]} "
                          "(axon_pkg.gguf_convert.quantize_gguf)", why[name],
                    details={"parent_precision": FULL_PRECISION_GGUF[ftype]})
        try:
            v.details["quantize_s"] = round(quantize_gguf(parent, out, name, timeout_s=timeout), 3)
            v.path, v.bytes = str(out), out.stat().st_size
        except AxonError as e:
            v.status, v.error = "failed", e.message
        made.append(v)
    return made


def _main(argv: list[str]) -> int:
    """The subprocess side: ``gguf-info FILE``, printing one JSON line."""
    import ctypes

    import llama_cpp

    llama_cpp.llama_backend_init()
    if argv[:1] == ["gguf-info"] and len(argv) == 2:
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        model = llama_cpp.llama_model_load_from_file(argv[1].encode(), params)
        if not model:
            print(f"cannot load {argv[1]}", file=sys.stderr)
            return 1
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_model_meta_val_str(model, b"general.file_type", buf, len(buf))
        llama_cpp.llama_model_free(model)
        print(json.dumps({"file_type": int(buf.value) if n > 0 else 0}))   # absent: an all-F32 file
        return 0
    print("usage: python -m validation.quantize gguf-info FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
