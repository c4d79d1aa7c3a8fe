"""Machine resources: CPU and RAM through psutil, GPUs through NVML where a driver exists."""
from __future__ import annotations

import os
import platform

import psutil


def gpus() -> list[dict] | None:
    """One entry per NVIDIA GPU, or None where NVML (the driver or nvidia-ml-py) is absent."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU here
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            util = pynvml.nvmlDeviceGetUtilizationRates(h)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else name,
                "memory_total_bytes": mem.total,
                "memory_used_bytes": mem.used,
                "utilization_percent": util.gpu,
            })
        return out
    finally:
        pynvml.nvmlShutdown()


def system_resources() -> dict:
    vm = psutil.virtual_memory()
    proc = psutil.Process()
    with proc.oneshot():
        rss = proc.memory_info().rss
        threads = proc.num_threads()
        cpu_proc = proc.cpu_percent(interval=None)
    out = {
        "cpu": {
            "model": _cpu_model(),
            "logical_cores": psutil.cpu_count(logical=True),
            "physical_cores": psutil.cpu_count(logical=False),
            "percent": psutil.cpu_percent(interval=None),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "memory": {"total_bytes": vm.total, "available_bytes": vm.available, "used_bytes": vm.used, "percent": vm.percent},
        "process": {"pid": proc.pid, "rss_bytes": rss, "threads": threads, "cpu_percent": cpu_proc},
        "platform": {"system": platform.system(), "release": platform.release(), "python": platform.python_version()},
    }
    found = gpus()
    if found is not None:
        out["gpus"] = found
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
