"""Shared mappings made with libc's mmap(2), not Python's ``mmap.mmap``.

``mmap.mmap`` keeps a dup of the file descriptor for as long as the mapping lives (Python
3.11 has no ``trackfd=False``). On /dev/mlos-ml that dup keeps the device file open, so
closing a ``Device`` would not release its buffers and requests while any buffer stays
mapped: the kernel's release() is what drops them. The module points each vma at a
per-buffer file of its own, so a mapping made without the dup leaves the device file's
lifetime to the device's one descriptor, as a C client would have it.

A ``Mapping`` is unmapped when the last Python object that reads it goes: the buffer
objects (``memoryview``, numpy arrays) made from ``view()`` keep it alive, so a view never
outlives its pages.
"""
from __future__ import annotations

import errno
import mmap

import cffi

from .errors import shim_error

_ffi = cffi.FFI()
_ffi.cdef("""
void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset);
int munmap(void *addr, size_t length);
""")
_libc = _ffi.dlopen(None)
_MAP_FAILED = _ffi.cast("void *", -1)


class Mapping:
    """``length`` bytes of ``fd`` at ``offset``, MAP_SHARED, read-write."""

    __slots__ = ("length", "_ptr")

    def __init__(self, fd: int, length: int, offset: int = 0):
        if length <= 0 or offset < 0:
            raise shim_error(errno.EINVAL, "mmap", f"length {length}, offset {offset}")
        raw = _libc.mmap(_ffi.NULL, length, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED,
                         fd, offset)
        if raw == _MAP_FAILED:
            raise shim_error(_ffi.errno, "mmap")
        self.length = length
        # ffi.gc runs munmap when the pointer object dies; ffi.buffer objects hold the pointer.
        self._ptr = _ffi.gc(raw, lambda p, n=length: _libc.munmap(p, n), size=length)

    def view(self):
        """A writable buffer-protocol object over the whole mapping (no copy)."""
        return _ffi.buffer(self._ptr, self.length)

    def address(self) -> int:
        return int(_ffi.cast("uintptr_t", self._ptr))
