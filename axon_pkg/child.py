"""Child processes that end with the process that started them.

A converter runs for seconds to minutes in its own process group (so that a timeout can stop all
of it). If its parent is killed with SIGKILL, nothing stops it: it would finish an export nobody
waits for and leave its staging folder behind. So a child asks the kernel for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``) as the first thing it does, then checks that the parent it was
started by is still its parent (it may have died before the request took effect).

Linux sends the signal when the *thread* that forked the child exits: the callers start children
from threads that live as long as the process (the CLI's main thread, the core's load pool).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PARENT_ENV = "MLOS_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment for a child that should call ``die_with_parent``."""
    return {**env, PARENT_ENV: str(os.getpid())}


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(3)  # the parent is already gone
