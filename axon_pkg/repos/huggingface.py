"""The Hugging Face Hub adapter (``hf/``), on ``huggingface_hub``.

It resolves a revision to an immutable commit, chooses the files a runtime needs, and
downloads them through ``hf_hub_download`` (which resumes interrupted downloads from its
``.incomplete`` files, locks each blob, and renames it into place only when complete).
``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured, read when called.
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Callable

from ..errors import HubError, SelectionError
from ..refs import Ref
from .base import GGUF, ONNX, SAFETENSORS, RemoteFile, Resolved, Selection

NAMESPACE, NAME = "hf", "Hugging Face Hub"
DEFAULT_QUANT = "Q4_K_M"

# Files that describe or pre-process a model: always taken along with its weights when present.
SUPPORT_FILES = [
    "config.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling/config.json",
    "chat_template.json", "chat_template.jinja", "README.md", "LICENSE", "LICENSE.md",
]
# Never downloaded: pickles (arbitrary code on load) and other frameworks' weights.
REFUSED = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.joblib", "*.h5", "*.msgpack",
           "*.tflite", "*.ot", "*.mlmodel", "*.mlpackage/*", "*.keras", "*.pb", "flax_model*", "tf_model*"]
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$")


def endpoint() -> str:
    """``HF_ENDPOINT`` wins over ``hub.endpoint`` in ~/.axon/config.yaml."""
    from .. import config

    return str(os.environ.get("HF_ENDPOINT") or config.get("hub.endpoint")).rstrip("/")


def _token():
    return os.environ.get("HF_TOKEN") or None


def timeout_s() -> float:
    """Seconds any hub call may wait for an answer: ``HF_HUB_ETAG_TIMEOUT`` (huggingface_hub's own
    setting for metadata calls) wins over ``hub.timeout``; downloads also honour
    ``HF_HUB_DOWNLOAD_TIMEOUT`` between bytes, which huggingface_hub reads itself."""
    from .. import config

    raw = os.environ.get("HF_HUB_ETAG_TIMEOUT") or config.get("hub.timeout")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise HubError(f"hub timeout {raw!r} is not a number of seconds") from None
    return value if value > 0 else 10.0


def _unreachable(e: Exception) -> bool:
    import requests

    return isinstance(e, (requests.exceptions.Timeout, requests.exceptions.ConnectionError, TimeoutError,
                          ConnectionError))


def _hub_error(e: Exception, ref: Ref) -> HubError:
    from huggingface_hub.errors import (
        EntryNotFoundError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, GatedRepoError):
        return HubError(f"{ref.repo} is gated on the hub", hint="accept its terms on the hub and set HF_TOKEN")
    if isinstance(e, RepositoryNotFoundError):
        return HubError(f"repository {ref.repo} not found at {endpoint()}", hint="check the name; private repos need HF_TOKEN")
    if isinstance(e, RevisionNotFoundError):
        return HubError(f"revision {ref.revision!r} not found in {ref.repo}")
    if isinstance(e, EntryNotFoundError):
        return HubError(f"a file of {ref.repo} vanished from the hub: {e}")
    offline = ("check the network and HF_ENDPOINT (a mirror's URL works too); offline, install from a local "
               "directory instead: axon-py install ./model-dir")
    if isinstance(e, LocalEntryNotFoundError) or _unreachable(e) or _unreachable(e.__cause__ or e.__context__ or e):
        return HubError(f"the hub at {endpoint()} (HF_ENDPOINT) did not answer within {timeout_s():g} s or could not "
                        "be reached", hint=offline)
    if isinstance(e, HfHubHTTPError):
        return HubError(f"the hub answered an error for {ref.repo}: {str(e).splitlines()[0]}")
    return HubError(f"the hub at {endpoint()} (HF_ENDPOINT) failed: {type(e).__name__}: {str(e)[:300]}", hint=offline)


def resolve(ref: Ref) -> Resolved:
    """Resolve the ref's revision (``latest`` is the default branch) to its commit."""
    from huggingface_hub import HfApi

    revision = None if ref.revision == "latest" else ref.revision
    try:
        info = HfApi(endpoint=endpoint(), token=_token()).model_info(ref.repo, revision=revision, files_metadata=True,
                                                                     timeout=timeout_s())
    except Exception as e:
        raise _hub_error(e, ref) from None
    files = []
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        files.append(RemoteFile(s.rfilename, getattr(s, "size", None), sha))
    card = getattr(info, "card_data", None) or {}
    details = {
        "license": (card.get("license") if hasattr(card, "get") else None) or "",
        "tags": list(info.tags or []),
        "pipeline_tag": info.pipeline_tag,
        "library_name": getattr(info, "library_name", None),
    }
    source = {"hub": "huggingface", "endpoint": endpoint(), "repo": ref.repo, "requested_ref": ref.revision,
              "resolved_commit": info.sha}
    return Resolved(ref.repo, ref.revision, info.sha, files, details, source)


