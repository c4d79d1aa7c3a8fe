"""A local stand-in for the Hugging Face Hub, speaking the parts of its HTTP protocol that the stock
``huggingface_hub`` client (0.36) uses for model repos:

* ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (model info; ``?blobs=true``
  adds sizes / blob ids / LFS info to ``siblings``; ``?expand=...`` filters the properties),
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``, paginated with a GitHub
  style ``Link: <...>; rel="next"`` header, ``tree_page_size`` entries a page),
* ``POST /api/models/{repo}/paths-info/{rev}``, ``GET /api/models/{repo}/refs``,
  ``GET /api/models/{repo}/commits/{rev}``,
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}``: small files are served directly; "LFS" files get a
  302 to ``/cdn/{sha256}?repo=..&file=..`` (absolute URL on this server) carrying ``X-Linked-Etag``
  (quoted sha256) and ``X-Linked-Size``, as the real Hub does,
* ``GET /cdn/{sha256}``: the bytes, streamed from disk, with ``Range`` support (206 + Content-Range).

Errors carry ``X-Error-Code`` (``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``) so the client
raises its own exception classes. No ``X-Xet-*`` header is ever sent, so the client uses plain HTTP.

The server is a ``ThreadingHTTPServer`` (one thread a connection, HTTP/1.1 keep-alive) on 127.0.0.1 and
a free port, run in a daemon thread: ``hub = LocalHub().start(); ...; hub.stop()``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = ["LocalHub", "Blob", "is_lfs_path", "LFS_THRESHOLD", "LFS_EXTENSIONS"]

#: files larger than this, or with one of these extensions, are stored as "LFS" files
LFS_THRESHOLD = 1 << 20
LFS_EXTENSIONS = (
    ".safetensors", ".gguf", ".onnx", ".bin", ".h5", ".msgpack", ".pt", ".pth", ".ckpt", ".pkl",
    ".pickle", ".ot", ".tflite", ".npy", ".npz", ".tar", ".gz", ".zip", ".7z", ".mlmodel", ".joblib",
)
CHUNK = 1 << 20
_HEX40 = re.compile(r"^[0-9a-f]{40}$")

# sha256 / git-sha1 of files on disk, keyed by (path, size, mtime_ns): a 90 MB blob is hashed once.
_hash_cache: dict[tuple, tuple[str, str | None]] = {}
_hash_lock = threading.Lock()


def is_lfs_path(path: str, size: int) -> bool:
    return size > LFS_THRESHOLD or path.lower().endswith(LFS_EXTENSIONS)


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Blob:
    """One file's content (in memory or on disk) and its hashes."""

    size: int
    sha256: str
    oid: str  # git blob id: of the content, or for LFS files of the LFS pointer file
    lfs: bool
    data: bytes | None = None
    path: Path | None = None
    pointer_size: int | None = None

    @classmethod
    def make(cls, repo_path: str, content: bytes | bytearray | str | os.PathLike) -> "Blob":
        if isinstance(content, (bytes, bytearray)):
            data = bytes(content)
            lfs = is_lfs_path(repo_path, len(data))
            blob = cls(size=len(data), sha256=hashlib.sha256(data).hexdigest(), oid="", lfs=lfs, data=data)
            if not lfs:
                blob.oid = _git_blob_sha1(data)
        else:
            p = Path(content).resolve()
            st = p.stat()
            lfs = is_lfs_path(repo_path, st.st_size)
            key = (str(p), st.st_size, st.st_mtime_ns, lfs)
            with _hash_lock:
                cached = _hash_cache.get(key)
            if cached is None:
                h256 = hashlib.sha256()
                h1 = None if lfs else hashlib.sha1(b"blob %d\0" % st.st_size)
                with open(p, "rb") as f:
                    while chunk := f.read(CHUNK):
                        h256.update(chunk)
                        if h1 is not None:
                            h1.update(chunk)
                cached = (h256.hexdigest(), h1.hexdigest() if h1 is not None else None)
                with _hash_lock:
                    _hash_cache[key] = cached
            blob = cls(size=st.st_size, sha256=cached[0], oid=cached[1] or "", lfs=lfs, path=p)
        if blob.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.sha256}\nsize {blob.size}\n".encode()
            blob.oid = _git_blob_sha1(pointer)
            blob.pointer_size = len(pointer)
        return blob

    def open(self):
        if self.data is not None:
            import io
            return io.BytesIO(self.data)
        return open(self.path, "rb")

    def lfs_json(self, oid_key: str = "oid") -> dict:
        return {oid_key: self.sha256, "size": self.size, "pointerSize": self.pointer_size}


