"""Model references: ``hf/org/model@latest``, ``hf/org/model@<branch|tag|commit>``,
``hf/org/repo:Q4_K_M`` (a GGUF quantisation selector), or a local path."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import RefError

SUPPORTED = {"hf": "Hugging Face Hub (hf/org/model@revision)",
             "local": "packages made from local files (axon-py install ./dir)"}
PLANNED = {"pytorch": "PyTorch Hub", "tfhub": "TensorFlow Hub", "modelscope": "ModelScope"}
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
    if namespace in PLANNED:
        raise RefError(
            f"namespace {namespace!r} ({PLANNED[namespace]}) is not supported yet; supported: "
            + ", ".join(f"{k}/ ({v})" for k, v in SUPPORTED.items())
        )
    if namespace not in SUPPORTED:
        raise RefError(
            f"{text!r}: unknown namespace {namespace!r}; supported: "
            + ", ".join(f"{k}/ ({v})" for k, v in SUPPORTED.items())
            + "; or give a local path (./dir, /abs/path)"
        )
    repo_parts = parts[1:]
    if not 1 <= len(repo_parts) <= 2 or not all(_PART.match(p) for p in repo_parts):
        raise RefError(f"{text!r}: expected {namespace}/org/model or {namespace}/model")
    return Ref(namespace, "/".join(repo_parts), revision, selector)
