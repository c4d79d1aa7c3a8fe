"""The model configuration in Triton's form (``GET /v2/models/{m}/config``, gRPC ``ModelConfig``),
and the configuration override a load may carry (Triton's ``load_model(name, config=...)``).

An override changes what the core can change per model, through the model's register options:

| override field | option |
|---|---|
| ``max_batch_size`` (0: no batching) | ``max_batch_size`` |
| ``dynamic_batching.max_queue_delay_microseconds`` | ``max_batch_delay_us`` |
| ``dynamic_batching.default_queue_policy.max_queue_size`` (0: the server's default) | ``max_queue`` |
| ``instance_group[].count`` (``KIND_CPU`` or ``KIND_AUTO``; summed) | ``instances`` |
| ``parameters`` (``{"key": {"string_value": "v"}}``) | options of the same name, and onnxruntime's ``intra_op_thread_count``/``inter_op_thread_count`` |

Every other field must equal what the model's configuration already says, so a client may send
back the configuration it read with a field changed; anything else fails the load naming the
field, in the words Triton's clients check ("failed to load"). Fields not given keep their value.
"""
from __future__ import annotations

import json
import re
from typing import Any

from ..config import Settings
from ..errors import BadRequest, MLOSError
from ..registry import ModelEntry, validate_options
from ..registry.loading import instances_for
from ..tensors import v2_datatype
from .params import DEFAULT_PRIORITY_LEVEL, PRIORITY_LEVELS

_PLATFORM_BACKEND = {"onnxruntime_onnx": "onnxruntime"}
# parameter name -> register option: the core's own names, and the onnxruntime backend's
PARAMETER_OPTIONS = {
    "intra_op_thread_count": "intra_op_threads", "inter_op_thread_count": "inter_op_threads",
    **{k: k for k in ("intra_op_threads", "inter_op_threads", "keep_alive", "n_ctx", "n_threads", "n_batch")},
}
_INTEGER = re.compile(r"-?\d+")


def config_type(dtype) -> str:
    name = v2_datatype(dtype)
    return "TYPE_STRING" if name == "BYTES" else "TYPE_" + name


def model_config(entry: ModelEntry, settings: Settings, name: str) -> dict:
    """The configuration of a loaded model, named as the client wrote it."""
    meta = entry.model.metadata
    rows = entry.option("max_batch_size", settings)
    batching = bool(entry.runner and entry.runner.batching)  # proved at load (mlos_core.batch_probe)

    def tensor(t):
        return {"name": t.name, "data_type": config_type(t.dtype), "dims": list(t.shape[1:] if batching else t.shape)}

    version = entry.version
    config = {
        "name": name,
        "platform": meta.platform,
        "backend": _PLATFORM_BACKEND.get(meta.platform, meta.platform),
        # the protocol's versions are numbers; a named version (latest, Q4_K_M) is the latest one
        "version_policy": ({"specific": {"versions": [version]}} if version.isdigit()
                           else {"latest": {"num_versions": 1}}),
        "max_batch_size": rows if batching else 0,
        "input": [tensor(t) for t in meta.inputs],
        "output": [tensor(t) for t in meta.outputs],
        "instance_group": [{"name": entry.id, "kind": "KIND_CPU",
                            "count": instances_for(entry.option("instances", settings), entry.model)}],
        "parameters": {
            **({"batching_reason": {"string_value": entry.batching.reason}} if entry.batching else {}),
            **{key: {"string_value": str(entry.record.options[opt])}
               for key, opt in PARAMETER_OPTIONS.items() if key == opt and opt in entry.record.options}},
    }
    if batching:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": entry.option("max_batch_delay_us", settings),
            "preserve_ordering": False,
            "priority_levels": PRIORITY_LEVELS,
            "default_priority_level": DEFAULT_PRIORITY_LEVEL,
            "default_queue_policy": {"timeout_action": "REJECT", "default_timeout_microseconds": 0,
                                     "allow_timeout_override": True,
                                     "max_queue_size": entry.option("max_queue", settings)},
        }
    return config


# ---- load with a configuration override ---------------------------------------------------------
def _fail(name: str, why: str) -> BadRequest:
    return BadRequest(f"failed to load '{name}': {why}", model_id=name)


def parse_override(name: str, text: Any) -> dict:
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8", "replace")
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError as e:
            raise _fail(name, f"the configuration override is not valid JSON ({e})") from None
    if not isinstance(text, dict):
        raise _fail(name, "the configuration override must be a JSON object, e.g. {\"max_batch_size\": 16}")
    return text


