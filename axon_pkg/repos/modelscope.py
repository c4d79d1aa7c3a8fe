"""The ModelScope adapter (``modelscope/``), on the ``modelscope`` SDK's hub API (``modelscope_hub``).

``@latest`` is the ``master`` branch; any other revision (branch, tag, commit) is passed as it is.
The SDK lists a revision's files with their sizes and sha256, but does not hand its callers the
commit the listing was taken at, so the immutable version is ``files-<16 hex>``: the sha256 of the
sorted ``(path, sha256)`` pairs. The same bytes always make the same package; a branch that moves
makes a new one. The files are chosen as for the Hugging Face Hub (GGUF > ONNX > SafeTensors,
never pickles, with configuration, tokenizer and ModelScope's ``configuration.json``) and
downloaded by the SDK, which resumes and checks each against the listed sha256 (we check again
when packaging). ``MODELSCOPE_ENDPOINT`` (or ``modelscope.endpoint``) is honoured; ``MODELSCOPE_API_TOKEN``
for private repos.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import HubError, IntegrityError
from ..refs import Ref
from .base import RemoteFile, Resolved, Selection
from .huggingface import select_files

NAMESPACE, NAME = "modelscope", "ModelScope"
UPSTREAM = "https://www.modelscope.cn"
EXTRA_SUPPORT = ("configuration.json",)


def endpoint() -> str:
    from .. import config

    return str(config.get("modelscope.endpoint") or UPSTREAM).rstrip("/")


def _api():
    from modelscope_hub.api import HubApi

    return HubApi(endpoint=endpoint(), token=os.environ.get("MODELSCOPE_API_TOKEN") or None)


def _error(e: Exception, ref: Ref, what: str) -> Exception:
    import requests

    text = " ".join(str(e).split())[:300]
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 404 or type(e).__name__ in ("NotExistError", "RepoNotFoundError", "RevisionNotFoundError"):
        return HubError(f"ModelScope at {endpoint()} has no {what}", hint="check the name and the revision")
    if "sha256" in text.lower() or "checksum" in text.lower() or type(e).__name__ == "FileIntegrityError":
        return IntegrityError(f"{what}: {text}", hint="a corrupted download; run the install again")
    if isinstance(e, requests.exceptions.ConnectionError) or type(e).__name__ in ("NetworkError", "ConnectionError"):
        return HubError(f"cannot reach ModelScope at {endpoint()}: {text}",
                        hint="check the network or MODELSCOPE_ENDPOINT")
    return HubError(f"ModelScope answered an error for {what}: {type(e).__name__}: {text}")


def _revision(ref: Ref) -> str:
    return "master" if ref.revision == "latest" else ref.revision


def resolve(ref: Ref) -> Resolved:
    from . import http_download

    http_download.check_reachable(endpoint(), what=NAME)   # the SDK retries a dead host for ~15 s
    revision = _revision(ref)
    try:
        listing = _api().list_repo_files(ref.repo, "model", revision=revision, recursive=True)
    except Exception as e:
        raise _error(e, ref, f"model {ref.repo} at revision {revision!r}") from None
    files = [RemoteFile(f.path, int(f.size) if f.size is not None else None, f.sha256)
             for f in listing if f.type != "tree" and f.path]
    if not files:
        raise HubError(f"model {ref.repo} at {revision!r} lists no files on ModelScope")
    digest = hashlib.sha256("\n".join(f"{f.path}\0{f.sha256 or ''}" for f in sorted(files, key=lambda f: f.path))
                            .encode()).hexdigest()
    version = f"files-{digest[:16]}"
    source = {"hub": "modelscope", "endpoint": endpoint(), "repo": ref.repo, "requested_ref": ref.revision,
              "revision": revision, "resolved_version": version, "files_sha256": digest}
    info = {"license": "", "tags": ["modelscope"], "pipeline_tag": None, "library_name": None}
    return Resolved(ref.repo, ref.revision, version, files, info, source)


def select(resolved: Resolved, fmt: str = "auto", selector: str | None = None,
           wanted_file: str | None = None) -> Selection:
    chosen = select_files(resolved.files, fmt, selector, wanted_file)
    have = {f.path for f in chosen.files}
    extra = [f for f in resolved.files if f.path in EXTRA_SUPPORT and f.path not in have]
    return Selection(chosen.format, [*chosen.files, *extra], chosen.note)


def download(ref: Ref, resolved: Resolved, selection: Selection, cache_dir: Path, *, quiet: bool) -> dict[str, Path]:
    import logging

    revision = resolved.source["revision"]
    wanted = [{"Path": f.path, "Sha256": f.sha256, "Size": f.size, "Type": "blob"} for f in selection.files]
    for name in ("modelscope_hub", "modelscope"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
    try:
        root = _api().download_repo(ref.repo, "model", revision=revision, cache_dir=Path(cache_dir) / "modelscope",
                                    file_list=wanted, max_workers=4)
    except Exception as e:
        raise _error(e, ref, f"the files of {ref.repo} at {revision!r}") from None
    out = {}
    for f in selection.files:
        local = Path(root) / f.path
        if not local.is_file():
            raise HubError(f"{f.path} of {ref.repo} is missing after the download")
        out[f.path] = local
    return out
