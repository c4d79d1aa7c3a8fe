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


def test_runtime_shape_error_is_a_clear_inference_failure(silero, tmp_path, capfd):
    model = load(silero, tmp_path)
    with pytest.raises(InferenceFailed) as e:
        model.infer({"input": np.zeros((1, 32), np.float32), "state": np.zeros((2, 1, 128), np.float32),
                     "sr": np.array(16000, dtype=np.int64)})
    # one sentence with the innermost node and every input's shape; onnxruntime's words in detail
    assert e.value.message == (
        "onnxruntime could not run the model on these inputs in its Pad node "
        "'If_0_then_branch__Inline_0__/stft/padding/Pad' ('input' [1, 32], 'state' [2, 1, 128], 'sr' []): "
        "Pad reflect: post-pad (64) exceeds maximum allowed (31) for axis 1. Input shape:{1,32}")
    assert e.value.detail.startswith("[ONNXRuntimeError]") and "Non-zero status code" in e.value.detail
    assert "[E:onnxruntime" not in capfd.readouterr().err  # no red line in the server's log


def test_mismatched_lengths_are_named(tmp_path):
    """Two inputs whose lengths cannot broadcast: 400 naming both, whatever the graph names its dims."""
    from onnx import TensorProto, helper

    from .. import onnx_models

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"], name="add")], "unnamed",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, None]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, None])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, None])])
    path = onnx_models._save(graph, tmp_path / "unnamed.onnx")
    model = load(path, tmp_path)
    with pytest.raises(InferenceFailed) as e:
        model.infer({"a": np.ones((1, 3), np.float32), "b": np.ones((1, 4), np.float32)})
    assert e.value.message == ("the inputs' shapes do not fit together in its Add node 'add': a dimension of 3 "
                               "meets one of 4 (inputs: 'a' [1, 3], 'b' [1, 4])")
    assert "Attempting to broadcast an axis by a dimension other than 1. 3 by 4" in e.value.detail


def test_non_tensor_outputs_are_listed_not_fatal(tmp_path):
    """A scikit-learn style classifier: a label tensor and a ZipMap seq(map) of probabilities."""
    from .. import onnx_models

    model = load(onnx_models.zipmap_classifier(tmp_path / "clf.onnx"), tmp_path)
    meta = model.metadata
    assert [t.name for t in meta.outputs] == ["label"]
    (missing,) = meta.properties["unavailable_outputs"]
    assert missing["name"] == "probabilities" and missing["type"] == "seq(map(int64,tensor(float)))"
    assert "options={'zipmap': False}" in missing["reason"]
    out = model.infer({"x": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)})
    assert out["label"].tolist() == [1, 0] and list(out) == ["label"]


def test_plugin_id_must_match_format(models, tmp_path):
    src = resolve(models.matmul, tmp_path)
    assert plugin_for("onnx", "onnxruntime").id == "onnxruntime"
    with pytest.raises(UnprocessableModel, match="cannot load a onnx model"):
        plugin_for(src.format, "llama.cpp")
    with pytest.raises(UnprocessableModel, match="no tflite plugin"):
        plugin_for("tflite")
