"""Model references: ``hf/org/model@latest``, ``hf/org/model@<branch|tag|commit>``,
``hf/org/repo:Q4_K_M`` (a GGUF quantisation selector), ``pytorch/vision/<model>@<weights>``,
``pytorch/<owner>/<repo>:<entry>@<git ref>``, ``tfhub/<TF Hub or Kaggle handle>@<version>``,
``modelscope/<org>/<model>@<revision>``, or a local path."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import RefError

SUPPORTED = {"hf": "Hugging Face Hub (hf/org/model@revision)",
             "pytorch": "PyTorch Hub (pytorch/vision/<model>@<weights>, pytorch/<owner>/<repo>:<entry>)",
             "tfhub": "TensorFlow Hub handles on Kaggle Models (tfhub/<publisher>/<model path>/<version>)",
             "modelscope": "ModelScope (modelscope/org/model@revision)",
             "local": "packages made from local files (axon-py install ./dir)"}
# how many path parts a namespace's repo id has: TF Hub handles are deep
# (google/imagenet/resnet_v2_50/classification/5), Kaggle handles have 4-5 parts
_REPO_PARTS = {"tfhub": (2, 8)}
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
_SELECTOR = re.compile(r"^[A-Za-z0-9._\-]+$")


@dataclass(frozen=True)
class Ref:
    namespace: str
    repo: str  # e.g. "org/model" (hub repo id)
    revision: str = "latest"
    selector: str | None = None

    @property
    def name(self) -> str:
        return self.repo

    @property
    def model_id(self) -> str:
        """The id the MLOS core knows this model by: ``hf/org/model@latest``."""
        return f"{self.namespace}/{self.repo}@{self.revision}"

    def __str__(self) -> str:
        sel = f":{self.selector}" if self.selector else ""
        return f"{self.namespace}/{self.repo}{sel}@{self.revision}"


def is_local(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..") or Path(text).exists()


def parse_ref(text: str) -> Ref:
    if not isinstance(text, str) or not text.strip():
        raise RefError("empty model reference; expected e.g. hf/sentence-transformers/all-MiniLM-L6-v2@latest")
    text = text.strip()
    body, _, revision = text.partition("@")
    if "@" in revision:
        raise RefError(f"{text!r}: more than one '@'")
    revision = revision or "latest"
    if not _REVISION.match(revision) or ".." in revision or len(revision) > 200:
        raise RefError(f"{text!r}: invalid revision {revision!r}")
    selector = None
    if ":" in body:
        body, selector = body.rsplit(":", 1)
        if not _SELECTOR.match(selector):
            raise RefError(f"{text!r}: invalid file selector {selector!r} (e.g. :Q4_K_M)")
    parts = body.split("/")
    namespace = parts[0]
    if namespace not in SUPPORTED:
        raise RefError(
            f"{text!r}: unknown namespace {namespace!r}; supported: "
            + ", ".join(f"{k}/ ({v})" for k, v in SUPPORTED.items())
            + "; or give a local path (./dir, /abs/path)"
        )
    repo_parts = parts[1:]
    low, high = _REPO_PARTS.get(namespace, (1, 2))
    if not low <= len(repo_parts) <= high or not all(_PART.match(p) for p in repo_parts):
        shape = {"tfhub": "tfhub/<publisher>/<model path>[/<version>]"}.get(
            namespace, f"{namespace}/org/model or {namespace}/model")
        raise RefError(f"{text!r}: expected {shape}")
    if namespace == "pytorch" and len(repo_parts) != 2:
        raise RefError(f"{text!r}: expected pytorch/vision/<model> or pytorch/<owner>/<repo>:<entry>")
    if namespace == "pytorch" and repo_parts[0] != "vision" and not selector:
        raise RefError(f"{text!r}: a PyTorch Hub repo needs its entry point: pytorch/<owner>/<repo>:<entry>",
                       hint="the entry points are the functions of the repo's hubconf.py")
    return Ref(namespace, "/".join(repo_parts), revision, selector)
