"""A local stand-in for the two places PyTorch Hub models come from, speaking the routes the stock
clients call (``torch.hub.download_url_to_file`` / torchvision's weights URLs, GitHub's API):

* ``GET /models/{file}``: torchvision weights files as ``download.pytorch.org`` serves them
  (``Range`` honoured); point ``AXON_PYTORCH_ENDPOINT`` here,
* ``GET /repos/{owner}/{repo}`` (``default_branch``), ``/repos/{owner}/{repo}/commits/{ref}``
  (``sha``), ``/repos/{owner}/{repo}/zipball/{ref}`` (302 to ``/codeload/{owner}/{repo}/zip/{sha}``,
  a zip with one top directory ``{owner}-{repo}-{sha7}/``, as GitHub's archives are); point
  ``AXON_GITHUB_ENDPOINT`` here.

Unknown files and repos answer 404 with GitHub's ``{"message": "Not Found"}``.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from .http_stub import StubError, StubServer

__all__ = ["PyTorchHub"]


class PyTorchHub(StubServer):
    server_name = "PyTorchHub"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.weights: dict[str, Path | bytes] = {}
        self.repos: dict[str, dict] = {}   # "owner/repo" -> {"default": branch, "refs": {ref: sha}, "zips": {sha: bytes}}

    def add_weights(self, content: Path | bytes, name: str | None = None) -> str:
        """Serve a weights file under ``/models/{name}`` (default: its own file name)."""
        name = name or Path(content).name
        with self._lock:
            self.weights[name] = content
        return name

    def add_repo(self, owner: str, repo: str, files: dict[str, bytes | str], branch: str = "main") -> str:
        """A commit on ``branch`` of ``owner/repo`` holding ``files``; returns its sha."""
        blob = repr(sorted((k, v if isinstance(v, bytes) else v.encode()) for k, v in files.items()))
        sha = hashlib.sha1(f"{owner}/{repo}/{branch}/{blob}".encode()).hexdigest()
        top = f"{owner}-{repo}-{sha[:7]}/"
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(top, "")
            for path, content in sorted(files.items()):
                zf.writestr(top + path, content)
        with self._lock:
            entry = self.repos.setdefault(f"{owner}/{repo}", {"default": branch, "refs": {}, "zips": {}})
            entry["refs"][branch] = sha
            entry["zips"][sha] = buf.getvalue()
        return sha

    def route(self, req) -> None:
        parts = [p for p in req.path_only.split("/") if p]
        if req.method not in ("GET", "HEAD"):
            raise StubError(405, "method not allowed")
        if len(parts) == 2 and parts[0] == "models":
            with self._lock:
                content = self.weights.get(parts[1])
            if content is None:
                raise StubError(404, "Not Found", {"message": "Not Found"})
            return req.send_file(content, parts[1])
        if parts[:1] == ["repos"] and len(parts) >= 3:
            repo = self._repo(parts[1], parts[2])
            if len(parts) == 3:
                return req.send_json(200, {"full_name": f"{parts[1]}/{parts[2]}", "default_branch": repo["default"]})
            if len(parts) == 5 and parts[3] == "commits":
                return req.send_json(200, {"sha": self._sha(repo, parts[4])})
            if len(parts) == 5 and parts[3] == "zipball":
                sha = self._sha(repo, parts[4])
                return req.redirect(f"{self.url}/codeload/{parts[1]}/{parts[2]}/zip/{sha}")
        if parts[:1] == ["codeload"] and len(parts) == 5:
            repo = self._repo(parts[1], parts[2])
            data = repo["zips"].get(parts[4])
            if data is None:
                raise StubError(404, "Not Found", {"message": "Not Found"})
            return req.send_file(data, f"{parts[2]}-{parts[4]}.zip",
                                 {"Content-Type": "application/zip",
                                  "Content-Disposition": f"attachment; filename={parts[1]}-{parts[2]}-{parts[4][:7]}.zip"})
        raise StubError(404, "Not Found", {"message": "Not Found"})

    def _repo(self, owner: str, repo: str) -> dict:
        with self._lock:
            entry = self.repos.get(f"{owner}/{repo}")
        if entry is None:
            raise StubError(404, "Not Found", {"message": "Not Found"})
        return entry

    @staticmethod
    def _sha(repo: dict, ref: str) -> str:
        if ref in repo["refs"]:
            return repo["refs"][ref]
        if ref in repo["zips"]:
            return ref
        raise StubError(422, "No commit found for SHA", {"message": f"No commit found for SHA: {ref}"})
