"""The ABI of ``/dev/mlos-ml``, generated at import time from the uapi header.

``kmod/include/uapi/mlos_ml.h`` is the one definition of the ABI. This module reads its text,
turns the struct definitions into a build-free cffi ``cdef`` (ABI mode: no compiler at import),
and computes every ioctl number from the header's ``_IO``/``_IOW``/``_IOR``/``_IOWR`` macros
with the Linux ``_IOC`` encoding. Nothing here is hard-coded but the encoding itself and the
``__u32``-style typedefs of ``<linux/types.h>``; ``tests/kernel_shim/test_abi.py`` compiles the
real header with gcc and checks every size, offset, constant and ioctl number against this.

The header is looked up in this order: ``$MLOS_ML_HEADER``, the copy shipped as package data
(``kernel_shim/include/mlos_ml.h``, a symlink to the kmod header in a checkout), the kmod tree
beside the package.
"""
from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import cffi

_PKG = Path(__file__).resolve().parent
_CANDIDATES = (
    _PKG / "include" / "mlos_ml.h",
    _PKG.parent / "kmod" / "include" / "uapi" / "mlos_ml.h",
)

# <linux/types.h>, as cffi spells it.
_TYPEDEFS = """
typedef uint8_t __u8;  typedef int8_t __s8;
typedef uint16_t __u16; typedef int16_t __s16;
typedef uint32_t __u32; typedef int32_t __s32;
typedef uint64_t __u64; typedef int64_t __s64;
"""


def header_path() -> Path:
    env = os.environ.get("MLOS_ML_HEADER")
    if env:
        return Path(env)
    for cand in _CANDIDATES:
        if cand.is_file():
            return cand
    raise FileNotFoundError(
        "mlos_ml.h not found: looked in " + ", ".join(map(str, _CANDIDATES))
        + " (set MLOS_ML_HEADER to its path)")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


# ---------------------------------------------------------------- Linux _IOC encoding
def _ioc_layout(machine: str | None = None) -> dict:
    """asm-generic/ioctl.h, and the architectures that override it (powerpc, mips, sparc, alpha)."""
    m = (machine or platform.machine()).lower()
    if m.startswith(("ppc", "powerpc", "mips", "sparc", "alpha")):
        return {"sizebits": 13, "dirbits": 3, "none": 1, "read": 2, "write": 4}
    return {"sizebits": 14, "dirbits": 2, "none": 0, "read": 2, "write": 1}


def ioc(direction: int, typ: int, nr: int, size: int, machine: str | None = None) -> int:
    lay = _ioc_layout(machine)
    nrbits, typebits = 8, 8
    if not (0 <= nr < 1 << nrbits and 0 <= typ < 1 << typebits and 0 <= size < 1 << lay["sizebits"]):
        raise ValueError(f"_IOC out of range: type={typ} nr={nr} size={size}")
    typeshift = nrbits
    sizeshift = typeshift + typebits
    dirshift = sizeshift + lay["sizebits"]
    return (direction << dirshift) | (typ << typeshift) | (nr << 0) | (size << sizeshift)


def _dir(macro: str, machine: str | None = None) -> int:
    lay = _ioc_layout(machine)
    return {"_IO": lay["none"], "_IOW": lay["write"], "_IOR": lay["read"],
            "_IOWR": lay["read"] | lay["write"]}[macro]


# ---------------------------------------------------------------- parsing the header
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(.+?)[ \t]*$", re.M)
_IOCTL = re.compile(r"^(_IOWR|_IOW|_IOR|_IO)\s*\(\s*(\w+)\s*,\s*(\w+)\s*(?:,\s*(struct\s+\w+|\w+)\s*)?\)$")
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)


def _int(token: str, defines: dict) -> int:
    token = token.strip()
    if token in defines and isinstance(defines[token], int):
        return defines[token]
    return int(token.rstrip("uUlL"), 0)


