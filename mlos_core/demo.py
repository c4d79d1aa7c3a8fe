"""The embedded demo model: Silero VAD, a real ONNX model shipped inside the `silero-vad` wheel.

Located without importing the package (its ``__init__`` imports torch, which serving never
loads): the wheel is installed with ``--no-deps`` and only its ``data/`` files are used.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from .errors import MLOSError
from .registry import RegisterSpec

log = logging.getLogger(__name__)
DEMO_ID = "silero/vad@6"


def silero_vad_path() -> Path | None:
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    return path if path.is_file() else None


async def register_demo(plane) -> None:
    path = silero_vad_path()
    if path is None:
        log.warning("demo: the silero-vad package is not installed; no demo model registered")
        return
    try:
        await plane.register(RegisterSpec(
            DEMO_ID, str(path), name="silero-vad",
            description="Silero voice activity detector (ONNX, from the silero-vad wheel): speech probability of a 32 ms chunk at 16 kHz",
        ))
        log.info("demo: %s registered from %s", DEMO_ID, path)
    except MLOSError as e:
        log.error("demo: %s not registered: %s", DEMO_ID, e.message)
