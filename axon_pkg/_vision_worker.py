"""Subprocess side of the ``pytorch/`` adapter (``python -m axon_pkg._vision_worker``), run by the
interpreter of the vision converter environment (:mod:`axon_pkg.converter_envs`).

``resolve``: a torchvision model name and weights name (``latest`` = the enum's DEFAULT) -> the
weights' URL, file name, the hash prefix in that name, categories and transforms, through
torchvision's public registry (``get_model_weights``). ``convert``: the model built by
torchvision's own builder with those weights, whose state dict is read from the verified file
with ``torch.load(weights_only=True)`` (never a full unpickle), exported to ONNX (input
``pixel_values``, output ``logits``, dynamic batch), checked against PyTorch, with
``config.json`` (labels) and ``preprocessor_config.json`` (the transforms) for the core's image
task. ``hub``: a ``hubconf.py`` repo the user trusted, loaded with ``torch.hub.load(source="local")``
and exported alike.

Modules named in ``AXON_TORCHVISION_MODULES`` (comma separated) are imported first: they may
register more models in torchvision's registry. Prints ONE JSON line on stdout.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

# torchvision InterpolationMode -> PIL resample code (what preprocessor_config.json carries)
_PIL_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5, "lanczos": 1}


class Refused(Exception):
    """An expected failure; its message is the result's reason."""


def _plugins() -> None:
    for name in filter(None, (os.environ.get("AXON_TORCHVISION_MODULES") or "").split(",")):
        importlib.import_module(name.strip())


def _versions() -> str:
    import torch
    import torchvision

    return f"torch {torch.__version__} / torchvision {torchvision.__version__}"


def _weights(model: str, weights: str):
    from torchvision.models import get_model_weights, list_models

    try:
        enum = get_model_weights(model)
    except (ValueError, KeyError):
        known = ", ".join(sorted(m for m in list_models() if not m.startswith("quantized_")))
        raise Refused(f"unknown torchvision model {model!r}; torchvision has: {known}") from None
    members = {m.name: m for m in enum}
    if weights in ("latest", "DEFAULT"):
        return enum, enum.DEFAULT
    if weights not in members:
        raise Refused(f"{model} has no weights {weights!r}; choose one of: {', '.join(members)} "
                      "(or latest, the DEFAULT)")
    return enum, members[weights]


def _transforms(w) -> dict:
    preset = w.transforms()
    kind = type(preset).__name__
    if kind != "ImageClassification":
        raise Refused(f"{w} is not image classification (its transforms are {kind}); only "
                      "classification weights are supported")
    interp = getattr(preset.interpolation, "value", str(preset.interpolation))
    return {"type": "torchvision.transforms.ImageClassification",
            "resize_size": list(preset.resize_size), "crop_size": list(preset.crop_size),
            "mean": [float(v) for v in preset.mean], "std": [float(v) for v in preset.std],
            "interpolation": str(interp), "antialias": bool(getattr(preset, "antialias", True))}


def resolve(model: str, weights: str) -> dict:
    from torch.hub import HASH_REGEX

    enum, w = _weights(model, weights)
    file = w.url.rsplit("/", 1)[-1]
    m = HASH_REGEX.search(file)
    return {"ok": True, "model": model, "weights": w.name, "enum": enum.__name__, "url": w.url, "file": file,
            "hash_prefix": m.group(1) if m else None, "categories": list(w.meta.get("categories") or []),
            "transforms": _transforms(w),
            "meta": {k: w.meta[k] for k in ("num_params", "min_size", "recipe", "_docs") if k in w.meta},
            "tool_version": _versions()}


def _build(model: str, weights: str, file: Path):
    """torchvision's builder with these weights, the state dict read safely from ``file``."""
    import torch
    from torchvision.models import get_model
    from torchvision.models._api import WeightsEnum

    _, w = _weights(model, weights)
    original = WeightsEnum.get_state_dict

    def from_verified_file(self, *args, **kwargs):
        return torch.load(str(file), map_location="cpu", weights_only=True)

    WeightsEnum.get_state_dict = from_verified_file    # the builder keeps its own kwargs for these weights
    try:
        net = get_model(model, weights=w)
    except Exception as e:
        raise Refused(f"torchvision could not build {model} with {w.name} from {file.name}: {_short(e)}") from e
    finally:
        WeightsEnum.get_state_dict = original
    return net.eval(), w


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


def _export(net, shape: list[int], output: Path) -> str:
    """ONNX export with a dynamic batch axis; torch.export first, the TorchScript exporter if that fails."""
    import torch

    output.mkdir(parents=True, exist_ok=True)
    x = torch.randn(*shape)
    path = output / "model.onnx"
    try:
        torch.onnx.export(net, (x,), str(path), input_names=["pixel_values"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                          dynamo=True, external_data=False, verbose=False)
        return "torch.onnx.export (torch.export)"
    except Exception as first:
        print(f"[vision worker] torch.export-based export failed ({_short(first)}); TorchScript exporter",
              file=sys.stderr)
        for p in output.glob("model.onnx*"):
            p.unlink()
        torch.onnx.export(net, (x,), str(path), input_names=["pixel_values"], output_names=["logits"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                          dynamo=False, opset_version=17)
        return "torch.onnx.export (TorchScript)"


def _parity(net, path: Path, shape: list[int]) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch

    x = torch.from_numpy(np.random.default_rng(0).standard_normal([2, *shape[1:]]).astype(np.float32))
    with torch.no_grad():
        ref = net(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x.numpy()})[0]
    if got.shape != ref.shape:
        raise ValueError(f"ONNX output shape {list(got.shape)} vs PyTorch {list(ref.shape)}")
    return float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))


