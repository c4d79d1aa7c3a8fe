"""llama.cpp's own SafeTensors -> GGUF converter, as the installed llama-cpp-python ships it.

``convert_hf_to_gguf.py``, its ``conversion/`` package and ``gguf-py/`` are in the llama-cpp-python
*sdist* (``vendor/llama.cpp/``), not in the wheel, and not in PyPI's ``gguf`` package. So the sdist
of exactly the installed version is fetched once with pip (``pip download llama-cpp-python==<v>
--no-binary :all: --no-deps``: pip checks the file against PyPI's digest), and those three paths
are extracted, regular files only, into the tools cache::

    <AXON_TOOLS_DIR or $AXON_HOME/tools>/llama.cpp-convert/<version>/
        convert_hf_to_gguf.py  conversion/  gguf-py/  PROVENANCE.json

``PROVENANCE.json`` records the sdist's name and sha256 and the llama.cpp commit it vendors (the
submodule HEAD the sdist carries). ``AXON_LLAMA_CPP_SDIST=<path of the .tar.gz>`` uses a local
sdist instead of pip (an offline machine); its version must still be the installed one. A fetch
happens under a lock, into a temporary directory renamed into place when complete.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import AxonError

DIST = "llama-cpp-python"
_WANTED = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")
_COMMIT_FILE = ".git/modules/vendor/llama.cpp/HEAD"
_MAX_MEMBER = 64 * 2**20   # no file of the converter is near this; a bigger one is not what we expect


class ConverterUnavailable(AxonError):
    """llama.cpp's converter cannot be obtained or run here; the message says why."""


@dataclass(frozen=True)
class Converter:
    root: Path                # holds convert_hf_to_gguf.py, conversion/, gguf-py/
    version: str              # llama-cpp-python's
    llama_cpp_commit: str     # the llama.cpp commit the sdist vendors ("" when the sdist does not say)
    sdist: str
    sdist_sha256: str

    @property
    def script(self) -> Path:
        return self.root / "convert_hf_to_gguf.py"

    def describe(self) -> str:
        commit = f" (llama.cpp {self.llama_cpp_commit[:12]})" if self.llama_cpp_commit else ""
        return f"{DIST} {self.version}{commit}"

    def architectures(self) -> dict[str, str]:
        """The Hugging Face architectures the converter knows -> its module, read from the
        source (``conversion/__init__.py``'s TEXT_MODEL_MAP) without importing torch."""
        tree = ast.parse((self.root / "conversion" / "__init__.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            target = node.target if isinstance(node, ast.AnnAssign) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if isinstance(target, ast.Name) and target.id == "TEXT_MODEL_MAP" and node.value is not None:
                return dict(ast.literal_eval(node.value))
        raise ConverterUnavailable(f"{self.root}: conversion/__init__.py has no TEXT_MODEL_MAP; "
                                   f"this converter's layout is not one axon-py knows")


def installed_version() -> str | None:
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        return None


def tools_dir() -> Path:
    from .store import axon_home

    return Path(os.environ.get("AXON_TOOLS_DIR") or axon_home() / "tools").expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _download_sdist(version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", f"{DIST}=={version}", "--no-binary", ":all:", "--no-deps",
           "--disable-pip-version-check", "-q", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise ConverterUnavailable(f"pip did not download the {DIST} {version} sdist within 30 minutes") from None
    found = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or not found:
        tail = " | ".join(ln.strip() for ln in (proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ConverterUnavailable(
            f"pip could not download the {DIST} {version} sdist (llama.cpp's converter is only in it): {tail}",
            hint="on a machine without PyPI, set AXON_LLAMA_CPP_SDIST to a downloaded "
                 f"llama_cpp_python-{version}.tar.gz")
    return found[0]


def _extract(sdist: Path, version: str, dest: Path) -> str:
    """The converter's files into ``dest``; returns the vendored llama.cpp commit ('' if absent).
    Only regular files under the wanted paths are written, by name checked to stay inside."""
    commit = ""
    with tarfile.open(sdist, "r:gz") as tar:
        top = None
        for m in tar:
            parts = PurePosixPath(m.name).parts
            if not parts or m.name.startswith("/") or ".." in parts:
                raise ConverterUnavailable(f"{sdist.name}: refused: member {m.name!r} leaves the archive")
            top = top or parts[0]
            rel = "/".join(parts[1:])
            if rel == _COMMIT_FILE and m.isfile():
                commit = tar.extractfile(m).read(100).decode("ascii", "replace").strip()
                continue
            if not m.isfile() or not any(rel == w or rel.startswith(w) for w in _WANTED):
                continue
            if m.size > _MAX_MEMBER:
                raise ConverterUnavailable(f"{sdist.name}: refused: {rel} is {m.size} bytes")
            out = dest / rel.removeprefix("vendor/llama.cpp/")
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src, open(out, "wb") as f:
                shutil.copyfileobj(src, f)
        if top != f"llama_cpp_python-{version}":
            raise ConverterUnavailable(f"{sdist.name} is not the {DIST} {version} sdist (it holds {top!r})")
    if not (dest / "convert_hf_to_gguf.py").is_file() or not (dest / "gguf-py" / "gguf").is_dir():
        raise ConverterUnavailable(f"{sdist.name} holds no vendor/llama.cpp/convert_hf_to_gguf.py and gguf-py")
    return commit if len(commit) == 40 and all(c in "0123456789abcdef" for c in commit) else ""


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load(root: Path) -> Converter:
    info = json.loads((root / "PROVENANCE.json").read_text(encoding="utf-8"))
    return Converter(root, info["version"], info.get("llama_cpp_commit", ""), info["sdist"], info["sdist_sha256"])


def converter(progress=lambda s: None) -> Converter:
    """llama.cpp's converter for the installed llama-cpp-python, fetched once into the tools cache."""
    version = installed_version()
    if version is None:
        raise ConverterUnavailable(f"{DIST} is not installed: GGUF conversion uses the converter of the "
                                   "llama.cpp it binds", hint="install the 'gguf' extra")
    base = tools_dir() / "llama.cpp-convert"
    root = base / version
    if (root / "PROVENANCE.json").is_file():
        return _load(root)
    with _locked(base / f".{version}.lock"):
        if (root / "PROVENANCE.json").is_file():   # another process fetched it meanwhile
            return _load(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=base))
        try:
            local = os.environ.get("AXON_LLAMA_CPP_SDIST")
            if local:
                sdist = Path(local).expanduser()
                if not sdist.is_file():
                    raise ConverterUnavailable(f"AXON_LLAMA_CPP_SDIST={local}: no such file")
            else:
                progress(f"fetching llama.cpp's converter: the {DIST} {version} sdist, once")
                sdist = _download_sdist(version, tmp / "download")
            files = tmp / "files"
            commit = _extract(sdist, version, files)
            info = {"version": version, "llama_cpp_commit": commit, "sdist": sdist.name,
                    "sdist_sha256": _sha256(sdist)}
            (files / "PROVENANCE.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            os.replace(files, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(root)
