"""A machine made slower on purpose, from outside the thing measured: CPU-bound processes beside it,
and the core's threads lowered in priority so the slowdown does not depend on how busy the machine
already is (on an idle machine two busy loops would leave a 2-CPU core alone half the time; on a
shared one they would barely add to the crowd).

    with CpuHog(renice="mlos_core", nice=10):
        run the validator (the core it starts is found once it listens, and lowered thread by thread)

Used by the tests and benchmarks that check a slowed run is flagged (tests/validation,
benchmarks/test_baseline_noise.py). Only processes this one started are touched.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil

from .core_proc import stop_process


class CpuHog:
    def __init__(self, processes: int | None = None, renice: str | None = None, nice: int = 10,
                 poll_s: float = 0.05):
        self.count = processes if processes is not None else (os.cpu_count() or 1)
        self.pattern, self.nice, self.poll_s = renice, nice, poll_s
        self.hogs: list[subprocess.Popen] = []
        self.reniced: set[int] = set()          # thread ids lowered
        self._stop = threading.Event()
        self._watch: threading.Thread | None = None

    def __enter__(self) -> "CpuHog":
        self.hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
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
                    if not any(c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp")):
                        continue
                    tids = [t.id for t in p.threads()]
                except psutil.Error:
                    continue
                # Linux nice is per thread: each one the core starts (event loop, workers,
                # onnxruntime's pool) is lowered as it appears
                for tid in tids:
                    if tid not in self.reniced:
                        try:
                            os.setpriority(os.PRIO_PROCESS, tid, self.nice)
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
