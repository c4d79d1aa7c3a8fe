"""What every repository adapter gives the install pipeline, and how one is found.

An adapter is a module of this package with:

* ``NAMESPACE`` and ``NAME`` (``"hf"``, ``"Hugging Face Hub"``),
* ``endpoint() -> str``: where it talks to (its environment variable or config key wins),
* ``resolve(ref) -> Resolved``: the ref pinned to an immutable version, with the files the
  repository lists (sizes and digests where it gives them),
* ``select(resolved, fmt, selector, wanted_file) -> Selection``: what to download,
* ``download(ref, resolved, selection, cache_dir, *, quiet) -> {path: local file}``: resumable,
  with progress, each file checked against the digest the repository announced.

``axon_pkg.install`` calls these in that order for every namespace, then converts, packages and
verifies in one place.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from ..errors import RefError

# formats a selection can hold; the converter for each lives in axon_pkg.install
GGUF, ONNX, SAFETENSORS = "gguf", "onnx", "safetensors"
TORCH_STATE_DICT = "pytorch"        # torchvision weights (.pth state dict) -> ONNX
TORCH_HUB_REPO = "pytorch-hub"      # a hubconf.py repo, trusted explicitly -> ONNX
SAVED_MODEL = "savedmodel"          # TensorFlow SavedModel -> ONNX

ADAPTERS = {"hf": "huggingface", "pytorch": "pytorch", "tfhub": "tfhub", "modelscope": "modelscope"}


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None  # the repository's sha256 when it gives one (HF's LFS oid, ModelScope's Sha256)


@dataclass(frozen=True)
class Resolved:
    repo: str
    requested: str
    commit: str            # the immutable version: a commit, a weights file's hash, a Kaggle version
    files: list[RemoteFile]
    info: dict             # license, tags, pipeline tag, library; adapters add their own keys
    source: dict = field(default_factory=dict)   # provenance for the manifest's x-mlos.source


@dataclass(frozen=True)
class Selection:
    format: str  # what was downloaded: gguf | onnx | safetensors | pytorch | pytorch-hub | savedmodel
    files: list[RemoteFile]
    note: str


def adapter_for(namespace: str) -> ModuleType:
    """The adapter module of a namespace (imported on first use: each imports its client lazily)."""
    name = ADAPTERS.get(namespace)
    if name is None:
        raise RefError(f"no repository adapter for namespace {namespace!r}; known: {', '.join(ADAPTERS)}")
    return importlib.import_module(f"{__package__}.{name}")
