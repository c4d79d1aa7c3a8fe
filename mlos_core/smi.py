"""The Standard Model Interface: what every format plugin implements.

A plugin turns a resolved model source (a path, and the package manifest when there is one)
into a ``Model``. A ``Model`` describes its tensors and runs inference on numpy arrays.
Plugins know nothing of HTTP, packages, registries or the kernel path, and they import their
heavy runtime library themselves, so the server never imports a format's internals.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

DYNAMIC = -1


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor as the model declares it. ``shape`` uses -1 for a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class ModelMetadata:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    platform: str
    # True when axis 0 of every input and output is dynamic: requests may be stacked on it.
    batchable: bool = False
    properties: Mapping[str, Any] = field(default_factory=dict)

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


@dataclass(frozen=True)
class ModelSource:
    """What a plugin loads: ``model_path`` is the file (or directory) holding the weights."""

    model_path: Path
    format: str
    package_dir: Path | None = None
    manifest: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LoadOptions:
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    allow_spinning: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


class Model(abc.ABC):
    metadata: ModelMetadata

    @abc.abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one inference. Called from a worker thread, never from the event loop."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """The model's resident footprint, as accounted against the memory budget."""

    def unload(self) -> None:
        """Release the runtime's resources. The default lets garbage collection do it."""


class FormatPlugin(abc.ABC):
    id: str
    format: str
    description: str

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """Whether the plugin's runtime library imports here, and its version or the reason not."""

    @abc.abstractmethod
    def load(self, source: ModelSource, options: LoadOptions) -> Model:
        """Load a model. Raise ``mlos_core.errors.UnprocessableModel`` with the reason on failure."""
