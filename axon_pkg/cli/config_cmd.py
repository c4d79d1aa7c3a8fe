"""config get | set | list."""
from __future__ import annotations

from .. import config


def add_commands(sub) -> None:
    p = sub.add_parser("config", help="axon-py settings (~/.axon/config.yaml)")
    s = p.add_subparsers(dest="action", required=True)
    g = s.add_parser("get")
    g.add_argument("key")
    g.set_defaults(func=lambda a: print(config.shown(a.key, config.get(a.key))) or 0)
    st = s.add_parser("set")
    st.add_argument("key")
    st.add_argument("value")
    st.set_defaults(func=cmd_set)
    s.add_parser("list").set_defaults(func=cmd_list)


def cmd_set(args) -> int:
    config.set_value(args.key, args.value)
    print(f"{args.key} = {config.shown(args.key, args.value)}  ({config.config_path()})")
    return 0


def cmd_list(args) -> int:
    for key, (value, source) in config.effective().items():
        print(f"{key} = {config.shown(key, value)}  ({source})")
    return 0
