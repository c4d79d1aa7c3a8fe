"""GGUF models on llama.cpp: the plugin (``plugin``), the model's tasks (``model``), the
continuous-batching engine (``engine``: slots in ``sequence``, contexts and batches in ``context``,
``sampler``, ``prompt_cache``, batched ``embedding``, ``stats``), option sizing (``config``) and
text streaming (``text``). Only ``plugin`` is imported with the package: the rest imports
llama_cpp, which loads when a model does."""
from .plugin import GgufPlugin

__all__ = ["GgufPlugin"]
