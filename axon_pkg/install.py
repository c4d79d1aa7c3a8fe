"""``axon-py install``: repository (or local directory) -> download -> convert -> verified package.

One path for every repository: the namespace's adapter (:mod:`axon_pkg.repos`) resolves the ref
to an immutable version and lists its files, selects and downloads them; then conversion (by
the downloaded format), packaging and verification happen here, the same for all. Each stage is
timed separately (download, convert, package) and the result says so.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import IntegrityError, SelectionError
from .manifest import MANIFEST_NAME
from .package import add_files, build_manifest, finish, io_schema, package_bytes
from .refs import Ref, is_local, parse_ref
from .repair import RebuildNeeded, repair
from .repos import adapter_for
from .repos.base import GGUF, ONNX, SAFETENSORS
from .store import Cache, Installed

FORMATS = ("auto", "onnx", "gguf", "native")
EXPORT_DIR = ".onnx-export"
Progress = Callable[[str], None]


@dataclass
class InstallResult:
    package: Installed
    timings: dict[str, float] = field(default_factory=dict)
    source_bytes: int = 0
    package_bytes: int = 0
    conversion: dict | None = None
    reused: bool = False
    repaired: list[str] = field(default_factory=list)  # files fetched again because they had gone bad


def _variant(fmt: str, selector: str | None, wanted_file: str | None) -> str:
    if wanted_file:
        return "file-" + "".join(c if c.isalnum() or c in "._-" else "_" for c in wanted_file)
    if selector:
        return selector.lower()
    return "" if fmt == "auto" else fmt


def install(ref_text: str, *, fmt: str = "auto", wanted_file: str | None = None, quiet: bool = False,
            cache: Cache | None = None, progress: Progress = lambda s: None, trust_repo: bool = False,
            input_shape: str | None = None, quant: str | None = None) -> InstallResult:
    """``quant``: the GGUF type wanted (a GGUF file of the repo, or what SafeTensors are converted
    to); the same as the reference's selector (``hf/org/llm:Q8_0``)."""
    if fmt not in FORMATS:
        raise SelectionError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    cache = cache or Cache()
    if is_local(ref_text):
        return install_local(Path(ref_text), cache=cache, progress=progress)
    ref = parse_ref(ref_text)
    if ref.namespace == "local":
        raise SelectionError("local/ packages are made from a path: axon-py install ./my-model-dir")
    if quant:
        if ref.selector and ref.selector.upper() != quant.upper():
            raise SelectionError(f"the reference asks for :{ref.selector} and --quant for {quant}: give one")
        ref = Ref(ref.namespace, ref.repo, ref.revision, quant.upper())
    if ref.namespace == "pytorch" and not ref.repo.startswith("vision/") and not trust_repo:
        raise SelectionError(f"{ref} runs the code of its hubconf.py; axon-py runs it only when asked",
                             hint="read the repo, then pass --trust-repo (as torch.hub.load(trust_repo=True))")
    repo = adapter_for(ref.namespace)
    start = time.perf_counter()
    progress(f"resolving {ref} at {repo.endpoint()}")
    resolved = repo.resolve(ref)
    variant = _variant(fmt, ref.selector, wanted_file)
    version = resolved.commit + (f"-{variant}" if variant else "")
    existing = cache.package_root(ref.namespace, ref.repo) / version
    if (existing / MANIFEST_NAME).is_file():
        pkg = cache.resolve(Ref(ref.namespace, ref.repo, version))
        try:
            fixed = repair(pkg, cache, progress)  # installed already, but checked: never reused broken
        except RebuildNeeded:
            progress(f"{ref}: converted files do not match the manifest; rebuilding the package")
            cache.discard(pkg)
        else:
            cache.point(ref.namespace, ref.repo, version, [ref.revision])
            progress(f"{ref} is installed already at {resolved.commit[:12]}"
                     + (f"; repaired {len(fixed)} file(s)" if fixed else ""))
            return InstallResult(cache.resolve(Ref(ref.namespace, ref.repo, version)), reused=True,
                                 repaired=fixed)
    selection = repo.select(resolved, fmt, ref.selector, wanted_file)
    progress(f"{ref.revision} -> commit {resolved.commit}; taking {selection.note} ({len(selection.files)} files)")

    t = time.perf_counter()
    local = repo.download(ref, resolved, selection, cache.hub, quiet=quiet)
    timings = {"download_s": time.perf_counter() - t}
    expected = {f.path: f.sha256 for f in selection.files if f.sha256}
    source_bytes = sum(p.stat().st_size for p in local.values())

    def refetch(rel: str) -> Path:
        if not hasattr(repo, "fetch"):   # adapters whose client checks each file itself (kagglehub, modelscope)
            raise IntegrityError(f"{rel}: the downloaded copy does not match the sha256 {repo.NAME} announced",
                                 hint="run the install again; axon-py cache clean drops the download cache")
        progress(f"{rel}: the downloaded copy does not match the hub's sha256; downloading it again")
        local[rel] = repo.fetch(ref, resolved.commit, rel, cache.hub, again=True)
        return local[rel]

    staging = cache.staging(ref.namespace, ref.repo)
    try:
        if selection.format in (SAFETENSORS, GGUF, ONNX):
            files, exec_fmt, conversion, convert_s = _maybe_convert(ref, resolved, selection, local, fmt, cache,
                                                                    staging, progress, expected, refetch)
        else:
            from .convert_frameworks import convert_framework

            files, exec_fmt, conversion, convert_s = convert_framework(
                ref, resolved, selection, local, staging / EXPORT_DIR, progress, input_shape=input_shape)
        timings["convert_s"] = convert_s
        t = time.perf_counter()
        entries = add_files(cache, staging, files, expected, refetch)
        shutil.rmtree(staging / EXPORT_DIR, ignore_errors=True)
        execution = [e["path"] for e in entries if _is_weight(e["path"], exec_fmt)]
        tokenizer = "tokenizer.json" if "tokenizer.json" in files else None
        # an encoder-decoder's io schema is its encoder's (text in); its graphs are all listed
        io_file = next((p for p in execution if p.rsplit("/", 1)[-1] == "encoder_model.onnx"),
                       execution[0] if execution else None)
        model_file = staging / io_file if io_file and exec_fmt == "onnx" else None
        manifest = build_manifest(
            namespace=ref.namespace, name=ref.repo, version=ref.revision, fmt=exec_fmt, files=entries,
            execution_files=execution, io=io_schema(exec_fmt, model_file, tokenizer),
            description=f"{ref.repo} from {repo.endpoint()} at {resolved.commit}",
            license=resolved.info.get("license") or "", tags=resolved.info.get("tags") or [],
            extension={
                "source": {**resolved.source, "selected": selection.note, "selector": ref.selector,
                           "format_requested": fmt},
                "task": (conversion or {}).get("task") or resolved.info.get("pipeline_tag"),
                "preprocessing": (conversion or {}).get("preprocessing"),
                "signature": (conversion or {}).get("signature"),
                "conversion": {k: v for k, v in (conversion or {}).items() if k not in ("preprocessing", "signature")}
                or None,
                "installed_at": _now(),
            },
        )
        finish(staging, manifest)
        pkg_path = cache.commit_package(staging, ref.namespace, ref.repo, version, [ref.revision])
        timings["package_s"] = time.perf_counter() - t
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    timings["total_s"] = time.perf_counter() - start
    installed = cache.resolve(Ref(ref.namespace, ref.repo, version))
    return InstallResult(installed, timings, source_bytes, package_bytes(pkg_path), conversion)


