"""``python -m kernel_shim status [--json]``: which backend is active and why, the ABI, stats."""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import abi
from .device import kernel_mode, open_device
from .errors import ShimError


def _probe_device() -> dict:
    path = abi.DEVICE
    info = {"path": path, "present": os.path.exists(path), "opens": False, "error": None}
    if info["present"]:
        try:
            os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
            info["opens"] = True
        except OSError as e:
            info["error"] = f"{e.strerror} (errno {e.errno})"
    return info


def status(as_json: bool = False) -> int:
    try:
        mode = kernel_mode()
    except ShimError as e:
        print(e, file=sys.stderr)
        return 2
    out = {"MLOS_KERNEL": os.environ.get("MLOS_KERNEL", "(unset: auto)"), "mode": mode,
           "device": _probe_device(), "header": str(abi.HEADER),
           "binding_abi_version": abi.ABI_VERSION}
    try:
        with open_device() as dev:
            out.update(backend=dev.backend, reason=dev.reason, version=dev.version(), stats=dev.stats())
    except ShimError as e:
        out.update(backend=None, reason=str(e))
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        d = out["device"]
        print(f"backend:      {out['backend'] or 'none'}")
        print(f"why:          {out['reason']}")
        print(f"MLOS_KERNEL:  {out['MLOS_KERNEL']}")
        print(f"device:       {d['path']} present={d['present']} opens={d['opens']}"
              + (f" ({d['error']})" if d["error"] else ""))
        print(f"ABI:          binding {abi.ABI_VERSION} from {out['header']}")
        if "version" in out:
            v = out["version"]
            print(f"backend ABI:  {v['abi_version']}  pool_limit={v['pool_limit']}  "
                  f"max_queue={v['max_queue']}  max_priority={v['max_priority']}")
            print("stats:        " + "  ".join(f"{k}={v}" for k, v in out["stats"].items()))
    return 0 if out["backend"] else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kernel_shim")
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="which backend is active and why, ABI version, stats")
    st.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    return status(args.json)


if __name__ == "__main__":
    sys.exit(main())
