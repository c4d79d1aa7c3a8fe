"""What each inference phase sends: named tensors built from the model's own metadata (names,
datatypes, shapes as the core reports them on ``GET /v2/models/{id}``) and the suite's test inputs,
or, for LLMs, a prompt and a multi-turn conversation.

Texts are tokenised with the installed package's ``tokenizer.json`` (the ``tokenizers`` library, as
the core does); images and audio are seeded random tensors (``test_seed``), so a run is repeatable
and the PyTorch reference sees exactly the same numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

DTYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
          "INT8": np.int8, "UINT8": np.uint8, "BOOL": np.bool_}
SIZES = ("small", "large")


class InputError(ValueError):
    """The validator does not know how to fill one of the model's inputs."""


def _text(spec, defaults: dict, size: str) -> str:
    texts = spec.inputs.get("test_text") or {}
    nlp = defaults.get("nlp") or {}
    return texts.get(size) or nlp.get(f"{size}_text") or "Hello world."


def _token_ids(spec, defaults: dict, size: str, pkg_dir: Path, limit: int | None) -> list[int]:
    """The test text's ids; for the large phase, the text repeated up to ``large_input.tokens``
    (a long sequence), truncated with the tokenizer's own post-processing kept."""
    from tokenizers import Tokenizer

    path = Path(pkg_dir) / "tokenizer.json"
    if not path.is_file():
        raise InputError(f"the package has no tokenizer.json to encode the test text ({pkg_dir})")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    text = _text(spec, defaults, size)
    want = (spec.large_input if size == "large" else spec.small_input).get("tokens") \
        if spec.category != "multimodal" else (spec.large_input if size == "large" else spec.small_input).get("text_tokens")
    if limit:
        want = min(want or limit, limit)
    if want and size == "large":
        while len(tok.encode(text).ids) < want:
            text = text + " " + text
    if want:
        tok.enable_truncation(want)
    return tok.encode(text).ids


def _shape_with(meta_shape: list[int], batch: int, fill: int) -> list[int]:
    """A metadata shape (-1 dynamic) made concrete: the first dim is the batch, other dynamic dims ``fill``."""
    return [batch if i == 0 and d < 0 else (fill if d < 0 else d) for i, d in enumerate(meta_shape)]


def tensors(spec, defaults: dict, size: str, pkg_dir: Path, meta_inputs: list[dict],
            max_positions: int | None = None) -> dict[str, np.ndarray]:
    """Named arrays for every input the model declares, for the ``size`` phase."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}")
    io = spec.large_input if size == "large" else spec.small_input
    seed = int(spec.inputs.get("test_seed", 42)) + (1 if size == "large" else 0)
    rng = np.random.default_rng(seed)
    names = {m["name"] for m in meta_inputs}
    batch = int(io.get("batch", 1))
    out: dict[str, np.ndarray] = {}
    ids = None
    if "input_ids" in names:
        ids = np.asarray(_token_ids(spec, defaults, size, pkg_dir, max_positions), dtype=np.int64)
        ids = np.tile(ids, (batch if spec.category == "multimodal" else 1, 1))
    for m in meta_inputs:
        name, dtype, shape = m["name"], DTYPES.get(m["datatype"]), list(m.get("shape") or [])
        if dtype is None:
            raise InputError(f"input {name!r} has datatype {m['datatype']}, which the validator does not fill")
        if name == "input_ids":
            arr = ids
        elif name in ("attention_mask", "token_type_ids", "position_ids") and ids is not None:
            arr = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids),
                   "position_ids": np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))}[name]
        elif name == "decoder_input_ids":
            arr = np.full((1, 1), int(spec.inputs.get("decoder_start_token_id", 0)))
        elif name.startswith("past_key_values"):
            arr = np.zeros(_shape_with(shape, 1, 0))       # an empty cache: a first forward pass
        elif name == "pixel_values":
            side_w = int(io.get("width") or io.get("image_width") or shape[-1])
            side_h = int(io.get("height") or io.get("image_height") or shape[-2])
            arr = rng.standard_normal((batch, int(io.get("channels", 3)), side_h, side_w))
        elif name in ("input_values", "input") and len(shape) == 2:
            samples = int(round(float(io.get("duration_seconds", 1.0)) * int(io.get("sample_rate", 16000))))
            rows = batch if batch > 1 else 1
            arr = 0.1 * rng.standard_normal((rows, samples // rows))
        elif name == "state":                                   # Silero's recurrent state, zero at start
            rows = out["input"].shape[0] if "input" in out else 1
            arr = np.zeros([d if d >= 0 else rows for d in shape])
        elif name == "sr":
            arr = np.asarray(int(io.get("sample_rate", 16000)))
        elif len(shape) == 4 and all(d > 0 for d in shape[1:]) and np.dtype(dtype).kind == "f":
            arr = rng.random([batch, *shape[1:]])               # an image tensor of fixed size (e.g. NHWC)
        else:
            raise InputError(f"the validator does not know how to fill input {name!r} "
                             f"({m['datatype']} {shape}) of {spec.name}")
        out[name] = np.asarray(arr).astype(dtype)
    return out


def v2_body(arrays: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict:
    """An Open Inference Protocol request: explicit shapes, so empty caches (a 0 dim) travel too."""
    names = {np.dtype(v).name: k for k, v in DTYPES.items()}
    body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": names[v.dtype.name],
                        "data": v.reshape(-1).tolist()} for k, v in arrays.items()]}
    if outputs:
        body["outputs"] = [{"name": n} for n in outputs]
    return body


def v2_outputs(answer: dict) -> dict[str, np.ndarray]:
    out = {}
    for o in answer.get("outputs") or []:
        dtype = DTYPES.get(o.get("datatype"), np.float32)
        out[o["name"]] = np.asarray(o.get("data") or [], dtype=dtype).reshape(o.get("shape") or [-1])
    return out


def conversation(spec, defaults: dict) -> list[dict]:
    """The large LLM phase's multi-turn chat: ``large_input.turns`` user turns, the earlier ones
    (with their assistant answers) from the suite's conversation, the last one the large prompt.
    Roles alternate user/assistant, as strict chat templates (Gemma's) demand."""
    base = list(spec.inputs.get("messages") or (defaults.get("llm") or {}).get("messages") or [])
    turns = int(spec.large_input.get("turns", 2))
    keep = base[: max(0, 2 * (turns - 1))]
    while keep and keep[-1].get("role") != "assistant":   # the history must end with an answer
        keep.pop()
    prompt = spec.large_input.get("prompt") or "Tell me more."
    return keep + [{"role": "user", "content": prompt}]


def prompt(spec, size: str) -> tuple[str, int]:
    io = spec.large_input if size == "large" else spec.small_input
    prompts = spec.inputs.get("prompts") or {}
    return (prompts.get(size) or io.get("prompt") or "Hello"), int(io.get("max_tokens", 16))
