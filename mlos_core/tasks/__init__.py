"""The task layer: a tensor model plus its package directory (config.json, tokenizer.json,
preprocessor_config.json, sentence-transformers files) becomes a task-level model.

``attach(model, model_dir, task)`` wraps a ``Model`` whose directory holds what a task needs;
the wrapper delegates ``metadata``/``infer``/``memory_bytes``/``unload`` to the inner model and
adds the task entry points of ``mlos_core.smi``. Nothing here imports torch or transformers.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import UnprocessableModel
from ..smi import (CHAT, CLASSIFY, CLASSIFY_IMAGE, EMBED, FILL_MASK, GENERATE, GenerationChunk,
                   GenerationParams, Model, ModelMetadata)
from .tokenizer import TextTokenizer, read_json

__all__ = ["attach", "detect_task", "normalize_task", "TaskModel", "TASKS"]

log = logging.getLogger(__name__)

FEATURE_EXTRACTION = "feature-extraction"
TEXT_CLASSIFICATION = "text-classification"
FILL_MASK_TASK = "fill-mask"
TEXT_GENERATION = "text-generation"
TEXT2TEXT_GENERATION = "text2text-generation"
IMAGE_CLASSIFICATION = "image-classification"
# the tasks attach knows (HF pipeline names) -> the smi task names the wrapper then serves
TASKS = {
    FEATURE_EXTRACTION: frozenset({EMBED}),
    TEXT_CLASSIFICATION: frozenset({CLASSIFY}),
    FILL_MASK_TASK: frozenset({FILL_MASK}),
    TEXT_GENERATION: frozenset({GENERATE}),   # + CHAT when a chat template is known
    TEXT2TEXT_GENERATION: frozenset({GENERATE}),  # encoder-decoders; + CHAT when the model has a template
    IMAGE_CLASSIFICATION: frozenset({CLASSIFY_IMAGE}),
}
_ALIASES = {
    "feature-extraction": FEATURE_EXTRACTION, "sentence-similarity": FEATURE_EXTRACTION,
    EMBED: FEATURE_EXTRACTION, "embeddings": FEATURE_EXTRACTION, "embedding": FEATURE_EXTRACTION,
    "text-classification": TEXT_CLASSIFICATION, "sentiment-analysis": TEXT_CLASSIFICATION,
    CLASSIFY: TEXT_CLASSIFICATION, "sequence-classification": TEXT_CLASSIFICATION,
    "fill-mask": FILL_MASK_TASK, "fill_mask": FILL_MASK_TASK,
    "text-generation": TEXT_GENERATION, "text-generation-with-past": TEXT_GENERATION,
    GENERATE: TEXT_GENERATION, CHAT: TEXT_GENERATION, "causal-lm": TEXT_GENERATION,
    "text2text-generation": TEXT2TEXT_GENERATION, "text2text-generation-with-past": TEXT2TEXT_GENERATION,
    "translation": TEXT2TEXT_GENERATION, "summarization": TEXT2TEXT_GENERATION, "seq2seq-lm": TEXT2TEXT_GENERATION,
    "image-classification": IMAGE_CLASSIFICATION, CLASSIFY_IMAGE: IMAGE_CLASSIFICATION,
    "classify_image": IMAGE_CLASSIFICATION,
}
_NONE = {"none", "tensor", "tensors", "raw"}  # an override asking for no task layer


def normalize_task(task: str) -> str | None:
    """An override (an HF pipeline name or one of ours) -> the HF pipeline name attach uses;
    None for "none"/"tensor"; UnprocessableModel for an unknown name."""
    key = str(task).strip().lower().replace("_", "-") if task is not None else ""
    if key in _NONE:
        return None
    found = _ALIASES.get(key) or _ALIASES.get(str(task).strip().lower())
    if found is None:
        known = ", ".join(sorted(set(_ALIASES) | _NONE))
        raise UnprocessableModel(f"unknown task {task!r}; known: {known}")
    return found


def detect_task(model_dir: Path | str | None) -> str | None:
    """The task a package directory implies (an HF pipeline name), or None: sentence-transformers
    files -> feature-extraction; else config.json ``architectures``: *ForCausalLM / *LMHeadModel
    -> text-generation, an encoder-decoder's *ForConditionalGeneration (or *MTModel) ->
    text2text-generation, *ForSequenceClassification -> text-classification, *ForMaskedLM ->
    fill-mask, *ForImageClassification -> image-classification, a bare *Model -> feature-extraction.
    Text tasks need tokenizer.json, image ones preprocessor_config.json."""
    if model_dir is None:
        return None
    d = Path(model_dir)
    if not d.is_dir():
        return None
    has_tok = (d / "tokenizer.json").is_file()
    has_proc = (d / "preprocessor_config.json").is_file()
    config = read_json(d / "config.json") or {}
    if (d / "modules.json").is_file() and has_tok:
        return FEATURE_EXTRACTION
    archs = config.get("architectures") or []
    arch = str(archs[0]) if isinstance(archs, list) and archs else ""
    if not arch:
        return None
    if arch.endswith(("ForCausalLM", "LMHeadModel")) and not arch.endswith("WithLMHeadModel"):
        task = TEXT_GENERATION
    elif config.get("is_encoder_decoder") and arch.endswith(("ForConditionalGeneration", "MTModel",
                                                             "WithLMHeadModel")):
        task = TEXT2TEXT_GENERATION
    elif arch.endswith("ForSequenceClassification"):
        task = TEXT_CLASSIFICATION
    elif arch.endswith("ForMaskedLM"):
        task = FILL_MASK_TASK
    elif arch.endswith("ForImageClassification") or arch.endswith("ForImageClassificationWithTeacher"):
        task = IMAGE_CLASSIFICATION
    elif arch.endswith("Model"):
        task = FEATURE_EXTRACTION
    else:
        return None
    if task == IMAGE_CLASSIFICATION:
        return task if has_proc else None
    return task if has_tok else None


class TaskModel(Model):
    """A tensor model with task entry points. ``task`` is the HF pipeline name it serves."""

    def __init__(self, inner: Model, task: str, impl: Any, tokenizer: TextTokenizer | None,
                 tasks: frozenset[str]):
        self.inner = inner
        self.task = task
        self.tasks = tasks
        self._impl = impl
        self._tok = tokenizer

    # ---- the tensor model, delegated ----------------------------------------------------------

    @property
    def metadata(self) -> ModelMetadata:  # type: ignore[override]
        return self.inner.metadata

    def infer(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        return self.inner.infer(inputs, outputs)

    def memory_bytes(self) -> int:
        return self.inner.memory_bytes()

    def unload(self) -> None:
        self.inner.unload()

    def __getattr__(self, name: str):
        # anything else the plugin's model offers (only reached when normal lookup fails)
        if name.startswith("__") or name in ("inner", "_impl", "_tok"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"TaskModel({self.task}, tasks={sorted(self.tasks)}, inner={self.inner!r})"

    # ---- tasks --------------------------------------------------------------------------------

    def generate(self, prompt: str, params: GenerationParams,
                 cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        if GENERATE not in self.tasks:
            return super().generate(prompt, params, cancelled)
        return self._impl.generate(prompt, params, cancelled)

    def chat(self, messages: Sequence[Mapping[str, Any]], params: GenerationParams,
             cancelled: Callable[[], bool] = lambda: False) -> Iterator[GenerationChunk]:
        if CHAT not in self.tasks:
            return super().chat(messages, params, cancelled)
        return self._impl.chat(messages, params, cancelled)

    def generate_batch(self, prompts: Sequence[str], params: GenerationParams,
                       cancelled: Callable[[], bool] = lambda: False) -> list[GenerationChunk]:
        if GENERATE not in self.tasks or not hasattr(self._impl, "generate_batch"):
            return super().generate_batch(prompts, params, cancelled)
        return self._impl.generate_batch(prompts, params, cancelled)

    def graphs(self) -> Mapping[str, Model]:
        return self.inner.graphs()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if EMBED not in self.tasks:
            return super().embed(texts)
        return self._impl.embed(texts)

    def classify(self, texts: Sequence[str]) -> list[list[dict]]:
        if CLASSIFY not in self.tasks:
            return super().classify(texts)
        return self._impl.classify(texts)

    def fill_mask(self, text: str, top_k: int = 5) -> list[dict]:
        if FILL_MASK not in self.tasks:
            return super().fill_mask(text, top_k)
        return self._impl.fill_mask(text, top_k)

    def classify_image(self, image: bytes, top_k: int = 5) -> list[dict]:
        if CLASSIFY_IMAGE not in self.tasks:
            return super().classify_image(image, top_k)
        return self._impl.classify_image(image, top_k)

    def count_tokens(self, text: str) -> int:
        if self._tok is None:
            return super().count_tokens(text)
        return self._tok.count(text)

    def context_length(self) -> int | None:
        if hasattr(self._impl, "context_length"):
            return self._impl.context_length()
        return self._tok.max_length if self._tok is not None else None


def _build(model: Model, d: Path, task: str, chat_template: str | None) -> TaskModel:
    config = read_json(d / "config.json") or {}
    if task == IMAGE_CLASSIFICATION:
        from .vision import ImageClassifier

        proc = read_json(d / "preprocessor_config.json")
        if proc is None:
            raise UnprocessableModel(f"image classification needs preprocessor_config.json in {d}")
        return TaskModel(model, task, ImageClassifier(model, config, proc), None, TASKS[task])
    if not (d / "tokenizer.json").is_file():
        raise UnprocessableModel(f"{task} needs tokenizer.json in {d} (only fast tokenizers are supported)")
    tok = TextTokenizer(d, config)
    if task == FEATURE_EXTRACTION:
        from .text import Embedder
        impl = Embedder(model, tok, config, d)
    elif task == TEXT_CLASSIFICATION:
        from .text import Classifier
        impl = Classifier(model, tok, config)
    elif task == FILL_MASK_TASK:
        from .text import MaskFiller
        impl = MaskFiller(model, tok, config)
    elif task == TEXT2TEXT_GENERATION:
        from .generation import read_chat_template_file
        from .seq2seq import Seq2SeqGenerator
        impl = Seq2SeqGenerator(model, tok, config, read_json(d / "generation_config.json"), chat_template,
                                read_chat_template_file(d))
        # chat only where the model has a template: a translator is no chat model
        tasks = TASKS[task] | ({CHAT} if impl.has_chat_template() else frozenset())
        return TaskModel(model, task, impl, tok, frozenset(tasks))
    else:
        from .generation import Generator, read_chat_template_file
        impl = Generator(model, tok, config, chat_template, read_chat_template_file(d))
        tasks = TASKS[task] | {CHAT}  # templates fall back to ChatML, so any decoder can chat
        return TaskModel(model, task, impl, tok, frozenset(tasks))
    return TaskModel(model, task, impl, tok, TASKS[task])


def attach(model: Model, model_dir: Path | None, task: str | None = None, *,
           chat_template: str | None = None) -> Model:
    """``model`` with the task entry points its directory supports, or ``model`` unchanged.

    ``task`` overrides the detected task (an HF pipeline name or one of ours; "none" keeps the
    bare tensor model); with an override, a directory or graph that cannot serve it raises
    ``UnprocessableModel``, while a detected task that does not fit leaves the model as it is.
    ``chat_template`` overrides the tokenizer's own (LoadOptions.chat_template)."""
    explicit = task is not None
    wanted = normalize_task(task) if explicit else None
    if explicit and wanted is None:
        return model
    if isinstance(model, TaskModel):
        model = model.inner
    d = Path(model_dir) if model_dir is not None else None
    if d is None or not d.is_dir():
        if explicit:
            raise UnprocessableModel(f"task {task!r} needs the model's package directory "
                                     "(config.json, tokenizer.json or preprocessor_config.json)")
        return model
    if not explicit:
        if model.tasks:          # the plugin serves tasks itself (e.g. GGUF)
            return model
        wanted = detect_task(d)
        if wanted is None:
            return model
    try:
        return _build(model, d, wanted, chat_template)
    except UnprocessableModel as e:
        if explicit:
            raise
        log.warning("not serving %s for %s: %s", wanted, d, e.message)
        return model
