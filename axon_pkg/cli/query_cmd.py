"""list, info, verify."""
from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from ..archive import safe_extract
from ..errors import IntegrityError
from ..manifest import check_files, read_manifest
from ..store import Cache
from .common import say, emit_json, human, resolve_installed


def add_commands(sub) -> None:
    p = sub.add_parser("list", help="installed packages")
    p.add_argument("-f", "--format", choices=("default", "names", "json"), default="default")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("info", help="a package's manifest summary")
    p.add_argument("ref")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("verify", help="check a package: manifest schema and every file's size and sha256")
    p.add_argument("ref", help="a ref, a package directory, or an .axon archive")
    p.add_argument("--repair", action="store_true",
                   help="fetch the files that fail again (an installed hub package), or rebuild it if they were converted")
    p.set_defaults(func=cmd_verify)


def _row(pkg) -> dict:
    spec = pkg.manifest.get("spec") or {}
    ext = pkg.manifest.get("x-mlos") or {}
    files = (spec.get("format") or {}).get("files") or []
    return {
        "ref": pkg.ref, "namespace": pkg.namespace, "name": pkg.repo, "version": pkg.version,
        "format": (spec.get("format") or {}).get("execution_format"),
        "size": sum(f.get("size", 0) for f in files if isinstance(f, dict)),
        "requested": (ext.get("source") or {}).get("requested_ref"),
        "task": ext.get("task"), "path": str(pkg.path),
    }


def cmd_list(args) -> int:
    rows = [_row(p) for p in Cache().installed()]
    if args.format == "json":
        emit_json(rows)
    elif args.format == "names":
        for r in rows:
            print(r["ref"])
    else:
        if not rows:
            print("no packages installed (axon-py install hf/org/model@latest)")
        for r in rows:
            print(f"{r['namespace']}/{r['name']}@{r['version'][:12]:<12}  {r['format'] or '?':<11} {human(r['size']):>9}"
                  f"  {'(' + r['requested'] + ')' if r['requested'] else ''}")
    return 0


def cmd_info(args) -> int:
    _, pkg = resolve_installed(args.ref)
    if args.json:
        emit_json(pkg.manifest)
        return 0
    m, spec = pkg.manifest, pkg.manifest.get("spec") or {}
    ext = m.get("x-mlos") or {}
    print(f"{pkg.ref}\n  path: {pkg.path}\n  description: {m['metadata'].get('description', '')}")
    print(f"  format: {spec['format'].get('execution_format')}  framework: {spec.get('framework', {}).get('name')}")
    src = ext.get("source") or {}
    pinned = src.get("resolved_commit") or src.get("resolved_version")
    if pinned:
        print(f"  source: {src.get('hub')} {src.get('repo')} @{src.get('requested_ref')} = {pinned}")
    conv = ext.get("conversion")
    if conv:
        print(f"  conversion: {conv}")
    for f in spec["format"].get("files", []):
        print(f"  file {f['path']}  {human(f['size'])}  {f['sha256'][:16]}…")
    for kind in ("inputs", "outputs"):
        for t in (spec.get("io") or {}).get(kind, []):
            print(f"  {kind[:-1]} {t['name']} {t.get('dtype')} {t.get('shape')}")
    return 0


def cmd_verify(args) -> int:
    target = Path(args.ref)
    if target.is_file() and tarfile.is_tarfile(target):
        with tempfile.TemporaryDirectory() as tmp:
            pkg_dir = safe_extract(target, Path(tmp) / "pkg")
            return _verify_dir(pkg_dir, str(target))
    if target.is_dir():
        return _verify_dir(target, str(target))
    _, pkg = resolve_installed(args.ref)
    if args.repair:
        return _repair(pkg)
    return _verify_dir(pkg.path, pkg.ref)


def _repair(pkg) -> int:
    from ..install import install
    from ..repair import RebuildNeeded, repair
    from ..store import Cache

    cache = Cache()
    try:
        fixed = repair(pkg, cache, progress=say(False))
    except RebuildNeeded:
        src = (pkg.manifest.get("x-mlos") or {}).get("source") or {}
        cache.discard(pkg)
        sel = f":{src['selector']}" if src.get("selector") else ""
        install(f"{pkg.namespace}/{pkg.repo}{sel}@{src['resolved_commit']}", fmt=src.get("format_requested") or "auto",
                progress=say(False))
        print(f"{pkg.ref}: rebuilt (converted files did not match the manifest)")
        return _verify_dir(pkg.path, pkg.ref)
    if fixed:
        print(f"{pkg.ref}: fetched again {', '.join(fixed)}")
    return _verify_dir(pkg.path, pkg.ref)


def _verify_dir(pkg_dir: Path, label: str) -> int:
    manifest = read_manifest(pkg_dir, validate=True)
    checks = check_files(pkg_dir, manifest)
    if not checks:
        raise IntegrityError(f"{label}: the manifest lists no files, so nothing can be verified")
    unrecorded = [c for c in checks if not c.sha256_recorded]
    for c in unrecorded:
        print(f"  {c.path}: size {c.size}, sha256 {c.sha256} (computed: the manifest records no sha256)")
    compared = len(checks) - len(unrecorded)
    if not unrecorded:
        print(f"{label}: OK ({compared} files, manifest valid)")
    else:
        print(f"{label}: manifest valid; {compared} of {len(checks)} files verified; could not compare "
              f"{len(unrecorded)}: their sha256 is not recorded (a manifest of the original Axon?); the values "
              "above are what they hold now")
    return 0
