"""Subprocess side of :mod:`axon_pkg.convert` (``python -m axon_pkg._convert_worker``).

Exports a local SafeTensors transformers model dir to ONNX with
``optimum.exporters.onnx.main_export``, checks parity (onnxruntime vs PyTorch on a
deterministic sample input) and prints ONE JSON line on stdout with the result fields.
Everything else the libraries print goes to stderr. Weights are loaded with
``use_safetensors=True``: pickles are never loaded.

Exit code 0 whenever a JSON result was printed (also for converted=false).
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Hello, world!"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _v(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version() -> str:
    return " / ".join(f"{d} {_v(d)}" for d in ("optimum-onnx", "optimum", "torch", "transformers")
                      if _v(d))


def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    msg = f"{type(exc).__name__}: {msg}" if not isinstance(exc, (ValueError, RuntimeError)) else msg
    return msg if len(msg) <= limit else msg[: limit - 1] + "…"


class Refused(Exception):
    """An expected failure: its message is the result's reason."""


# ---------------------------------------------------------------------------- task choice

def _choose_task(cfg: dict, task: str | None, explicit: bool) -> str:
    # optimum.exporters.onnx is a lazy module: TasksManager knows no model type until the
    # ONNX model configs are imported (importing the package alone is not enough).
    import optimum.exporters.onnx.model_configs  # noqa: F401
    from optimum.exporters.tasks import TasksManager

    model_type = str(cfg.get("model_type") or "")
    archs = cfg.get("architectures") or []
    what = f"{archs[0]} (model_type '{model_type}')" if archs else f"model_type '{model_type}'"
    try:
        supported = list(TasksManager.get_supported_tasks_for_model_type(
            model_type, "onnx", library_name="transformers"))
    except KeyError:
        raise Refused(f"unsupported architecture {what}: optimum-onnx {_v('optimum-onnx')} "
                      f"cannot export it to ONNX") from None
    if task:
        task = TasksManager.map_from_synonym(task)
    if explicit:
        if task not in supported:
            raise Refused(f"task '{task}' is not supported for {what}; optimum-onnx can export: "
                          f"{', '.join(supported)}")
        return task
    candidates = []
    if task:
        candidates += [task, task.removesuffix("-with-past")]
    candidates.append("feature-extraction")
    for cand in candidates:
        if cand in supported:
            return cand
    raise Refused(f"no exportable task for {what}; optimum-onnx can export: {', '.join(supported)}")


# ---------------------------------------------------------------------------- export

def _export(model_dir: Path, output: Path, task: str) -> None:
    from optimum.exporters.onnx import main_export
    from optimum.exporters.tasks import TasksManager

    original = TasksManager.get_model_from_task

    def safetensors_only(*args, **kwargs):
        kwargs["use_safetensors"] = True          # never fall back to pickle weights
        return original(*args, **kwargs)

    TasksManager.get_model_from_task = staticmethod(safetensors_only)
    try:
        main_export(str(model_dir), output=str(output), task=task, library_name="transformers",
                    framework="pt", device="cpu", local_files_only=True, do_validation=False)
    finally:
        TasksManager.get_model_from_task = original


# optimum writes an encoder-decoder's decoder twice: split (first step; later steps with the cache)
# and merged (both behind an If, one copy of the weights). One layout is served, so one is kept.
_SPLIT_DECODERS = ("decoder_model.onnx", "decoder_with_past_model.onnx")


