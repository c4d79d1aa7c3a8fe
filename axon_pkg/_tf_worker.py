"""Subprocess side of the ``tfhub/`` adapter's conversion (``python -m axon_pkg._tf_worker convert``),
run by the interpreter of the TensorFlow converter environment (:mod:`axon_pkg.converter_envs`).

Loads the SavedModel, takes its serving signature (``serving_default``, else ``serve`` as Keras 3
exports it, else the only one), converts it to ONNX with tf2onnx (its own command line, in this
process), and checks the ONNX graph against TensorFlow on a seeded input. The signature's inputs
and outputs (names, dtypes, shapes) go into the result, and so into the manifest. Prints ONE JSON
line on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

OPSET = 17


class Refused(Exception):
    pass


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _spec(name: str, t) -> dict:
    shape = [-1 if d is None else int(d) for d in (t.shape.as_list() if t.shape.rank is not None else [])]
    return {"name": name, "dtype": t.dtype.name, "shape": shape}


def _signature(saved_model: Path):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(saved_model))
    except Exception as e:
        raise Refused(f"TensorFlow cannot load the SavedModel: {_short(e)}") from e
    sigs = dict(loaded.signatures)
    if not sigs:
        raise Refused("the SavedModel has no signature to serve (a TF1 Hub module or a bare checkpoint)")
    name = next((n for n in ("serving_default", "serve") if n in sigs), None) or sorted(sigs)[0]
    fn = sigs[name]
    _, kwargs = fn.structured_input_signature
    inputs = [_spec(k, v) for k, v in sorted(kwargs.items())]
    outputs = [_spec(k, v) for k, v in sorted(fn.structured_outputs.items())]
    return loaded, name, fn, inputs, outputs


def _sample(inputs: list[dict]):
    import numpy as np

    rng = np.random.default_rng(0)
    feeds = {}
    for t in inputs:
        shape = [2 if i == 0 and d == -1 else (8 if d == -1 else d) for i, d in enumerate(t["shape"])]
        if t["dtype"].startswith("float"):
            feeds[t["name"]] = rng.random(shape).astype(t["dtype"])
        elif t["dtype"].startswith("int"):
            feeds[t["name"]] = rng.integers(0, 10, shape).astype(t["dtype"])
        else:
            raise ValueError(f"no sample for a {t['dtype']} input")
    return feeds


def _parity(fn, onnx_path: Path, inputs: list[dict], outputs: list[dict]) -> float:
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    feeds = _sample(inputs)
    ref = fn(**{k: tf.constant(v) for k, v in feeds.items()})
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    worst = 0.0
    for o in outputs:
        want = ref[o["name"]].numpy()
        have = got.get(o["name"])
        if have is None or have.shape != want.shape:
            raise ValueError(f"output {o['name']}: ONNX gives {None if have is None else list(have.shape)}, "
                             f"TensorFlow {list(want.shape)}")
        worst = max(worst, float(np.max(np.abs(have.astype(np.float64) - want.astype(np.float64)))))
    return worst


def convert(saved_model: Path, output: Path, parity: bool) -> dict:
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import convert as tf2onnx_cli

    _, sig, fn, inputs, outputs = _signature(saved_model)
    output.mkdir(parents=True, exist_ok=True)
    argv = sys.argv
    sys.argv = ["tf2onnx.convert", "--saved-model", str(saved_model), "--signature_def", sig,
                "--output", str(output / "model.onnx"), "--opset", str(OPSET)]
    try:
        tf2onnx_cli.main()
    except SystemExit as e:
        raise Refused(f"tf2onnx stopped (exit code {e.code})") from None
    except Exception as e:
        raise Refused(f"tf2onnx failed: {_short(e)}") from e
    finally:
        sys.argv = argv
    if not (output / "model.onnx").is_file():
        raise Refused("tf2onnx wrote no model.onnx")
    from axon_pkg._convert_worker import _io_schema

    onnx_in, onnx_out, opset = _io_schema(output / "model.onnx")
    result = {"converted": True, "tool": "tf2onnx", "tool_version": f"tensorflow {tf.__version__} / tf2onnx "
              f"{tf2onnx.__version__}", "from_format": "savedmodel", "task": None, "opset": opset, "reason": None,
              "signature": {"name": sig, "inputs": inputs, "outputs": outputs}, "files": ["model.onnx"],
              "inputs": onnx_in, "outputs": onnx_out, "parity_max_abs_diff": None}
    if parity:
        try:
            result["parity_max_abs_diff"] = _parity(fn, output / "model.onnx", inputs, outputs)
        except Exception as e:
            result["reason"] = f"parity not checked: {_short(e)}"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m axon_pkg._tf_worker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--saved-model", required=True, type=Path)
    c.add_argument("--output", required=True, type=Path)
    c.add_argument("--no-parity", action="store_true")
    ns = ap.parse_args(argv)
    from axon_pkg.child import die_with_parent

    die_with_parent()   # never outlive axon-py (PR_SET_PDEATHSIG)
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    t0 = time.monotonic()
    try:
        result = convert(ns.saved_model, ns.output, not ns.no_parity)
    except Refused as e:
        result = {"converted": False, "reason": str(e)}
    result["seconds"] = round(time.monotonic() - t0, 3)
    sys.stdout.flush()
    os.write(real_stdout, (json.dumps(result) + "\n").encode())
    os.close(real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
