"""``axon-py``: assembles the command groups; each group is one module of this package."""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import AxonError
from . import cache_cmd, config_cmd, install_cmd, query_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="axon-py", description="MLOS model packages (.axon): install, verify, register")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in (install_cmd, query_cmd, cache_cmd, config_cmd):
        module.add_commands(sub)
    v = sub.add_parser("version", help="print the version")
    v.set_defaults(func=lambda args: print(f"axon-py {__version__}") or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except AxonError as e:  # the one table of domain errors -> text
        print(f"axon-py: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("axon-py: interrupted; no partial package was left behind", file=sys.stderr)
        return 130
