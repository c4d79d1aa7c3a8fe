"""llama.cpp's own ``llama-server``, built from the llama.cpp sources vendored in the sdist of the
llama-cpp-python version installed here (so both sides run the same llama.cpp), cached under
``~/.cache/mlos-bench/llama-server-<version>/``. Only the LLM benchmark builds it (about 12 minutes
on 2 cores the first time); ``make test`` never does.

    python -m benchmarks.peers.llama_server          # build if missing, print the binary's path
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

CACHE = Path(os.environ.get("MLOS_BENCH_CACHE", Path.home() / ".cache" / "mlos-bench"))
JOBS = os.environ.get("MLOS_BENCH_BUILD_JOBS", "2")


def _safe_extract(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract refusing absolute paths, ``..`` and links that leave ``dest``."""
    root = dest.resolve()
    for m in tar.getmembers():
        target = (dest / m.name).resolve()
        if not str(target).startswith(str(root) + os.sep):
            raise RuntimeError(f"sdist member escapes the extraction dir: {m.name}")
        if (m.issym() or m.islnk()) and not str((target.parent / m.linkname).resolve()).startswith(str(root)):
            raise RuntimeError(f"sdist link escapes the extraction dir: {m.name} -> {m.linkname}")
    tar.extractall(dest, filter="data") if hasattr(tarfile, "data_filter") else tar.extractall(dest)


def sdist_dir(ver: str) -> Path:
    """The unpacked llama-cpp-python sdist of ``ver`` (downloaded with pip, once)."""
    out = CACHE / f"llama_cpp_python-{ver}"
    if (out / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return out
    dl = CACHE / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    tgz = next(iter(dl.glob(f"llama_cpp_python-{ver}.tar.gz")), None)
    if tgz is None:
        subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={ver}", "--no-binary", ":all:",
                        "--no-deps", "-d", str(dl)], check=True)
        tgz = next(dl.glob(f"llama_cpp_python-{ver}.tar.gz"))
    tmp = CACHE / f".extract-{ver}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tgz) as tar:
        _safe_extract(tar, tmp)
    (inner,) = list(tmp.iterdir())
    shutil.rmtree(out, ignore_errors=True)
    os.replace(inner, out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure_llama_server(ver: str | None = None) -> Path:
    """The path of a built ``llama-server`` for llama-cpp-python ``ver`` (default: installed)."""
    ver = ver or version("llama-cpp-python")
    binary = CACHE / f"llama-server-{ver}" / "llama-server"
    if binary.exists():
        return binary
    src = sdist_dir(ver) / "vendor" / "llama.cpp"
    build = CACHE / f"build-llama-server-{ver}"
    # the recipe of DESIGN.md: a generic x86-64 build (as the project's llama-cpp-python wheel), no curl
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DGGML_NATIVE=OFF", "-DLLAMA_CURL=OFF",
                    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", JOBS], check=True)
    built = next(build.rglob("bin/llama-server"))
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(".tmp")
    shutil.copy2(built, tmp)
    os.replace(tmp, binary)
    return binary


if __name__ == "__main__":
    print(ensure_llama_server(sys.argv[1] if len(sys.argv) > 1 else None))
