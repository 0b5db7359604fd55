"""Where a provider endpoint may be: https anywhere, plain connections to loopback only."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def checked_base_url(value: str, example: str) -> str:
    """An API base URL without its trailing slash; plain http only for a loopback host.

    Credentials travel with every request, so they never cross a network unencrypted: a
    plain http URL is for a local simulator. Raises ``ValueError`` (a settings error
    naming the key) otherwise.
    """
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL such as {example}")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ValueError("plain http is allowed for a loopback simulator only; use https")
    return value.rstrip("/")


def origin(url: str) -> tuple[str, str]:
    """``(scheme, host[:port])`` of a URL, for same-origin checks."""
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.lower()
