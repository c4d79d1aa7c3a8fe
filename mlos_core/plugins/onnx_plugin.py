"""ONNX models on onnxruntime."""
from __future__ import annotations

import os
import re
from typing import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import InferenceFailed, InvalidTensor, UnprocessableModel
from ..smi import DYNAMIC, FormatPlugin, LoadOptions, Model, ModelMetadata, ModelSource, TensorSpec

# onnxruntime's type strings -> numpy. ORT also knows bfloat16 and float8 types, which numpy
# cannot hold natively; a model using them at its boundary is refused at load with the name.
_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}


def _spec(arg) -> TensorSpec:
    dtype = _ORT_TO_NUMPY.get(arg.type)
    if dtype is None:
        raise UnprocessableModel(f"tensor {arg.name!r} has type {arg.type}, which this server cannot exchange")
    dims = tuple(arg.shape or ())
    shape = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in dims)
    names = tuple(d if isinstance(d, str) and d else None for d in dims)
    return TensorSpec(arg.name, np.dtype(dtype), shape, names if any(names) else ())


def _unavailable(arg) -> dict:
    """An output no tensor protocol can carry (a ZipMap's seq(map), as scikit-learn exports
    make): the model serves its other outputs, and says why this one is missing."""
    if arg.type.startswith(("seq(", "map(", "optional(")):
        why = (f"its type {arg.type} is not a tensor, and no tensor protocol carries it; re-export the model "
               "without it (for scikit-learn classifiers: options={'zipmap': False} gives a probability tensor)")
    else:
        why = f"its type {arg.type} has no Open Inference Protocol datatype"
    return {"name": arg.name, "type": arg.type, "reason": why}


class OnnxModel(Model):
    def __init__(self, session, path: str):
        self._session = session
        inputs = tuple(_spec(a) for a in session.get_inputs())
        outputs, unavailable = [], []
        for arg in session.get_outputs():
            if arg.type in _ORT_TO_NUMPY:
                outputs.append(_spec(arg))
            else:
                unavailable.append(_unavailable(arg))
        if not outputs:
            raise UnprocessableModel("no output of this model is a tensor: " + "; ".join(
                f"{u['name']!r}: {u['reason']}" for u in unavailable))
        outputs = tuple(outputs)
        batchable = all(t.rank >= 1 and t.shape[0] == DYNAMIC for t in inputs + outputs)
        meta = session.get_modelmeta()
        properties = {"producer": meta.producer_name, "graph": meta.graph_name, "version": meta.version}
        if unavailable:
            properties["unavailable_outputs"] = unavailable
        self.metadata = ModelMetadata(inputs, outputs, platform="onnxruntime_onnx", batchable=batchable,
                                      properties=properties)
        self._output_names = [t.name for t in outputs]
        self._bytes = _file_bytes(path)
        self._run_options = ort_run_options()

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self._output_names
        feed = {k: (_as_str_array(v, k) if v.dtype == np.object_ else v) for k, v in inputs.items()}
        try:
            values = self._session.run(names, feed, self._run_options)
        except Exception as e:  # ORT raises its own exception types for bad runtime shapes/values
            raise InferenceFailed(_run_failure(e, feed), detail=str(e).strip()[:4000]) from None
        return dict(zip(names, values))

    def memory_bytes(self) -> int:
        return self._bytes

    def unload(self) -> None:
        self._session = None


def _as_str_array(arr: np.ndarray, name: str = "") -> np.ndarray:
    """ORT takes string tensors as object arrays of str; the core carries BYTES as bytes. ONNX
    strings are text: bytes that are not UTF-8 are refused, never silently replaced."""
    flat = []
    for i, v in enumerate(arr.reshape(-1)):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InvalidTensor(f"input {name!r} element {i} is not UTF-8 ({e.reason} at byte {e.start}): "
                                    "an ONNX string tensor holds text") from None
        flat.append(str(v))
    return np.array(flat, dtype=object).reshape(arr.shape)


def _file_bytes(path: str) -> int:
    """The model file plus its external-data files: the weights ORT keeps resident."""
    total = os.path.getsize(path)
    folder = os.path.dirname(path)
    base = os.path.basename(path)
    for name in os.listdir(folder):
        if name != base and name.startswith(base) and name.endswith(("_data", ".data")):
            total += os.path.getsize(os.path.join(folder, name))
    return total


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:500]


def ort_run_options():
    """Run options that keep onnxruntime from logging a failed run itself: the client gets the
    failure, in words, and the server log does not fill with red lines a client can cause."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4
    return options


_NODE = re.compile(r"while running (\w+) node\. Name:'([^']*)'")
_BROADCAST = re.compile(r"Attempting to broadcast an axis by a dimension other than 1\. (\d+) by (\d+)")


def _run_failure(e: Exception, feed: Mapping[str, np.ndarray]) -> str:
    """One sentence saying what went wrong and with which inputs; the raw text goes to ``detail``."""
    text = str(e)
    shapes = ", ".join(f"{k!r} {list(v.shape)}" for k, v in feed.items())
    nodes = _NODE.findall(text)  # a failure inside a subgraph (If, Loop) names the outer node first
    where = f" in its {nodes[-1][0]} node{' ' + repr(nodes[-1][1]) if nodes[-1][1] else ''}" if nodes else ""
    broadcast = _BROADCAST.search(text)
    if broadcast:
        return (f"the inputs' shapes do not fit together{where}: a dimension of {broadcast.group(1)} meets one of "
                f"{broadcast.group(2)} (inputs: {shapes})")
    message = text.rsplit("Status Message:", 1)[-1].strip().splitlines()[0] if text.strip() else type(e).__name__
    if "was false." in message:  # an ORT_ENFORCE: "<file>:<line> <function> <condition> was false. <why>"
        message = message.split("was false.", 1)[1].strip() or message
    message = re.sub(r"^/\S+:\d+ ", "", message)
    return f"onnxruntime could not run the model on these inputs{where} ({shapes}): {message[:300]}"


class OnnxPlugin(FormatPlugin):
    id = "onnxruntime"
    format = "onnx"
    description = "ONNX models (protobuf ModelProto) on onnxruntime, CPU execution provider"

    def availability(self) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError as e:
            return False, f"onnxruntime does not import: {e}"
        return True, onnxruntime.__version__

    def load(self, source: ModelSource, options: LoadOptions) -> Model:
        if source.model_path.is_dir():  # an encoder-decoder export: several graphs, one model
            from .onnx_graphs import load_graph_set

            return load_graph_set(source.model_path, lambda path: self.open(path, options))
        return self.open(source.model_path, options)

    def open(self, path, options: LoadOptions) -> OnnxModel:
        """One ONNX graph on its own session."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.intra_op_num_threads = max(0, int(options.intra_op_threads))
        so.inter_op_num_threads = max(0, int(options.inter_op_threads))
        # Spinning worker threads burn the cores the event loop needs between requests.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "1" if options.allow_spinning else "0")
        try:
            session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise UnprocessableModel(_load_failure(Path(path), e), detail=str(e).strip()[:4000]) from None
        return OnnxModel(session, str(path))


def _load_failure(path: Path, e: Exception) -> str:
    text = str(e)
    if "Protobuf parsing failed" in text or "Failed to load model" in text and "parse" in text.lower():
        return (f"{path.name} is not a valid ONNX model: its protobuf could not be parsed (a truncated or "
                f"corrupted file, {path.stat().st_size} bytes)")
    if "external data" in text.lower() or "ExternalData" in text:
        return f"{path.name}: onnxruntime could not read the model's external data files: {_short(e)}"
    return f"onnxruntime could not load {path.name}: {_short(e)}"
