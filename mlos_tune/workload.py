"""What a request looks like and how load arrives: the workload file (YAML or JSON).

Tensor models (ONNX, and SafeTensors served on onnxruntime)::

    kind: tensors
    inputs:                     # Open Inference Protocol tensors; data random (seeded) unless given
      x: {shape: [1, 64], datatype: FP32}
      sr: {shape: [], datatype: INT64, data: [16000]}   # fill: 0 gives every element one value
    # or a real request body, sent as it is (``path`` defaults to the v2 infer path):
    # body: {"inputs": [...]}          body_file: request.json          path: /v2/models/{model}/infer
    load: {mode: closed, concurrency: [1, 32], duration_s: 4, warmup_s: 1}

LLMs (GGUF)::

    kind: llm
    api: completion             # or chat
    prompt_tokens: 64           # a synthetic prompt of about this many tokens; or prompt: "..."
    output_tokens: 32
    load: {mode: open, rate: 0.5, duration_s: 30, warmup_s: 5}

``load.mode`` is ``closed`` (``concurrency``: clients each with one request at a time; a list is
searched as the client concurrency) or ``open`` (``rate``: Poisson arrivals per second, MLPerf
LoadGen's Server scenario). Without a file, the workload is derived from the model: its declared
inputs with random data at concurrency 32, or for a GGUF model a 64-token completion prompt, 32
output tokens, one client.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import yaml

from .errors import TuneError

V2_TYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
            "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
            "FP32": np.float32, "FP64": np.float64, "BYTES": object}
KINDS = ("tensors", "llm")
APIS = {"completion": "/v1/completions", "chat": "/v1/chat/completions"}
SEED = 20261126
FREE_DIM = 1          # the size given to a dynamic axis when the request is derived from the model
WORDS = ("river mountain lantern orchard harbor violet copper meadow signal canyon ember glacier "
         "thunder willow compass marble falcon prairie beacon cobalt").split()


@dataclass
class Load:
    mode: str = "closed"
    concurrency: list[int] = field(default_factory=lambda: [32])
    rate: float | None = None
    duration_s: float = 4.0
    warmup_s: float = 1.0


@dataclass
class Workload:
    kind: str
    load: Load
    inputs: dict | None = None           # tensors: name -> {shape, datatype, data?}
    body: dict | None = None             # tensors: a real request body
    path: str | None = None              # tensors: URL path, ``{model}`` replaced by the quoted id
    api: str = "completion"              # llm
    prompt_tokens: int = 64
    output_tokens: int = 32
    prompt: str | None = None

    def describe(self) -> dict:
        return asdict(self)

    @property
    def llm(self) -> bool:
        return self.kind == "llm"

    def url_path(self, model_id: str) -> str:
        if self.llm:
            return APIS[self.api]
        return (self.path or "/v2/models/{model}/infer").replace("{model}", quote(model_id, safe=""))

    # ---- request bodies ---------------------------------------------------------------------
    def tensor_body(self, metadata: dict | None) -> dict:
        """The request every experiment sends; from the model's v2 metadata when the workload
        names no inputs."""
        if self.body is not None:
            return self.body
        specs = self.inputs
        if specs is None:
            if not metadata or not metadata.get("inputs"):
                raise TuneError("the workload names no inputs and the model declares none: give a workload file "
                                "with inputs or a body")
            specs = {t["name"]: {"shape": [FREE_DIM if d is None or d < 0 else d for d in t["shape"]],
                                 "datatype": t["datatype"]} for t in metadata["inputs"]}
        rng = np.random.default_rng(SEED)
        return {"inputs": [_tensor(name, spec, rng) for name, spec in specs.items()]}

    def llm_bodies(self, model_id: str, count: int = 16) -> list[dict]:
        """``count`` requests with distinct prompts of the same length (a prompt cache must not
        answer them all from the first)."""
        out = []
        for i in range(count):
            text = self.prompt or _synthetic_prompt(self.prompt_tokens, i)
            if self.prompt and count > 1:
                text = f"[{i}] {text}"
            body: dict[str, Any] = {"model": model_id, "max_tokens": self.output_tokens, "temperature": 0,
                                    "stream": True, "stream_options": {"include_usage": True}}
            if self.api == "chat":
                body["messages"] = [{"role": "user", "content": text}]
            else:
                body["prompt"] = text
            out.append(body)
        return out


def _synthetic_prompt(tokens: int, variant: int) -> str:
    # about one token per common English word plus its space; deterministic, distinct per variant
    rng = np.random.default_rng(SEED + variant)
    words = [WORDS[int(k)] for k in rng.integers(0, len(WORDS), size=max(1, tokens - 8))]
    return f"Story {variant}: " + " ".join(words) + ". Continue the story:"


def _tensor(name: str, spec: dict, rng: np.random.Generator) -> dict:
    shape, dtype = spec["shape"], spec["datatype"]
    n = int(np.prod(shape)) if shape else 1
    if "data" in spec:
        data = spec["data"]
    elif "fill" in spec:
        data = [spec["fill"]] * n
    elif dtype == "BYTES":
        data = [f"text {i}" for i in range(n)]
    elif dtype == "BOOL":
        data = rng.integers(0, 2, n).astype(bool).tolist()
    elif dtype.startswith(("INT", "UINT")):
        data = rng.integers(0, 2, n).tolist()   # 0/1: valid ids, masks and indices alike
    else:
        data = np.round(rng.standard_normal(n), 6).tolist()
    return {"name": name, "shape": list(shape), "datatype": dtype, "data": data}


# ---- reading and checking a workload -------------------------------------------------------------

def _num(doc: dict, key: str, low: float, high: float, default, kind=float, where="load"):
    value = doc.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise TuneError(f"workload {where}.{key}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise TuneError(f"workload {where}.{key}: {value} is outside {low:g}..{high:g}")
    return kind(value)


def _load(doc: Any, llm: bool) -> Load:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise TuneError("workload load: expected a mapping (mode, concurrency or rate, duration_s, warmup_s)")
    unknown = set(doc) - {"mode", "concurrency", "rate", "duration_s", "warmup_s"}
    if unknown:
        raise TuneError(f"workload load: unknown key(s) {', '.join(sorted(unknown))}; "
                        "known: mode, concurrency, rate, duration_s, warmup_s")
    mode = doc.get("mode", "open" if "rate" in doc else "closed")
    if mode not in ("closed", "open"):
        raise TuneError(f"workload load.mode: {mode!r} is neither closed (a number of clients) nor open (an arrival rate)")
    conc = doc.get("concurrency", (1 if llm else 32) if mode == "closed" else 1)
    levels = conc if isinstance(conc, list) else [conc]
    if not levels or any(isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 1024 for c in levels):
        raise TuneError(f"workload load.concurrency: expected an integer 1..1024 or a list of them, got {conc!r}")
    if len(set(levels)) != len(levels):
        raise TuneError(f"workload load.concurrency: {levels} repeats a level")
    if mode == "open":
        if "rate" not in doc:
            raise TuneError("workload load: mode open needs a rate (requests per second)")
        if len(levels) > 1:
            raise TuneError("workload load.concurrency: an open-loop workload takes one number (connections "
                            "opened up front), not a list: its load is the rate")
    elif "rate" in doc:
        raise TuneError("workload load: rate is for mode open; a closed loop is driven by concurrency")
    rate = _num(doc, "rate", 1e-3, 1e6, None) if mode == "open" else None
    return Load(mode=mode, concurrency=levels, rate=rate,
                duration_s=_num(doc, "duration_s", 0.2, 3600, 20.0 if llm else 4.0),
                warmup_s=_num(doc, "warmup_s", 0, 600, 5.0 if llm else 1.0))


def _inputs(doc: Any) -> dict:
    if not isinstance(doc, dict) or not doc:
        raise TuneError("workload inputs: expected a mapping of input name -> {shape, datatype[, data]}")
    out = {}
    for name, spec in doc.items():
        if not isinstance(spec, dict):
            raise TuneError(f"workload inputs.{name}: expected {{shape, datatype[, data]}}")
        unknown = set(spec) - {"shape", "datatype", "data", "fill"}
        if unknown:
            raise TuneError(f"workload inputs.{name}: unknown key(s) {', '.join(sorted(unknown))}")
        shape = spec.get("shape")
        if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
            raise TuneError(f"workload inputs.{name}.shape: expected a list of non-negative integers, got {shape!r}")
        if int(np.prod(shape)) > 64 * 1024 * 1024:
            raise TuneError(f"workload inputs.{name}.shape: {shape} is over 64 M elements")
        dtype = str(spec.get("datatype", "FP32")).upper()
        if dtype not in V2_TYPES:
            raise TuneError(f"workload inputs.{name}.datatype: {dtype!r} is not one of {', '.join(V2_TYPES)}")
        entry = {"shape": shape, "datatype": dtype}
        if "fill" in spec:
            if "data" in spec or isinstance(spec["fill"], (dict, list)):
                raise TuneError(f"workload inputs.{name}.fill: one value for every element (and no data beside it)")
            entry["fill"] = spec["fill"]
        if "data" in spec:
            data = spec["data"]
            flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else None
            if flat is None or flat.size != int(np.prod(shape)):
                raise TuneError(f"workload inputs.{name}.data: expected a list of {int(np.prod(shape))} values "
                                f"(shape {shape})")
            entry["data"] = flat.tolist()
        out[str(name)] = entry
    return out


def parse_workload(doc: Any, engine: str) -> Workload:
    """A workload from its parsed document, checked against the model's engine (onnx or gguf)."""
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise TuneError("workload: expected a mapping at the top level (kind, inputs or prompt, load)")
    kind = doc.get("kind", "llm" if engine == "gguf" else "tensors")
    if kind not in KINDS:
        raise TuneError(f"workload kind: {kind!r} is not one of {', '.join(KINDS)}")
    if kind == "llm" and engine != "gguf":
        raise TuneError("workload kind llm: this model is served on onnxruntime (tensors); LLM workloads are for "
                        "GGUF models")
    if kind == "tensors" and engine == "gguf":
        raise TuneError("workload kind tensors: this is a GGUF model; its workload is kind: llm")
    llm = kind == "llm"
    known = ({"kind", "load", "api", "prompt_tokens", "output_tokens", "prompt"} if llm
             else {"kind", "load", "inputs", "body", "body_file", "path"})
    unknown = set(doc) - known
    if unknown:
        raise TuneError(f"workload: unknown key(s) {', '.join(sorted(unknown))} for kind {kind}; known: "
                        f"{', '.join(sorted(known))}")
    w = Workload(kind=kind, load=_load(doc.get("load"), llm))
    if llm:
        w.api = doc.get("api", "completion")
        if w.api not in APIS:
            raise TuneError(f"workload api: {w.api!r} is not one of {', '.join(APIS)}")
        w.prompt_tokens = _num(doc, "prompt_tokens", 1, 1 << 20, 64, int, where="workload")
        w.output_tokens = _num(doc, "output_tokens", 1, 1 << 20, 32, int, where="workload")
        prompt = doc.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
            raise TuneError("workload prompt: expected non-empty text")
        w.prompt = prompt
        return w
    if sum(k in doc for k in ("inputs", "body", "body_file")) > 1:
        raise TuneError("workload: give one of inputs, body and body_file")
    if "inputs" in doc:
        w.inputs = _inputs(doc["inputs"])
    if "body" in doc:
        if not isinstance(doc["body"], dict):
            raise TuneError("workload body: expected a JSON object (the request body)")
        w.body = doc["body"]
    path = doc.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\r\n ")):
        raise TuneError(f"workload path: expected a URL path such as /v2/models/{{model}}/infer, got {path!r}")
    w.path = path
    return w


def load_workload(path: str | None, engine: str, base: Path | None = None) -> Workload:
    if path is None:
        return parse_workload({}, engine)
    p = Path(path).expanduser()
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as e:
        raise TuneError(f"--workload {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise TuneError(f"--workload {path}: neither YAML nor JSON: {e}") from None
    if isinstance(doc, dict) and "body_file" in doc:
        bf = Path(str(doc["body_file"])).expanduser()
        bf = bf if bf.is_absolute() else p.parent / bf
        try:
            body = json.loads(bf.read_bytes())
        except OSError as e:
            raise TuneError(f"workload body_file {bf}: {e.strerror}") from None
        except ValueError as e:
            raise TuneError(f"workload body_file {bf}: not JSON: {e}") from None
        doc = {**{k: v for k, v in doc.items() if k != "body_file"}, "body": body}
        if "inputs" in doc:
            raise TuneError("workload: give one of inputs, body and body_file")
    return parse_workload(doc, engine)