def _int(name: str, what: str, value: Any, low: int = 0) -> int:
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        value = int(value)  # protobuf's JSON form writes 64-bit integers as strings
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(name, f"{what} must be an integer >= {low}, got {value!r}")
    return value


def _normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return value


def _unchanged(name: str, field: str, given: Any, current: Any, supported: str) -> None:
    if _normal(given) != _normal(current):
        raise _fail(name, f"'{field}' cannot be changed here (it is {json.dumps(current)}); {supported}")


_SUPPORTED = ("a load may change max_batch_size, dynamic_batching.max_queue_delay_microseconds, "
              "dynamic_batching.default_queue_policy.max_queue_size, instance_group count and parameters ("
              + ", ".join(PARAMETER_OPTIONS) + ")")


def override_options(name: str, doc: dict, current: dict, batchable: bool, settings: Settings,
                     aliases: tuple[str, ...] = ()) -> dict:
    """The register options an override asks for; anything the core cannot honour fails the load."""
    options: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "max_batch_size":
            rows = _int(name, key, value)
            if rows > 1 and not batchable:
                raise _fail(name, f"max_batch_size {rows} needs a model whose every input and output has a "
                                  "dynamic first dimension; this model's do not, so it runs request by request")
            options["max_batch_size"] = max(rows, 1)
        elif key == "dynamic_batching":
            if not isinstance(value, dict):
                raise _fail(name, "dynamic_batching must be an object")
            if not batchable:
                raise _fail(name, "dynamic_batching needs a model whose every input and output has a dynamic "
                                  "first dimension; this model's do not")
            now = current.get("dynamic_batching", {})
            for k, v in value.items():
                if k == "max_queue_delay_microseconds":
                    options["max_batch_delay_us"] = _int(name, f"dynamic_batching.{k}", v)
                elif k == "default_queue_policy" and isinstance(v, dict):
                    for qk, qv in v.items():
                        if qk == "max_queue_size":
                            size = _int(name, f"dynamic_batching.default_queue_policy.{qk}", qv)
                            options["max_queue"] = size or settings.max_queue
                        else:
                            _unchanged(name, f"dynamic_batching.default_queue_policy.{qk}", qv,
                                       now.get(k, {}).get(qk), _SUPPORTED)
                else:
                    _unchanged(name, f"dynamic_batching.{k}", v, now.get(k), _SUPPORTED)
        elif key == "instance_group":
            if not isinstance(value, list) or not value:
                raise _fail(name, "instance_group must be a non-empty list of groups")
            total = 0
            for group in value:
                if not isinstance(group, dict):
                    raise _fail(name, "each instance_group must be an object")
                kind = group.get("kind", "KIND_AUTO")
                if kind not in ("KIND_CPU", "KIND_AUTO"):
                    raise _fail(name, f"instance_group kind {kind!r} is not available: this server runs models "
                                      "on the CPU (KIND_CPU)")
                extra = sorted(k for k, v in group.items() if k not in ("name", "kind", "count") and v not in ([], "", 0, None))
                if extra:
                    raise _fail(name, f"instance_group field {extra[0]!r} cannot be set here; give kind and count")
                total += _int(name, "instance_group count", group.get("count", 1), 1)
            options["instances"] = total
        elif key == "parameters":
            if not isinstance(value, dict):
                raise _fail(name, "parameters must be an object of {\"key\": {\"string_value\": \"...\"}}")
            for pk, pv in value.items():
                if pk not in PARAMETER_OPTIONS:
                    if _normal(pv) == _normal(current.get("parameters", {}).get(pk)):
                        continue  # a read-only parameter (batching_reason) sent back as it was read
                    raise _fail(name, f"parameter {pk!r} is not known here; known: {', '.join(PARAMETER_OPTIONS)}")
                raw = pv.get("string_value") if isinstance(pv, dict) else pv
                options[PARAMETER_OPTIONS[pk]] = raw
        elif key == "name":
            if value not in (name, *aliases):
                raise _fail(name, f"the override is for model {value!r}")
        else:
            _unchanged(name, key, value, current.get(key), _SUPPORTED)
    try:
        return validate_options(_typed(options))
    except MLOSError as e:
        raise _fail(name, e.message) from None


def _typed(options: dict) -> dict:
    """Parameters arrive as strings; the options they set are numbers."""
    out = {}
    for key, value in options.items():
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if _INTEGER.fullmatch(text) else float(text)
            except ValueError:
                pass
        out[key] = value
    return out
