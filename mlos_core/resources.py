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


def vram() -> dict:
    """GPU memory in the shape of the seeds' offload gateway (``GET /vram``): totals in GB and one
    entry per GPU in MB, from NVML through nvidia-ml-py. Where no NVIDIA driver (or nvidia-ml-py)
    is present, an honest empty answer: no GPUs, zero totals, and a note saying why."""
    import time

    out = {"timestamp": time.time(), "total_gb": 0.0, "used_gb": 0.0, "free_gb": 0.0, "utilization_percent": 0.0,
           "gpus": []}
    try:
        import pynvml
    except ImportError:
        return {**out, "note": "no GPU information: nvidia-ml-py is not installed (pip install nvidia-ml-py)"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded: no NVIDIA GPU here
        return {**out, "note": f"no NVIDIA GPU found: NVML did not start ({e}); models run on the CPU"}
    mib = 2**20
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            try:
                temperature = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
            except Exception:
                temperature = None
            out["gpus"].append({
                "id": i, "name": name.decode() if isinstance(name, bytes) else name,
                "total_mb": round(mem.total / mib, 1), "used_mb": round(mem.used / mib, 1),
                "free_mb": round(mem.free / mib, 1),
                "utilization_percent": float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                "temperature": temperature,
            })
    finally:
        pynvml.nvmlShutdown()
    gpus = out["gpus"]
    if not gpus:
        return {**out, "note": "NVML runs but reports no GPU"}
    total, used = sum(g["total_mb"] for g in gpus), sum(g["used_mb"] for g in gpus)
    out.update(total_gb=round(total / 1024, 2), used_gb=round(used / 1024, 2), free_gb=round((total - used) / 1024, 2),
               utilization_percent=round(sum(g["utilization_percent"] for g in gpus) / len(gpus), 1))
    return out


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
