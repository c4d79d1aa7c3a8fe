"""The machine and build a run was measured on, and the core process's resource use during it.

``versions()``/``hardware()`` describe the run (axon-py and core versions with the git commit,
kernel-module status as ``python -m kernel_shim status`` reports it, OS, CPU, RAM, GPUs through
NVML where a driver exists, disk); ``ResourceSampler`` samples the core's CPU % and RSS with
psutil in a background thread, each sample labelled with what the run was doing (idle or load).
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _dist(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """HEAD of the checkout, with ``-dirty`` when files differ; "unknown" outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def kernel_status() -> dict:
    """What ``python -m kernel_shim status`` reports, as data: the mode asked for, the device, and
    the backend that mode gets here with the reason. The device is probed (opened and closed), never
    used: opening the userspace backend would start a broker in this process."""
    from kernel_shim.__main__ import _probe_device
    from kernel_shim.device import kernel_mode
    from kernel_shim.errors import ShimError

    device = _probe_device()
    out = {"MLOS_KERNEL": os.environ.get("MLOS_KERNEL", "(unset: auto)"), "device": device,
           "module_loaded": bool(device["present"])}
    try:
        mode = out["mode"] = kernel_mode()
    except ShimError as e:
        return {**out, "backend": None, "reason": str(e)}
    if mode == "off":
        return {**out, "backend": "userspace", "reason": "MLOS_KERNEL=off"}
    if device["opens"]:
        return {**out, "backend": "kernel", "reason": f"MLOS_KERNEL={mode} and {device['path']} opens"}
    why = device["error"] or f"{device['path']} does not exist (module not loaded?)"
    if mode == "on":
        return {**out, "backend": None, "reason": f"MLOS_KERNEL=on but {why}"}
    return {**out, "backend": "userspace", "reason": f"MLOS_KERNEL=auto and {why}"}


def versions() -> dict:
    """Flat name -> version strings (the schema's versions object)."""
    import axon_pkg
    import mlos_core

    pkg = _dist("mlos-py")
    return {"axon": getattr(axon_pkg, "__version__", pkg), "core": getattr(mlos_core, "__version__", pkg),
            "validation": _validation_version(), "git_commit": git_commit(), "python": platform.python_version(),
            **{d: _dist(d) for d in ("onnxruntime", "llama_cpp_python", "torch", "transformers", "optimum-onnx")}}


@functools.lru_cache(maxsize=1)
def versions_cached() -> dict:
    """versions() once per process: git and importlib lookups are not free, and do not change mid-run."""
    return versions()


def _validation_version() -> str:
    from . import __version__

    return __version__


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpus() -> list[dict] | str:
    """GPUs through NVML (the core's own probe); the reason when there is none."""
    from mlos_core.resources import gpus as nvml_gpus

    found = nvml_gpus()
    if found is None:
        return "no NVIDIA GPU visible through NVML (no driver, or nvidia-ml-py not installed)"
    return found


def hardware(path: Path | None = None) -> dict:
    """The schema's hardware fields (os, kernel, cpu_model, cores, threads, ram_bytes, gpus,
    disk_free_bytes), plus what else describes the machine."""
    vm = psutil.virtual_memory()
    disk = shutil.disk_usage(path or Path.home())
    found = gpus()
    return {"os": f"{_os_release()} ({platform.system()})", "kernel": platform.release(),
            "machine": platform.machine(), "cpu_model": _cpu_model(),
            "cores": psutil.cpu_count(logical=False), "threads": psutil.cpu_count(logical=True),
            "ram_bytes": int(vm.total), "ram_available_bytes": int(vm.available),
            "disk_total_bytes": int(disk.total), "disk_free_bytes": int(disk.free),
            "gpus": found if isinstance(found, list) else [], "gpu_note": None if isinstance(found, list) else found,
            "kernel_module": kernel_status()}


# What makes two machines the same class for timing: the instruction set, the CPU model and how
# many of it there are. RAM size, free disk, OS and kernel are recorded but differ between two
# runs of one machine (or are what a release changes), so they do not make a comparison void.
MACHINE_CLASS = ("machine", "cpu_model", "cores", "threads")


def machine_class(hw: dict) -> dict:
    """The MACHINE_CLASS fields of a hardware record (``hardware()``); absent ones are left out."""
    return {k: hw[k] for k in MACHINE_CLASS if isinstance(hw, dict) and hw.get(k) is not None}


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


class ResourceSampler:
    """Samples a process's CPU % and RSS every ``interval`` s in a daemon thread; ``label`` says
    what the run is doing ("idle", "load", ...) and every sample carries the label current when taken."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.proc = psutil.Process(pid)
        self.interval = interval
        self._label = "idle"
        self._lock = threading.Lock()
        self.samples: list[tuple[float, str, float, int]] = []   # (t, label, cpu %, rss)
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{pid}", daemon=True)

    def start(self) -> "ResourceSampler":
        self.proc.cpu_percent(None)   # primes the counter: the first real reading covers one interval
        self._thread.start()
        return self

    @property
    def label(self) -> str:
        return self._label

    @label.setter
    def label(self, new: str) -> None:
        # Close the outgoing phase with a sample of its own: a phase shorter than the interval
        # (a fast model's inferences) would otherwise have none, and its figures would be missing.
        if new != self._label:
            self._sample()
            self._label = new

    def _sample(self) -> bool:
        with self._lock:
            try:
                with self.proc.oneshot():
                    cpu = self.proc.cpu_percent(None)   # since the previous sample: covers the phase's tail
                    rss = self.proc.memory_info().rss
                    rss += sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            except psutil.Error:
                return False              # the process ended
            self.samples.append((time.monotonic() - self._t0, self._label, cpu, rss))
            return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._sample():
                return

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(5)
        return self.summary()

    def summary(self) -> dict:
        """The schema's resources: idle baseline (mean CPU %, peak RSS), peak under load, and every
        sample (seconds since the sampler started)."""
        def rows(label):
            return [s for s in self.samples if s[1] == label]

        idle, load = rows("idle"), rows("load")
        return {
            "idle": {"cpu_percent": round(sum(s[2] for s in idle) / len(idle), 2) if idle else None,
                     "rss_bytes": max(s[3] for s in idle) if idle else None, "samples": len(idle)},
            "load": {"cpu_percent_peak": round(max(s[2] for s in load), 2) if load else None,
                     "cpu_percent_mean": round(sum(s[2] for s in load) / len(load), 2) if load else None,
                     "rss_peak_bytes": max(s[3] for s in load) if load else None, "samples": len(load)},
            "rss_peak_bytes": max((s[3] for s in self.samples), default=None),
            "interval_s": self.interval, "cpu_count": psutil.cpu_count(logical=True),
            "samples": [{"t": round(s[0], 3), "label": s[1], "cpu_percent": s[2], "rss_bytes": s[3]}
                        for s in self.samples],
        }


def wait_idle(sampler: ResourceSampler, seconds: float) -> None:
    """Let the idle core be sampled for ``seconds``."""
    sampler.label = "idle"
    time.sleep(seconds)
