"""API keys: the one check every transport makes before it does any work for a client.

A client proves it holds a key with ``Authorization: Bearer KEY`` (what OpenAI clients send, and
what ``tritonclient`` sends when given that header) or with a bare key in one configurable header
(``x-api-key`` by default, for clients that can only set a named header). Keys are compared as
SHA-256 digests with ``hmac.compare_digest``, against every configured key without stopping at the
first match, so the time a check takes does not depend on how much of a key a guess got right or
on which key matched.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from pathlib import Path
from typing import Iterable, Mapping

from .config import ConfigError, Settings

log = logging.getLogger(__name__)

# paths answered without a key when the matching flag is given (probes and scrapers)
HEALTH_PATHS = frozenset({"/health", "/v1/health", "/v2/health/live", "/v2/health/ready", "/api/health"})
METRICS_PATHS = frozenset({"/metrics"})
MIN_KEY_CHARS = 16


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _read_key_file(path: str) -> list[str]:
    try:
        lines = Path(path).expanduser().read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"api key file {path}: {e.strerror}") from None
    keys = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not keys:
        raise ConfigError(f"api key file {path} holds no key (one per line; # starts a comment)")
    return keys


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiKeys:
    def __init__(self, keys: Iterable[str] = (), header: str = "x-api-key", open_paths: Iterable[str] = ()):
        keys = [k for k in keys if k]
        for k in keys:
            if any(c.isspace() for c in k):
                raise ConfigError("an API key must not contain white space")
        self._digests = [_digest(k) for k in keys]
        self.header = header
        self.open_paths = frozenset(open_paths)
        self.short_keys = sum(len(k) < MIN_KEY_CHARS for k in keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> "ApiKeys":
        keys = list(settings.api_keys)
        if settings.api_key_file:
            keys += _read_key_file(settings.api_key_file)
        open_paths = (HEALTH_PATHS if settings.public_health else frozenset()) | (
            METRICS_PATHS if settings.public_metrics else frozenset())
        found = cls(keys, settings.api_key_header, open_paths)
        if not found.enabled and (settings.http_enabled or settings.grpc_enabled) and not is_loopback(settings.host) \
                and not settings.allow_unauthenticated:
            raise ConfigError(
                f"refusing to serve {settings.host} without an API key: anyone who reaches the port could "
                "register, run and delete models. Give --api-key KEY (or MLOS_API_KEY, or --api-key-file), or "
                "--allow-unauthenticated if something in front of the server (a proxy, a firewall) authenticates")
        if found.short_keys:
            log.warning("%d API key(s) shorter than %d characters: use long random keys "
                        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')", found.short_keys, MIN_KEY_CHARS)
        return found

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def presented(self, headers: Mapping[str, str]) -> str | None:
        """The key a request carries, if any (headers looked up case-insensitively by the caller's mapping)."""
        auth = headers.get("authorization") or headers.get("Authorization")
        if auth:
            scheme, _, token = auth.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        bare = headers.get(self.header) or headers.get(self.header.lower())
        return bare.strip() if bare else None

    def authorized(self, headers: Mapping[str, str], path: str | None = None) -> bool:
        if not self._digests or (path is not None and path in self.open_paths):
            return True
        key = self.presented(headers)
        if key is None:
            return False
        candidate = _digest(key)
        ok = False
        for d in self._digests:
            ok |= hmac.compare_digest(candidate, d)
        return ok