def parse(text: str) -> dict:
    """Constants, structs (cdef text) and ioctl (name -> macro, nr, type) of a header's text."""
    body = strip_comments(text)
    raw_defines = dict(_DEFINE.findall(body))
    constants: dict[str, int | str] = {}
    ioctls: dict[str, tuple[str, str, str, str | None]] = {}
    for name, value in raw_defines.items():
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            constants[name] = value[1:-1]
        elif (m := _IOCTL.match(value)):
            ioctls[name] = m.groups()
        elif value == "":
            continue
        else:
            try:
                constants[name] = _int(value, constants)
            except ValueError:
                pass                      # an expression we do not need (none today)
    structs: dict[str, str] = {}
    for name, fields in _STRUCT.findall(body):
        # array bounds written with macros (queued[MLOS_PRIO_COUNT]) become numbers for cffi
        fields = re.sub(r"\[\s*(\w+)\s*\]", lambda m: f"[{_int(m.group(1), constants)}]", fields)
        fields = "\n".join("    " + ln.strip() for ln in fields.splitlines() if ln.strip())
        structs[name] = f"struct {name} {{\n{fields}\n}};"
    return {"constants": constants, "structs": structs, "ioctls": ioctls}


HEADER = header_path()
HEADER_TEXT = HEADER.read_text()
_PARSED = parse(HEADER_TEXT)
CONSTANTS: dict = _PARSED["constants"]
STRUCTS: dict[str, str] = _PARSED["structs"]
CDEF = _TYPEDEFS + "\n".join(STRUCTS.values())

ffi = cffi.FFI()
ffi.cdef(CDEF)


def _ioctl_number(macro: str, typ: str, nr: str, arg: str | None) -> int:
    size = ffi.sizeof(arg) if arg else 0
    return ioc(_dir(macro), _int(typ, CONSTANTS), _int(nr, CONSTANTS), size)


IOCTLS: dict[str, int] = {name: _ioctl_number(*spec) for name, spec in _PARSED["ioctls"].items()}
# the argument struct of each ioctl (None for _IO)
IOCTL_ARGS: dict[str, str | None] = {name: spec[3] for name, spec in _PARSED["ioctls"].items()}

ABI_VERSION: int = CONSTANTS["MLOS_ML_ABI_VERSION"]
DEVICE: str = CONSTANTS["MLOS_ML_DEVICE"]
PRIO_COUNT: int = CONSTANTS["MLOS_PRIO_COUNT"]
PRIORITIES: dict[str, int] = {k[len("MLOS_PRIO_"):].lower(): v for k, v in CONSTANTS.items()
                              if k.startswith("MLOS_PRIO_") and k != "MLOS_PRIO_COUNT"}
PRIO_REALTIME, PRIO_HIGH, PRIO_NORMAL, PRIO_BATCH = (
    PRIORITIES["realtime"], PRIORITIES["high"], PRIORITIES["normal"], PRIORITIES["batch"])
REQ_DONE: int = CONSTANTS["MLOS_REQ_DONE"]
REQ_CANCELLED: int = CONSTANTS["MLOS_REQ_CANCELLED"]
REQ_EXPIRED: int = CONSTANTS["MLOS_REQ_EXPIRED"]
REQ_STATES = {REQ_DONE: "done", REQ_CANCELLED: "cancelled", REQ_EXPIRED: "expired"}


def new(struct: str, **fields):
    """A zeroed ``struct <struct>`` with its leading size word set, and ``fields`` filled in."""
    p = ffi.new(f"struct {struct} *")
    p.size = ffi.sizeof(f"struct {struct}")
    for k, v in fields.items():
        setattr(p, k, v)
    return p


def to_dict(p) -> dict:
    """The fields of a cffi struct pointer, arrays as lists, without size and padding."""
    out = {}
    for name, field in ffi.typeof(p[0]).fields:
        if name == "size" or name.startswith("__pad"):
            continue
        v = getattr(p, name)
        out[name] = list(v) if field.type.kind == "array" else v
    return out
