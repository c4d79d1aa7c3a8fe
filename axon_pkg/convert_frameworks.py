"""Conversions to ONNX that need a framework outside the core's environment: torchvision weights
and PyTorch Hub repos (``_vision_worker``), TensorFlow SavedModels (``_tf_worker``, tf2onnx).

Each runs in its converter environment (:mod:`axon_pkg.converter_envs`) through the one worker
runner (:mod:`axon_pkg.worker`), writes into a temporary directory, and only a complete result
is moved into the package's export directory. Unlike SafeTensors, these formats cannot be
served as downloaded, so a failed conversion fails the install with the converter's reason.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from .converter_envs import python_for
from .errors import ConversionFailed
from .repos.base import ONNX, SAVED_MODEL, TORCH_HUB_REPO, TORCH_STATE_DICT, Resolved, Selection
from .worker import run_json_worker

TIMEOUT_S = float(os.environ.get("AXON_CONVERT_TIMEOUT", "1800"))


def convert_framework(ref, resolved: Resolved, selection: Selection, local: dict[str, Path], out: Path,
                      progress, *, input_shape: str | None = None):
    """-> (files {package path: file}, "onnx", conversion record, seconds)."""
    t0 = time.monotonic()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".axon-convert-", dir=out.parent))
    try:
        export = tmp / "export"
        if selection.format == TORCH_STATE_DICT:
            kind, module = "vision", "axon_pkg._vision_worker"
            src = resolved.source
            args = ["convert", "--model", ref.repo.split("/", 1)[1], "--weights", src["weights"],
                    "--file", str(next(iter(local.values())))]
            progress(f"exporting torchvision {ref.repo.split('/', 1)[1]} ({src['weights']}) to ONNX")
        elif selection.format == TORCH_HUB_REPO:
            from .repos.pytorch import repo_dir_from_zip

            kind, module = "vision", "axon_pkg._vision_worker"
            repo_dir = repo_dir_from_zip(next(iter(local.values())), tmp / "repo")
            args = ["hub", "--repo-dir", str(repo_dir), "--entry", str(ref.selector),
                    "--input-shape", input_shape or "1,3,224,224"]
            progress(f"running hubconf.py entry {ref.selector} (trusted) and exporting to ONNX")
        elif selection.format == SAVED_MODEL:
            kind, module = "tf", "axon_pkg._tf_worker"
            args = ["convert", "--saved-model", str(_saved_model_dir(local))]
            progress("converting the SavedModel to ONNX with tf2onnx")
        else:
            raise ConversionFailed(f"no converter for {selection.format}")
        data, problem = run_json_worker([python_for(kind), "-m", module, *args, "--output", str(export)],
                                        timeout_s=TIMEOUT_S, what="conversion")
        if problem or not data.get("converted"):
            raise ConversionFailed(f"cannot convert {ref} to ONNX: {problem or data.get('reason')}")
        names = [str(f) for f in data.get("files") or []]
        missing = [f for f in names if not (export / f).is_file()]
        if not names or missing:
            raise ConversionFailed(f"the converter reported files it did not write: {missing or names}")
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        for name in names:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(export / name, out / name)
            files[name] = out / name
        info = {k: v for k, v in data.items() if k not in ("files", "ok", "inputs", "outputs")}
        info["seconds"] = round(time.monotonic() - t0, 3)
        return files, ONNX, info, time.monotonic() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _saved_model_dir(local: dict[str, Path]) -> Path:
    """The directory holding saved_model.pb among the downloaded files."""
    for rel, path in local.items():
        if rel.rsplit("/", 1)[-1] in ("saved_model.pb", "saved_model.pbtxt"):
            return Path(path).parent
    raise ConversionFailed("the download holds no saved_model.pb: not a TensorFlow SavedModel")
