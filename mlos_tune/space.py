"""The search space: which serving options (and client concurrency) to try, checked before anything runs.

A space file (YAML or JSON) maps a parameter to its values::

    instances: [1, 2, 4]                  # a list: these values
    intra_op_threads: 1                   # one value: fixed
    max_batch_delay_us: {low: 0, high: 2000, step: 500}   # a range (grid needs a step)
    n_batch: {low: 32, high: 512, log: true}              # random/optuna only
    concurrency: [8, 32]                  # the client's concurrency (closed-loop workloads)
    max_batch_size: null                  # not searched: the server's default applies

It is laid over the default space of the model's format (``base: none`` starts from nothing).
Every server parameter is a per-model register option, so every value is checked against the
core's own option bounds (``mlos_core.registry.validate_options``: threads <= cores, ...) here,
before the first experiment starts.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import TuneError

CLIENT = ("concurrency",)
ONNX_OPTIONS = ("instances", "intra_op_threads", "inter_op_threads", "max_batch_size", "max_batch_delay_us", "batching")
GGUF_OPTIONS = ("n_threads", "n_batch", "n_ctx", "parallel", "n_ctx_seq")
BATCHING_PARAMS = ("max_batch_size", "max_batch_delay_us")


def core_options() -> set[str]:
    """The per-model options this checkout's core accepts (``parallel`` arrives with GGUF slots)."""
    from mlos_core.registry import registry

    return set(registry._OPTIONS)


def engine_options(engine: str) -> tuple[str, ...]:
    known = core_options()
    return tuple(o for o in (GGUF_OPTIONS if engine == "gguf" else ONNX_OPTIONS) if o in known)


def server_defaults(engine: str) -> dict[str, Any]:
    """What the core uses for an option nobody sets (ONNX scheduler options; the GGUF plugin picks
    its own from the model and the machine, so those stay unset rather than guessed)."""
    if engine == "gguf":
        return {}
    from mlos_core.config import Settings

    s = Settings()
    return {k: getattr(s, k) for k in ONNX_OPTIONS if hasattr(s, k)} | {"batching": "auto"}


def default_space(engine: str, concurrency: list[int]) -> dict[str, list]:
    """Sane defaults for a small CPU machine: a handful of values each, the server's default among them."""
    cores = os.cpu_count() or 1
    threads = sorted({1, cores})
    if engine == "gguf":
        space = {"n_threads": threads, "n_batch": [64, 512], "n_ctx": [1024, 2048]}
        if "parallel" in core_options():
            space["parallel"] = [1, 4]
    else:
        # inter_op_threads is listed fixed: the core runs graphs sequentially, where onnxruntime's
        # inter-op pool is idle; widen it in a space file for a model that gains from it
        space = {"instances": sorted({1, 2, min(4, 2 * cores)}), "intra_op_threads": threads,
                 "inter_op_threads": [1], "max_batch_size": [1, 8, 32], "max_batch_delay_us": [0, 500]}
    space["concurrency"] = list(concurrency)
    return space


@dataclass(frozen=True)
class Param:
    name: str
    values: tuple | None = None         # a finite set
    low: int | None = None              # or an integer range
    high: int | None = None
    step: int | None = None
    log: bool = False

    @property
    def grid_values(self) -> tuple:
        if self.values is not None:
            return self.values
        if self.step is None:
            raise TuneError(f"space {self.name}: a range without a step has no grid; give values, a step, "
                            "or use --strategy random/optuna")
        return tuple(range(self.low, self.high + 1, self.step))

    @property
    def searched(self) -> bool:
        return self.values is None or len(self.values) > 1

    def describe(self) -> Any:
        if self.values is not None:
            return list(self.values)
        return {k: v for k, v in (("low", self.low), ("high", self.high), ("step", self.step), ("log", self.log))
                if v is not None and not (k == "log" and not v)}


class SearchSpace:
    def __init__(self, params: dict[str, Param], engine: str):
        self.params = params
        self.engine = engine
        self.defaults = server_defaults(engine)

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def describe(self) -> dict:
        return {n: p.describe() for n, p in self.params.items()}

    def grid(self) -> list[dict]:
        names = self.names
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.params[n].grid_values for n in names))]

    def grid_size(self) -> int | None:
        try:
            n = 1
            for p in self.params.values():
                n *= len(p.grid_values)
            return n
        except TuneError:
            return None

    # ---- one configuration -------------------------------------------------------------------
    def split(self, config: dict) -> tuple[dict, int | None]:
        """(server options, client concurrency)."""
        return {k: v for k, v in config.items() if k not in CLIENT}, config.get("concurrency")

    def inert(self, config: dict, batching_possible: bool = True) -> set[str]:
        """Options that cannot matter in this configuration: the batching ones when nothing is
        batched (max_batch_size 1, batching off, or a model the core refuses to batch)."""
        full = {**self.defaults, **config}
        out = set()
        if full.get("batching") == "off" or not batching_possible:
            out |= {"max_batch_size", "max_batch_delay_us", "batching"}
        elif full.get("max_batch_size") == 1:
            out |= {"max_batch_delay_us", "batching"}
        return out

    def effective(self, config: dict, batching_possible: bool = True) -> dict:
        """The server options of a configuration that can make a difference, as given."""
        options, _ = self.split(config)
        inert = self.inert(options, batching_possible)
        return {k: v for k, v in options.items() if k not in inert}

    def explicit(self, config: dict, batching_possible: bool = True) -> dict:
        """The effective options with the server's default written out for every searched option
        left unset: what to register with, whatever defaults the target server was started with."""
        filled = {k: self.defaults[k] for k in self.params if k in self.defaults}
        return self.effective({**filled, **config}, batching_possible)

    def canonical(self, config: dict, batching_possible: bool = True) -> dict:
        """The effective options less those equal to the server's default, with the client
        concurrency: equal canonical forms are the same configuration, measured once."""
        out = {k: v for k, v in self.effective(config, batching_possible).items()
               if self.defaults.get(k, object()) != v}
        if config.get("concurrency") is not None:
            out["concurrency"] = config["concurrency"]
        return out

    def cost(self, config: dict) -> tuple:
        """Smaller is cheaper: threads in all, then instances, client concurrency, batch delay,
        context size (used to prefer the cheaper of two configurations that measure the same)."""
        cores = os.cpu_count() or 1
        full = {**self.defaults, **config}
        if self.engine == "gguf":
            threads = (full.get("n_threads") or cores) * (full.get("parallel") or 1)
            instances = full.get("parallel") or 1
        else:
            instances = full.get("instances") or 1
            threads = (full.get("intra_op_threads") or cores) * instances
        return (threads, instances, full.get("concurrency") or 0, full.get("max_batch_delay_us") or 0,
                full.get("n_ctx") or 0, full.get("n_batch") or 0)


