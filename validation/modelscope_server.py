"""A local stand-in for the ModelScope hub, speaking the routes the stock SDK (``modelscope`` 1.40,
through ``modelscope_hub``) calls to list and download a model repo:

* ``GET /api/v1/models/{owner}/{name}/repo/files?Revision=&Recursive=`` -> ``{"Code": 200, "Data":
  {"Files": [{"Name", "Path", "Type": "blob", "Size", "Sha256", "Revision", "IsLFS"}],
  "LatestCommitter": {"Id", "ShortId"}}, "Success": true}``,
* ``GET /api/v1/models/{owner}/{name}/repo?Revision=&FilePath=`` -> the file (``Range`` honoured),
* ``GET /api/v1/models/{owner}/{name}/revisions`` and ``GET /api/v1/models/{owner}/{name}`` (info).

A revision is a branch (``master`` by default), a tag or a commit id. Unknown repos, revisions and
files answer 404 with ModelScope's envelope (``{"Code": 404, "Message", "Success": false}``).
Point ``MODELSCOPE_ENDPOINT`` here.
"""
from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

from .http_stub import StubError, StubServer

__all__ = ["ModelScopeHub"]


def _not_found(message: str) -> StubError:
    return StubError(404, message, {"Code": 404, "Message": message, "Success": False, "RequestId": "local"})


class ModelScopeHub(StubServer):
    server_name = "ModelScopeHub"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__(host, port)
        self.repos: dict[str, dict] = {}   # id -> {"refs": {name: commit}, "commits": {commit: {path: (content, sha, size)}}}
        self._counter = itertools.count(1)

    def commit(self, repo_id: str, files: dict[str, Path | bytes], branch: str = "master") -> str:
        table = {}
        for path, content in files.items():
            data = content if isinstance(content, (bytes, bytearray)) else Path(content).read_bytes()
            table[path] = (content, hashlib.sha256(data).hexdigest(), len(data))
        sha = hashlib.sha1(f"{repo_id}/{branch}/{next(self._counter)}/{sorted((p, v[1]) for p, v in table.items())}"
                           .encode()).hexdigest()
        with self._lock:
            repo = self.repos.setdefault(repo_id, {"refs": {}, "commits": {}})
            repo["commits"][sha] = table
            repo["refs"][branch] = sha
        return sha

    def tag(self, repo_id: str, tag: str, commit: str) -> None:
        with self._lock:
            self.repos[repo_id]["refs"][tag] = commit

    def _lookup(self, repo_id: str, revision: str | None) -> tuple[str, dict]:
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                raise _not_found(f"model {repo_id} not found")
            rev = revision or "master"
            sha = repo["refs"].get(rev) or (rev if rev in repo["commits"] else None)
            if sha is None:
                raise _not_found(f"revision {rev} of {repo_id} not found")
            return sha, repo["commits"][sha]

    def route(self, req) -> None:
        parts = [p for p in req.path_only.split("/") if p]
        if parts[:3] != ["api", "v1", "models"] or len(parts) < 5 or req.method not in ("GET", "HEAD"):
            raise _not_found("not found")
        repo_id, rest = f"{parts[3]}/{parts[4]}", parts[5:]
        q = {k: v[0] for k, v in req.query.items()}
        if rest == ["repo", "files"]:
            sha, files = self._lookup(repo_id, q.get("Revision"))
            listing = [{"Name": p.rsplit("/", 1)[-1], "Path": p, "Type": "blob", "Size": size, "Sha256": digest,
                        "Revision": sha, "IsLFS": size > 1 << 20, "Mode": "33188"}
                       for p, (_, digest, size) in sorted(files.items())]
            return req.send_json(200, {"Code": 200, "Data": {"Files": listing, "LatestCommitter": {
                "Id": sha, "ShortId": sha[:7], "CommitterName": "local"}}, "Message": "success", "Success": True})
        if rest == ["repo"]:
            _, files = self._lookup(repo_id, q.get("Revision"))
            path = q.get("FilePath") or ""
            if path not in files:
                raise _not_found(f"file {path} not found in {repo_id}")
            return req.send_file(files[path][0], path)
        if rest == ["revisions"]:
            with self._lock:
                refs = dict(self._lookup(repo_id, None) and self.repos[repo_id]["refs"])
            return req.send_json(200, {"Code": 200, "Success": True, "Data": {"RevisionMap": {
                "Branches": [{"Revision": n, "CommitId": s} for n, s in refs.items() if n == "master"],
                "Tags": [{"Revision": n, "CommitId": s} for n, s in refs.items() if n != "master"]}}})
        if not rest:
            self._lookup(repo_id, None)
            return req.send_json(200, {"Code": 200, "Success": True, "Data": {"Path": parts[3], "Name": parts[4]}})
        raise _not_found("not found")
