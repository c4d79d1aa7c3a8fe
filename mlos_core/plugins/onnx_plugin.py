"""ONNX models on onnxruntime."""
from __future__ import annotations

import os
from typing import Mapping, Sequence

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
    shape = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in (arg.shape or ()))
    return TensorSpec(arg.name, np.dtype(dtype), shape)


class OnnxModel(Model):
    def __init__(self, session, path: str):
        self._session = session
        inputs = tuple(_spec(a) for a in session.get_inputs())
        outputs = tuple(_spec(a) for a in session.get_outputs())
        batchable = all(t.rank >= 1 and t.shape[0] == DYNAMIC for t in inputs + outputs)
        meta = session.get_modelmeta()
        self.metadata = ModelMetadata(
            inputs, outputs, platform="onnxruntime_onnx", batchable=batchable,
            properties={"producer": meta.producer_name, "graph": meta.graph_name, "version": meta.version},
        )
        self._output_names = [t.name for t in outputs]
        self._bytes = _file_bytes(path)

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self._output_names
        feed = {k: (_as_str_array(v, k) if v.dtype == np.object_ else v) for k, v in inputs.items()}
        try:
            values = self._session.run(names, feed)
        except Exception as e:  # ORT raises its own exception types for bad runtime shapes/values
            raise InferenceFailed(f"onnxruntime refused the inputs: {_short(e)}") from None
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
            raise UnprocessableModel(f"onnxruntime could not load {os.path.basename(path)}: {_short(e)}") from None
        return OnnxModel(session, str(path))
