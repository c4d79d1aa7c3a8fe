"""Subprocess side of :mod:`axon_pkg.gguf_convert` (``python -m axon_pkg._gguf_worker``).

``convert``: llama.cpp's ``convert_hf_to_gguf.py`` run unchanged as ``__main__`` (its arguments
after ``--``), in a process that dies with its parent (axon_pkg.child).
``quantize``: llama.cpp's quantiser through the llama-cpp-python bindings
(``llama_model_quantize``), which aborts the process on some errors: hence a process of its own.
``inspect``: a GGUF file's architecture, file type and tensor types, read with the converter's
gguf-py (``--gguf-py``). quantize and inspect print ONE JSON line on stdout; llama.cpp's own output
goes to stderr.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from collections import Counter


def quantize(src: str, dst: str, quant: str, threads: int) -> dict:
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant}", None)
    if ftype is None:
        return {"ok": False, "error": f"this llama.cpp has no {quant} quantisation"}
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    t0 = time.monotonic()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    seconds = time.monotonic() - t0
    if rc != 0 or not os.path.isfile(dst):
        return {"ok": False, "error": f"llama_model_quantize returned {rc}", "seconds": seconds}
    return {"ok": True, "seconds": seconds, "bytes": os.path.getsize(dst)}


def inspect(path: str, gguf_py: str) -> dict:
    sys.path.insert(0, gguf_py)
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(path)

    def field(name):
        f = reader.fields.get(name)
        if f is None:
            return None
        value = f.contents()
        return value.item() if hasattr(value, "item") else value

    types = Counter(GGMLQuantizationType(t.tensor_type).name for t in reader.tensors)
    return {"ok": True, "architecture": field("general.architecture"), "file_type": field("general.file_type"),
            "name": field("general.name"), "tensors": len(reader.tensors), "tensor_types": dict(types)}


def convert(script: str, args: list[str]) -> None:
    """The converter as its own command line would run it: its folder first on sys.path (it
    imports its ``conversion`` package from there), its arguments in sys.argv."""
    import runpy

    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


def main(argv: list[str] | None = None) -> int:
    from axon_pkg.child import die_with_parent

    die_with_parent()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        split = argv.index("--") if "--" in argv else len(argv)
        head, tail = argv[1:split], argv[split + 1:]
        if len(head) != 2 or head[0] != "--script":
            print("usage: python -m axon_pkg._gguf_worker convert --script PATH -- ARGS...", file=sys.stderr)
            return 2
        convert(head[1], tail)
        return 0
    ap = argparse.ArgumentParser(prog="python -m axon_pkg._gguf_worker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("--input", required=True)
    q.add_argument("--output", required=True)
    q.add_argument("--quant", required=True)
    q.add_argument("--threads", type=int, default=0)
    i = sub.add_parser("inspect")
    i.add_argument("--input", required=True)
    i.add_argument("--gguf-py", required=True)
    ns = ap.parse_args(argv)
    # keep stdout for the one JSON line: whatever the libraries print goes to stderr
    sys.stdout.flush()
    real_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        if ns.cmd == "quantize":
            result = quantize(ns.input, ns.output, ns.quant, ns.threads)
        else:
            result = inspect(ns.input, ns.gguf_py)
    except Exception as e:  # reported as the result, not a traceback
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
    finally:
        sys.stdout.flush()
    os.write(real_stdout, (json.dumps(result) + "\n").encode())
    os.close(real_stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
