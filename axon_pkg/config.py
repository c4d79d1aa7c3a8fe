"""``~/.axon/config.yaml``: axon-py's settings. ``MLOS_CORE_ENDPOINT`` wins over
``mlos.endpoint``; the default is ``http://localhost:8080``."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import AxonError
from .store import axon_home

DEFAULTS: dict[str, Any] = {
    "mlos.endpoint": "http://localhost:8080",
    "install.format": "auto",
    "hub.endpoint": "https://huggingface.co",
    "mlos.api_key": "",  # sent as Authorization: Bearer to a core started with --api-key
    "hub.timeout": "10",  # seconds a hub call may wait (HF_HUB_ETAG_TIMEOUT wins)
    "pytorch.endpoint": "https://download.pytorch.org",
    "pytorch.github_endpoint": "https://github.com",
    "tfhub.endpoint": "https://tfhub.dev",
    "modelscope.endpoint": "https://www.modelscope.cn",
    "convert.vision_python": "",
    "convert.tf_python": "",
}
ENV = {"mlos.endpoint": "MLOS_CORE_ENDPOINT", "hub.endpoint": "HF_ENDPOINT", "mlos.api_key": "MLOS_API_KEY",
       "pytorch.endpoint": "AXON_PYTORCH_ENDPOINT", "pytorch.github_endpoint": "AXON_GITHUB_ENDPOINT",
       "tfhub.endpoint": "AXON_TFHUB_ENDPOINT", "modelscope.endpoint": "MODELSCOPE_ENDPOINT",
       "convert.vision_python": "AXON_VISION_PYTHON", "convert.tf_python": "AXON_TF_PYTHON"}
SECRET = ("mlos.api_key",)  # never printed whole


def config_path() -> Path:
    return axon_home() / "config.yaml"


def _load() -> dict:
    try:
        with open(config_path()) as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as e:
        raise AxonError(f"{config_path()}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise AxonError(f"{config_path()}: expected a mapping")
    return data


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def effective() -> dict[str, tuple[Any, str]]:
    """Every known setting with its value and where it came from (default, file, env)."""
    stored = _flatten(_load())
    out = {}
    for key in sorted(set(DEFAULTS) | set(stored)):
        if key in ENV and os.environ.get(ENV[key]):
            out[key] = (os.environ[ENV[key]], f"env {ENV[key]}")
        elif key in stored:
            out[key] = (stored[key], "file")
        else:
            out[key] = (DEFAULTS[key], "default")
    return out


def get(key: str) -> Any:
    values = effective()
    if key not in values:
        raise AxonError(f"unknown setting {key!r}; known: {', '.join(sorted(DEFAULTS))}")
    return values[key][0]


def set_value(key: str, value: str) -> None:
    if key not in DEFAULTS:
        raise AxonError(f"unknown setting {key!r}; known: {', '.join(sorted(DEFAULTS))}")
    if key.endswith("endpoint") and not value.startswith(("http://", "https://")):
        raise AxonError(f"{key} must be an http:// or https:// URL")
    if key == "hub.timeout":
        try:
            if float(value) <= 0:
                raise ValueError
        except ValueError:
            raise AxonError("hub.timeout must be a number of seconds > 0") from None
    if key == "install.format" and value not in ("auto", "onnx", "gguf", "native"):
        raise AxonError("install.format must be auto, onnx, gguf or native")
    data = _load()
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # 0600: it may hold an API key
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def shown(key: str, value: Any) -> Any:
    """A value as ``config list``/``get`` print it: secrets masked."""
    if key in SECRET and value:
        return f"{str(value)[:4]}... ({len(str(value))} characters)"
    return value
