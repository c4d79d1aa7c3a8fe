"""Helpers of the GGUF plugin that do not hold a model: llama.cpp's log, option and request checks."""
from __future__ import annotations

import ctypes
import logging
import os
import threading
from typing import Any, Mapping

from ...errors import BadRequest
from ...smi import GenerationParams

# ---- llama.cpp's log -----------------------------------------------------------------------------
# llama-cpp-python 0.3.x maps ggml's log levels with a stale table (errors come out as DEBUG and
# are dropped, some warnings are printed to stderr even with verbose=False). We route the log to
# Python logging instead, and capture the error lines of a load to say why it failed.
# ggml's INFO is load chatter (every metadata key, every buffer): DEBUG here, so a server logging at
# INFO says "loaded <model>" once instead of a hundred lines per GGUF model
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_log_state = threading.local()
_log_installed = False
_log_lock = threading.Lock()
_llama_log = logging.getLogger("llama.cpp")
_llama_log.addHandler(logging.NullHandler())  # no stderr noise unless the application logs


def _on_llama_log(level: int, text: bytes, _user_data) -> None:
    try:
        msg = text.decode("utf-8", "replace")
        last = getattr(_log_state, "level", logging.DEBUG)
        py_level = _GGML_LEVELS.get(level, last) if level != 5 else last  # 5: continues the last
        _log_state.level = py_level
        captured = getattr(_log_state, "captured", None)
        if captured is not None and py_level >= logging.WARNING:
            captured.append(msg)
        if _llama_log.isEnabledFor(py_level) and msg.strip():
            _llama_log.log(py_level, "%s", msg.rstrip())
    except Exception:  # never let an exception cross into C
        pass


def _install_log() -> None:
    global _log_installed, _c_callback
    with _log_lock:
        if _log_installed:
            return
        import llama_cpp

        _c_callback = llama_cpp.llama_log_callback(_on_llama_log)  # kept alive at module level
        llama_cpp.llama_log_set(_c_callback, ctypes.c_void_p(0))
        _log_installed = True


def _load_reason(captured: list[str], fallback: str) -> str:
    """The specific error lines llama.cpp logged while loading, before its generic summary."""
    lines = []
    for m in captured:
        for ln in m.splitlines():
            ln = ln.strip()
            if ln and ln not in lines:
                lines.append(ln)
    specific = [ln for ln in lines if "failed to load model" not in ln]
    generic = [ln.split("error loading model:", 1)[1].strip() for ln in lines if "error loading model:" in ln]
    return "; ".join((specific or generic)[:3]) or fallback


def load_failure(path, reason: str) -> str:
    """One sentence a user can act on, for what llama.cpp said while failing to load a file (its own
    words go to the error's ``detail``)."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    name = os.path.basename(str(path))
    low = reason.lower()
    if "only supports up to version" in low or "version" in low and "not supported" in low:
        why = "its GGUF version is newer than this llama.cpp reads: update llama-cpp-python or re-convert the model"
    elif "invalid magic" in low:
        why = "its header is not a GGUF header"
    elif "not within the file bounds" in low or "incomplete" in low or "failed to read" in low:
        why = f"the file is truncated or corrupt ({size} bytes): download or copy it again"
    elif "unknown model architecture" in low:
        arch = reason.split("unknown model architecture:", 1)[-1].strip().split()[0] if ":" in reason else "?"
        why = f"its architecture {arch} is not one this llama.cpp build knows: update llama-cpp-python"
    else:
        why = "llama.cpp refused it (see detail)"
    return f"GGUF model {name} could not be loaded: {why}"


# ---- options -------------------------------------------------------------------------------------

def physical_cores() -> int:
    """Physical cores available to this process (llama.cpp gains nothing from SMT siblings)."""
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    cores = set()
    try:
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
        if core is not None:
            cores.add((phys, core))
    except OSError:
        pass
    return max(1, min(available, len(cores) or available))


def _positive_int(extra: Mapping[str, Any], key: str) -> int | None:
    if key not in extra or extra[key] is None:
        return None
    value = extra[key]
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() \
            or int(value) <= 0:
        raise BadRequest(f"option {key} must be a positive integer, got {value!r}")
    return int(value)


def _arch_int(metadata: Mapping[str, str], arch: str, key: str) -> int | None:
    try:
        return int(float(metadata[f"{arch}.{key}"]))
    except (KeyError, ValueError, TypeError):
        return None


def _check_text(text: Any, what: str) -> bytes:
    if isinstance(text, bytes):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"{what} is not valid UTF-8 (bad byte at offset {e.start})") from None
        data = text
    elif isinstance(text, str):
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise BadRequest(f"{what} is not valid UTF-8 text (unpaired surrogate at position {e.start})") from None
    else:
        raise BadRequest(f"{what} must be a string, got {type(text).__name__}")
    if not data.strip():
        raise BadRequest(f"{what} is empty")
    return data


def _check_params(params: GenerationParams) -> None:
    if isinstance(params.max_tokens, bool) or not isinstance(params.max_tokens, int) or params.max_tokens <= 0:
        raise BadRequest(f"max_tokens must be a positive integer, got {params.max_tokens!r}")
    if not params.temperature >= 0:
        raise BadRequest(f"temperature must be 0 (greedy) or more, got {params.temperature!r}")
    if not 0 < params.top_p <= 1:
        raise BadRequest(f"top_p must be in (0, 1], got {params.top_p!r}")
    if isinstance(params.top_k, bool) or not isinstance(params.top_k, int) or params.top_k < 0:
        raise BadRequest(f"top_k must be 0 (off) or a positive integer, got {params.top_k!r}")
    if not params.repetition_penalty > 0:
        raise BadRequest(f"repetition_penalty must be positive, got {params.repetition_penalty!r}")
    for s in params.stop:
        if not isinstance(s, str) or not s:
            raise BadRequest(f"stop sequences must be non-empty strings, got {s!r}")
