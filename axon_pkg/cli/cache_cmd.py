"""cache list | stats | clean."""
from __future__ import annotations

from ..store import Cache
from .common import emit_json, human


def add_commands(sub) -> None:
    p = sub.add_parser("cache", help="the local package cache")
    s = p.add_subparsers(dest="action", required=True)
    s.add_parser("list", help="packages and refs in the cache").set_defaults(func=cmd_list)
    st = s.add_parser("stats", help="sizes and counts")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_stats)
    c = s.add_parser("clean", help="remove unreferenced blobs, interrupted installs and the download cache")
    c.add_argument("--keep-downloads", action="store_true", help="keep the hub download cache (resumable files)")
    c.set_defaults(func=cmd_clean)


def cmd_list(args) -> int:
    cache = Cache()
    for pkg in cache.installed():
        refs = [r for r, v in cache.refs_of(pkg.namespace, pkg.repo).items() if v == pkg.version]
        print(f"{pkg.path}  {' '.join('@' + r for r in refs)}")
    return 0


def cmd_stats(args) -> int:
    stats = Cache().stats()
    if args.json:
        emit_json(stats)
    else:
        print(f"cache {stats['root']}: {stats['packages']} packages, {stats['blobs']} blobs ({human(stats['blob_bytes'])}), "
              f"{stats['unreferenced_blobs']} unreferenced, download cache {human(stats['download_cache_bytes'])}, "
              f"{stats['incomplete']} interrupted installs")
    return 0


def cmd_clean(args) -> int:
    r = Cache().clean(downloads=not args.keep_downloads)
    print(f"removed {r['removed_blobs']} unreferenced blobs and {r['removed_incomplete']} interrupted installs; "
          f"freed {human(r['freed_bytes'])}")
    return 0
