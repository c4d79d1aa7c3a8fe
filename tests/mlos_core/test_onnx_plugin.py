"""The ONNX plugin on the real onnxruntime: io schema, dtypes, threads, errors."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from mlos_core.errors import InferenceFailed, UnprocessableModel
from mlos_core.plugins import plugin_for
from mlos_core.smi import LoadOptions
from mlos_core.sources import resolve


def load(path, tmp_path, **opts):
    src = resolve(path, tmp_path)
    return plugin_for(src.format).load(src, LoadOptions(**opts))


@pytest.mark.parametrize("attr, dtype", [("fp16", np.float16), ("int64", np.int64), ("int32", np.int32)])
def test_numeric_dtypes(models, tmp_path, attr, dtype):
    model = load(getattr(models, attr), tmp_path)
    spec = model.metadata.inputs[0]
    assert spec.dtype == dtype and spec.shape[0] == -1 and model.metadata.batchable
    x = np.arange(8, dtype=dtype).reshape(2, 4)
    np.testing.assert_array_equal(model.infer({"x": x})["y"], x + 1)


def test_bool_and_string(models, tmp_path):
    m = load(models.bool_, tmp_path)
    np.testing.assert_array_equal(m.infer({"x": np.array([[True, False, True]])})["y"], [[False, True, False]])
    s = load(models.string, tmp_path)
    assert s.metadata.inputs[0].dtype == object
    out = s.infer({"text": np.array([b"caf\xc3\xa9", b"x"], dtype=object)})["same"]
    assert list(out) == ["café", "x"]


def test_silero_schema_and_result_match_onnxruntime(silero, tmp_path):
    model = load(silero, tmp_path, intra_op_threads=1)
    meta = model.metadata
    assert [(t.name, t.shape) for t in meta.inputs] == [("input", (-1, -1)), ("state", (2, -1, 128)), ("sr", ())]
    assert not meta.batchable  # the state's leading dim is fixed: never stacked
    rng = np.random.default_rng(1)
    feed = {"input": rng.standard_normal((1, 512)).astype(np.float32) * 0.1,
            "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000, dtype=np.int64)}
    ref = ort.InferenceSession(str(silero)).run(None, feed)
    out = model.infer(feed)
    np.testing.assert_allclose(out["output"], ref[0], rtol=1e-6)
    np.testing.assert_allclose(out["stateN"], ref[1], rtol=1e-6)
    assert model.memory_bytes() == silero.stat().st_size


def test_runtime_shape_error_is_a_clear_inference_failure(silero, tmp_path):
    model = load(silero, tmp_path)
    with pytest.raises(InferenceFailed, match="onnxruntime refused the inputs"):
        model.infer({"input": np.zeros((1, 32), np.float32), "state": np.zeros((2, 1, 128), np.float32),
                     "sr": np.array(16000, dtype=np.int64)})


def test_plugin_id_must_match_format(models, tmp_path):
    src = resolve(models.matmul, tmp_path)
    assert plugin_for("onnx", "onnxruntime").id == "onnxruntime"
    with pytest.raises(UnprocessableModel, match="cannot load a onnx model"):
        plugin_for(src.format, "llama.cpp")
    with pytest.raises(UnprocessableModel, match="no tflite plugin"):
        plugin_for("tflite")
