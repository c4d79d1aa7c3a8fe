"""``axon-py``: the package manager's command line.

Only ``version`` exists so far; install/register/verify and the rest are the next piece of
work (the project's issue 3) and say so rather than pretend.
"""
from __future__ import annotations

import argparse
import sys

from . import __version__

PLANNED = ("install", "uninstall", "register", "list", "info", "verify", "cache", "config", "pack")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="axon-py", description="MLOS model packages (.axon)")
    parser.add_argument("command", choices=("version",) + PLANNED)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    if ns.command == "version":
        print(f"axon-py {__version__}")
        return 0
    print(f"axon-py: '{ns.command}' is not available in this version yet; "
          "register models with the core directly: POST /v1/models/register", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
