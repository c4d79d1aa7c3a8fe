"""``python -m validation <command>``: one table of subcommands, each a module with ``main(argv)``,
imported only when chosen (``run`` imports the runner, ``report`` the report renderer)."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "run": ("validation.cli_run", "run the model matrix: install, register, inference small and large"),
    "report": ("validation.report.cli", "render the HTML report from a run's metrics JSON"),
    "compare": ("validation.cli_compare", "compare a run with a baseline run: verdict per model, exit code"),
    "history": ("validation.history", "archive a run into a history directory, or list one"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m validation {" + ",".join(COMMANDS) + "} ...\n")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:8s} {text}")
        return 0 if argv else 2
    name = argv[0]
    if name not in COMMANDS:
        print(f"python -m validation: unknown command {name!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