def _describe(output: Path, result: dict) -> None:
    from axon_pkg._convert_worker import _io_schema, _onnx_files

    files = _onnx_files(output)
    result["inputs"], result["outputs"], result["opset"] = _io_schema(output / files[0])
    result["files"] = files + [f for f in ("config.json", "preprocessor_config.json") if (output / f).is_file()]


def convert(model: str, weights: str, file: Path, output: Path, parity: bool) -> dict:
    info = resolve(model, weights)
    net, w = _build(model, weights, file)
    t = info["transforms"]
    crop = int(t["crop_size"][0])
    shape = [1, 3, crop, crop]
    exporter = _export(net, shape, output)
    labels = {str(i): c for i, c in enumerate(info["categories"])}
    (output / "config.json").write_text(json.dumps({
        "id2label": labels, "label2id": {c: int(i) for i, c in labels.items()}, "num_labels": len(labels),
        "source": f"torchvision {model} {w.name}"}, indent=1))
    resize = int(t["resize_size"][0])
    (output / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": t["type"], "do_resize": True, "size": {"shortest_edge": resize},
        "resample": _PIL_RESAMPLE.get(t["interpolation"], 2), "do_center_crop": True,
        "crop_size": {"height": crop, "width": crop}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": t["mean"], "image_std": t["std"]}, indent=1))
    result = {"converted": True, "tool": "torch.onnx", "tool_version": info["tool_version"], "exporter": exporter,
              "from_format": "pytorch", "task": "image-classification", "preprocessing": t,
              "weights": w.name, "reason": None, "parity_max_abs_diff": None}
    _describe(output, result)
    if parity:
        try:
            result["parity_max_abs_diff"] = _parity(net, output / "model.onnx", shape)
        except Exception as e:
            result["reason"] = f"parity not checked: {_short(e)}"
    return result


def hub(repo_dir: Path, entry: str, output: Path, shape: list[int], parity: bool) -> dict:
    import torch

    try:
        net = torch.hub.load(str(repo_dir), entry, source="local", trust_repo=True)
    except Exception as e:
        raise Refused(f"hubconf.py entry {entry!r} failed: {_short(e)}") from e
    if not isinstance(net, torch.nn.Module):
        raise Refused(f"hubconf.py entry {entry!r} returned {type(net).__name__}, not a torch.nn.Module")
    net.eval()
    exporter = _export(net, shape, output)
    result = {"converted": True, "tool": "torch.onnx", "tool_version": _versions(), "exporter": exporter,
              "from_format": "pytorch-hub", "task": None, "entry": entry, "input_shape": shape, "reason": None,
              "parity_max_abs_diff": None}
    _describe(output, result)
    if parity:
        try:
            result["parity_max_abs_diff"] = _parity(net, output / "model.onnx", shape)
        except Exception as e:
            result["reason"] = f"parity not checked: {_short(e)}"
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m axon_pkg._vision_worker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("resolve")
    r.add_argument("--model", required=True)
    r.add_argument("--weights", default="latest")
    c = sub.add_parser("convert")
    c.add_argument("--model", required=True)
    c.add_argument("--weights", required=True)
    c.add_argument("--file", required=True, type=Path)
    c.add_argument("--output", required=True, type=Path)
    c.add_argument("--no-parity", action="store_true")
    h = sub.add_parser("hub")
    h.add_argument("--repo-dir", required=True, type=Path)
    h.add_argument("--entry", required=True)
    h.add_argument("--output", required=True, type=Path)
    h.add_argument("--input-shape", default="1,3,224,224")
    h.add_argument("--no-parity", action="store_true")
    ns = ap.parse_args(argv)
    from axon_pkg.child import die_with_parent

    die_with_parent()   # never outlive axon-py (PR_SET_PDEATHSIG)

    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)      # whatever the libraries print goes to stderr; stdout keeps the JSON line
    t0 = time.monotonic()
    try:
        _plugins()
        if ns.cmd == "resolve":
            result = resolve(ns.model, ns.weights)
        elif ns.cmd == "convert":
            result = convert(ns.model, ns.weights, ns.file, ns.output, not ns.no_parity)
        else:
            shape = [int(d) for d in ns.input_shape.split(",")]
            result = hub(ns.repo_dir, ns.entry, ns.output, shape, not ns.no_parity)
    except Refused as e:
        result = {"ok": False, "converted": False, "reason": str(e)}
    result["seconds"] = round(time.monotonic() - t0, 3)
    sys.stdout.flush()
    os.write(real_stdout, (json.dumps(result) + "\n").encode())
    os.close(real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
