"""install, uninstall, register, pack."""
from __future__ import annotations

import sys
from pathlib import Path

from .. import config
from ..gguf_convert import QUANTS
from ..install import FORMATS, install
from ..local import pack
from ..manifest import MANIFEST_NAME, read_manifest, write_manifest
from ..register import register
from ..store import Cache
from .common import emit_json, human, resolve_installed, say


def add_commands(sub) -> None:
    p = sub.add_parser("install", help="install a model from a repository (hf/, pytorch/, tfhub/, modelscope/) "
                                       "or a local path")
    p.add_argument("ref")
    p.add_argument("-f", "--format", choices=FORMATS, default=None,
                   help="auto (GGUF > ONNX > SafeTensors converted: a decoder LLM to GGUF, others to ONNX), onnx, "
                        "gguf (SafeTensors converted with llama.cpp's tools), native (keep SafeTensors)")
    p.add_argument("--file", help="install this one weights file of the repo (e.g. a GGUF quantisation)")
    p.add_argument("--quant", type=str.upper, choices=QUANTS, metavar="TYPE",
                   help="GGUF type: the repo's GGUF file of that type, or what SafeTensors are converted to "
                        "with llama.cpp's converter and quantiser (default Q4_K_M; one of " + ", ".join(QUANTS) + ")")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--register", action="store_true", help="register with the MLOS core after installing")
    p.add_argument("--endpoint", help="MLOS core URL (default: MLOS_CORE_ENDPOINT, config mlos.endpoint)")
    p.add_argument("--api-key", help="the core's API key (default: MLOS_API_KEY, config mlos.api_key)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--trust-repo", action="store_true",
                   help="pytorch/<owner>/<repo>:<entry>: run the repo's hubconf.py (arbitrary code), as torch.hub asks")
    p.add_argument("--input-shape", help="pytorch/<owner>/<repo>:<entry>: the example input for the ONNX export "
                                         "(default 1,3,224,224)")
    p.set_defaults(func=cmd_install)

    p = sub.add_parser("uninstall", help="remove an installed package")
    p.add_argument("ref")
    p.set_defaults(func=cmd_uninstall)

    p = sub.add_parser("register", help="register an installed package with the MLOS core")
    p.add_argument("ref")
    p.add_argument("--endpoint")
    p.add_argument("--api-key", help="the core's API key (default: MLOS_API_KEY, config mlos.api_key)")
    p.add_argument("--model-id", help="id to register under (default: the ref, e.g. hf/org/model@latest)")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("pack", help="write an installed package (ref) or a package directory as an .axon archive")
    p.add_argument("source", help="a ref (hf/org/model@latest) or a directory holding manifest.yaml")
    p.add_argument("-o", "--output", help="archive path (default ./<ns>-<name>-<version>.axon)")
    p.set_defaults(func=cmd_pack)


def _endpoint(args) -> str:
    return args.endpoint or config.get("mlos.endpoint")


def _api_key(args) -> str:
    return args.api_key or config.get("mlos.api_key")


def cmd_install(args) -> int:
    quiet = args.quiet or not sys.stderr.isatty()
    fmt = args.format or config.get("install.format")
    result = install(args.ref, fmt=fmt, wanted_file=args.file, quiet=quiet, progress=say(args.quiet),
                     trust_repo=args.trust_repo, input_shape=args.input_shape, quant=args.quant)
    pkg = result.package
    out = {
        "package": pkg.ref, "path": str(pkg.path), "reused": result.reused,
        "format": pkg.manifest["spec"]["format"]["execution_format"],
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "source_bytes": result.source_bytes, "package_bytes": result.package_bytes,
        "conversion": result.conversion,
    }
    if args.register:
        model_id = pkg.ref if args.ref.startswith(("/", ".", "~")) else _model_id(args.ref)
        out["registered"] = register(pkg, model_id, _endpoint(args), api_key=_api_key(args))
    if args.json:
        emit_json(out)
    else:
        t = out["timings_s"]
        print(f"installed {pkg.ref} ({out['format']}) in {pkg.path}")
        if not result.reused:
            print("  " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in t.items())
                  + f"; source {human(result.source_bytes)}, package {human(result.package_bytes)}")
        if result.conversion and not result.conversion.get("converted") and result.conversion.get("reason"):
            print(f"  kept {pkg.manifest['spec']['format']['type']}: {result.conversion['reason']}")
        if args.register:
            print(f"  registered as {out['registered'].get('model_id')}: {out['registered'].get('message')}")
    return 0


def _model_id(ref_text: str) -> str:
    from ..refs import parse_ref

    return parse_ref(ref_text).model_id


def cmd_uninstall(args) -> int:
    ref, pkg = resolve_installed(args.ref)
    Cache().remove(ref)
    print(f"removed {pkg.ref}")
    return 0


def cmd_register(args) -> int:
    ref, pkg = resolve_installed(args.ref)
    answer = register(pkg, args.model_id or ref.model_id, _endpoint(args), api_key=_api_key(args))
    print(f"registered {answer.get('model_id')} ({answer.get('plugin_id')}): {answer.get('message')}")
    print(f"  inference: {_endpoint(args).rstrip('/')}{answer.get('inference_endpoint', '')}")
    return 0


def cmd_pack(args) -> int:
    src = Path(args.source)
    cached = True  # a package of the cache records its archive in its manifest
    if src.is_dir() and (src / MANIFEST_NAME).is_file():
        pkg_dir, name, cached = src, src.resolve().name, False
    elif src.exists():  # a plain model file or directory: package it into the cache first
        pkg = install(str(src), progress=say(False)).package
        pkg_dir, name = pkg.path, f"local-{pkg.repo}-{pkg.version}"
    else:
        _, pkg = resolve_installed(args.source)
        pkg_dir, name = pkg.path, f"{pkg.namespace}-{pkg.repo.replace('/', '_')}-{pkg.version[:12]}"
    out = Path(args.output or f"{name}.axon")
    size, digest = pack(pkg_dir, out)
    if cached:
        # the archive cannot hold its own digest: the cached package's manifest records it
        manifest = read_manifest(pkg_dir)
        manifest.setdefault("distribution", {})["package"] = {"url": out.resolve().as_uri(), "size": size, "sha256": digest}
        write_manifest(pkg_dir, manifest)
    print(f"{out}  {human(size)}  sha256 {digest}")
    return 0