def _onnx_files(output: Path, all_graphs: bool = False) -> list[str]:
    """The .onnx files optimum wrote plus the external-data files they reference (of an
    encoder-decoder with a merged decoder, not the split decoders unless ``all_graphs``)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    models = sorted(p.relative_to(output).as_posix() for p in output.rglob("*.onnx"))
    models.sort(key=lambda n: n != "model.onnx")
    if not all_graphs and "decoder_model_merged.onnx" in models:
        models = [m for m in models if m not in _SPLIT_DECODERS]
    files = list(models)
    for name in models:
        m = onnx.load(str(output / name), load_external_data=False)
        for t in _get_all_tensors(m):
            if t.data_location == onnx.TensorProto.EXTERNAL:
                loc = next((e.value for e in t.external_data if e.key == "location"), None)
                if loc:
                    rel = (Path(name).parent / loc).as_posix()
                    if rel not in files:
                        files.append(rel)
    return files


def _io_schema(path: Path) -> tuple[list[dict], list[dict], int | None]:
    import onnx
    from onnx import helper

    m = onnx.load(str(path), load_external_data=False)

    def describe(values, skip=()):
        out = []
        for vi in values:
            if vi.name in skip:
                continue
            tt = vi.type.tensor_type
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name if tt.elem_type else "unknown"
            shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            out.append({"name": vi.name, "dtype": dtype, "shape": shape})
        return out

    inits = {i.name for i in m.graph.initializer}
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    return describe(m.graph.input, inits), describe(m.graph.output), opset


# ---------------------------------------------------------------------------- parity

def _sample_inputs(session, model_dir: Path, cfg: dict, task: str):
    import numpy as np

    generation = "generation" in task
    batch = 1 if generation else 2
    rng = np.random.default_rng(0)
    text_cfg = cfg.get("text_config") or {}
    max_pos = (cfg.get("max_position_embeddings") or cfg.get("n_positions")
               or text_cfg.get("max_position_embeddings") or 512)
    vocab = cfg.get("vocab_size") or text_cfg.get("vocab_size") or 100

    names = {i.name for i in session.get_inputs()}
    enc = None
    if "input_ids" in names:
        try:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
            texts = SENTENCES[:batch]
            if batch > 1 and tok.pad_token is None:
                texts = SENTENCES[:1]
            enc = dict(tok(texts, padding=True, truncation=True, max_length=min(64, int(max_pos)),
                           return_tensors="np"))
            if int(enc["input_ids"].max()) >= int(vocab):   # tokenizer larger than the model
                enc = None
        except Exception:  # no tokenizer in the dir, or one transformers cannot load
            enc = None
        if enc is None:
            length = min(8, int(max_pos))
            enc = {"input_ids": rng.integers(0, int(vocab), size=(batch, length), dtype=np.int64)}
    seq = enc["input_ids"].shape[1] if enc else 8
    b = enc["input_ids"].shape[0] if enc else batch
    mask = enc.get("attention_mask") if enc else None
    if mask is None:
        mask = np.ones((b, seq), dtype=np.int64)

    feeds = {}
    for inp in session.get_inputs():
        name, shape = inp.name, inp.shape
        np_type = {"tensor(int64)": np.int64, "tensor(int32)": np.int32,
                   "tensor(float)": np.float32, "tensor(float16)": np.float16,
                   "tensor(double)": np.float64, "tensor(bool)": np.bool_}.get(inp.type)
        if np_type is None:
            raise NotImplementedError(f"input {name} has type {inp.type}")

        def dims(default_sym):
            out = []
            for i, d in enumerate(shape):
                if isinstance(d, int) and d >= 0:
                    out.append(d)
                elif i == 0:
                    out.append(b)
                elif isinstance(d, str) and "past" in d and "+" not in d:
                    out.append(0)
                else:
                    out.append(default_sym)
            return out

        if enc is not None and name in enc:
            arr = enc[name]
        elif name == "attention_mask":
            arr = mask
        elif name == "token_type_ids":
            arr = np.zeros((b, seq), dtype=np.int64)
        elif name == "position_ids":
            arr = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
        elif name.startswith("past_key_values"):
            arr = np.zeros(dims(seq), dtype=np_type)
        elif name == "use_cache_branch":
            arr = np.array([False])
        elif name == "pixel_values":
            c = cfg.get("num_channels", 3)
            size = cfg.get("image_size", 224)
            size = size if isinstance(size, int) else (size or [224])[0]
            shp = [d if isinstance(d, int) and d > 0 else v
                   for d, v in zip(shape, [b, c, size, size])] if len(shape) == 4 else [b, c, size, size]
            arr = rng.standard_normal(shp)
        else:
            raise NotImplementedError(f"no sample for input '{name}'")
        arr = np.asarray(arr)
        if len(shape) == arr.ndim + 1:        # multiple-choice: (batch, choices, seq)
            arr = np.repeat(arr[:, None], 2, axis=1)
        feeds[name] = arr.astype(np_type)
    return feeds


def _parity(onnx_path: Path, model_dir: Path, cfg: dict, task: str) -> float:
    import numpy as np
    import onnxruntime as ort
    import torch
    from optimum.exporters.tasks import TasksManager

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feeds = _sample_inputs(session, model_dir, cfg, task)
    main = session.get_outputs()[0].name
    onnx_out = session.run([main], feeds)[0]

    cls = TasksManager.get_model_class_for_task(task, framework="pt", library="transformers")
    model = cls.from_pretrained(str(model_dir), use_safetensors=True, local_files_only=True)
    model.eval()
    kwargs = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()
              if not k.startswith("past_key_values") and k != "use_cache_branch"}
    if "generation" in task:
        kwargs["use_cache"] = False
    with torch.no_grad():
        out = model(**kwargs)
    ref = out[main] if hasattr(out, "keys") and main in out.keys() else out[0]
    ref = ref.detach().float().numpy()
    if ref.shape != onnx_out.shape:
        raise ValueError(f"output '{main}' shape {list(onnx_out.shape)} vs PyTorch {list(ref.shape)}")
    return float(np.max(np.abs(onnx_out.astype(np.float64) - ref.astype(np.float64))))


# ---------------------------------------------------------------------------- main

def _progress(message: str) -> None:
    from axon_pkg.worker import report_progress  # light: the parent reads these lines (run_json_worker)

    report_progress(message)


def run(model_dir: Path, output: Path, task: str | None, explicit: bool, parity: bool,
        all_graphs: bool = False) -> dict:
    result = {"converted": False, "files": [], "tool": "optimum-onnx",
              "tool_version": _tool_version(), "from_format": "safetensors", "task": task,
              "opset": None, "reason": None, "parity_max_abs_diff": None,
              "inputs": [], "outputs": []}
    try:
        cfg_path = model_dir / "config.json"
        if not cfg_path.is_file():
            raise Refused(f"not a transformers model dir: no config.json in {model_dir}")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        names = [p.name for p in model_dir.iterdir()]
        if not any(n.endswith((".safetensors", ".safetensors.index.json")) for n in names):
            if any(n.endswith(PICKLE_SUFFIXES) for n in names):
                raise Refused("the weights are only pickle files; pickles are not loaded for "
                              "safety — provide model.safetensors")
            raise Refused(f"no *.safetensors weights in {model_dir}")

        task = _choose_task(cfg, task, explicit)
        result["task"] = task
        _progress(f"exporting {cfg.get('model_type', 'the model')} to ONNX with optimum (task {task})")
        t = time.monotonic()
        try:
            _export(model_dir, output, task)
        except Exception as exc:
            raise Refused(f"export failed: {_short(exc)}") from exc
        _progress(f"exported in {time.monotonic() - t:.2f} s")
        files = _onnx_files(output, all_graphs)
        if not files:
            raise Refused("export failed: optimum wrote no .onnx file")
        result["files"] = files
        result["inputs"], result["outputs"], result["opset"] = _io_schema(output / files[0])
        result["converted"] = True
        if parity:
            onnx_models = [f for f in files if f.endswith(".onnx")]
            if onnx_models != ["model.onnx"]:
                result["reason"] = (f"parity not checked: multi-file export "
                                    f"({', '.join(onnx_models)})")
            else:
                _progress("checking the export against PyTorch on a sample input")
                t = time.monotonic()
                try:
                    result["parity_max_abs_diff"] = _parity(output / "model.onnx", model_dir,
                                                            cfg, task)
                except Exception as exc:
                    result["reason"] = f"parity not checked: {_short(exc)}"
                diff = result["parity_max_abs_diff"]
                _progress(f"checked in {time.monotonic() - t:.2f} s"
                          + (f" (max abs difference {diff:.2g})" if diff is not None else ""))
    except Refused as exc:
        result.update(converted=False, files=[], reason=str(exc))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m axon_pkg._convert_worker")
    ap.add_argument("--model-dir", required=True, type=Path)
    ap.add_argument("--output", required=True, type=Path)
    ap.add_argument("--task")
    ap.add_argument("--task-explicit", action="store_true")
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--all-graphs", action="store_true", help="keep an encoder-decoder's split decoders too")
    ns = ap.parse_args(argv)
    from axon_pkg.child import die_with_parent

    die_with_parent()

    # Keep stdout for the one JSON line: whatever the libraries print goes to stderr.
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        result = run(ns.model_dir, ns.output, ns.task, ns.task_explicit, not ns.no_parity, ns.all_graphs)
    finally:
        sys.stdout.flush()
    os.write(real_stdout, (json.dumps(result) + "\n").encode())
    os.close(real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