def select(resolved: Resolved, fmt: str = "auto", selector: str | None = None,
           wanted_file: str | None = None) -> Selection:
    return select_files(resolved.files, fmt, selector, wanted_file)


def _matches(path: str, patterns: list[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def select_files(files: list[RemoteFile], fmt: str = "auto", selector: str | None = None,
                 wanted_file: str | None = None) -> Selection:
    """Choose what to download: GGUF (Q4_K_M by default) over ONNX over SafeTensors, as the
    original Axon does; never a pickle or another framework's weights."""
    by_path = {f.path: f for f in files}
    usable = [f for f in files if not _matches(f.path, REFUSED)]
    support = [by_path[p] for p in SUPPORT_FILES if p in by_path]
    if wanted_file:
        if wanted_file not in by_path:
            raise SelectionError(f"no file {wanted_file!r} in the repo", hint="axon-py info shows its files")
        if _matches(wanted_file, REFUSED):
            raise SelectionError(f"{wanted_file} is a pickle or another framework's weights; it is never downloaded")
        kind = GGUF if wanted_file.endswith(".gguf") else ONNX if wanted_file.endswith(".onnx") else SAFETENSORS
        extra = [f for f in usable if kind == ONNX and f.path.startswith(wanted_file) and f.path != wanted_file]
        return Selection(kind, [by_path[wanted_file], *extra, *([] if kind == GGUF else support)], f"file {wanted_file}")
    gguf = [f for f in usable if f.path.endswith(".gguf")]
    onnx = [f for f in usable if f.path.endswith(".onnx")]
    st = [f for f in usable if f.path.endswith(".safetensors")]
    # SafeTensors under "gguf" and "onnx": converted to that format by the install
    order = {"auto": [GGUF, ONNX, SAFETENSORS], "gguf": [GGUF, SAFETENSORS], "onnx": [ONNX, SAFETENSORS],
             "native": [SAFETENSORS, GGUF, ONNX]}[fmt]
    for kind in order:
        if kind == GGUF and gguf:
            return Selection(GGUF, _pick_gguf(gguf, selector), f"GGUF {selector or DEFAULT_QUANT}")
        if kind == ONNX and onnx:
            graphs = _seq2seq_graphs(onnx) or [_pick_onnx(onnx)]
            names = {g.path for g in graphs}
            data = [f for f in usable if f.path not in names and any(f.path.startswith(n) for n in names)]
            what = (f"ONNX file {graphs[0].path}" if len(graphs) == 1
                    else "ONNX encoder-decoder " + ", ".join(sorted(names)))
            return Selection(ONNX, [*graphs, *data, *support], what)
        if kind == SAFETENSORS and st:
            index = [f for f in usable if f.path.endswith(".safetensors.index.json")]
            top = [f for f in st if "/" not in f.path] or st
            return Selection(SAFETENSORS, [*top, *index, *support], "SafeTensors weights")
    pickles = [f.path for f in files if _matches(f.path, REFUSED)]
    if pickles and fmt in ("auto", "native", "onnx"):
        raise SelectionError(
            f"the repo's weights are only in formats axon-py never loads ({', '.join(pickles[:5])}): pickles can "
            "run arbitrary code", hint="choose a repo (or revision) with SafeTensors, ONNX or GGUF weights")
    want = {"auto": "GGUF, ONNX or SafeTensors", "gguf": "GGUF or SafeTensors to convert", "onnx": "ONNX or SafeTensors to convert",
            "native": "SafeTensors"}[fmt]
    raise SelectionError(f"no {want} weights in the repo (files: {', '.join(sorted(by_path)[:15]) or 'none'})")


def _seq2seq_graphs(onnx: list[RemoteFile]) -> list[RemoteFile] | None:
    """An encoder-decoder export (optimum's file names) in one folder: the encoder with the merged
    decoder, else with the split decoders; the shallowest folder wins. None when there is none."""
    folders: dict[str, dict[str, RemoteFile]] = {}
    for f in onnx:
        folder, _, name = f.path.rpartition("/")
        folders.setdefault(folder, {})[name] = f
    for folder in sorted(folders, key=lambda d: (d.count("/") + bool(d), d)):
        files = folders[folder]
        if "encoder_model.onnx" not in files:
            continue
        if "decoder_model_merged.onnx" in files:
            return [files["encoder_model.onnx"], files["decoder_model_merged.onnx"]]
        if "decoder_model.onnx" in files:
            return [files[n] for n in ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
                    if n in files]
    return None


def _pick_onnx(onnx: list[RemoteFile]) -> RemoteFile:
    for name in ("model.onnx", "onnx/model.onnx"):
        for f in onnx:
            if f.path == name:
                return f
    plain = [f for f in onnx if not re.search(r"(quant|int8|uint8|fp16|q4|bnb|O\d)", f.path, re.I)]
    return sorted(plain or onnx, key=lambda f: (f.path.count("/"), f.path))[0]


def _pick_gguf(gguf: list[RemoteFile], selector: str | None) -> list[RemoteFile]:
    def quant_key(f: RemoteFile) -> str:
        return _SHARD.sub(".gguf", f.path)

    variants: dict[str, list[RemoteFile]] = {}
    for f in gguf:
        variants.setdefault(quant_key(f), []).append(f)
    if len(variants) == 1 and selector is None:
        return sorted(next(iter(variants.values())), key=lambda f: f.path)
    wanted = (selector or DEFAULT_QUANT).lower()
    hits = {k: v for k, v in variants.items() if wanted in k.rsplit("/", 1)[-1].lower()}
    if len(hits) == 1:
        return sorted(next(iter(hits.values())), key=lambda f: f.path)
    choices = ", ".join(sorted(variants))
    if not hits:
        raise SelectionError(f"no GGUF file matches {selector or DEFAULT_QUANT!r}; choices: {choices}",
                             hint="pick one with hf/org/repo:<QUANT> or --file <name>")
    raise SelectionError(f"{selector or DEFAULT_QUANT!r} matches several GGUF files: {', '.join(sorted(hits))}",
                         hint="name one with --file <name>")


def download(ref: Ref, resolved: Resolved, selection: Selection, cache_dir: Path, *, quiet: bool,
             on_file: Callable[[RemoteFile, Path], None] | None = None) -> dict[str, Path]:
    """Download the selected files at the resolved commit; returns path -> local file."""
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if quiet:
        disable_progress_bars()
    else:
        enable_progress_bars()
    out = {}
    try:
        for f in selection.files:
            out[f.path] = fetch(ref, resolved.commit, f.path, cache_dir)
            if on_file:
                on_file(f, out[f.path])
    finally:
        enable_progress_bars()
    return out


def fetch(ref: Ref, commit: str, path: str, cache_dir: Path, *, again: bool = False) -> Path:
    """One file at a commit, through the download cache; ``again`` ignores a cached copy (one that
    failed its checksum) and downloads it anew."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(ref.repo, path, revision=commit, cache_dir=str(cache_dir), endpoint=endpoint(),
                                    token=_token(), etag_timeout=timeout_s(), force_download=again))
    except Exception as e:
        raise _hub_error(e, ref) from None
