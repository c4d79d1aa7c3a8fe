"""Tiny ONNX models built with onnx.helper, for tests and benchmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]


def _save(graph, path: Path, ir_version: int = 8) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="mlos-tests")
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def matmul(path: Path, width: int = 64, seed: int = 0) -> tuple[Path, np.ndarray]:
    """y = x @ W with x [batch, width] float32; returns the path and W for reference results."""
    w = np.random.default_rng(seed).standard_normal((width, width)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    return _save(graph, path), w


def add_one(path: Path, elem_type: int, shape=("batch", 4)) -> Path:
    """y = x + 1 for a numeric type."""
    one = numpy_helper.from_array(np.array(1, dtype=helper.tensor_dtype_to_np_dtype(elem_type)), "one")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])], "add_one",
        [helper.make_tensor_value_info("x", elem_type, list(shape))],
        [helper.make_tensor_value_info("y", elem_type, list(shape))],
        initializer=[one],
    )
    return _save(graph, path)


def logical_not(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Not", ["x"], ["y"])], "not",
        [helper.make_tensor_value_info("x", TensorProto.BOOL, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.BOOL, ["batch", 3])],
    )
    return _save(graph, path)


def string_identity(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])], "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["n"])],
    )
    return _save(graph, path)


def token_model(path: Path) -> Path:
    """A BERT-shaped signature: input_ids, attention_mask int64 [batch, sequence] ->
    masked_sum float32 [batch] (sum of ids where the mask is 1) and length int64 [batch]."""
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
        helper.make_node("Cast", ["masked"], ["masked_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["masked_f", "axes"], ["masked_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["attention_mask", "axes"], ["length"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "tokens",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("masked_sum", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("length", TensorProto.INT64, ["batch"])],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    return _save(graph, path)


def padded(path: Path, megabytes: float) -> Path:
    """A MatMul model carrying an unused initializer of the given size: a model of known
    footprint for memory-budget tests."""
    filler = np.zeros(int(megabytes * 2**20 / 4), dtype=np.float32)
    w = np.eye(8, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "padded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(filler, "filler")],
    )
    return _save(graph, path)


IDENTITY_TYPES = {"FP32": TensorProto.FLOAT, "FP16": TensorProto.FLOAT16, "INT64": TensorProto.INT64,
                  "BOOL": TensorProto.BOOL, "BYTES": TensorProto.STRING}


def identity_all(path: Path) -> Path:
    """One Identity per Open Inference datatype of the protocol tests: input ``in_<TYPE>``
    [rows_<TYPE>, n_<TYPE>] -> output ``out_<TYPE>``, so every value must come back exactly. Each
    input names its own dimensions: the tests send each a different shape."""
    nodes, inputs, outputs = [], [], []
    for name, elem in IDENTITY_TYPES.items():
        dims = [f"rows_{name}", f"n_{name}"]
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, dims))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, dims))
    return _save(helper.make_graph(nodes, "identity_all", inputs, outputs), path)


def slow(path: Path, width: int = 1024, rounds: int = 20) -> Path:
    """``rounds`` MatMuls by one orthogonal matrix at ``width``: about 40 MFLOP per row, so a
    request of a few hundred rows keeps the model busy long enough for others to queue."""
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((width, width)))
    nodes, prev = [], "x"
    for i in range(rounds):
        nodes.append(helper.make_node("MatMul", [prev, "W"], [f"h{i}"]))
        prev = f"h{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        initializer=[numpy_helper.from_array(q.astype(np.float32), "W")],
    )
    return _save(graph, path)


def row_sum(path: Path) -> Path:
    """y = x summed over its second axis, x [batch, n] float32 of any n: a model whose cost is
    moving its input, for comparing transports."""
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)], "row_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        initializer=[axes],
    )
    return _save(graph, path)


# ---- the models of Triton's example clients (triton-inference-server/client, src/python/examples),
# rebuilt as ONNX: "simple" adds and subtracts two INT32 [batch, 16] tensors, "simple_int8" the
# same in INT8, "simple_string" the same on numbers written as strings, "simple_identity" returns
# its BYTES input. "simple_sequence" has the accumulator's signature (INPUT -> OUTPUT, INT32
# [batch, 1]) but no state: sequence requests to it are refused, as by every model here.
def triton_simple(path: Path, elem_type: int = TensorProto.INT32) -> Path:
    nodes = [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
             helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])]
    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info(n, elem_type, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, elem_type, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _save(graph, path)


def triton_simple_string(path: Path) -> Path:
    nodes = [
        helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
        helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Sub", ["a", "b"], ["difference"]),
        helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
        helper.make_node("Cast", ["difference"], ["OUTPUT1"], to=TensorProto.STRING),
    ]
    graph = helper.make_graph(
        nodes, "simple_string",
        [helper.make_tensor_value_info(n, TensorProto.STRING, ["batch", 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(n, TensorProto.STRING, ["batch", 16]) for n in ("OUTPUT0", "OUTPUT1")],
    )
    return _save(graph, path)


def triton_simple_identity(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "simple_identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.STRING, ["batch", "n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, ["batch", "n"])],
    )
    return _save(graph, path)


def triton_simple_sequence(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT"], ["OUTPUT"])], "simple_sequence",
        [helper.make_tensor_value_info("INPUT", TensorProto.INT32, ["batch", 1])],
        [helper.make_tensor_value_info("OUTPUT", TensorProto.INT32, ["batch", 1])],
    )
    return _save(graph, path)


def zipmap_classifier(path: Path) -> Path:
    """What scikit-learn classifiers export as: x [batch, 2] scores -> ``label`` (argmax, INT64
    [batch]) and ``probabilities``, a ZipMap seq(map(int64, float)), which is not a tensor."""
    nodes = [
        helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
        helper.make_node("ZipMap", ["x"], ["probabilities"], domain="ai.onnx.ml", classlabels_int64s=[0, 1]),
    ]
    seq_map = helper.make_sequence_type_proto(helper.make_map_type_proto(
        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))
    graph = helper.make_graph(
        nodes, "zipmap_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
         helper.make_value_info("probabilities", seq_map)],
    )
    model = helper.make_model(graph, opset_imports=[*OPSET, helper.make_opsetid("ai.onnx.ml", 3)],
                              producer_name="mlos-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def center_rows(path: Path, width: int = 4) -> Path:
    """y = x - mean(x, axis=0) over x [N, width]: axis 0 is dynamic but is not a batch axis (each
    row's answer depends on the other rows), so stacking requests would change their answers."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),  # opset 17: axes an attribute
         helper.make_node("Sub", ["x", "m"], ["y"])], "center_rows",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
    )
    return _save(graph, path, ir_version=8)


