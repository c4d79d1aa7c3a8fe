"""The PyTorch Hub adapter (``pytorch/``).

``pytorch/vision/<model>@<weights>``: torchvision's pretrained weights for that architecture,
found through torchvision's registry (``get_model_weights``; ``latest`` is the enum's DEFAULT).
torchvision is asked in the vision converter environment (:mod:`axon_pkg.converter_envs`), never
in this process. The weights file is downloaded from ``pytorch.endpoint`` (``AXON_PYTORCH_ENDPOINT``,
default ``https://download.pytorch.org``: the enum's URL with its host swapped, for mirrors and
tests), resumably, and its sha256 must start with the hex digits in its name, as ``torch.hub``
checks it. The immutable version is ``<weights>-<hash prefix>``.

``pytorch/<owner>/<repo>:<entry>@<ref>``: a GitHub repo with a ``hubconf.py``, whose code runs
only with ``--trust-repo`` (as ``torch.hub.load`` asks). The ref resolves to a commit through
GitHub's API (``pytorch.github_endpoint``, ``AXON_GITHUB_ENDPOINT``, default
``https://api.github.com``), the commit's zipball is downloaded and unpacked safely, and the
entry's model is exported to ONNX in the converter.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import HubError, SelectionError
from ..refs import Ref
from . import http_download
from .base import TORCH_HUB_REPO, TORCH_STATE_DICT, RemoteFile, Resolved, Selection

NAMESPACE, NAME = "pytorch", "PyTorch Hub"
UPSTREAM = "https://download.pytorch.org"
GITHUB_API = "https://api.github.com"


def endpoint() -> str:
    from .. import config

    return str(config.get("pytorch.endpoint") or UPSTREAM).rstrip("/")


def github_endpoint() -> str:
    from .. import config

    value = str(config.get("pytorch.github_endpoint") or "")
    return (GITHUB_API if value in ("", "https://github.com") else value).rstrip("/")


def _mirror(url: str) -> str:
    return endpoint() + url[len(UPSTREAM):] if url.startswith(UPSTREAM + "/") else url


def ask_torchvision(model: str, weights: str) -> dict:
    """``_vision_worker resolve`` in the vision environment: the weights entry, as JSON."""
    from ..converter_envs import python_for
    from ..worker import run_json_worker

    data, problem = run_json_worker([python_for("vision"), "-m", "axon_pkg._vision_worker", "resolve",
                                     "--model", model, "--weights", weights], timeout_s=300, what="torchvision")
    if problem:
        raise HubError(problem)
    if not data.get("ok"):
        raise HubError(str(data.get("reason")))
    return data


def resolve(ref: Ref) -> Resolved:
    owner, name = ref.repo.split("/", 1)
    if owner == "vision":
        return _resolve_vision(ref, name)
    return _resolve_hubconf(ref, owner, name)


def _resolve_vision(ref: Ref, model: str) -> Resolved:
    http_download.check_reachable(endpoint(), what=NAME)
    data = ask_torchvision(model, ref.revision)
    url = _mirror(data["url"])
    version = f"{data['weights']}-{data['hash_prefix'] or 'unhashed'}"
    info = {"license": "BSD-3-Clause (torchvision); see the weights' recipe for their terms", "tags": ["torchvision"],
            "pipeline_tag": "image-classification", "library_name": "torchvision", "torchvision": data}
    source = {"hub": "pytorch", "endpoint": endpoint(), "repo": ref.repo, "requested_ref": ref.revision,
              "resolved_version": version, "weights": data["weights"], "weights_enum": data["enum"], "url": url,
              "upstream_url": data["url"], "hash_prefix": data["hash_prefix"], "resolver": data["tool_version"]}
    return Resolved(ref.repo, ref.revision, version, [RemoteFile(data["file"], None, None)], info, source)


def _resolve_hubconf(ref: Ref, owner: str, repo: str) -> Resolved:
    api = github_endpoint()
    branch = ref.revision
    if branch == "latest":
        meta = _json(f"{api}/repos/{owner}/{repo}", f"the GitHub repo {owner}/{repo}")
        branch = meta.get("default_branch") or "main"
    commit = _json(f"{api}/repos/{owner}/{repo}/commits/{branch}", f"ref {branch!r} of {owner}/{repo}")
    sha = str(commit.get("sha") or "")
    if len(sha) != 40:
        raise HubError(f"GitHub gave no commit for {owner}/{repo}@{branch}")
    source = {"hub": "pytorch-hub", "endpoint": api, "repo": ref.repo, "requested_ref": ref.revision,
              "resolved_commit": sha, "entry": ref.selector}
    info = {"license": "", "tags": ["torch.hub"], "pipeline_tag": None, "library_name": "torch.hub"}
    return Resolved(ref.repo, ref.revision, sha, [RemoteFile(f"{repo}-{sha}.zip", None, None)], info, source)


def _json(url: str, what: str) -> dict:
    resp = http_download.get(url, what="GitHub's API", headers={"Accept": "application/vnd.github+json"})
    if resp.status_code == 404:
        raise HubError(f"{what} not found at {url}")
    if resp.status_code != 200:
        raise HubError(f"GitHub's API answered {resp.status_code} for {url}")
    try:
        return resp.json()
    except ValueError:
        raise HubError(f"GitHub's API answered something that is not JSON for {url}") from None


def select(resolved: Resolved, fmt: str = "auto", selector: str | None = None,
           wanted_file: str | None = None) -> Selection:
    if fmt in ("gguf", "native"):
        raise SelectionError(f"PyTorch Hub models install as ONNX only, not -f {fmt}")
    if wanted_file:
        raise SelectionError("--file does not apply to PyTorch Hub models: the weights are the enum's one file")
    if resolved.source.get("hub") == "pytorch-hub":
        return Selection(TORCH_HUB_REPO, resolved.files, f"hubconf.py entry {resolved.source.get('entry')}")
    return Selection(TORCH_STATE_DICT, resolved.files, f"torchvision weights {resolved.source['weights']}")


def download(ref: Ref, resolved: Resolved, selection: Selection, cache_dir: Path, *, quiet: bool) -> dict[str, Path]:
    target = Path(cache_dir) / "pytorch" / ref.repo.replace("/", "--")
    f = selection.files[0]
    if selection.format == TORCH_STATE_DICT:
        path = http_download.download(resolved.source["url"], target / f.path, what=f"{NAME} ({endpoint()})",
                                      quiet=quiet, hash_prefix=resolved.source.get("hash_prefix"))
        return {f.path: path}
    owner, repo = ref.repo.split("/", 1)
    url = f"{github_endpoint()}/repos/{owner}/{repo}/zipball/{resolved.commit}"
    archive = http_download.download(url, target / f.path, what="GitHub", quiet=quiet)
    return {f.path: archive}


def repo_dir_from_zip(archive: Path, dest: Path) -> Path:
    """Unpack a GitHub zipball (one top directory) safely; the directory holding hubconf.py."""
    from ..archive import safe_extract_zip

    repo_dir = safe_extract_zip(archive, dest)
    if not (repo_dir / "hubconf.py").is_file():
        raise SelectionError(f"{archive.name} has no hubconf.py: not a PyTorch Hub repo")
    return repo_dir


if __name__ == "__main__":  # pragma: no cover - a debugging aid: python -m axon_pkg.repos.pytorch resnet18
    print(json.dumps(ask_torchvision(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "latest"), indent=1))
