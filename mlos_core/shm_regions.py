"""System shared-memory regions that clients register (the Open Inference Protocol extension).

A client creates a POSIX shared-memory object (``shm_open``: a file under ``/dev/shm``), writes
input tensors into it, and registers ``(name, key, offset, byte_size)``. The core opens the
object once, at registration, and inference requests then name a region, an offset and a byte
size inside it: inputs are read from it and outputs written into it with ``pread``/``pwrite``
on that descriptor, so tensor bytes never travel through HTTP.

Why not a mapping read in place: the client keeps write access to its object and may shrink it
at any moment; touching a mapped page past the end of its file is a SIGBUS, which would kill the
server mid-request (POSIX shared memory, unlike a memfd, cannot be sealed against shrinking). A
``pread`` of a shrunk object returns short, which is a clear 400; a ``pwrite`` cannot fault. The
price is one copy of each input by the kernel, against the whole JSON/HTTP path it replaces.

Every number a client gives is checked: the key names an object directly under ``/dev/shm``
(no ``/`` after the leading one, no ``..``, opened relative to that directory with
``O_NOFOLLOW``, and it must be a regular file); the window must lie within the object when
registered; each request's offset and size must lie within the window.

Why registration is a security decision: a client that registers a key makes the server open
any shared-memory object its user can open, read it through an input and write model outputs
into it. That is harmless when the client is a local process of the same machine, which could
open the object itself; it is not when the client is anyone who can reach the port. So regions
are allowed by default only while the HTTP server listens on loopback alone
(``allow_client_shm: auto``); any other address needs ``--allow-client-shm=true``, as recent
Triton builds require.
"""
from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass

from .errors import BadRequest, Forbidden, NotFound

SHM_DIR = "/dev/shm"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_NAME = 255
MAX_REGIONS = 1024  # each holds a descriptor: a client must not exhaust them
NO_CUDA = ("CUDA shared memory is not supported: this server runs models on the CPU and has no CUDA "
           "device to share; use system shared memory")


def client_shm_allowed(setting: str, host: str, http_enabled: bool = True) -> tuple[bool, str]:
    """Whether clients may register regions, and the reason to give when they may not."""
    if setting == "true":
        return True, "allowed by allow_client_shm=true"
    if setting == "false":
        return False, "client shared memory is disabled on this server (allow_client_shm=false)"
    if not http_enabled or host.strip("[]") in LOOPBACK or host.startswith("127."):
        return True, "allowed: the server listens on loopback only"
    return False, (f"client shared memory is refused while the server listens on {host}: start it with "
                   "--allow-client-shm=true (MLOS_ALLOW_CLIENT_SHM=true) to allow it from any client that "
                   "reaches the port")


def _check_key(key) -> str:
    if not isinstance(key, str) or not key:
        raise BadRequest("'key' must be a non-empty string naming a shared-memory object, e.g. \"/input0\"")
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or ".." in name or "\0" in name or len(name) > MAX_NAME:
        raise BadRequest(f"shared-memory key {key!r} must name an object directly under {SHM_DIR}: "
                         "one leading '/' at most, no other '/', no '..'")
    return name


def _check_int(value, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise BadRequest(f"{what} must be at least {minimum}, got {value}")
    return value


@dataclass
class Region:
    name: str
    key: str
    offset: int
    byte_size: int
    fd: int
    users: int = 0          # reads and writes in progress: the fd closes after the last one
    unregistered: bool = False

    def describe(self) -> dict:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}


