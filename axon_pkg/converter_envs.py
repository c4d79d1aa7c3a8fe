"""Which Python runs a converter that needs a framework the core's environment does not hold.

torchvision and TensorFlow do not live in the project's main virtualenv: PyPI's torchvision
does not import beside the CPU build of torch 2.13.0 that the ``convert`` extra pins, and
TensorFlow brings Keras 3, which transformers refuses to import beside. Their converters run in
a subprocess anyway (:mod:`axon_pkg.worker`), so each runs under the interpreter of its own
environment: ``make setup`` builds them under ``.venv/converters/<kind>`` from the extras
``convert-vision`` and ``convert-tf``.

The interpreter for a kind is, in this order: the environment variable (``AXON_VISION_PYTHON``,
``AXON_TF_PYTHON``), the setting ``convert.vision_python`` / ``convert.tf_python``, this
interpreter when it can import the framework, ``<sys.prefix>/converters/<kind>/bin/python``.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .errors import AxonError

KINDS = {
    # kind: (module the converter needs, environment variable, config key, pyproject extra)
    "vision": ("torchvision", "AXON_VISION_PYTHON", "convert.vision_python", "convert-vision"),
    "tf": ("tensorflow", "AXON_TF_PYTHON", "convert.tf_python", "convert-tf"),
}


class ConverterMissing(AxonError):
    """No environment that can run this converter."""


def _importable_here(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def python_for(kind: str) -> str:
    """The interpreter that runs the ``kind`` converter, or ConverterMissing saying how to get one."""
    module, env_var, key, extra = KINDS[kind]
    from . import config

    explicit = os.environ.get(env_var) or config.get(key)
    if explicit:
        if not Path(explicit).is_file():
            raise ConverterMissing(f"{env_var or key} names {explicit}, which does not exist")
        return str(explicit)
    if _importable_here(module):
        return sys.executable
    nested = Path(sys.prefix) / "converters" / kind / "bin" / "python"
    if nested.is_file():
        return str(nested)
    raise ConverterMissing(
        f"no environment with {module} to run the {kind} converter",
        hint=f"`make setup` builds one under .venv/converters/{kind}; or make a venv with "
             f"`pip install -e '.[{extra}]'` and set {env_var} to its python")
