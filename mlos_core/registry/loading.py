"""Loading a model in this process: the plugin, then the task layer; and what the registry
needs to know of a model file before and after (its size, its framework, how many executions)."""
from __future__ import annotations

import logging
import os

from ..errors import UnprocessableModel
from ..smi import LoadOptions, Model, ModelSource

log = logging.getLogger(__name__)


def load_model(plugin, source: ModelSource, options: LoadOptions) -> Model:
    """The plugin loads the format; the task layer (tokenizer, pooling, labels, decoding) is
    attached from the model's directory when the model has no task-level entry points itself."""
    model = plugin.load(source, options)
    if not model.tasks:
        from ..tasks import attach

        folder = source.package_dir or (source.model_path if source.model_path.is_dir() else source.model_path.parent)
        try:
            model = attach(model, folder, options.task, chat_template=options.chat_template)
        except UnprocessableModel as e:
            if not options.task_from_manifest:
                raise
            log.warning("%s: the manifest's task %r does not fit (%s); serving what the directory implies",
                        folder, options.task, e.message)
            model = attach(model, folder, None, chat_template=options.chat_template)
    return model


def instances_for(configured: int, model: Model) -> int:
    """0 means automatic: a batching model keeps one execution busy with whole batches; a model
    that cannot batch runs two requests at once, so the next one is already in the runtime
    while the event loop hands the last answer back (measured: benchmarks/, README). A model
    that batches its calls itself (GGUF slots) runs as many as it says: the scheduler's priority
    queue then decides which call gets the next slot."""
    if model.concurrent_calls:
        return model.concurrent_calls
    wanted = configured or (1 if model.metadata.batchable else min(2, os.cpu_count() or 1))
    return min(wanted, model.max_concurrency) if model.max_concurrency else wanted


def estimate_bytes(source: ModelSource) -> int:
    p = source.model_path
    if p.is_file():
        total = p.stat().st_size
        for sib in p.parent.glob(p.name + "*"):
            if sib != p and sib.name.endswith(("_data", ".data")):
                total += sib.stat().st_size
        return total
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def framework_of(source: ModelSource) -> str:
    fw = ((source.manifest or {}).get("spec") or {}).get("framework") or {}
    return str(fw.get("name") or {"onnx": "ONNX", "gguf": "GGUF", "safetensors": "SafeTensors"}[source.format])