@dataclass
class Commit:
    sha: str
    files: dict[str, Blob]
    message: str
    date: str
    parent: str | None


@dataclass
class Repo:
    repo_id: str
    created_at: str = field(default_factory=_now_iso)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # overrides of model-info fields (see LocalHub.set_info)

    def resolve(self, revision: str) -> Commit | None:
        rev = revision
        for prefix, table in (("refs/heads/", self.branches), ("refs/tags/", self.tags)):
            if rev.startswith(prefix) and rev[len(prefix):] in table:
                return self.commits[table[rev[len(prefix):]]]
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        if rev in self.tags:
            return self.commits[self.tags[rev]]
        if _HEX40.match(rev) and rev in self.commits:
            return self.commits[rev]
        return None


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class LocalHub:
    """An in-process fake of huggingface.co. Thread-safe; repos live in memory, file contents are
    given as bytes or as paths (streamed from disk, never loaded whole)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._port = port
        self.url = ""
        self.repos: dict[str, Repo] = {}
        self.requests: list[dict] = []
        self.tree_page_size = 1000  # entries a page of /tree (lower it to exercise pagination)
        self._lock = threading.RLock()
        self._interrupts: dict[tuple[str, str], list[int]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "LocalHub":
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        server = ThreadingHTTPServer((self.host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self.url = f"http://{self.host}:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"LocalHub{server.server_address[1]}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- content --------------------------------------------------------------------------
    def commit(self, repo_id: str, files: dict[str, bytes | os.PathLike], *, branch: str = "main",
               message: str = "", parent_files: bool = True, delete: list[str] | tuple = ()) -> str:
        """Make a new commit on ``branch`` (a new branch forks from ``main``; on top of the previous
        files when ``parent_files``) holding ``files`` (repo path -> bytes or a file path), minus ``delete``.
        Creates the repo if new. Returns the 40-hex commit sha."""
        blobs = {p.strip("/"): Blob.make(p, c) for p, c in files.items()}
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                repo = self.repos[repo_id] = Repo(repo_id)
            parent = repo.branches.get(branch, repo.branches.get("main"))  # a new branch forks from main
            merged = dict(repo.commits[parent].files) if (parent and parent_files) else {}
            merged.update(blobs)
            for p in delete:
                merged.pop(p.strip("/"), None)
            # the repo's own commit count, not a hub-wide counter: the same files published in
            # another run (or another order) get the same sha, so a revision names its content
            seed = json.dumps([repo_id, branch, parent, message, len(repo.commits),
                               sorted((p, b.oid) for p, b in merged.items())])
            sha = hashlib.sha1(seed.encode()).hexdigest()
            repo.commits[sha] = Commit(sha, merged, message or f"Upload {len(blobs)} files", _now_iso(), parent)
            repo.branches[branch] = sha
            return sha

    def _commit_of(self, repo_id: str, rev: str) -> tuple[Repo, str]:
        repo = self.repos[repo_id]
        target = repo.resolve(rev)
        if target is None:
            raise KeyError(f"{repo_id}: no revision {rev!r}")
        return repo, target.sha

    def tag(self, repo_id: str, tag: str, sha: str) -> None:
        with self._lock:
            repo, commit = self._commit_of(repo_id, sha)
            repo.tags[tag] = commit

    def branch(self, repo_id: str, branch: str, sha: str) -> None:
        """Point ``branch`` at an existing commit (creating it or moving it, e.g. a rollback)."""
        with self._lock:
            repo, commit = self._commit_of(repo_id, sha)
            repo.branches[branch] = commit

    def delete_repo(self, repo_id: str) -> None:
        with self._lock:
            self.repos.pop(repo_id, None)

    def set_info(self, repo_id: str, **fields) -> None:
        """Override model-info fields of a repo (e.g. ``pipeline_tag=``, ``tags=``, ``gated="auto"``,
        ``library_name=``); the value ``None`` removes the field from the answer."""
        with self._lock:
            self.repos[repo_id].info.update(fields)

    def interrupt_next_download(self, repo_id: str, path: str, after_bytes: int) -> None:
        """The next GET of that file's bytes (resolve for small files, the CDN URL for LFS ones) sends
        ``after_bytes`` bytes of the body and then drops the connection."""
        with self._lock:
            self._interrupts.setdefault((repo_id, path.strip("/")), []).append(after_bytes)

    def _take_interrupt(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            pending = self._interrupts.get((repo_id, path))
            if pending:
                n = pending.pop(0)
                if not pending:
                    del self._interrupts[(repo_id, path)]
                return n
        return None

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def log_for(self, path_contains: str = "", method: str | None = None) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if path_contains in r["path"] and (method is None or r["method"] == method)]

    # ---- request helpers (called from handler threads) ---------------------------------------
    def _repo_and_commit(self, repo_id: str, revision: str) -> tuple[Repo, Commit]:
        with self._lock:
            repo = self.repos.get(repo_id)
            if repo is None:
                raise HubError(404, "RepoNotFound", "Repository not found")
            commit = repo.resolve(revision)
            if commit is None:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return repo, commit

    def _split_repo(self, segs: list[str]) -> tuple[str, list[str]]:
        """``segs`` = path segments after the prefix; repo ids are ``name`` or ``owner/name``."""
        with self._lock:
            if len(segs) >= 2 and f"{segs[0]}/{segs[1]}" in self.repos:
                return f"{segs[0]}/{segs[1]}", segs[2:]
            if segs and segs[0] in self.repos:
                return segs[0], segs[1:]
        # unknown repo: guess the shape for the error message
        keywords = {"revision", "tree", "refs", "resolve", "paths-info", "commits"}
        if len(segs) >= 2 and segs[1] not in keywords:
            return f"{segs[0]}/{segs[1]}", segs[2:]
        return (segs[0] if segs else ""), segs[1:]

    def _model_info(self, repo: Repo, commit: Commit, blobs: bool, expand: list[str]) -> dict:
        files = commit.files
        siblings = []
        for p in sorted(files):
            s = {"rfilename": p}
            if blobs:
                b = files[p]
                s.update(size=b.size, blobId=b.oid)
                if b.lfs:
                    s["lfs"] = b.lfs_json("sha256")
            siblings.append(s)
        config = _read_json(files.get("config.json"))
        card = _card_data(files.get("README.md"))
        tags: list[str] = []
        library = None
        if "modules.json" in files:
            library = "sentence-transformers"
        elif "config.json" in files:
            library = "transformers"
        elif any(p.endswith(".gguf") for p in files):
            library = None
        for p, tag in ((".safetensors", "safetensors"), (".gguf", "gguf"), (".onnx", "onnx"),
                       ("pytorch_model.bin", "pytorch"), ("tf_model.h5", "tf"), ("flax_model.msgpack", "jax")):
            if any(f.endswith(p) for f in files) and tag not in tags:
                tags.append(tag)
        if library and library not in tags:
            tags.insert(0, library)
        arch = (config or {}).get("architectures") or []
        model_type = (config or {}).get("model_type")
        if model_type and model_type not in tags:
            tags.append(model_type)
        pipeline = _pipeline_from(arch, library)
        if isinstance(card, dict):
            library = card.get("library_name", library)
            pipeline = card.get("pipeline_tag", pipeline)
            for t in (card.get("tags") or []):
                if t not in tags:
                    tags.append(t)
            if card.get("license"):
                tags.append(f"license:{card['license']}")
        info = {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "library_name": library,
            "pipeline_tag": pipeline,
            "tags": tags,
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(b.size for b in files.values()),
        }
        if config is not None:
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
        if card is not None:
            info["cardData"] = card
        for k, v in repo.info.items():
            if v is None:
                info.pop(k, None)
            else:
                info[k] = v
        if expand:
            info = {k: v for k, v in info.items() if k in expand or k in ("_id", "id")}
        return {k: v for k, v in info.items() if v is not None or k in ("library_name", "pipeline_tag")}

    @staticmethod
    def _tree_entries(commit: Commit, path: str, recursive: bool, expand: bool) -> list[dict]:
        files = commit.files
        prefix = f"{path}/" if path else ""
        if path and path not in {d for p in files for d in _parents(p)}:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on this revision", commit.sha)
        dirs: set[str] = set()
        out_files: list[str] = []
        for p in files:
            if not p.startswith(prefix):
                continue
            rest = p[len(prefix):]
            parts = rest.split("/")
            if recursive:
                out_files.append(p)
                for i in range(1, len(parts)):
                    dirs.add(prefix + "/".join(parts[:i]))
            elif len(parts) == 1:
                out_files.append(p)
            else:
                dirs.add(prefix + parts[0])
        last_commit = {"id": commit.sha, "title": commit.message, "date": commit.date}
        entries: list[dict] = []
        for d in sorted(dirs):
            e = {"type": "directory", "oid": hashlib.sha1(f"tree {commit.sha} {d}".encode()).hexdigest(), "size": 0, "path": d}
            if expand:
                e["lastCommit"] = last_commit
            entries.append(e)
        for p in sorted(out_files):
            b = files[p]
            e = {"type": "file", "oid": b.oid, "size": b.size, "path": p}
            if b.lfs:
                e["lfs"] = b.lfs_json("oid")
            if expand:
                e["lastCommit"] = last_commit
                pickle = p.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))
                e["securityFileStatus"] = {
                    "status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": {"highestSafetyLevel": "innocuous", "imports": []} if pickle else None,
                }
            entries.append(e)
        return entries


def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _read_json(blob: Blob | None):
    if blob is None or blob.size > 10 << 20:
        return None
    try:
        with blob.open() as f:
            return json.loads(f.read())
    except (ValueError, OSError):
        return None


def _card_data(blob: Blob | None):
    if blob is None or blob.size > 1 << 20:
        return None
    with blob.open() as f:
        text = f.read().decode("utf-8", "replace")
    m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, re.S)
    if not m:
        return None
    try:
        import yaml
        data = yaml.safe_load(m.group(1))
    except Exception:
        return None
    return data if isinstance(data, dict) else None


def _pipeline_from(architectures: list[str], library: str | None) -> str | None:
    if library == "sentence-transformers":
        return "sentence-similarity"
    for a in architectures:
        if a.endswith("ForSequenceClassification"):
            return "text-classification"
        if a.endswith("ForTokenClassification"):
            return "token-classification"
        if a.endswith(("ForCausalLM", "LMHeadModel")):
            return "text-generation"
        if a.endswith("ForMaskedLM"):
            return "fill-mask"
        if a.endswith("ForQuestionAnswering"):
            return "question-answering"
        if a.endswith("ForConditionalGeneration"):
            return "text2text-generation"
        if a.endswith("Model"):
            return "feature-extraction"
    return None


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """-> (start, end inclusive), None for no/ignored range, "bad" for unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or garbage: ignore, send 200
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:
        n = int(m.group(2))
        start, end = max(0, size - n), size - 1
    end = min(end, size - 1)
    if start >= size or start > end:
        return "bad"
    return start, end


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"
    server_version = "LocalHub/1.0"
    timeout = 60  # idle keep-alive connections end after this

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ---- plumbing -----------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self._entry = {
            "method": method, "path": unquote(split.path), "raw_path": split.path, "query": split.query,
            "headers": {k: self.headers[k] for k in ("Range", "Accept-Encoding", "Authorization", "User-Agent")
                        if self.headers.get(k) is not None},
            "range": self.headers.get("Range"), "status": None,
        }
        with self.hub._lock:
            self.hub.requests.append(self._entry)
        body = b""
        if method == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        try:
            self._route(method, split.path, parse_qs(split.query, keep_blank_values=True), body)
        except HubError as e:
            headers = {"X-Error-Code": e.code, "X-Error-Message": e.message} if e.code else {"X-Error-Message": e.message}
            if e.commit:
                headers["X-Repo-Commit"] = e.commit
            self._json(e.status, {"error": e.message}, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug in the fake hub: answer 500 rather than hang the client
            try:
                self._json(500, {"error": f"LocalHub internal error: {e!r}"})
            except OSError:
                self.close_connection = True
            raise

    def _send_head(self, status: int, headers: dict) -> None:
        self._entry["status"] = status
        self.send_response(status)
        for k, v in headers.items():
            if v is not None:
                self.send_header(k, str(v))
        self.end_headers()

    def _json(self, status: int, payload, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self._send_head(status, {"Content-Type": "application/json; charset=utf-8", "Content-Length": len(data),
                                 **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(data)

    # ---- routes -------------------------------------------------------------------------------
    def _route(self, method: str, raw_path: str, query: dict, body: bytes) -> None:
        segs = [unquote(s) for s in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        hub = self.hub
        if segs[:2] == ["api", "models"] and len(segs) > 2:
            repo_id, rest = hub._split_repo(segs[2:])
            return self._api(method, repo_id, rest, query, body)
        if segs[:1] == ["api"]:
            raise HubError(404, None, "Not found")
        if segs[:1] == ["cdn"] and len(segs) == 2 and method in ("GET", "HEAD"):
            return self._cdn(segs[1], query)
        if "resolve" in segs[1:3] and method in ("GET", "HEAD"):
            repo_id, rest = hub._split_repo(segs)
            if rest[:1] == ["resolve"] and len(rest) >= 3:
                return self._resolve(repo_id, rest[1], "/".join(rest[2:]))
            if repo_id not in hub.repos:
                raise HubError(404, "RepoNotFound", "Repository not found")
        raise HubError(404, None, "Not found")

    def _api(self, method: str, repo_id: str, rest: list[str], query: dict, body: bytes) -> None:
        hub = self.hub
        first = lambda k, d=None: (query.get(k) or [d])[0]  # noqa: E731
        truthy = lambda k: str(first(k, "")).lower() in ("1", "true", "yes")  # noqa: E731
        if method == "GET" and (not rest or (rest[0] == "revision" and len(rest) >= 2)):
            revision = "/".join(rest[1:]) if rest else "main"
            repo, commit = hub._repo_and_commit(repo_id, revision)
            expand = query.get("expand", []) + query.get("expand[]", [])
            return self._json(200, hub._model_info(repo, commit, truthy("blobs"), expand))
        if method == "GET" and rest == ["refs"]:
            with hub._lock:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    raise HubError(404, "RepoNotFound", "Repository not found")
                payload = {
                    "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in sorted(repo.branches.items())],
                    "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(repo.tags.items())],
                    "converts": [],
                }
                if truthy("include_prs"):
                    payload["pullRequests"] = []
            return self._json(200, payload)
        if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
            _, commit = hub._repo_and_commit(repo_id, rest[1])
            path = "/".join(rest[2:]).strip("/")
            entries = hub._tree_entries(commit, path, truthy("recursive"), truthy("expand"))
            page = hub.tree_page_size if not truthy("expand") else min(hub.tree_page_size, 50)
            start = int(first("cursor", "0") or 0)
            chunk = entries[start:start + page]
            headers = {}
            if start + page < len(entries):
                q = {k: v[0] for k, v in query.items() if k != "cursor"}
                q["cursor"] = str(start + page)
                headers["Link"] = f'<{self._base()}{self._entry["raw_path"]}?{urlencode(q)}>; rel="next"'
            return self._json(200, chunk, headers)
        if method == "POST" and rest[:1] == ["paths-info"] and len(rest) >= 2:
            _, commit = hub._repo_and_commit(repo_id, rest[1])
            form = parse_qs(body.decode(), keep_blank_values=True)
            if "application/json" in (self.headers.get("Content-Type") or ""):
                data = json.loads(body or b"{}")
                form = {"paths": data.get("paths", []), "expand": [str(data.get("expand", False))]}
            expand = str((form.get("expand") or ["false"])[0]).lower() == "true"
            wanted = [p.strip("/") for p in form.get("paths", [])]
            every = hub._tree_entries(commit, "", True, expand)
            return self._json(200, [e for e in every if e["path"] in wanted])
        if method == "GET" and rest[:1] == ["commits"] and len(rest) >= 2:
            repo, commit = hub._repo_and_commit(repo_id, rest[1])
            items = []
            c = commit
            while c is not None:
                items.append({"id": c.sha, "authors": [{"user": "local-hub"}], "date": c.date,
                              "title": c.message, "message": ""})
                c = repo.commits.get(c.parent) if c.parent else None
            return self._json(200, items)
        with hub._lock:
            known = repo_id in hub.repos
        raise HubError(404, None if known else "RepoNotFound", "Not found" if known else "Repository not found")

    def _base(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.hub.url

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        hub = self.hub
        _, commit = hub._repo_and_commit(repo_id, revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"", commit.sha)
        name = path.rsplit("/", 1)[-1]
        common = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes", "Vary": "Origin, Accept",
                  "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Size,X-Linked-ETag,ETag,Content-Range"}
        if blob.lfs:
            location = f"{self._base()}/cdn/{blob.sha256}?" + urlencode({"repo": repo_id, "file": path})
            text = f"Found. Redirecting to {location}".encode()
            self._send_head(302, {
                **common, "Location": location, "ETag": f'"{blob.oid}"',
                "X-Linked-Etag": f'"{blob.sha256}"', "X-Linked-Size": blob.size,
                "Content-Type": "text/plain; charset=utf-8", "Content-Length": len(text),
            })
            if self.command != "HEAD":
                self.wfile.write(text)
            return
        self._serve_bytes(blob, name, f'"{blob.oid}"', common, (repo_id, path))

    def _cdn(self, sha256: str, query: dict) -> None:
        repo_id = (query.get("repo") or [""])[0]
        path = (query.get("file") or [""])[0]
        blob = None
        with self.hub._lock:
            repo = self.hub.repos.get(repo_id)
            candidates = [repo] if repo else list(self.hub.repos.values())
            for r in candidates:
                for c in r.commits.values():
                    for p, b in c.files.items():
                        if b.sha256 == sha256 and (not path or p == path):
                            blob = b
                            break
                    if blob:
                        break
                if blob:
                    break
        if blob is None:
            raise HubError(404, None, "Blob not found")
        name = (path or sha256).rsplit("/", 1)[-1]
        self._serve_bytes(blob, name, f'"{blob.sha256}"', {"Accept-Ranges": "bytes"}, (repo_id, path))

    def _serve_bytes(self, blob: Blob, name: str, etag: str, extra: dict, interrupt_key: tuple[str, str]) -> None:
        size = blob.size
        rng = _parse_range(self.headers.get("Range"), size)
        disposition = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
        headers = {**extra, "ETag": etag, "Content-Type": "application/octet-stream",
                   "Content-Disposition": disposition, "Accept-Ranges": "bytes"}
        if rng == "bad":
            self._send_head(416, {**headers, "Content-Range": f"bytes */{size}", "Content-Length": 0})
            return
        if rng is None:
            status, start, end = 200, 0, size - 1
        else:
            status, (start, end) = 206, rng
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1 if size else 0
        headers["Content-Length"] = length
        cut = self.hub._take_interrupt(*interrupt_key) if self.command == "GET" else None
        self._send_head(status, headers)
        if self.command == "HEAD":
            return
        remaining = length if cut is None else min(length, cut)
        sent = 0
        with blob.open() as f:
            f.seek(start)
            while remaining > 0:
                chunk = f.read(min(CHUNK, remaining))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
                sent += len(chunk)
        self._entry["sent"] = sent
        if cut is not None and cut < length:
            self._entry["interrupted"] = True
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
