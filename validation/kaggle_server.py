"""A local stand-in for Kaggle Models and the TF Hub redirect service, speaking what the stock
``kagglehub`` (1.0, through ``kagglesdk``) sends and what ``tfhub.dev`` answers:

* ``POST /api/v1/models.ModelApiService/GetModelInstance`` (``{"versionNumber"}``),
  ``.../ListModelInstanceVersionFiles`` (``{"files": [{"name", "size"}], "nextPageToken": ""}``),
  ``.../DownloadModelInstanceVersion`` with a ``path`` (302 to ``/storage/...``, which serves the
  bytes with ``x-goog-hash: md5=<base64>`` and ``Accept-Ranges: bytes``, as Google Cloud Storage
  does, so kagglehub resumes and checks them). Bodies are kagglesdk's JSON (``ownerSlug``,
  ``modelSlug``, ``framework`` as ``MODEL_FRAMEWORK_*``, ``instanceSlug``, ``versionNumber``, ``path``);
  errors are ``{"code": 404, "message"}``, which kagglesdk raises as HTTP errors.
* ``GET /{tfhub handle}``: 302 to ``https://www.kaggle.com/models/{owner}/{model}/frameworks/
  {framework}/variations/{variation}/versions/{n}``, as tfhub.dev redirects its links.

kagglesdk has no endpoint setting beyond ``KAGGLE_API_ENVIRONMENT``; with ``LOCALHOST`` it calls
``http://localhost/api/v1/...``, and ``HTTP_PROXY`` pointing here brings those requests to this
server unchanged (absolute-form request targets), which is how the tests reach it.
"""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from .http_stub import StubError, StubServer

__all__ = ["KaggleModels", "framework_enum"]
SERVICE = "/api/v1/models.ModelApiService/"


def framework_enum(slug: str) -> str:
    """``tensorFlow2`` -> ``MODEL_FRAMEWORK_TENSOR_FLOW_2`` (kagglesdk's enum names)."""
    return "MODEL_FRAMEWORK_" + re.sub(r"(?<=[a-z])(?=[A-Z0-9])", "_", slug).upper()


class KaggleModels(StubServer):
    server_name = "KaggleModels"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.models: dict[tuple, dict[int, dict[str, Path | bytes]]] = {}
        self.redirects: dict[str, str] = {}

    def add_model(self, handle: str, version: int, files: dict[str, Path | bytes]) -> None:
        """``handle`` = ``owner/model/framework/variation``; files: path in the variation -> content."""
        owner, model, framework, variation = handle.split("/")
        with self._lock:
            self.models.setdefault((owner, model, framework_enum(framework), variation), {})[version] = dict(files)

    def add_tfhub_redirect(self, tfhub_handle: str, kaggle_handle: str, version: int) -> None:
        owner, model, framework, variation = kaggle_handle.split("/")
        with self._lock:
            self.redirects[tfhub_handle.strip("/")] = (
                f"https://www.kaggle.com/models/{owner}/{model}/frameworks/{framework}/variations/{variation}"
                f"/versions/{version}")

    def route(self, req) -> None:
        path = req.path_only
        if req.method == "POST" and path.startswith(SERVICE):
            return self._api(req, path[len(SERVICE):], req.json_body())
        if req.method in ("GET", "HEAD") and path.startswith("/storage/"):
            return self._storage(req, path[len("/storage/"):])
        if req.method in ("GET", "HEAD"):
            with self._lock:
                target = self.redirects.get(path.strip("/"))
            if target:
                return req.redirect(target, 302)
        raise StubError(404, "Not found", {"code": 404, "message": "Not found"})

    def _versions(self, body: dict) -> dict:
        key = (body.get("ownerSlug"), body.get("modelSlug"), body.get("framework"), body.get("instanceSlug"))
        with self._lock:
            versions = self.models.get(key)
        if not versions:
            raise StubError(404, "Model instance not found", {"code": 404, "message": "Model instance not found"})
        return versions

    def _files(self, body: dict) -> dict:
        versions = self._versions(body)
        files = versions.get(int(body.get("versionNumber") or 0))
        if files is None:
            raise StubError(404, "Version not found", {"code": 404, "message": "Model instance version not found"})
        return files

    def _api(self, req, method: str, body: dict) -> None:
        if method == "GetModelInstance":
            versions = self._versions(body)
            return req.send_json(200, {"slug": body.get("instanceSlug"), "framework": body.get("framework"),
                                       "versionNumber": max(versions)})
        if method == "ListModelInstanceVersionFiles":
            files = self._files(body)
            return req.send_json(200, {"files": [{"name": p, "size": _size(c)} for p, c in sorted(files.items())],
                                       "nextPageToken": ""})
        if method == "DownloadModelInstanceVersion":
            files = self._files(body)
            path = body.get("path")
            if not path:
                raise StubError(400, "this stand-in serves files one by one", {"code": 400, "message": "no path"})
            if path not in files:
                raise StubError(404, "File not found", {"code": 404, "message": f"File {path} not found"})
            key = "/".join([body["ownerSlug"], body["modelSlug"], body["framework"], body["instanceSlug"],
                            str(body["versionNumber"]), path])
            return req.redirect(f"http://{req.headers.get('Host') or 'localhost'}/storage/{key}")
        raise StubError(404, "Unknown method", {"code": 404, "message": f"unknown method {method}"})

    def _storage(self, req, key: str) -> None:
        owner, model, framework, variation, version, path = key.split("/", 5)
        files = self._files({"ownerSlug": owner, "modelSlug": model, "framework": framework,
                             "instanceSlug": variation, "versionNumber": version})
        content = files.get(path)
        if content is None:
            raise StubError(404, "No such object", {"code": 404, "message": "No such object"})
        data = content if isinstance(content, (bytes, bytearray)) else Path(content).read_bytes()
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        return req.send_file(data, path, {"x-goog-hash": f"crc32c=AAAAAA==,md5={md5}"})


def _size(content) -> int:
    return len(content) if isinstance(content, (bytes, bytearray)) else Path(content).stat().st_size
