"""A machine made slower on purpose, from outside the thing measured: CPU-bound processes beside it,
and the core's threads lowered in priority so the slowdown does not depend on how busy the machine
already is (on an idle machine two busy loops would leave a 2-CPU core alone half the time; on a
shared one they would barely add to the crowd).

    with CpuHog(renice="mlos_core", nice=19, pin=0, delay_s=2):
        run the validator (the core it starts is found once it listens, and lowered thread by
        thread two seconds later)

Used by the tests and benchmarks that check a slowed run is flagged (tests/validation,
benchmarks/test_baseline_noise.py). Only processes this one started are touched.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psutil

from .core_proc import stop_process


class CpuHog:
    """``processes`` busy loops (one per CPU by default); with ``renice``, the threads of child
    processes whose command line contains it are lowered to ``nice``; with ``pin`` (a CPU number)
    the busy loops and those threads all share that one CPU. Pinning makes the slowdown the same
    whatever the rest of the machine does: the kernel schedules each session's processes as a
    group (autogroup), and a lowered thread on a CPU its group's busy loop is not on would run at
    full speed whenever that CPU's other load paused."""

    def __init__(self, processes: int | None = None, renice: str | None = None, nice: int = 10,
                 pin: int | None = None, delay_s: float = 0.0, poll_s: float = 0.05):
        self.count = processes if processes is not None else (1 if pin is not None else os.cpu_count() or 1)
        self.pattern, self.nice, self.pin, self.delay_s, self.poll_s = renice, nice, pin, delay_s, poll_s
        self._serving: dict[int, float] = {}   # pid -> when it was first seen listening
        self.hogs: list[subprocess.Popen] = []
        self.reniced: set[int] = set()          # thread ids lowered
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def __enter__(self) -> "CpuHog":
        self.hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        if self.pin is not None:
            for p in self.hogs:
                os.sched_setaffinity(p.pid, {self.pin})
        if self.pattern:
            self._watch = threading.Thread(target=self._renice_loop, name="cpu-hog-renice", daemon=True)
            self._watch.start()
        return self

    def _renice_loop(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(self.poll_s):
            try:
                found = [p for p in me.children(recursive=True) if self.pattern in " ".join(p.cmdline())]
            except psutil.Error:
                continue
            for p in found:
                try:
                    # once it serves: lowered during its start-up, the core would time out
                    # before anything is measured
                    if p.pid not in self._serving:
                        if not any(c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp")):
                            continue
                        self._serving[p.pid] = time.monotonic()
                    if time.monotonic() - self._serving[p.pid] < self.delay_s:
                        continue         # its start-up checks (health, the idle baseline) first
                    tids = [t.id for t in p.threads()]
                except psutil.Error:
                    continue
                # Linux nice is per thread: each one the core starts (event loop, workers,
                # onnxruntime's pool) is lowered as it appears
                for tid in tids:
                    if tid not in self.reniced:
                        try:
                            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
                            if self.pin is not None:
                                os.sched_setaffinity(tid, {self.pin})
                            self.reniced.add(tid)
                        except (ProcessLookupError, PermissionError):
                            pass

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(5)
        for p in self.hogs:
            stop_process(p, grace=2)
        self.hogs = []
