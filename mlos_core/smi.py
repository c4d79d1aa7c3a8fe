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
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

DYNAMIC = -1


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor as the model declares it. ``shape`` uses -1 for a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    # the symbolic name of each dimension where the model gives one (ONNX dim_param), else None:
    # two inputs naming the same dimension must agree on its size
    dim_names: tuple[str | None, ...] = ()

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
    task: str | None = None  # overrides the task the manifest or config.json implies
    # the task came from the package manifest, not the register request: when it does not fit the
    # model (e.g. CLIP exported as feature-extraction, an ASR task the core has no layer for), the
    # model is served as what its directory implies (or as tensors) instead of failing to load
    task_from_manifest: bool = False
    chat_template: str | None = None  # a Jinja chat template overriding the model's own
    cache_dir: Path | None = None  # where a plugin may keep artefacts derived from the model
    # format-specific settings, e.g. GGUF: n_ctx, n_threads, n_batch
    extra: Mapping[str, Any] = field(default_factory=dict)


# ---- task level -------------------------------------------------------------------------------
# Task names a model can serve beside raw tensors.
GENERATE, CHAT, EMBED, CLASSIFY, FILL_MASK, CLASSIFY_IMAGE = (
    "generate", "chat", "embed", "classify", "fill-mask", "classify-image")


class TaskUnsupported(Exception):
    """Raised by a task entry point the model does not serve; the core answers 400 with it."""


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    # reuse the KV of a prompt prefix computed before (llama.cpp server's cache_prompt); off only
    # to measure or to rule the cache out
    cache_prompt: bool = True


@dataclass
class GenerationChunk:
    """A piece of generated text. The last chunk has ``finish_reason`` ("stop", "length" or
    "cancelled") and the token counts of the whole generation; ``cached_tokens`` of the prompt
    tokens were not computed again but taken from a prompt cache."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # the last chunk of a generator that knows them: every generated token id, in order
    token_ids: list[int] | None = None
    cached_tokens: int = 0


class Model(abc.ABC):
    metadata: ModelMetadata
    # the task-level entry points this model serves (see the task names above)
    tasks: frozenset[str] = frozenset()
    # how many calls the runtime can run at once on this model (None: no limit of its own)
    max_concurrency: int | None = None
    # a model that runs this many calls together itself (e.g. continuous batching over slots):
    # the scheduler then runs exactly that many at once, whatever ``instances`` says
    concurrent_calls: int | None = None

    @abc.abstractmethod
    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one inference. Called from a worker thread, never from the event loop."""

    @abc.abstractmethod
    def memory_bytes(self) -> int:
        """The model's resident footprint, as accounted against the memory budget."""

    def unload(self) -> None:
        """Release the runtime's resources. The default lets garbage collection do it."""

    # Task-level entry points: called from a worker thread; a model implements those of its
    # ``tasks``. ``cancelled`` is polled between tokens so an abandoned generation stops.
    def generate(self, prompt: str, params: GenerationParams,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        raise TaskUnsupported("text generation")

    def chat(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
             cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        raise TaskUnsupported("chat")

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams,
                       cancelled: Callable[[], bool] = lambda: False) -> list[GenerationChunk]:
        """One whole generation per prompt, run together (the last chunk of each, its ``text`` the
        whole completion). Models that cannot batch generations do not offer it."""
        raise TaskUnsupported("batched text generation")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 row per text, pooled (and normalised) the way the model prescribes."""
        raise TaskUnsupported("embeddings")

    def classify(self, texts: Sequence[str]) -> list[list[dict]]:
        """Per text, every label with its score, best first: ``[{"label", "score"}]``."""
        raise TaskUnsupported("text classification")

    def fill_mask(self, text: str, top_k: int = 5) -> list[dict]:
        raise TaskUnsupported("fill-mask")

    def classify_image(self, image: bytes, top_k: int = 5) -> list[dict]:
        raise TaskUnsupported("image classification")

    def count_tokens(self, text: str) -> int:
        raise TaskUnsupported("tokenization")

    def context_length(self) -> int | None:
        """The most tokens prompt plus completion may hold, where the model has a limit."""
        return None

    def graphs(self) -> Mapping[str, "Model"]:
        """A model made of several graphs (an encoder-decoder export) names them here; each is
        reachable as a tensor model of its own (``<name>/<graph>@<version>``)."""
        return {}
    def serving_stats(self) -> Mapping[str, Any] | None:
        """Live figures of a model that schedules its own work (slots, decode steps, prompt
        cache...), read by ``/status`` and ``/metrics``; None when it has none."""
        return None


class FormatPlugin(abc.ABC):
    id: str
    format: str
    description: str

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """Whether the plugin's runtime library imports here, and its version or the reason not."""

    def check_options(self, source: ModelSource, options: LoadOptions) -> None:
        """Refuse, with ``mlos_core.errors.BadRequest``, load options that cannot work, before the
        model is registered (cheap: no load). The default accepts everything."""

    @abc.abstractmethod
    def load(self, source: ModelSource, options: LoadOptions) -> Model:
        """Load a model. Raise ``mlos_core.errors.UnprocessableModel`` with the reason on failure."""
