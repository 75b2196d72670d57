"""Who may call the sidecar: loopback by default; elsewhere only with a bearer token.

Clients send the token as gRPC metadata, ``authorization: Bearer <token>``. With a
certificate pair the server speaks TLS.
"""

from __future__ import annotations

import hmac
import ipaddress
from pathlib import Path
from typing import Any

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})


class SidecarConfigError(ValueError):
    """A server setting that cannot work (an open address without a token, half a
    certificate pair, a file that cannot be read)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if token is None and not is_loopback(host):
        raise SidecarConfigError(
            f"listening on {host!r} reaches beyond this machine: give a token (--token or "
            "DURATASK_SERVE_TOKEN), which clients send as 'authorization: Bearer <token>' "
            "metadata, or listen on 127.0.0.1"
        )


def read_tls(cert: Path | None, key: Path | None) -> tuple[bytes, bytes] | None:
    """The (key, certificate chain) PEM pair, or None for plain text."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SidecarConfigError(
            "TLS needs both a certificate (--tls-cert) and its key (--tls-key)"
        )
    try:
        return key.read_bytes(), cert.read_bytes()
    except OSError as exc:
        raise SidecarConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None


def authorized(metadata: Any, token: str | None) -> bool:
    """Whether a call's metadata carries the token (always, when there is none)."""
    if token is None:
        return True
    expected = f"Bearer {token}".encode()
    for key, value in metadata or ():
        if key.lower() == "authorization":
            given = value.encode() if isinstance(value, str) else bytes(value)
            if hmac.compare_digest(given, expected):
                return True
    return False


__all__ = ["SidecarConfigError", "authorized", "check_bind", "is_loopback", "read_tls"]
