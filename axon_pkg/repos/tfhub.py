"""The TensorFlow Hub adapter (``tfhub/``), on Kaggle Models through ``kagglehub``.

TF Hub moved to Kaggle Models in November 2023, and Kaggle documents the mapping as the redirect
itself: a ``tfhub.dev/<publisher>/<model path>/<version>`` link answers with its counterpart
``kaggle.com/models/<owner>/<model>/frameworks/<framework>/variations/<variation>/versions/<n>``.
So a TF Hub handle is resolved by asking the redirect service (``tfhub.endpoint``,
``AXON_TFHUB_ENDPOINT``, default ``https://tfhub.dev``) without following it; a Kaggle handle
(``<owner>/<model>/<framework>/<variation>[/<version>]``, recognised by its framework part) is
used as it is. ``@latest`` is the variation's current version number (Kaggle's
``GetModelInstance``); ``@<n>`` a given one. Versions are immutable on Kaggle, so the package
version is ``kaggle-v<n>``.

Files are listed with their sizes (``ListModelInstanceVersionFiles``) and downloaded by
``kagglehub.model_download``, which resumes partial files and checks each against the MD5 the
storage announces (``x-goog-hash``). A SavedModel is converted to ONNX with tf2onnx in the
TensorFlow converter environment. kagglehub reaches Kaggle through kagglesdk, whose endpoint is
chosen by ``KAGGLE_API_ENVIRONMENT`` (and the usual proxy variables); credentials as kagglehub
reads them (``KAGGLE_USERNAME``/``KAGGLE_KEY``, ``~/.kaggle``), needed only for gated models.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import HubError, IntegrityError, SelectionError
from ..refs import Ref
from . import http_download
from .base import GGUF, ONNX, SAVED_MODEL, RemoteFile, Resolved, Selection

NAMESPACE, NAME = "tfhub", "TensorFlow Hub (Kaggle Models)"
UPSTREAM = "https://tfhub.dev"
# Kaggle's framework slugs (kagglesdk ModelFramework), lower-cased: the third part of a Kaggle handle
FRAMEWORKS = {"tensorflow1", "tensorflow2", "tflite", "tfjs", "pytorch", "jax", "flax", "pax", "maxtext",
              "gemmacpp", "ggml", "gguf", "coral", "scikitlearn", "mxnet", "onnx", "keras", "transformers",
              "api", "other", "tensorrtllm", "triton", "vllm"}
_KAGGLE_PATH = re.compile(r"^/models/([^/]+)/([^/]+)/(?:frameworks/)?([^/]+)/(?:variations/)?([^/]+)"
                          r"(?:/(?:versions/)?(\d+))?/?$")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def endpoint() -> str:
    from .. import config

    return str(config.get("tfhub.endpoint") or UPSTREAM).rstrip("/")


def kaggle_handle(ref: Ref) -> tuple[str, int | None, str]:
    """``(owner/model/framework/variation, version or None, how it was found)``."""
    parts = ref.repo.split("/")
    if len(parts) in (4, 5) and parts[2].lower() in FRAMEWORKS:
        version = int(parts[4]) if len(parts) == 5 and parts[4].isdigit() else None
        return "/".join(parts[:4]), version, "a Kaggle handle"
    url = f"{endpoint()}/{ref.repo}"
    resp = http_download.get(url, what="TF Hub's redirect service", allow_redirects=False)
    if resp.status_code == 404:
        raise HubError(f"TF Hub knows no model {ref.repo} ({url} answered 404)",
                       hint="find the model on Kaggle Models and give its handle: tfhub/<owner>/<model>/"
                            "<framework>/<variation>")
    location = resp.headers.get("Location") or ""
    m = _KAGGLE_PATH.match(urlsplit(location).path) if resp.is_redirect else None
    if not m:
        raise HubError(f"{url} did not redirect to a Kaggle model (status {resp.status_code}, "
                       f"Location {location or 'none'})")
    owner, model, framework, variation, version = m.groups()
    return f"{owner}/{model}/{framework}/{variation}", int(version) if version else None, f"redirected from {url}"


def _client_errors(e: Exception, what: str) -> Exception:
    import requests
    from kagglehub.exceptions import DataCorruptionError

    if isinstance(e, DataCorruptionError):
        return IntegrityError(f"{what}: {e}", hint="a corrupted download; run the install again")
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if status == 404:
        return HubError(f"Kaggle Models has no {what}")
    if status in (401, 403):
        return HubError(f"Kaggle refused {what} ({status})", hint="accept the model's terms on Kaggle and set "
                        "KAGGLE_USERNAME/KAGGLE_KEY")
    if isinstance(e, requests.exceptions.RequestException):
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        return HubError(f"cannot reach Kaggle for {what}: {first}", hint="check the network (or KAGGLE_API_ENVIRONMENT)")
    return HubError(f"Kaggle answered an error for {what}: {type(e).__name__}: {str(e)[:300]}")


def _call(fn, what: str):
    try:
        return fn()
    except Exception as e:   # kagglehub/kagglesdk raise requests' and their own classes
        raise _client_errors(e, what) from None


def resolve(ref: Ref) -> Resolved:
    from kagglehub.clients import build_kaggle_client
    from kagglehub.handle import parse_model_handle
    from kagglesdk.models.types.model_api_service import (ApiGetModelInstanceRequest,
                                                          ApiListModelInstanceVersionFilesRequest)

    handle, pinned, how = kaggle_handle(ref)
    h = parse_model_handle(handle)
    if ref.revision != "latest":
        if not ref.revision.isdigit():
            raise HubError(f"Kaggle model versions are numbers, not {ref.revision!r}")
        if pinned is not None and pinned != int(ref.revision):
            raise HubError(f"{ref.repo} means version {pinned} of {handle}, not @{ref.revision}")
        pinned = int(ref.revision)
    with build_kaggle_client() as client:
        api = client.models.model_api_client
        if pinned is None:
            r = ApiGetModelInstanceRequest()
            r.owner_slug, r.model_slug, r.framework, r.instance_slug = h.owner, h.model, h.framework_enum(), h.variation
            pinned = int(_call(lambda: api.get_model_instance(r), f"model {handle}").version_number)
        r = ApiListModelInstanceVersionFilesRequest()
        r.owner_slug, r.model_slug, r.framework, r.instance_slug = h.owner, h.model, h.framework_enum(), h.variation
        r.version_number, r.page_size = pinned, 1000
        listing = _call(lambda: api.list_model_instance_version_files(r), f"version {pinned} of {handle}")
    files = [RemoteFile(f.name, int(f.size) if f.size else None, None) for f in listing.files]
    version = f"kaggle-v{pinned}"
    source = {"hub": "kaggle", "endpoint": endpoint(), "repo": ref.repo, "requested_ref": ref.revision,
              "resolved_version": version, "kaggle_handle": f"{handle}/{pinned}", "mapping": how}
    info = {"license": "", "tags": ["kaggle", h.framework], "pipeline_tag": None, "library_name": h.framework}
    return Resolved(ref.repo, ref.revision, version, files, info, source)


def select(resolved: Resolved, fmt: str = "auto", selector: str | None = None,
           wanted_file: str | None = None) -> Selection:
    paths = [f.path for f in resolved.files]
    if fmt in ("native", "gguf") and not any(p.endswith(".gguf") for p in paths):
        raise SelectionError(f"-f {fmt} does not apply: this Kaggle model holds {', '.join(paths[:8])}")
    if any(p.rsplit("/", 1)[-1] in SAVED_MODEL_FILES for p in paths):
        return Selection(SAVED_MODEL, resolved.files, "TensorFlow SavedModel (converted with tf2onnx)")
    for suffix, kind in ((".gguf", GGUF), (".onnx", ONNX)):
        hits = [f for f in resolved.files if f.path.endswith(suffix)]
        if hits:
            return Selection(kind, resolved.files, f"{kind.upper()} files")
    if any(p.endswith(".tflite") for p in paths):
        raise SelectionError("this variation is a TFLite model, which the core does not serve",
                             hint="choose the model's TensorFlow2 (SavedModel) variation")
    raise SelectionError(f"no SavedModel, ONNX or GGUF in {resolved.source['kaggle_handle']} "
                         f"(files: {', '.join(paths[:10]) or 'none'})")


def download(ref: Ref, resolved: Resolved, selection: Selection, cache_dir: Path, *, quiet: bool) -> dict[str, Path]:
    import logging

    import kagglehub

    handle = resolved.source["kaggle_handle"]
    target = Path(cache_dir) / "kaggle" / handle.replace("/", "--")
    logging.getLogger("kagglehub").setLevel(logging.WARNING if quiet else logging.INFO)
    root = Path(_call(lambda: kagglehub.model_download(handle, output_dir=str(target)), f"the files of {handle}"))
    out = {}
    for f in selection.files:
        local = root / f.path
        if not local.is_file():
            raise HubError(f"{f.path} of {handle} is missing after the download")
        if f.size is not None and local.stat().st_size != f.size:
            raise IntegrityError(f"{f.path} of {handle}: {local.stat().st_size} bytes, Kaggle listed {f.size}")
        out[f.path] = local
    return out
