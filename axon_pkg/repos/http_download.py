"""Plain-HTTP downloads for repositories without a client library of their own (torchvision's
weights server, GitHub archives): resumable, with a progress bar, checked before use.

A download goes to ``<dest>.incomplete``; when that file exists, the request asks for the rest
(``Range: bytes=<have>-``) and appends if the server answers 206, or starts again on 200. Only a
complete file whose sha256 matches (the full digest, or the prefix a torchvision file name
carries, as ``torch.hub`` checks it) is renamed to ``dest``; a mismatch deletes the partial file
and raises :class:`~axon_pkg.errors.IntegrityError`.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from ..errors import HubError, IntegrityError

READ_TIMEOUT_S = float(os.environ.get("AXON_READ_TIMEOUT", "60"))   # between bytes of a download
CHUNK = 1 << 20
# torch.hub's convention: the file name carries the first hex digits of its sha256
HASH_PREFIX = re.compile(r"-([a-f0-9]+)\.")


def hash_prefix_of(file_name: str) -> str | None:
    m = HASH_PREFIX.search(file_name)
    return m.group(1) if m else None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def connect_timeout_s() -> float:
    """The one hub timeout of axon-py (``hub.timeout``; ``HF_HUB_ETAG_TIMEOUT`` wins), for every repository."""
    from .huggingface import timeout_s

    return timeout_s()


def get(url: str, *, what: str, headers: dict | None = None, stream: bool = False, allow_redirects: bool = True):
    """One GET with the hub timeouts; an unreachable host is a HubError naming ``url``."""
    import requests

    t = connect_timeout_s()
    try:
        return requests.get(url, headers=headers or {}, stream=stream, allow_redirects=allow_redirects,
                            timeout=(t, max(t, READ_TIMEOUT_S) if stream else t))
    except requests.exceptions.RequestException as e:
        reason = type(e).__name__ if not str(e) else str(e).splitlines()[0][:200]
        raise HubError(f"cannot reach {what} at {url}: {reason}",
                       hint="check the network, or the endpoint setting (axon-py config list)") from None


def download(url: str, dest: Path, *, what: str, quiet: bool, sha256: str | None = None,
             hash_prefix: str | None = None) -> Path:
    dest = Path(dest)
    if dest.is_file() and _matches(dest, sha256, hash_prefix):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".incomplete")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    resp = get(url, what=what, headers=headers, stream=True)
    with resp:
        if resp.status_code == 416 and have:         # the partial file is already whole
            pass
        elif resp.status_code in (200, 206):
            if resp.status_code == 200:
                have = 0
            total = int(resp.headers.get("Content-Length") or 0) + have or None
            _write(resp, part, have, total, dest.name, quiet)
        elif resp.status_code == 404:
            raise HubError(f"{what} has no file at {url} (404)")
        else:
            raise HubError(f"{what} answered {resp.status_code} for {url}")
    digest = sha256_of(part)
    if (sha256 and digest != sha256) or (hash_prefix and not digest.startswith(hash_prefix)):
        part.unlink(missing_ok=True)
        want = sha256 or f"a digest starting {hash_prefix} (from the file name)"
        raise IntegrityError(f"{dest.name} from {url}: sha256 {digest}, expected {want}; the partial "
                             "file was deleted", hint="a corrupted download or a wrong mirror; try again")
    os.replace(part, dest)
    return dest


def _matches(path: Path, sha256: str | None, prefix: str | None) -> bool:
    if not sha256 and not prefix:
        return False
    digest = sha256_of(path)
    return (not sha256 or digest == sha256) and (not prefix or digest.startswith(prefix))


def _write(resp, part: Path, have: int, total: int | None, name: str, quiet: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
               disable=quiet)
    try:
        with open(part, "ab" if have else "wb") as f:
            for block in resp.iter_content(1 << 16):   # small reads: what arrived before a drop is kept
                f.write(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:   # a dropped connection: the partial file stays for the next attempt
        raise HubError(f"the download of {name} was interrupted after {part.stat().st_size} bytes ({e}); "
                       "run the install again to resume") from None
    finally:
        bar.close()


def check_reachable(url: str, *, what: str) -> None:
    """A TCP connect to ``url``'s host, so an unreachable endpoint fails in seconds, before any
    slow step (a converter environment starting up) is spent on an install that cannot finish."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=connect_timeout_s()).close()
    except OSError as e:
        raise HubError(f"cannot reach {what} at {url}: {e.strerror or e}",
                       hint="check the network, or the endpoint setting (axon-py config list)") from None
