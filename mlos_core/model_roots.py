"""Where a client may ask the server to read a model from.

A register request names a path on the server's machine. Without a bound, any client could make
the server open any file it can read (``/etc/shadow``), learn from the answer whether a path exists,
or read a directory's listing. So a path must lie under one of the configured roots, checked after
every symlink is resolved and before the path is even looked at, so that nothing outside the roots
can be probed; devices, FIFOs and sockets are refused (reading ``/dev/zero`` or a FIFO never ends).

Default roots: the models directory, the server's data directory, axon-py's cache (so
``axon-py register`` works), and, while the server listens on loopback only, the home directory
of the user running it (so a local user's own files register as the README shows). Requests the
server makes itself (the demo models, the models-directory scan) are not client input and do not
pass through here.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from axon_pkg.store import axon_home

from .auth import is_loopback
from .config import Settings
from .errors import BadRequest, Forbidden, UnprocessableModel

MAX_PATH = 4096


def default_roots(settings: Settings) -> list[Path]:
    roots = [Path(settings.models_dir).expanduser(), settings.data_path, axon_home()]
    if is_loopback(settings.host) or not settings.http_enabled:
        roots.append(Path.home())
    return roots


class ModelRoots:
    def __init__(self, roots: list[Path]):
        self.roots = tuple(dict.fromkeys(Path(os.path.realpath(Path(r).expanduser())) for r in roots))

    @classmethod
    def from_settings(cls, settings: Settings) -> "ModelRoots":
        given = [Path(r) for r in settings.model_roots]
        return cls(given or default_roots(settings))

    def describe(self) -> str:
        return ", ".join(map(str, self.roots)) or "none"

    def check(self, path) -> str:
        """The resolved path a client may register, or a 4xx that reveals nothing outside the roots."""
        if not isinstance(path, str) or not path:
            raise BadRequest("path (or model_path) is required: a model file, a model directory or an .axon package")
        if "\x00" in path:
            raise BadRequest("path contains a NUL character")
        if len(path) > MAX_PATH:
            raise BadRequest(f"path is longer than {MAX_PATH} characters")
        resolved = Path(os.path.realpath(Path(path).expanduser()))
        if not any(resolved == r or r in resolved.parents for r in self.roots):
            raise Forbidden(f"path {path!r} is outside the model roots of this server ({self.describe()}); "
                            "start the server with --model-root DIR to allow another directory")
        try:
            st = resolved.stat()
        except FileNotFoundError:
            raise UnprocessableModel(f"{path}: no such file or directory") from None
        except OSError as e:
            raise UnprocessableModel(f"{path}: cannot be read ({e.strerror})") from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            kind = {stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device", stat.S_IFIFO: "a FIFO",
                    stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise BadRequest(f"{path} is {kind}: register a model file, a model directory or an .axon package")
        return str(resolved)