class SharedMemoryRegions:
    def __init__(self, allowed: bool = True, refusal: str = ""):
        self.allowed = allowed
        self.refusal = refusal
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    def register(self, name, key, offset=0, byte_size=None) -> Region:
        if not self.allowed:
            raise Forbidden(self.refusal)
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise BadRequest("a region needs a non-empty name")
        fname = _check_key(key)
        offset = _check_int(offset, "'offset'")
        byte_size = _check_int(byte_size, "'byte_size'", 1)
        with self._lock:
            if name in self._regions:
                raise BadRequest(f"shared memory region {name!r} is already registered; unregister it first")
            if len(self._regions) >= MAX_REGIONS:
                raise BadRequest(f"{MAX_REGIONS} shared memory regions are registered, the most this server "
                                 "holds; unregister some first")
        fd = self._open(fname, key)
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise BadRequest(f"shared memory region {name!r}: offset {offset} + byte_size {byte_size} runs past "
                                 f"the end of {key!r}, which is {size} bytes")
        except BaseException:
            os.close(fd)
            raise
        region = Region(name, key, offset, byte_size, fd)
        with self._lock:
            if name in self._regions:  # registered concurrently meanwhile
                self._release(region)
                raise BadRequest(f"shared memory region {name!r} is already registered; unregister it first")
            self._regions[name] = region
        return region

    @staticmethod
    def _open(fname: str, key: str) -> int:
        try:
            dirfd = os.open(SHM_DIR, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise BadRequest(f"system shared memory is unavailable here: {SHM_DIR}: {e.strerror}") from None
        try:
            fd = os.open(fname, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dirfd)
        except FileNotFoundError:
            raise BadRequest(f"no shared-memory object {key!r} exists (looked for {SHM_DIR}/{fname})") from None
        except OSError as e:  # ELOOP: a symlink; EACCES: not ours to open
            raise BadRequest(f"cannot open shared-memory object {key!r}: {e.strerror}") from None
        finally:
            os.close(dirfd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BadRequest(f"shared-memory key {key!r} is not a regular shared-memory object")
        return fd

    def unregister(self, name: str | None = None) -> list[str]:
        """Release one region (or every one); unknown names are not an error, as in Triton."""
        with self._lock:
            names = list(self._regions) if name is None else [name] if name in self._regions else []
            gone = [self._regions.pop(n) for n in names]
        for region in gone:
            self._release(region)
        return names

    def _release(self, region: Region) -> None:
        """Close the region's descriptor now, or after the reads and writes still using it: a
        closed fd number may be reused by another file at once, so it must never be closed
        under an operation in progress."""
        with self._lock:
            region.unregistered = True
            close = region.users == 0
        if close:
            os.close(region.fd)

    def close(self) -> None:
        self.unregister(None)

    def status(self, name: str | None = None) -> list[dict]:
        with self._lock:
            if name is None:
                return [r.describe() for r in self._regions.values()]
            if name not in self._regions:
                raise NotFound(f"no shared memory region named {name!r} is registered")
            return [self._regions[name].describe()]

    def check(self, name, offset, byte_size, what: str) -> tuple[Region, int, int]:
        """The region and the checked ``(offset, byte_size)`` a tensor names inside it."""
        if not isinstance(name, str):
            raise BadRequest(f"{what}: 'shared_memory_region' must be a string")
        offset = _check_int(0 if offset is None else offset, f"{what}: 'shared_memory_offset'")
        if byte_size is None:
            raise BadRequest(f"{what}: 'shared_memory_byte_size' is required with 'shared_memory_region'")
        byte_size = _check_int(byte_size, f"{what}: 'shared_memory_byte_size'")
        with self._lock:
            region = self._regions.get(name)
        if region is None:
            raise BadRequest(f"{what}: shared memory region {name!r} is not registered")
        if offset + byte_size > region.byte_size:
            raise BadRequest(f"{what}: bytes {offset}..{offset + byte_size} lie outside shared memory region "
                             f"{name!r} of {region.byte_size} bytes")
        return region, offset, byte_size

    def _use(self, region: Region, what: str) -> None:
        with self._lock:
            if region.unregistered:
                raise BadRequest(f"{what}: shared memory region {region.name!r} was unregistered meanwhile")
            region.users += 1

    def _done(self, region: Region) -> None:
        with self._lock:
            region.users -= 1
            close = region.unregistered and region.users == 0
        if close:
            os.close(region.fd)

    def read(self, name, offset, byte_size, what: str) -> bytearray:
        """The bytes ``[offset, offset + byte_size)`` of a region, copied out by ``pread``."""
        region, offset, byte_size = self.check(name, offset, byte_size, what)
        out = bytearray(byte_size)
        self._use(region, what)
        try:
            got, view = 0, memoryview(out)
            while got < byte_size:
                n = os.preadv(region.fd, [view[got:]], region.offset + offset + got)
                if n == 0:
                    raise BadRequest(f"{what}: shared memory region {name!r}: its object {region.key!r} ends "
                                     f"{region.offset + offset + got} bytes in, short of the "
                                     f"{region.offset + offset + byte_size} the tensor needs (it shrank since "
                                     "it was registered)")
                got += n
        finally:
            self._done(region)
        return out

    def write(self, name, offset, byte_size, data: bytes, what: str) -> None:
        """``data`` into a region at ``offset``, within the ``byte_size`` the request gave."""
        region, offset, byte_size = self.check(name, offset, byte_size, what)
        if len(data) > byte_size:
            raise BadRequest(f"{what} is {len(data)} bytes; shared memory region {name!r} gives {byte_size} bytes "
                             f"at offset {offset}")
        self._use(region, what)
        try:
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.pwrite(region.fd, view[done:], region.offset + offset + done)
        finally:
            self._done(region)