def key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


# ---- reading and checking a space -----------------------------------------------------------------

def _check_value(name: str, value: Any) -> Any:
    if name == "concurrency":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise TuneError(f"space concurrency: {value!r} is not an integer from 1 to 1024")
        return value
    from mlos_core.errors import MLOSError
    from mlos_core.registry import validate_options

    try:
        return validate_options({name: value})[name]
    except MLOSError as e:
        raise TuneError(f"space {name}: {e.message}") from None


def _param(name: str, spec: Any) -> Param:
    if isinstance(spec, dict):
        unknown = set(spec) - {"low", "high", "step", "log", "values"}
        if unknown:
            raise TuneError(f"space {name}: unknown key(s) {', '.join(sorted(unknown))}; a range is "
                            "{low, high[, step][, log]}, or give a list of values")
        if "values" in spec:
            return _param(name, spec["values"])
        low, high = spec.get("low"), spec.get("high")
        for k, v in (("low", low), ("high", high), ("step", spec.get("step", 1))):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TuneError(f"space {name}.{k}: expected an integer, got {v!r}")
        if low > high:
            raise TuneError(f"space {name}: low {low} is above high {high}")
        step, log = spec.get("step"), bool(spec.get("log", False))
        if step is not None and step < 1:
            raise TuneError(f"space {name}.step: must be at least 1")
        if log and (step is not None or low < 1):
            raise TuneError(f"space {name}: a log range needs low >= 1 and no step")
        _check_value(name, low), _check_value(name, high)
        return Param(name, low=low, high=high, step=step, log=log)
    values = spec if isinstance(spec, list) else [spec]
    if not values:
        raise TuneError(f"space {name}: an empty list leaves nothing to try; give values, or null to leave it out")
    checked = tuple(_check_value(name, v) for v in values)
    if len(set(checked)) != len(checked):
        raise TuneError(f"space {name}: {list(values)} repeats a value")
    return Param(name, values=checked)


def build_space(doc: Any, engine: str, concurrency: list[int], open_loop: bool = False) -> SearchSpace:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise TuneError("space: expected a mapping of parameter -> values")
    base = doc.get("base", "default")
    if base not in ("default", "none"):
        raise TuneError(f"space base: {base!r} is neither default nor none")
    allowed = engine_options(engine) + CLIENT
    other = engine_options("onnx" if engine == "gguf" else "gguf")
    specs = dict(default_space(engine, concurrency) if base == "default" else {"concurrency": list(concurrency)})
    for name, spec in doc.items():
        if name == "base":
            continue
        if name not in allowed:
            if name in other:
                raise TuneError(f"space {name}: an option of {'GGUF' if engine == 'onnx' else 'ONNX'} models; this "
                                f"model's options are {', '.join(allowed)}")
            raise TuneError(f"space {name}: unknown parameter; this model's are {', '.join(allowed)}")
        if spec is None:
            specs.pop(name, None)
        else:
            specs[name] = spec
    if open_loop and "concurrency" in doc and doc["concurrency"] is not None:
        values = doc["concurrency"] if isinstance(doc["concurrency"], list) else [doc["concurrency"]]
        if len(values) > 1:
            raise TuneError("space concurrency: an open-loop workload's load is its arrival rate; concurrency "
                            "is not searched")
    if "concurrency" not in specs:
        specs["concurrency"] = list(concurrency)
    params = {name: _param(name, spec) for name, spec in specs.items()}
    return SearchSpace(params, engine)


def load_space(path: str | None, engine: str, concurrency: list[int], open_loop: bool = False) -> SearchSpace:
    if path is None:
        return build_space(None, engine, concurrency, open_loop)
    try:
        doc = yaml.safe_load(Path(path).expanduser().read_text())
    except OSError as e:
        raise TuneError(f"--space {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise TuneError(f"--space {path}: neither YAML nor JSON: {e}") from None
    return build_space(doc, engine, concurrency, open_loop)
