"""The cffi layer must never drift from the header: gcc compiles the real header and prints every
size, offset, field width/signedness, constant and ioctl number; cffi's values must match."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kernel_shim import abi

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "kmod" / "include" / "uapi" / "mlos_ml.h"


def test_packaged_header_is_the_kmod_header():
    assert (ROOT / "kernel_shim" / "include" / "mlos_ml.h").read_bytes() == SOURCE.read_bytes()
    assert abi.HEADER_TEXT == SOURCE.read_text()


def test_every_struct_and_ioctl_of_the_header_is_bound():
    text = abi.strip_comments(SOURCE.read_text())
    structs = set(re.findall(r"^\s*struct\s+(\w+)\s*\{", text, re.M))
    ioctls = set(re.findall(r"^\s*#\s*define\s+(\w+)\s+_IO", text, re.M))
    assert structs and structs == set(abi.STRUCTS)
    assert ioctls and ioctls == set(abi.IOCTLS)
    for name in structs:
        abi.ffi.sizeof(f"struct {name}")


def test_ioc_encoding_known_values():
    # values from the kernel's own headers: FIONREAD-style _IO and the ubi/usbdevfs examples
    assert abi.ioc(0, ord("T"), 0x1B, 0) == 0x541B                  # _IO('T', 0x1B)
    assert abi.ioc(2, ord("U"), 3, 4) == 0x80045503                 # _IOR('U', 3, int)
    assert abi.ioc(1 | 2, 0xB8, 1, 40) == 0xC028B801
    assert abi.ioc(4, ord("t"), 0x16, 4, machine="ppc64le") == 0x80047416   # powerpc write


def _c_program() -> str:
    lines = ['#include <stdio.h>', '#include <stddef.h>', f'#include "{SOURCE}"', "int main(void) {"]
    for name in abi.STRUCTS:
        t = f"struct {name}"
        lines.append(f'printf("sizeof {name} %zu\\n", sizeof({t}));')
        for fname, f in abi.ffi.typeof(t).fields:
            m = f"(({t} *)0)->{fname}"
            item = f"{m}[0]" if f.type.kind == "array" else m      # signedness of the element
            lines.append(f'printf("field {name}.{fname} %zu %zu %d\\n", offsetof({t}, {fname}), '
                         f'sizeof({m}), (int)((__typeof__({item}))-1 < 0));')
    for name in abi.IOCTLS:
        lines.append(f'printf("ioctl {name} %lu\\n", (unsigned long)({name}));')
    for name, v in abi.CONSTANTS.items():
        if isinstance(v, int):
            lines.append(f'printf("const {name} %lld\\n", (long long)({name}));')
        else:
            lines.append(f'printf("const {name} %s\\n", {name});')
    lines += ["return 0;", "}"]
    return "\n".join(lines)


def _cffi_view() -> list[str]:
    out = []
    ffi = abi.ffi
    for name in abi.STRUCTS:
        t = ffi.typeof(f"struct {name}")
        out.append(f"sizeof {name} {ffi.sizeof(t)}")
        for fname, f in t.fields:
            ft = f.type
            item = ft.item if ft.kind == "array" else ft
            signed = int(ffi.cast(item, -1) < 0)
            out.append(f"field {name}.{fname} {f.offset} {ffi.sizeof(ft)} {signed}")
    out += [f"ioctl {n} {v}" for n, v in abi.IOCTLS.items()]
    out += [f"const {n} {v}" for n, v in abi.CONSTANTS.items()]
    return out


def test_cdef_matches_gcc(tmp_path):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler on this machine")
    src, exe = tmp_path / "abi.c", tmp_path / "abi"
    src.write_text(_c_program())
    subprocess.run([gcc, "-Wall", "-Werror", "-o", str(exe), str(src)], check=True,
                   capture_output=True, text=True)
    from_gcc = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines()
    assert from_gcc == _cffi_view()
    # and not vacuously: every struct has its size line, the stats array is 4 x u64
    assert f"field mlos_stats.queued {abi.ffi.offsetof('struct mlos_stats', 'queued')} 32 0" in from_gcc
