"""The GGUF format plugin: loads a model onto llama.cpp (llama-cpp-python's low-level bindings)
behind the continuous-batching engine. llama_cpp is imported only when a model loads, so the core
starts (and reports the plugin unavailable, with the reason) where it is not installed."""
from __future__ import annotations

import os

# llama.cpp's CPU backend computes K-quant matrix products of 8 rows or more with a tiled kernel
# whose rounding differs from the one-row kernel, so a sequence's numbers would depend on how many
# rows share its decode step. Off (before any llama.cpp computation: the switch is read once per
# process), every row is computed alike, and a sequence decoded with others gives exactly what it
# gives alone (mlos_core/plugins/gguf/context.py). GGML_CPU_TILED_MM=1 in the environment keeps it.
os.environ.setdefault("GGML_CPU_TILED_MM", "0")

from ...errors import UnprocessableModel  # noqa: E402
from ...smi import FormatPlugin, LoadOptions, Model, ModelSource  # noqa: E402
from . import config as engine_config  # noqa: E402
from .support import _install_log, _load_reason, _log_state, load_failure  # noqa: E402


class GgufPlugin(FormatPlugin):
    id = "llama.cpp"
    format = "gguf"
    description = ("GGUF models on llama.cpp (llama-cpp-python), CPU: text generation and chat with continuous "
                   "batching over parallel slots and prompt caching, embeddings")

    def availability(self) -> tuple[bool, str]:
        try:
            import llama_cpp
        except Exception as e:  # ImportError, or OSError when the shared library does not load
            return False, f"llama_cpp (llama-cpp-python) does not import: {e}"
        return True, getattr(llama_cpp, "__version__", "unknown version")

    def check_options(self, source: ModelSource, options: LoadOptions) -> None:
        engine_config.check(str(source.model_path), dict(options.extra or {}), options.intra_op_threads)

    def load(self, source: ModelSource, options: LoadOptions) -> Model:
        from .context import load_model
        from .model import GgufModel

        path = str(source.model_path)
        if not os.path.isfile(path):
            raise UnprocessableModel(f"{path}: no such GGUF file")
        extra = dict(options.extra or {})
        # options from a manifest were not checked at register: refuse them before llama.cpp allocates
        engine_config.check(path, extra, options.intra_op_threads)
        _install_log()
        _log_state.captured = []
        try:
            llm_model = load_model(path)
        except Exception as e:
            reason = _load_reason(_log_state.captured, str(e) or type(e).__name__)
            raise UnprocessableModel(load_failure(source.model_path, reason), detail=reason) from None
        finally:
            _log_state.captured = None
        try:
            config = engine_config.resolve(extra, file_bytes=os.path.getsize(path),
                                           intra_op_threads=options.intra_op_threads,
                                           trained_ctx=int(llm_model.n_ctx_train()))
            return GgufModel(llm_model, source, options, config)
        except BaseException:
            llm_model.close()
            raise