def install_local(path: Path, *, cache: Cache, progress: Progress = lambda s: None) -> InstallResult:
    from .local import build_local

    return build_local(path, cache=cache, progress=progress)


def _now() -> str:
    from .package import now_iso

    return now_iso()


def _is_weight(path: str, fmt: str) -> bool:
    return path.endswith({"onnx": ".onnx", "gguf": ".gguf", "safetensors": ".safetensors"}[fmt])


def _verified_sources(local: dict[str, Path], expected: dict[str, str], refetch) -> None:
    """A conversion reads the downloaded files directly: check them against the hub's digests first
    (a corrupt cached copy would otherwise be converted into a wrong model)."""
    from .manifest import sha256_file

    for rel, want in expected.items():
        if rel in local and sha256_file(local[rel]) != want:
            got = sha256_file(refetch(rel))
            if got != want:
                raise IntegrityError(f"{rel}: downloaded content has sha256 {got}, the hub announced {want}")


def _maybe_convert(ref, resolved, selection, local, fmt, cache, staging, progress, expected, refetch):
    """SafeTensors transformer models are converted to GGUF (``-f gguf``, or ``-f auto`` for a
    decoder LLM llama.cpp's converter knows) or to ONNX, unless the user keeps them (``-f native``);
    when conversion is impossible the package keeps SafeTensors and says why."""
    files = dict(local)
    if selection.format != SAFETENSORS or fmt == "native":
        reason = "kept as downloaded (--format native)" if selection.format == SAFETENSORS else None
        return files, selection.format, ({"converted": False, "reason": reason} if reason else None), 0.0
    from .convert import conversion_available, convert_to_onnx

    _verified_sources(local, expected, refetch)
    snapshot = next(iter(local.values()))
    for _ in range(len(Path(next(iter(local))).parts)):
        snapshot = snapshot.parent
    if fmt in ("gguf", "auto"):
        from .gguf_convert import convert_for_install

        done = convert_for_install(snapshot, staging / EXPORT_DIR, files, fmt=fmt, selector=ref.selector,
                                   name=ref.repo.rsplit("/", 1)[-1], source_commit=resolved.commit, progress=progress)
        if done is not None:
            return done
    ok, why = conversion_available()
    if not ok:
        progress(f"not converting to ONNX: {why}")
        return files, SAFETENSORS, {"converted": False, "reason": why, "from_format": "safetensors"}, 0.0
    progress("converting SafeTensors to ONNX with optimum")
    out = staging / EXPORT_DIR
    result = convert_to_onnx(snapshot, out)
    info = {k: v for k, v in result.__dict__.items() if k not in ("files", "inputs", "outputs")}
    if not result.converted:
        progress(f"kept SafeTensors: {result.reason}")
        if fmt == "onnx":
            raise SelectionError(f"cannot convert {ref.repo} to ONNX: {result.reason}")
        return files, SAFETENSORS, info, result.seconds
    for rel in list(files):
        if rel.endswith(".safetensors") or rel.endswith(".safetensors.index.json"):
            del files[rel]  # the ONNX export replaces the weights
    for rel in result.files:
        files[rel] = out / rel
    return files, ONNX, info, result.seconds
