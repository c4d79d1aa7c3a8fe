"""Running a converter in a child process: the one way axon-py does it.

Every conversion (optimum, torchvision, tf2onnx) runs ``python -m axon_pkg.<worker>`` in its own
process group (and dies with axon-py: :mod:`axon_pkg.child`), possibly under another interpreter (a converter environment, see
:mod:`axon_pkg.converter_envs`), and reads ONE JSON line from its stdout. A timeout or Ctrl-C
kills the whole group; a child that dies without its JSON line is reported with the tail of its
stderr. The caller's process never imports torch or TensorFlow.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    # the child imports this package from this checkout, whichever interpreter runs it
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    from .child import child_env

    return child_env(env)   # the worker asks to die with us first thing (axon_pkg.child.die_with_parent)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)   # the group we created for this child only
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def stderr_tail(err: str, limit: int = 300) -> str:
    lines = [ln.strip() for ln in err.strip().splitlines() if ln.strip()]
    tail = " | ".join(lines[-3:]) if lines else "(no output)"
    return tail[-limit:]


PROGRESS = "[convert worker] "  # stderr lines a worker prints to report a step (see report_progress)


def report_progress(message: str) -> None:
    """In a worker: one step, reported to the parent as it happens (``run_json_worker(progress=)``)."""
    import sys

    print(PROGRESS + message, file=sys.stderr, flush=True)


def _pump(stream, keep: collections.deque, progress: Callable[[str], None] | None) -> None:
    """Read a worker's stream as it comes: progress lines are reported at once, the rest is kept
    (the tail says why a crash happened)."""
    for line in stream:
        if progress is not None and line.startswith(PROGRESS):
            try:
                progress(line[len(PROGRESS):].strip())
            except Exception:
                pass
        keep.append(line)


def run_json_worker(cmd: list[str], *, timeout_s: float, env: dict[str, str] | None = None,
                    what: str = "conversion",
                    progress: Callable[[str], None] | None = None) -> tuple[dict | None, str | None]:
    """Run ``cmd``; ``(result, None)`` with its last JSON line, or ``(None, reason)``. ``progress``
    gets each step the worker reports, while it runs."""
    t0 = time.monotonic()
    proc = None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env if env is not None else worker_env(),
                                start_new_session=(os.name == "posix"))
        out_lines: collections.deque = collections.deque()
        err_lines: collections.deque = collections.deque(maxlen=400)
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, out_lines, None), daemon=True),
                 threading.Thread(target=_pump, args=(proc.stderr, err_lines, progress), daemon=True)]
        for pump in pumps:
            pump.start()
        try:
            proc.wait(timeout=max(0.0, timeout_s - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            kill(proc)
            proc.wait()
            return None, f"{what} timed out after {timeout_s:g} s and was stopped; nothing was written"
        for pump in pumps:
            pump.join(timeout=10)
    except BaseException:
        if proc is not None:
            kill(proc)      # Ctrl-C or anything unexpected: never leave the child running
        raise
    out, err = "".join(out_lines), "".join(err_lines)
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("{")]
    try:
        data = json.loads(lines[-1]) if lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return None, f"the {what} worker crashed (exit code {proc.returncode}): {stderr_tail(err)}"
    return data, None