def deep_matmul(path: Path, width: int = 1024, rounds: int = 8, io: int = 16) -> Path:
    """x [batch, io] -> ``rounds`` MatMuls by one orthogonal [width, width] matrix -> [batch, io]:
    small requests, heavy compute that a batch shares (one GEMM over the rows instead of a GEMV
    per row: several times less time per row), so batching must win at high concurrency."""
    rng = np.random.default_rng(0)
    w = np.linalg.qr(rng.standard_normal((width, width)))[0].astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W_in"], ["h0"])]
    nodes += [helper.make_node("MatMul", [f"h{i}", "W"], [f"h{i + 1}"]) for i in range(rounds)]
    nodes.append(helper.make_node("MatMul", [f"h{rounds}", "W_out"], ["y"]))
    graph = helper.make_graph(
        nodes, "deep_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", io])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", io])],
        initializer=[numpy_helper.from_array((rng.standard_normal((io, width)) / np.sqrt(io)).astype(np.float32), "W_in"),
                     numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array((rng.standard_normal((width, io)) / np.sqrt(width)).astype(np.float32),
                                             "W_out")],
    )
    return _save(graph, path)


def fixed_cost_matmul(path: Path, width: int = 512, io: int = 16) -> Path:
    """y = x @ W_in @ (W @ W) @ W_out, x [batch, io], where W @ W is recomputed at every execution
    (it depends on the input through ``+ 0 * sum(x)``, so onnxruntime cannot fold it away): a fixed
    2 * width^3 FLOPs per execution, whatever its rows, as a per-call weight transform would cost.
    One batch of 32 rows pays it once, 32 single requests 32 times: batching must win, by far."""
    rng = np.random.default_rng(0)
    w = (np.linalg.qr(rng.standard_normal((width, width)))[0]).astype(np.float32)
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Mul", ["s", "zero"], ["z"]),
             helper.make_node("Add", ["W", "z"], ["Wz"]),
             helper.make_node("MatMul", ["Wz", "Wz"], ["M"]),
             helper.make_node("MatMul", ["x", "W_in"], ["h"]),
             helper.make_node("MatMul", ["h", "M"], ["hm"]),
             helper.make_node("MatMul", ["hm", "W_out"], ["y"])]
    graph = helper.make_graph(
        nodes, "fixed_cost_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", io])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", io])],
        initializer=[numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
                     numpy_helper.from_array(w, "W"),
                     numpy_helper.from_array((rng.standard_normal((io, width)) / np.sqrt(io)).astype(np.float32), "W_in"),
                     numpy_helper.from_array((rng.standard_normal((width, io)) / np.sqrt(width)).astype(np.float32),
                                             "W_out")],
    )
    return _save(graph, path)
