"""SafeTensors models: a Hugging Face model directory (config.json + *.safetensors + tokenizer)
is converted to ONNX once (optimum, in a subprocess: see axon_pkg.convert) and served on
onnxruntime; the conversion is cached by content hash, so registering it again is fast. A bare
``.safetensors`` file has weights but no graph: its tensors are listed, inference is refused."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import struct
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import UnprocessableModel
from ..smi import FormatPlugin, LoadOptions, Model, ModelMetadata, ModelSource
from .onnx_plugin import OnnxPlugin

log = logging.getLogger(__name__)

_ST_DTYPES = {"F64": "FP64", "F32": "FP32", "F16": "FP16", "BF16": "BF16", "I64": "INT64", "I32": "INT32",
              "I16": "INT16", "I8": "INT8", "U8": "UINT8", "BOOL": "BOOL", "F8_E4M3": "FP8_E4M3", "F8_E5M2": "FP8_E5M2"}


def read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


class SafeTensorsListing(Model):
    """A bare .safetensors file: metadata only."""

    def __init__(self, path: Path):
        header = read_header(path)
        tensors = [{"name": k, "datatype": _ST_DTYPES.get(v["dtype"], v["dtype"]), "shape": v["shape"]}
                   for k, v in header.items() if k != "__metadata__"]
        self._bytes = path.stat().st_size
        reason = (f"{path.name} is a bare SafeTensors file: {len(tensors)} weight tensors and no model graph "
                  "(no config.json), so there is nothing to run; register the model directory with its "
                  "config.json, or an ONNX/GGUF export")
        self.metadata = ModelMetadata((), (), platform="safetensors", batchable=False,
                                      properties={"tensors": tensors, "metadata": header.get("__metadata__", {}),
                                                  "unservable": reason})

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None):
        raise UnprocessableModel(self.metadata.properties["unservable"])

    def memory_bytes(self) -> int:
        return self._bytes


def _content_key(model_dir: Path, task: str | None) -> str:
    """A hash of everything the export depends on: the task, the config and every weight byte."""
    h = hashlib.sha256((task or "").encode() + b"\0")
    for p in sorted(model_dir.iterdir()):
        if p.is_file() and (p.suffix == ".safetensors" or p.name in ("config.json", "generation_config.json")):
            h.update(p.name.encode() + b"\0")
            with open(p, "rb") as f:
                while block := f.read(1 << 22):
                    h.update(block)
    return h.hexdigest()[:32]


class SafeTensorsPlugin(FormatPlugin):
    id = "safetensors"
    format = "safetensors"
    description = ("Hugging Face SafeTensors model directories, converted once to ONNX (optimum) and served on "
                   "onnxruntime; bare .safetensors files are listed, not run")

    def availability(self) -> tuple[bool, str]:
        from axon_pkg.convert import conversion_available

        ok, detail = conversion_available()
        return True, f"conversion: {detail}" if ok else f"listing only; conversion unavailable: {detail}"

    def load(self, source: ModelSource, options: LoadOptions) -> Model:
        path = source.model_path
        if path.is_file():
            return SafeTensorsListing(path)
        if options.cache_dir is None:
            raise UnprocessableModel("no cache directory for the ONNX conversion")
        from axon_pkg.convert import convert_to_onnx

        target = Path(options.cache_dir) / "converted" / _content_key(path, options.task)
        if not _converted(target):
            target.parent.mkdir(parents=True, exist_ok=True)
            label = "/".join(path.parts[-2:])
            log.info("converting %s to ONNX (once: the result is cached in %s)", path, target)
            t0 = time.monotonic()
            result = convert_to_onnx(path, target, task=_optimum_task(options.task),
                                     progress=lambda step: log.info("converting %s: %s", label, step))
            if not result.converted:
                shutil.rmtree(target, ignore_errors=True)
                log.warning("converting %s failed after %.1f s: %s", label, time.monotonic() - t0, result.reason)
                raise UnprocessableModel(f"cannot serve {path.name}: conversion to ONNX failed: {result.reason}")
            log.info("converted %s to ONNX in %.1f s", label, time.monotonic() - t0)
        # one graph, or an encoder-decoder's several (the directory)
        onnx_path = target / "model.onnx" if (target / "model.onnx").is_file() else target
        model = OnnxPlugin().load(ModelSource(onnx_path, "onnx"), options)
        model.metadata = ModelMetadata(model.metadata.inputs, model.metadata.outputs, "onnxruntime_onnx",
                                       model.metadata.batchable,
                                       {**model.metadata.properties, "converted_from": "safetensors",
                                        "conversion_cache": str(target)})
        return model


def _converted(target: Path) -> bool:
    from .onnx_graphs import seq2seq_graphs

    return (target / "model.onnx").is_file() or seq2seq_graphs(target) is not None


def _optimum_task(task: str | None) -> str | None:
    """The optimum export task for a task override (generators are exported with past key values)."""
    from ..tasks import normalize_task

    pipeline = normalize_task(task) if task else None
    return pipeline + "-with-past" if pipeline in ("text-generation", "text2text-generation") else pipeline
